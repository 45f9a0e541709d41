"""What differs between fine-tuning a text model and an image model.

The Ray Train loop (:mod:`rakuten_ray.training.loop`) is shared; a task supplies the model,
the dataset over a table of rows, the batch collation and how a model is saved. Tables are
Parquet files with a ``label`` column (class index) and ``text`` (text tasks) or ``path``
(image tasks), so workers stream their rows from storage instead of receiving them inline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.config import ModelSpec
from rakuten_ray.images import ImageStatus, load_image

Batch = tuple[Any, torch.Tensor, torch.Tensor]
"""Model inputs, labels (class indices) and per-row loss weights."""
#: Submodules of a Hugging Face sequence classifier that belong to its classification head.
TEXT_HEADS = ("pre_classifier", "classifier")


class RowsDataset(Dataset):
    """Rows of a table, handed one by one to the collate function."""

    def __init__(self, rows: list[tuple[Any, int]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.rows[index]


class DeepTask(ABC):
    """One kind of deep base model, as the training loop sees it."""

    input_column: str

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def dataset(self, table: pd.DataFrame) -> RowsDataset:
        """Dataset of ``(input, label)`` pairs in table order."""
        inputs = table[self.input_column].tolist()
        return RowsDataset(list(zip(inputs, table["label"].astype(int).tolist(), strict=True)))

    @abstractmethod
    def build(self, weights_from: Path | None = None) -> torch.nn.Module:
        """A fresh model from the configured source, or from a saved model folder."""

    @abstractmethod
    def collate(self, training: bool) -> Callable[[Sequence[tuple[Any, int]]], Batch]:
        """Turns a list of dataset items into a model-ready batch."""

    @abstractmethod
    def forward(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        """Logits of a batch."""

    @abstractmethod
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Write the model in its deployable format (safetensors)."""

    @abstractmethod
    def head_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        """Names of the submodules that form the new classification head (the rest is the
        pretrained backbone)."""

    def features(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        """What the linear head reads for a batch (``head_fit: probe`` fits the head on it)."""
        raise NotImplementedError(f"{type(self).__name__} does not fit a probe head")

    def head_layer(self, model: torch.nn.Module) -> torch.nn.Linear:
        """The linear head that :meth:`features` feed."""
        raise NotImplementedError(f"{type(self).__name__} does not fit a probe head")


class TextTask(DeepTask):
    """Fine-tuning a Hugging Face sequence classifier."""

    input_column = "text"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.tokenizer: Any = None

    def build(self, weights_from: Path | None = None) -> torch.nn.Module:
        from rakuten_ray.models.transformer import create_text_model

        source = str(weights_from) if weights_from is not None else self.spec.model
        self.tokenizer, model = create_text_model(source, NUM_CLASSES, self.spec.pooling)
        return model

    def collate(self, training: bool) -> Callable[[Sequence[tuple[Any, int]]], Batch]:
        from rakuten_ray.models.transformer import tokenize

        def collate(items: Sequence[tuple[Any, int]]) -> Batch:
            texts, labels = zip(*items, strict=True)
            inputs = tokenize(self.tokenizer, texts, self.spec.max_length)
            return inputs, torch.tensor(labels), torch.ones(len(labels))

        return collate

    def forward(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        return model(**inputs)

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        from rakuten_ray.models.transformer import TextSettings, save_text_model

        spec = self.spec
        settings = TextSettings(spec.template, spec.max_length, spec.pooling)
        save_text_model(model, self.tokenizer, settings, folder)

    def head_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        # Hugging Face sequence classifiers put their head in ``classifier`` (DistilBERT-like
        # models add a ``pre_classifier``); SequenceClassifier holds that model as ``network``.
        network = model.network
        return tuple(f"network.{name}" for name in TEXT_HEADS if hasattr(network, name))


class ImageTask(DeepTask):
    """Fine-tuning a timm image classifier on images read with the safe loader."""

    input_column = "path"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.transforms: tuple[Callable, Callable] | None = None

    def build(self, weights_from: Path | None = None) -> torch.nn.Module:
        from rakuten_ray.models.vision import (
            WEIGHTS_FILE,
            create_image_model,
            image_transforms,
        )

        pretrained = str(weights_from / WEIGHTS_FILE) if weights_from else self.spec.pretrained
        model = create_image_model(self.spec.model, NUM_CLASSES, pretrained)
        self.transforms = image_transforms(model, self.spec.image_size, self.spec.augmentation)
        # Channels-last, as in scoring: on CPU a training step of EfficientNet-Lite0 at 224 px
        # costs about half as much per image (benchmarks/image_layout.py); cuDNN prefers it too.
        return model.to(memory_format=torch.channels_last)

    def collate(self, training: bool) -> Callable[[Sequence[tuple[Any, int]]], Batch]:
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

        save_image_model(model, self.spec.model, self.spec.image_size, folder)

    def head_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        heads = model.pretrained_cfg["classifier"]  # timm names its head(s) here
        return (heads,) if isinstance(heads, str) else tuple(heads)

    def features(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        # The unwrapped network: DistributedDataParallel only exposes ``forward``.
        network = getattr(model, "module", model)
        return network.forward_head(network.forward_features(inputs), pre_logits=True)

    def head_layer(self, model: torch.nn.Module) -> torch.nn.Linear:
        return getattr(model, "module", model).get_classifier()


def make_task(spec: ModelSpec) -> DeepTask:
    """The task for a deep model spec."""
    tasks: dict[str, type[DeepTask]] = {"hf_text": TextTask, "timm_image": ImageTask}
    if spec.kind not in tasks:
        raise ValueError(f"model {spec.name!r}: kind {spec.kind!r} is not trained with Ray Train")
    return tasks[spec.kind](spec)


def move_to(inputs: Any, device: torch.device) -> Any:
    """Move a tensor or a mapping of tensors to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    return {key: value.to(device, non_blocking=True) for key, value in inputs.items()}
