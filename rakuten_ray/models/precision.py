"""The arithmetic of deep models' forward passes, one setting for training and scoring.

A model's ``scaling.precision`` (:class:`~rakuten_ray.models.spec.Scaling`) says what its
forward passes autocast to on a GPU: ``bf16``, ``fp16`` or nothing (``fp32``). A CPU always
computes in fp32 whatever the setting, so CPU results never depend on it. A GPU without bf16
arithmetic (before Ampere: V100, T4) runs ``bf16`` as ``fp16``, with a note on stderr: its
emulated bf16 would be several times slower than fp32.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager

import torch

from rakuten_ray.models.spec import Precision

_AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def effective_precision(precision: Precision, device_type: str, bf16_supported: bool) -> Precision:
    """What forward passes at ``precision`` compute in on a device of ``device_type``
    (``cuda``, ``cpu``) that has bf16 arithmetic or not: fp32 on a CPU, fp16 for bf16 on a GPU
    without it, else ``precision``."""
    if device_type != "cuda":
        return "fp32"
    if precision == "bf16" and not bf16_supported:
        return "fp16"
    return precision


def autocast_dtype(
    precision: Precision, device: torch.device, bf16_supported: bool | None = None
) -> torch.dtype | None:
    """The dtype forward passes on ``device`` autocast to; ``None``: no autocast (fp32).

    ``bf16_supported``: whether the GPU has bf16 arithmetic (``None``: ask it; emulated bf16
    does not count, being what the fallback avoids). Where it falls back to fp16 it says so on
    stderr, once per model loaded or trained.
    """
    if device.type != "cuda":
        return None
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported(including_emulation=False)
    ran = effective_precision(precision, device.type, bf16_supported)
    if ran != precision:
        print(
            f"precision: {device} has no bf16 arithmetic (compute capability below 8.0); "
            f"forward passes set to {precision} autocast to {ran} instead",
            file=sys.stderr,
        )
    return dtype_for(ran)


def dtype_for(precision: Precision) -> torch.dtype | None:
    """The dtype ``precision`` autocasts to on any device; ``None`` for fp32."""
    return _AUTOCAST_DTYPES.get(precision)


def precision_of(dtype: torch.dtype | None) -> Precision:
    """The precision an autocast dtype (from :func:`autocast_dtype`) computes in."""
    names = {value: name for name, value in _AUTOCAST_DTYPES.items()}
    return names[dtype] if dtype is not None else "fp32"


def autocast_to(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast on ``device`` to ``dtype`` (from :func:`autocast_dtype`); off when ``None``."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
