"""Run in a fresh process by test_revisions.py: load models by hub id and revision from an
offline Hugging Face cache (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1``), through the project's
loaders, and print what was loaded as JSON."""

from __future__ import annotations

import json
import sys

from rakuten_ray.models.image_backbones import create_image_model
from rakuten_ray.models.transformer import create_text_model

text_id, image_arch, revision = sys.argv[1:4]
_, text_model = create_text_model(text_id, revision=revision)
image_model = create_image_model(image_arch, 27, "hub", revision=revision)
embeddings = text_model.network.base_model.embeddings.word_embeddings.weight
print(json.dumps({
    "text_embedding_sum": float(embeddings.sum()),
    "image_stem_sum": float(image_model.stem[0].weight.sum()),
}))  # fmt: skip
