"""``rakuten-ray demo``: the main job on the embedded default, end to end.

Generates the demo catalogue, trains the demo config (TF-IDF in a Ray task, the deep models with
Ray Train), fits the fusion, exports the deep models and seals the bundle, scores the demo test
rows with the Ray Data engine, evaluates them against their labels, and writes a one-page
report.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rakuten_ray.catalog import IMAGE_SUBDIRS, X_TEST_FILE
from rakuten_ray.config import load_config
from rakuten_ray.layout import RunLayout, ScoringLayout
from rakuten_ray.lifecycle import PhaseClock
from rakuten_ray.training.report import (
    SUMMARY_HEADER,
    Scores,
    TrainingReport,
    format_summary,
    summary_row,
    summary_rows,
)

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def html_sections(
    table: list[list[str]], report: TrainingReport, timings: dict[str, float]
) -> list[str]:
    """The demo's own sections of the page: every model, blend and stack; temperatures and
    weights; timings."""
    from rakuten_ray.evaluation import html_table

    fusion = [
        [name, f"{model.calibration.temperature:.3f}", f"{model.blend_weight:.3f}"]
        for name, model in report.base_models.items()
    ]
    return [
        "<h2>Models, blends and stack</h2>",
        "<p>Base models, blends and the cross-fitted stack: internal-test rows (never trained "
        "on; the stack's rows predicted out of fold). Then the demo's own test rows, scored "
        "by the Ray engine with the sealed bundle.</p>",
        html_table(SUMMARY_HEADER, table),
        "<h2>Calibration and blending</h2>",
        html_table(["model", "temperature", "blend weight"], fusion),
        "<h2>Timings</h2>",
        html_table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]),
    ]


def run_demo(
    workdir: Path, rows: int = 2000, test_rows: int = 500, seed: int = 0,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """Run every phase in ``workdir``; returns the evaluation metrics of the demo test rows."""
    from rakuten_ray.evaluation import compute_evaluation, write_html_report
    from rakuten_ray.ray_session import ensure_ray
    from rakuten_ray.scoring.run import run_scoring
    from rakuten_ray.synthetic import Y_TEST_FILE, generate_catalogue
    from rakuten_ray.training.protocol import run_training

    clock = PhaseClock(label="[demo] ")
    data, scores, pages = (workdir / n for n in ("data", "scores", "report"))
    run = RunLayout(workdir / "run")
    config = load_config(DEMO_CONFIG, overrides)
    with clock.phase("generate the demo catalogue"):
        generate_catalogue(data, rows=rows, test_rows=test_rows, seed=seed)
    with clock.phase("start Ray"):
        ensure_ray()
    models = len(config.models())
    with clock.phase(f"train (splits, {models} base models, fusion, refit, export, bundle)"):
        # Each demo trains anew: an earlier demo's run, Ray Train checkpoints included, goes.
        shutil.rmtree(run.root, ignore_errors=True)
        report = run_training(config, data, run.root, log=lambda line: print(f"  {line}"))
    with clock.phase("score the demo test rows (Ray Data engine)"):
        summary = run_scoring(
            run.bundle.root, data / X_TEST_FILE, data / IMAGE_SUBDIRS["test"], scores,
            engine="ray", overwrite=True, log=lambda line: print(f"  {line}"),
        )  # fmt: skip
    with clock.phase("evaluate and write the report"):
        evaluation = compute_evaluation(scores, data / Y_TEST_FILE, pages, run.root)
        on_test_rows = Scores(**evaluation.metrics["final"])
        table = [*summary_rows(report), summary_row("stack on the demo test rows", on_test_rows)]
    sections = html_sections(table, report, clock.seconds)
    write_html_report(pages / "index.html", "rakuten-ray demo", evaluation, sections)
    print()
    print(format_summary(table))
    print(f"\nscoring: {summary.rows_per_second:.1f} rows/s on {summary.rows} rows")
    print(f"bundle:      {run.bundle.root}")
    print(f"predictions: {ScoringLayout(scores).predictions}")
    print(f"report:      {pages / 'index.html'}")
    return evaluation.metrics
