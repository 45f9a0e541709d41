"""Leak-free, stratified, reproducible train / validation / internal-test splits.

The original protocol holds out 15% as an internal test, then 15% of the rest as validation.
Base models train on ``train``; calibration, blending and stacking are fitted on ``val`` and
``test`` only. The split is saved next to a run as a manifest of row indices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Row indices (the catalogue's index values) of each part of the protocol."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    test_fraction: float
    val_fraction: float

    def part(self, name: str) -> np.ndarray:
        """Row indices of ``train``, ``val`` or ``test``."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        return getattr(self, name)

    @property
    def held_out(self) -> np.ndarray:
        """Rows no base model trains on: validation then internal test."""
        return np.concatenate([self.val, self.test])

    def save(self, path: str | Path) -> None:
        """Write the manifest as JSON (sorted indices, so it diffs well)."""
        payload = {
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "val_fraction": self.val_fraction,
            **{name: sorted(int(i) for i in self.part(name)) for name in SPLIT_NAMES},
        }
        Path(path).write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Splits:
        """Read a manifest written by :meth:`save`."""
        payload = json.loads(Path(path).read_text())
        parts = {name: np.asarray(payload[name], dtype=np.int64) for name in SPLIT_NAMES}
        return cls(
            **parts,
            seed=int(payload["seed"]),
            test_fraction=float(payload["test_fraction"]),
            val_fraction=float(payload["val_fraction"]),
        )


def _take_fraction(
    rows: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (kept, taken) with ``fraction`` of each class taken.

    Each class contributes ``round(n * fraction)`` rows, but never its last row, so a class
    with a single row stays in the training part.
    """
    taken: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rows[labels == label]
        members = members[rng.permutation(len(members))]
        count = min(int(round(len(members) * fraction)), len(members) - 1)
        taken.append(members[:count])
    taken_rows = np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)
    kept_rows = np.setdiff1d(rows, taken_rows)
    return kept_rows, taken_rows


def stratified_splits(
    labels: pd.Series, seed: int = 42, test_fraction: float = 0.15, val_fraction: float = 0.15
) -> Splits:
    """Split labelled rows per class.

    Args:
        labels: ``prdtypecode`` indexed by row index.
        seed: the same seed and labels always give the same split.
        test_fraction: share of all rows held out as the internal test.
        val_fraction: share of the remaining rows used for validation.

    Returns:
        The three disjoint parts, covering every row.
    """
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    rng = np.random.default_rng(seed)
    rows = labels.index.to_numpy(dtype=np.int64)
    values = labels.to_numpy()
    rest, test = _take_fraction(rows, values, test_fraction, rng)
    rest_labels = labels.reindex(rest).to_numpy()
    train, val = _take_fraction(rest, rest_labels, val_fraction, rng)
    return Splits(train, val, test, seed, test_fraction, val_fraction)
