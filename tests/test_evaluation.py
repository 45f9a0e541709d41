"""Evaluating predictions against labels: the metrics, the per-class table, the figures, the
page, and ``rakuten-ray evaluate`` on a real scoring output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import render_in_chromium, write_prediction_table

from rakuten_ray.catalog import CATEGORY_NAMES, CLASS_CODES, X_TEST_FILE, codes_to_indices
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.evaluation import (
    calibration_curves,
    compute_evaluation,
    evaluate_predictions,
    per_class_report,
)
from rakuten_ray.fusion.calibration import apply_temperature
from rakuten_ray.layout import INDEX_COLUMN, RunLayout, ScoringLayout
from rakuten_ray.metrics import weighted_f1
from rakuten_ray.synthetic import Y_TEST_FILE

ROWS = 120


def write_predictions(out: Path, seed: int = 0) -> tuple[Path, pd.Series]:
    return write_prediction_table(out, ROWS, seed)


def test_metrics_match_the_predictions(tmp_path: Path) -> None:
    labels_csv, labels = write_predictions(tmp_path / "scored")
    evaluation = compute_evaluation(tmp_path / "scored", labels_csv, tmp_path / "report")
    table = pd.read_parquet(ScoringLayout(tmp_path / "scored").predictions)
    y_true = codes_to_indices(labels.loc[table[INDEX_COLUMN]].to_numpy())
    y_pred = codes_to_indices(table["prdtypecode"].to_numpy())
    final = evaluation.metrics["final"]
    assert final["weighted_f1"] == pytest.approx(weighted_f1(y_true, y_pred))
    assert final["rows"] == ROWS
    assert evaluation.metrics["rows_with_image"] + evaluation.metrics["rows_without_image"] == ROWS
    assert evaluation.metrics["rows_without_image"] == ROWS // 4
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written == evaluation.metrics
    figures = [path for section in evaluation.figures.values() for path in section.values()]
    assert len(figures) >= 5
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_class_report_names_every_category() -> None:
    y = np.arange(len(CLASS_CODES))
    report = per_class_report(y, y)
    assert list(report["prdtypecode"]) == list(CLASS_CODES)
    assert list(report["category"]) == [CATEGORY_NAMES[c] for c in CLASS_CODES]
    assert (report["f1"] == 1.0).all() and (report["support"] == 1).all()


def test_report_page_is_self_contained(tmp_path: Path) -> None:
    labels_csv, _ = write_predictions(tmp_path / "scored")
    metrics = evaluate_predictions(tmp_path / "scored", labels_csv, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    # Figures inlined, nothing fetched from elsewhere.
    assert "data:image/png;base64," in page
    assert "<script" not in page and "<link" not in page and "src=\"http" not in page
    assert json.dumps(metrics["final"]["weighted_f1"]) in page
    assert (tmp_path / "report" / "per_class.csv").is_file()


def test_report_shows_its_headline_numbers_in_a_browser(tmp_path: Path) -> None:
    """Headline first: weighted F1, the share accepted automatically and ECE, as a reader
    sees them once Chromium has rendered the page."""
    labels_csv, _ = write_predictions(tmp_path / "scored")
    metrics = evaluate_predictions(tmp_path / "scored", labels_csv, tmp_path / "report")
    shot = tmp_path / "report.png"
    dom = render_in_chromium(tmp_path / "report" / "index.html", tmp_path, screenshot=shot)
    cards = dom[dom.index('class="cards"') : dom.index("<h2>")]
    final, routing = metrics["final"], metrics["routing"]
    assert f"{final['weighted_f1']:.3f}" in cards
    assert f"{routing['coverage']:.1%}" in cards
    assert f"{final['ece']:.3f}" in cards
    assert shot.stat().st_size > 20_000  # a page with figures, not a blank one


def test_cli_evaluate_prints_the_scores(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels_csv, _ = write_predictions(tmp_path / "scored")
    argv = ["evaluate", "--predictions", str(tmp_path / "scored"), "--labels", str(labels_csv)]
    assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert f"weighted F1 {metrics['final']['weighted_f1']:.4f}" in printed
    assert f"on {ROWS} rows" in printed


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("prdtypecode\n1000,12345\n", "outside the 27 product type codes"),
        ("prdtypecode\n7,10\n8,40\n", "no label matches"),
        ("code\n1000,10\n", "prdtypecode"),
    ],
    ids=["unknown-code", "no-matching-row", "wrong-header"],
)
def test_cli_evaluate_refuses_bad_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture, labels: str, message: str
) -> None:
    write_predictions(tmp_path / "scored")
    bad = tmp_path / "bad.csv"
    bad.write_text("," + labels)
    argv = ["evaluate", "--predictions", str(tmp_path / "scored"), "--labels", str(bad)]
    assert main([*argv, "--out", str(tmp_path / "report")]) == EXIT_SCHEMA_ERROR
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
def test_evaluate_a_real_scoring_run_with_calibration_curves(
    tiny_run: Path, tiny_catalogue: Path, tmp_path: Path
) -> None:
    """Score the tiny catalogue's test rows with the session bundle, then evaluate them with
    the run's calibration diagrams (one per base model, before and after temperature)."""
    scored = tmp_path / "scored"
    score = [
        "score", "--bundle", str(tiny_run / "bundle"), "--input",
        str(tiny_catalogue / X_TEST_FILE), "--images", str(tiny_catalogue / "images/image_test"),
        "--out", str(scored), "--engine", "local",
    ]  # fmt: skip
    assert main(score) == 0
    report = tmp_path / "report"
    labels = tiny_catalogue / Y_TEST_FILE
    argv = ["evaluate", "--predictions", str(scored), "--labels", str(labels)]
    assert main([*argv, "--out", str(report), "--run", str(tiny_run)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["final"]["rows"] == len(pd.read_csv(labels, index_col=0))
    # The TF-IDF model alone reaches about 0.75 on these rows; the stack is not far below.
    assert metrics["final"]["weighted_f1"] > 0.5
    models = json.loads((tiny_run / "metrics.json").read_text())["base_models"]
    for name in models:
        assert (report / f"reliability_{name}.png").is_file()
    # After temperature, each held-out row is scaled by the temperature fitted without it.
    for name, curve in calibration_curves(tiny_run).items():
        (probs, _), = [v for k, v in curve.items() if "without each row's fold" in k]
        logits = pd.read_parquet(RunLayout(tiny_run).heldout_scores(name)).to_numpy()
        bundle_t = models[name]["calibration"]["temperature"]
        assert not np.allclose(probs, apply_temperature(logits, bundle_t))
