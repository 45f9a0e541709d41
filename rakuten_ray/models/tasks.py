"""What a Ray Train kind declares for the shared training loop.

The loop (:mod:`rakuten_ray.training.loop`) is the same for every deep model; a task supplies
the model, the batch collation, the forward pass, its classification head and how it is
saved. Each Ray Train kind (:mod:`rakuten_ray.models.kinds`) defines its task. Tables
(:mod:`rakuten_ray.models.tables`) have a ``label`` column (class index) and the task's
``input_column``; training writes them to Parquet, so workers stream their rows from storage
instead of receiving them inline.

This module imports torch lazily: kind modules import it whenever a config is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import torch

    from rakuten_ray.models.spec import DeepModelSpec

Batch = tuple[Any, "torch.Tensor", "torch.Tensor"]
"""Model inputs, labels (class indices) and per-row loss weights."""


class RowsDataset:
    """Rows of a table, handed one by one to the collate function (a map-style dataset)."""

    def __init__(self, rows: list[tuple[Any, int]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.rows[index]


class DeepTask(ABC):
    """One kind of deep base model, as the training loop sees it."""

    input_column: str

    def __init__(self, spec: DeepModelSpec) -> None:
        self.spec: Any = spec

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

    def fixed_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        """Names of the backbone's submodules that keep their pretrained weights throughout."""
        return ()

    def features(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        """What the linear head reads for a batch (``head_fit: probe`` fits the head on it);
        ``model`` is unwrapped from DistributedDataParallel."""
        raise NotImplementedError(f"{type(self).__name__} does not fit a probe head")

    def head_layer(self, model: torch.nn.Module) -> torch.nn.Linear:
        """The linear head that :meth:`features` feed, in the unwrapped ``model``."""
        raise NotImplementedError(f"{type(self).__name__} does not fit a probe head")

