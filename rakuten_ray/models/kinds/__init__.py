"""The model kinds, one module each, listed in :data:`KINDS` (the registry reads that list).

Every module here is imported when a config is read, so heavy libraries are imported inside
methods.
"""

from __future__ import annotations

from rakuten_ray.models.kind import ModelKind
from rakuten_ray.models.kinds.hf_text import HfTextKind
from rakuten_ray.models.kinds.tfidf_svm import TfidfSvmKind
from rakuten_ray.models.kinds.timm_image import TimmImageKind

#: Every kind a config may name.
KINDS: tuple[type[ModelKind], ...] = (TfidfSvmKind, HfTextKind, TimmImageKind)
