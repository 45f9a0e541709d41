"""A hub model pinned by ``revision`` loads that commit's weights, for Hugging Face text models
and timm image models alike. The hub is simulated by an offline cache holding two commits of
each repository (as a mirror or a warmed cache does); the loading code is the production one,
in a fresh process so the cache settings apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import write_tiny_roberta, write_tiny_timm

pytestmark = pytest.mark.slow

TEXT_REPO = "org/tiny-camembert"
IMAGE_ARCH = "convnext_atto"
COMMITS = ("1" * 40, "2" * 40)
HERE = Path(__file__).resolve().parent


def _snapshot(cache: Path, repo: str, commit: str) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    folder.mkdir(parents=True)
    refs = folder.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(COMMITS[-1])
    return folder


def _load(cache: Path, revision: str) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(HERE / "pinned_download.py"), TEXT_REPO, IMAGE_ARCH, revision],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_revision_loads_its_own_weights(tmp_path: Path) -> None:
    import timm
    from transformers import AutoModel

    cache = tmp_path / "hub"
    image_repo = timm.models.get_pretrained_cfg(IMAGE_ARCH).hf_hub_id
    expected = []
    for seed, commit in enumerate(COMMITS):
        folder = _snapshot(cache, TEXT_REPO, commit)
        text = write_tiny_roberta(folder, "camembert", ["chaise en bois"] * 20, seed=seed)
        weights = _snapshot(cache, image_repo, commit) / "model.safetensors"
        write_tiny_timm(weights, IMAGE_ARCH, {}, seed=seed)
        encoder = AutoModel.from_pretrained(text)
        expected.append(float(encoder.embeddings.word_embeddings.weight.sum()))
    loaded = [_load(cache, commit) for commit in COMMITS]
    assert loaded[0]["text_embedding_sum"] != loaded[1]["text_embedding_sum"]
    assert loaded[0]["image_stem_sum"] != loaded[1]["image_stem_sum"]
    for got, want in zip(loaded, expected, strict=True):
        assert got["text_embedding_sum"] == pytest.approx(want, rel=1e-6)
