"""``timm_image``: a timm image classifier (EfficientNet, ConvNeXt, Swin, any timm
architecture) fine-tuned with Ray Train (:mod:`rakuten_ray.models.vision`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import Field

from rakuten_ray.models.kind import DeepKind, Modality
from rakuten_ray.models.settings import Real, Section
from rakuten_ray.models.spec import DEFAULT_PRECISION, DeepModelSpec, Precision
from rakuten_ray.models.tables import image_table
from rakuten_ray.models.tasks import Batch, DeepTask

if TYPE_CHECKING:
    import torch

    from rakuten_ray.models.runtime import RuntimeName
    from rakuten_ray.models.vision import ImageClassifier


class Augmentation(Section):
    """Train-time image augmentation (timm transform arguments)."""

    hflip: Real = 0.5
    scale_min: Real = 0.5
    color_jitter: Real = 0.2


class TimmImageSpec(DeepModelSpec):
    """Settings of a timm image classifier.

    ``model`` is a timm architecture (``convnext_base.fb_in22k_ft_in1k_384``); ``pretrained``
    names its weights: ``hub`` (timm's, pinned by ``revision``), ``package:<name>``, a local
    ``.safetensors`` / ``.pth`` file, or null (random init). ``model_args`` are extra
    arguments of the architecture (``depths``, ``dims``, ``img_size``, ...).
    """

    pretrained: str | None = None
    image_size: int = Field(224, ge=16)
    model_args: dict[str, Any] = Field(default_factory=dict)
    augmentation: Augmentation = Field(default_factory=Augmentation)

    def hub_source(self) -> str | None:
        return self.model if self.pretrained == "hub" else None

    def hub_repository(self) -> str | None:
        if self.hub_source() is None:
            return None
        from rakuten_ray.models.image_backbones import hub_repository

        return hub_repository(self.model)


class ImageTask(DeepTask):
    """Fine-tuning a timm image classifier on images read with the safe loader."""

    input_column = "path"

    def __init__(self, spec: TimmImageSpec) -> None:
        super().__init__(spec)
        self.transforms: tuple[Callable, Callable] | None = None

    def build(self, weights_from: Path | None = None) -> torch.nn.Module:
        import torch

        from rakuten_ray.catalog import NUM_CLASSES
        from rakuten_ray.models.image_backbones import create_image_model
        from rakuten_ray.models.vision import WEIGHTS_FILE, image_transforms

        spec = self.spec
        pretrained = str(weights_from / WEIGHTS_FILE) if weights_from else spec.pretrained
        model = create_image_model(
            spec.model, NUM_CLASSES, pretrained, model_args=spec.model_args,
            revision=spec.revision,
        )  # fmt: skip
        augmentation = spec.augmentation
        self.transforms = image_transforms(
            model, spec.image_size, augmentation.scale_min, augmentation.hflip,
            augmentation.color_jitter,
        )  # fmt: skip
        # Channels-last, as in scoring: on CPU a training step of EfficientNet-Lite0 at 224 px
        # costs about half as much per image (benchmarks/image_layout.py); cuDNN prefers it too.
        return model.to(memory_format=torch.channels_last)

    def collate(self, training: bool) -> Callable[[Sequence[tuple[Any, int]]], Batch]:
        import torch

        from rakuten_ray.images import load_image
        from rakuten_ray.layout import ImageStatus

        assert self.transforms is not None, "build() sets the transforms"
        transform = self.transforms[0] if training else self.transforms[1]
        size = self.spec.image_size

        def collate(items: Sequence[tuple[Any, int]]) -> Batch:
            # An unusable image keeps its place in the batch (so every DDP rank runs the same
            # number of steps) but gets zero loss weight.
            tensors, weights = [], []
            for path, _ in items:
                loaded = load_image(path)
                usable = loaded.status == ImageStatus.OK
                tensors.append(transform(loaded.image) if usable else torch.zeros(3, size, size))
                weights.append(1.0 if usable else 0.0)
            labels = torch.tensor([label for _, label in items])
            pixels = torch.stack(tensors).contiguous(memory_format=torch.channels_last)
            return pixels, labels, torch.tensor(weights)

        return collate

    def forward(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        return model(inputs)

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        from rakuten_ray.models.vision import save_image_model

        spec = self.spec
        save_image_model(model, spec.model, spec.image_size, folder, spec.model_args)

    def head_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        heads = model.pretrained_cfg["classifier"]  # timm names its head(s) here
        return (heads,) if isinstance(heads, str) else tuple(heads)

    def features(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        return model.forward_head(model.forward_features(inputs), pre_logits=True)

    def head_layer(self, model: torch.nn.Module) -> torch.nn.Linear:
        return model.get_classifier()


class TimmImageKind(DeepKind):
    name = "timm_image"
    modality = Modality.IMAGE
    spec_type = TimmImageSpec
    task_type = ImageTask
    scorer_settings = ("runtime", "threads")
    # Convolutions carry an image model's work; its head is a matrix product. A Clip (ReLU6)
    # quantised with the convolution before it lets that convolution's output scale span the
    # clipped range only, not the wider range before clipping, which costs most labels.
    int8_operators = ("Conv", "Clip", "MatMul", "Gemm")

    def table(self, spec: TimmImageSpec, rows: pd.DataFrame) -> pd.DataFrame:
        return image_table(rows)

    def load_scorer(
        self,
        folder: Path,
        batch_size: int | None = None,
        precision: Precision = DEFAULT_PRECISION,
        device: str | None = None,
        runtime: RuntimeName = "auto",
        threads: int = 1,
    ) -> ImageClassifier:
        from rakuten_ray.models.vision import IMAGE_BATCH_SIZE, load_image_model

        return load_image_model(
            folder, device, batch_size or IMAGE_BATCH_SIZE, precision, runtime, threads
        )
