"""``rakuten-ray audit``: deliberately changed labels come out on top, bad label files are
refused before any work, and the page works in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import render_in_chromium, write_prediction_table

from rakuten_ray.catalog import CATEGORY_NAMES, CLASS_CODES, X_TEST_FILE
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.layout import AuditLayout
from rakuten_ray.synthetic import Y_TEST_FILE

ROWS = 400
CHANGED = 20


def change_labels(labels: pd.Series, count: int, seed: int) -> tuple[pd.Series, pd.Index]:
    """``labels`` with ``count`` rows moved to another code, and which rows."""
    rng = np.random.default_rng(seed)
    chosen = labels.index[rng.choice(len(labels), count, replace=False)]
    changed = labels.copy()
    for row in chosen:
        others = [c for c in CLASS_CODES if c != labels[row]]
        changed[row] = others[rng.integers(len(others))]
    return changed, chosen


def audit(scored: Path, labels: pd.Series, out: Path, *extra: str) -> int:
    labels_csv = out.parent / f"{out.name}_labels.csv"
    labels.to_csv(labels_csv)
    argv = ["audit", "--predictions", str(scored), "--labels", str(labels_csv)]
    return main([*argv, "--out", str(out), *extra])


def recall_at(suspects: pd.DataFrame, changed: pd.Index, k: int) -> float:
    return float(suspects.head(k)["index"].isin(changed).mean() * k / len(changed))


def test_changed_labels_rank_at_the_top(tmp_path: Path) -> None:
    _, labels = write_prediction_table(tmp_path / "scored", ROWS)
    current, changed = change_labels(labels, CHANGED, seed=0)
    out = tmp_path / "audit"
    assert audit(tmp_path / "scored", current, out) == 0

    suspects = pd.read_parquet(AuditLayout(out).suspects)
    assert (suspects["current_prdtypecode"] != suspects["proposed_prdtypecode"]).all()
    assert suspects["dispute_score"].is_monotonic_decreasing
    assert list(suspects["rank"]) == list(range(1, len(suspects) + 1))
    names = suspects["proposed_category"]
    assert names.tolist() == [CATEGORY_NAMES[c] for c in suspects["proposed_prdtypecode"]]
    # The model is right on about 80% of rows: those changed labels it disputes strongly.
    assert recall_at(suspects, changed, 2 * CHANGED) >= 0.7
    assert len(pd.read_csv(AuditLayout(out).suspects_csv)) == len(suspects)

    summary = json.loads(AuditLayout(out).summary.read_text())
    assert summary["rows"] == ROWS and summary["suspects"] == len(suspects)
    agree = sum(v["agreement_rate"] * v["rows"] for v in summary["per_class"].values() if v["rows"])
    assert summary["agreement_rate"] == pytest.approx(agree / ROWS)
    confusion = np.array(summary["confusion"]["current_by_proposed"])
    assert confusion.sum() == ROWS and confusion.sum() - np.trace(confusion) == len(suspects)
    assert 0 < summary["expected_errors"] < ROWS


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda y: y.iloc[5:], "no current code for 5 predicted row"),
        (lambda y: pd.concat([y, pd.Series([10], index=[9])]), "1 row(s) that the predictions"),
        (lambda y: y.replace({y.iloc[0]: 12345}), "outside the 27 product type codes"),
    ],
    ids=["missing-rows", "extra-rows", "unknown-code"],
)
def test_bad_labels_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, mutate, message: str
) -> None:
    _, labels = write_prediction_table(tmp_path / "scored", ROWS)
    out = tmp_path / "audit"
    assert audit(tmp_path / "scored", mutate(labels).rename("prdtypecode"), out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_wrong_header_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_prediction_table(tmp_path / "scored", ROWS)
    bad = tmp_path / "bad.csv"
    bad.write_text(",code\n1000,10\n")
    argv = ["audit", "--predictions", str(tmp_path / "scored"), "--labels", str(bad)]
    assert main([*argv, "--out", str(tmp_path / "audit")]) == EXIT_SCHEMA_ERROR
    assert "prdtypecode" in capsys.readouterr().err


def test_a_non_empty_out_is_kept_unless_overwritten(tmp_path: Path) -> None:
    _, labels = write_prediction_table(tmp_path / "scored", ROWS)
    out = tmp_path / "audit"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert audit(tmp_path / "scored", labels, out) == EXIT_SCHEMA_ERROR
    assert (out / "keep.txt").exists()
    assert audit(tmp_path / "scored", labels, out, "--overwrite") == 0
    assert not (out / "keep.txt").exists()


@pytest.mark.slow
def test_audit_of_a_real_scoring_run(
    tiny_run: Path, tiny_catalogue: Path, tmp_path: Path
) -> None:
    """Score the tiny catalogue's test rows, change some of their labels, audit them with
    thumbnails and titles, and load the page in Chromium."""
    scored = tmp_path / "scored"
    images = tiny_catalogue / "images/image_test"
    argv = ["score", "--bundle", str(tiny_run / "bundle"), "--input",
            str(tiny_catalogue / X_TEST_FILE), "--images", str(images), "--out", str(scored),
            "--engine", "local"]  # fmt: skip
    assert main(argv) == 0
    labels = pd.read_csv(tiny_catalogue / Y_TEST_FILE, index_col=0)["prdtypecode"]
    current, changed = change_labels(labels, 10, seed=1)
    out = tmp_path / "audit"
    extra = ["--images", str(images), "--input", str(tiny_catalogue / X_TEST_FILE)]
    assert audit(scored, current, out, *extra) == 0

    suspects = pd.read_parquet(AuditLayout(out).suspects)
    # Measured on these 60 rows (the tiny bundle's stack scores about 0.75 F1): 8 of the 10
    # changed labels in the top 20.
    assert recall_at(suspects, changed, 20) >= 0.6
    thumbs = sorted(AuditLayout(out).thumbnails.glob("*.jpg"))
    assert thumbs, "no thumbnail written"
    page = AuditLayout(out).page.read_text()
    assert str(images) not in page and str(tmp_path) not in page  # relative paths only
    dom = render_in_chromium(AuditLayout(out).page, tmp_path)
    assert dom.count('<tr data-current="') == len(suspects)
    assert "thumbs/" in dom
    titles = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0)["designation"]
    top = int(suspects["index"].iloc[0])
    assert str(titles[top]).split()[0] in dom
