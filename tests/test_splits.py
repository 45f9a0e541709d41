"""Stratified, reproducible, disjoint splits saved as a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten_ray.splits import Splits, stratified_splits


def labels(counts: dict[int, int]) -> pd.Series:
    codes = np.concatenate([[code] * n for code, n in counts.items()])
    rng = np.random.default_rng(0)
    rows = rng.choice(100_000, size=len(codes), replace=False)
    return pd.Series(codes[rng.permutation(len(codes))], index=rows, name="prdtypecode")


def test_disjoint_cover_and_proportions() -> None:
    y = labels({10: 400, 2583: 1200, 1180: 90, 60: 1})
    s = stratified_splits(y, seed=42)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert sum(map(len, parts)) == len(y) and set().union(*parts) == set(y.index)
    assert abs(len(s.test) / len(y) - 0.15) < 0.01
    assert abs(len(s.val) / (len(y) - len(s.test)) - 0.15) < 0.01
    for code, n in ((10, 400), (2583, 1200), (1180, 90)):
        in_test = (y.loc[s.test] == code).sum()
        assert abs(in_test - 0.15 * n) <= 1
    assert (y.loc[s.train] == 60).sum() == 1, "a single-row class stays in train"


def test_reproducible_and_seed_dependent() -> None:
    y = labels({10: 100, 40: 100})
    a, b = stratified_splits(y, seed=7), stratified_splits(y, seed=7)
    c = stratified_splits(y, seed=8)
    assert all(np.array_equal(a.part(n), b.part(n)) for n in ("train", "val", "test"))
    assert not np.array_equal(a.test, c.test)


def test_manifest_round_trip(tmp_path: Path) -> None:
    s = stratified_splits(labels({10: 50, 40: 70}), seed=3)
    s.save(tmp_path / "splits.json")
    back = Splits.load(tmp_path / "splits.json")
    assert back.seed == 3 and back.test_fraction == 0.15
    for name in ("train", "val", "test"):
        assert np.array_equal(np.sort(back.part(name)), np.sort(s.part(name)))
    assert np.array_equal(np.sort(back.held_out), np.sort(np.concatenate([s.val, s.test])))


def test_bad_fraction_refused() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_splits(labels({10: 10}), test_fraction=1.5)
