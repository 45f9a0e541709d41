"""timm image classifiers: transforms, save / load, batch inference.

A classifier is a timm model built on its backbone's weights
(:mod:`rakuten_ray.models.image_backbones`). This module holds the rest: the model's train and
eval transforms, the folder a trained model is saved in (its weights, and the settings that
rebuild it and its eval transform exactly, ``model_args`` included), and the scorer that crops,
normalises and scores batches of images.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from torchvision import transforms

from rakuten_ray.batching import fixed_batches
from rakuten_ray.layout import CROP_PREFIX
from rakuten_ray.models.image_backbones import create_image_model
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

WEIGHTS_FILE = "model.safetensors"
SETTINGS_FILE = "image_model.json"
#: Images per forward pass when scoring: on CPU, small batches stay in cache and run fastest.
IMAGE_BATCH_SIZE = 8

Transform = Callable[[Image.Image], torch.Tensor]


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
        # kernels (benchmarks/image_layout.py; docs/performance.md).
        autocast = autocast_dtype(precision, device_)
        return TorchForward(_Pixels(model), device_, autocast, channels_last=True)

    forward = select_forward(folder, runtime, device_, threads, torch_forward)
    return ImageClassifier(settings, forward, batch_size)
