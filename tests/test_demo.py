"""``rakuten-ray demo``: the main job on the embedded default, end to end, made small.

The demo config's own models (the packaged multilingual-e5-small and EfficientNet-Lite0
backbones, the TF-IDF model) train on a 300-row catalogue with fewer tokens, pixels and
epochs; every
phase runs as ``make run`` runs it: Ray Train, fusion, the sealed bundle, the Ray Data
engine, the evaluation and its page.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rakuten_ray.bundle import load_bundle
from rakuten_ray.cli import main
from rakuten_ray.layout import RunLayout, ScoringLayout
from rakuten_ray.training.report import TrainingReport

pytestmark = pytest.mark.slow

TEST_ROWS = 40
#: Small enough for a test: short texts, tiny images, one epoch each (each deep model's one
#: epoch is its fitted head).
SMALL = [
    "text_models.e5_small.max_length=16",
    "text_models.e5_small.train.epochs=1",
    "text_models.e5_small.scaling.cpus_per_worker=1",
    "text_models.tfidf_svm.scaling.cpus_per_worker=1",
    *(
        f"image_models.{name}.{key}"
        for name in ("effnet_lite0",)
        for key in ("image_size=32", "train.epochs=1", "scaling.cpus_per_worker=1",
                    "train.loader_workers=0")
    ),
    "fusion.cv_folds=3",
]  # fmt: skip


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture, ray_local) -> None:
    workdir = tmp_path / "demo"
    run = RunLayout(workdir / "run")
    # An earlier demo's Ray Train folder: training anew must not continue from it.
    earlier = run.root / "base_models" / "e5_small" / "ray_train" / "e5_small"
    earlier.mkdir(parents=True)
    (earlier / "earlier_demo.txt").write_text("")
    argv = ["demo", "--workdir", str(workdir), "--rows", "300", "--test-rows", str(TEST_ROWS)]
    assert main([*argv, *(f"--set={item}" for item in SMALL)]) == 0
    printed = capsys.readouterr().out
    assert not (earlier / "earlier_demo.txt").exists()

    bundle = load_bundle(run.bundle.root)  # every file hashed against the manifest
    names = [e.name for e in [*bundle.fusion.text_models, *bundle.fusion.image_models]]
    assert names == ["tfidf_svm", "e5_small", "effnet_lite0"]
    report = TrainingReport.load(run.metrics)
    assert set(report.base_models) == set(names)
    predictions = pd.read_parquet(ScoringLayout(workdir / "scores").predictions)
    assert sorted(predictions["row"]) == list(range(TEST_ROWS))
    page = (workdir / "report" / "index.html").read_text()
    assert "Models, blends and stack" in page
    # The table the demo prints: one line per base model, blend and stack.
    for line in ("e5_small (hf_text)", "effnet_lite0 (timm_image)", "text blend", "image blend",
                 "stack on the demo test rows"):  # fmt: skip
        assert line in printed
    stack_f1 = float(printed.split("stack (cross-fitted)")[1].split()[0])
    assert stack_f1 == pytest.approx(report.stack.final_internal_test.weighted_f1, abs=5e-4)
