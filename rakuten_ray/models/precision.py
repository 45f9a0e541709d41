"""The arithmetic of deep models' forward passes, one setting for training and scoring.

A model's ``scaling.precision`` (:class:`~rakuten_ray.models.spec.Scaling`) says what its
forward passes autocast to on a GPU: ``bf16``, ``fp16`` or nothing (``fp32``). A CPU always
computes in fp32 whatever the setting, so CPU results never depend on it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from rakuten_ray.models.spec import Precision

_AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The dtype forward passes on ``device`` autocast to; ``None``: no autocast (fp32)."""
    if device.type != "cuda":
        return None
    return _AUTOCAST_DTYPES.get(precision)


def autocast_to(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast on ``device`` to ``dtype`` (from :func:`autocast_dtype`); off when ``None``."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
