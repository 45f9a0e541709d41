"""The CPU runtime: ONNX exports checked against PyTorch when a bundle is sealed, scoring
that runs them, and the image preparation stage that feeds the image models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

# The held-out scoring tests' tiny models and rows (a missing and a corrupt image among them).
from test_heldout_scoring import image_model, rows, text_model  # noqa: F401, I001
from transformers import AutoModelForSequenceClassification

from rakuten_ray.bundle import BundleError, open_bundle
from rakuten_ray.catalog import CatalogueDir, image_path
from rakuten_ray.config import ExportParams, StagePool
from rakuten_ray.images import load_image
from rakuten_ray.layout import CROP_PREFIX, BundleLayout, ImageStatus
from rakuten_ray.models.registry import get_kind
from rakuten_ray.models.runtime import (
    INT8_FILE,
    ONNX_FILE,
    RECORD_FILE,
    HeldoutLogits,
    Int8Trial,
    OnnxForward,
    RuntimeRecord,
    TorchForward,
    check_exports,
    forward_precision,
    heldout_comparison,
    max_prob_diff,
    select_forward,
)
from rakuten_ray.models.vision import load_image_model
from rakuten_ray.scoring.stages import ImagePrepStage, ImageStage, TextStage
from rakuten_ray.training.report import TrainingReport

KINDS = ["hf_text", "timm_image"]


def exported(
    folder: Path, dest: Path, kind: str, checked: pd.DataFrame, min_agreement: float = 0.995,
    int8: Int8Trial | None = None,
) -> RuntimeRecord:  # fmt: skip
    """A copy of a saved model with its checked export, as a seal writes it."""
    shutil.copytree(folder, dest)
    scorer = get_kind(kind).load_scorer(dest, device="cpu", runtime="torch")
    return check_exports(scorer, dest, checked, min_agreement, int8)


def int8_trial(rows: pd.DataFrame, min_speedup: float) -> Int8Trial:  # noqa: F811
    """A trial of a text model's int8 copy, its scales fixed on every other row."""
    return Int8Trial(get_kind("hf_text").int8_operators, rows.iloc[::2], min_speedup)


def model_folder(kind: str, text_model: Path, image_model: Path) -> Path:  # noqa: F811
    return text_model if kind == "hf_text" else image_model


@pytest.mark.parametrize("kind", KINDS)
def test_the_onnx_export_scores_as_pytorch_does_and_a_row_alone_as_among_others(
    kind: str, text_model: Path, image_model: Path, rows: pd.DataFrame, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    dest = tmp_path / "model"
    record = exported(model_folder(kind, text_model, image_model), dest, kind, rows)
    assert record.file == ONNX_FILE and record.precision == "fp32" and record.row_independent
    assert record.checked_rows == (len(rows) if kind == "hf_text" else len(rows) - 2)
    assert record.fp32_agreement >= 0.995 and record.fp32_max_prob_diff < 1e-4
    assert RuntimeRecord(**json.loads((dest / RECORD_FILE).read_text())) == record

    onnx = get_kind(kind).load_scorer(dest, device="cpu")  # runtime "auto" on a CPU
    reference = get_kind(kind).load_scorer(dest, device="cpu", runtime="torch")
    assert isinstance(onnx.forward, OnnxForward)
    assert isinstance(reference.forward, TorchForward)
    whole = onnx.score_rows(rows)
    np.testing.assert_allclose(whole, reference.score_rows(rows), atol=1e-4, rtol=0)
    # Fixed call shapes on a fixed thread count: the same bits in any company.
    backwards = onnx.score_rows(rows.iloc[::-1])
    pd.testing.assert_frame_equal(backwards.loc[whole.index], whole, check_exact=True)
    alone = pd.concat([onnx.score_rows(rows.iloc[[i]]) for i in range(0, len(rows), 6)])
    pd.testing.assert_frame_equal(alone, whole.loc[alone.index], check_exact=True)


def test_a_static_int8_copy_that_passes_the_checks_and_runs_faster_is_what_scoring_loads(
    text_model: Path, rows: pd.DataFrame, tmp_path: Path  # noqa: F811
) -> None:
    # As a seal exports it. Any copy is fast enough at a required speed-up of 0: what
    # decides is the checks. Half the rows are checked, scales are fixed on the other half.
    dest = tmp_path / "model"
    params = ExportParams(int8=True, int8_min_speedup=0, check_text_rows=20, calibration_rows=16)
    record = get_kind("hf_text").export(text_model, dest, rows, params)
    assert (record.file, record.precision, record.scoring_precision) == (INT8_FILE, "int8", "int8")
    assert record.int8_row_independent and record.int8_faster
    assert record.int8_agreement >= 0.995 and 0.0 < record.int8_max_prob_diff < 0.05
    assert (record.checked_rows, record.calibration_rows) == (20, 16)
    assert record.fp32_seconds > 0 and record.int8_seconds > 0
    assert not (dest / ONNX_FILE).exists()  # scoring loads the int8 copy only
    assert RuntimeRecord(**json.loads((dest / RECORD_FILE).read_text())) == record

    scorer = get_kind("hf_text").load_scorer(dest, device="cpu")
    assert isinstance(scorer.forward, OnnxForward) and forward_precision(scorer) == "int8"
    # Activation scales fixed at seal: a row's logits are the same bits in any company.
    whole = scorer.score_rows(rows)
    backwards = scorer.score_rows(rows.iloc[::-1])
    pd.testing.assert_frame_equal(backwards.loc[whole.index], whole, check_exact=True)
    alone = pd.concat([scorer.score_rows(rows.iloc[[i]]) for i in range(0, len(rows), 6)])
    pd.testing.assert_frame_equal(alone, whole.loc[alone.index], check_exact=True)


def test_an_int8_copy_that_moves_labels_or_is_not_faster_is_measured_and_left_out(
    text_model: Path, rows: pd.DataFrame, tmp_path: Path  # noqa: F811
) -> None:
    # No copy runs a million times as fast as fp32: measured, reported, not kept.
    slow = exported(text_model, tmp_path / "slow", "hf_text", rows, int8=int8_trial(rows, 1e6))
    assert slow.int8_agreement >= 0.995 and slow.int8_row_independent
    assert slow.int8_faster is False and slow.int8_seconds > 0
    assert (slow.file, slow.scoring_precision) == (ONNX_FILE, "fp32")
    assert not (tmp_path / "slow" / INT8_FILE).exists()

    # A head whose classes differ by a thousandth of its weights: int8's rounding moves
    # labels, fp32's does not.
    close = tmp_path / "close"
    shutil.copytree(text_model, close)
    network = AutoModelForSequenceClassification.from_pretrained(close)
    with torch.no_grad():
        weight = network.classifier.weight
        weight.copy_(weight[0] + 1e-3 * weight)
        network.classifier.bias.zero_()
    network.save_pretrained(close)
    strict = exported(close, tmp_path / "strict", "hf_text", rows, int8=int8_trial(rows, 0.0))
    assert strict.fp32_agreement >= 0.995 and strict.int8_faster
    assert strict.int8_agreement is not None and strict.int8_agreement < 0.995
    assert strict.precision == "fp32" and strict.file == ONNX_FILE
    assert not (tmp_path / "strict" / INT8_FILE).exists()


def test_an_export_that_misses_the_agreement_is_not_kept(
    image_model: Path, rows: pd.DataFrame, tmp_path: Path  # noqa: F811
) -> None:
    # No export can give PyTorch's label on more than every row.
    record = exported(image_model, tmp_path / "m", "timm_image", rows, min_agreement=1.01)
    assert record.file is None and record.fp32_agreement == 1.0
    assert not (tmp_path / "m" / ONNX_FILE).exists()
    assert RuntimeRecord(**json.loads((tmp_path / "m" / RECORD_FILE).read_text())) == record
    scorer = get_kind("timm_image").load_scorer(tmp_path / "m", device="cpu")
    assert isinstance(scorer.forward, TorchForward)


def test_the_check_measures_held_out_logits_of_either_precision_against_cpu_scoring(
    text_model: Path, rows: pd.DataFrame, tmp_path: Path  # noqa: F811
) -> None:
    # Held-out logits as a CPU computes them (fp32, in other call sizes than the check's)
    # and as bf16 autocast computes them (what a GPU cluster fits fusion on; here the CPU's
    # own bf16 path).
    kind = get_kind("hf_text")
    heldout = kind.load_scorer(text_model, batch_size=4, device="cpu", runtime="torch")
    fp32 = HeldoutLogits(heldout.score_rows(rows), forward_precision(heldout))
    heldout.forward.autocast = torch.bfloat16
    bf16 = HeldoutLogits(heldout.score_rows(rows), forward_precision(heldout))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")

    dest = tmp_path / "model"
    shutil.copytree(text_model, dest)
    scorer = kind.load_scorer(dest, device="cpu", runtime="torch")
    record = check_exports(scorer, dest, rows, 0.995, heldout=bf16)
    assert RuntimeRecord(**json.loads((dest / RECORD_FILE).read_text())) == record
    assert (record.file, record.scoring_precision) == (ONNX_FILE, "fp32")
    assert (record.heldout_precision, record.precision_matches) == ("bf16", False)
    # What CPU scoring computes: the export, loaded as the scoring stages load it.
    scored = kind.load_scorer(dest, device="cpu").score_rows(rows)
    stored = bf16.logits.loc[scored.index].to_numpy()
    assert record.heldout_max_prob_diff == max_prob_diff(stored, scored.to_numpy())
    assert record.heldout_agreement >= 0.95

    same = heldout_comparison(fp32, scored, "fp32")
    assert same["precision_matches"] is True and same["heldout_agreement"] >= 0.995
    assert 0.0 < same["heldout_max_prob_diff"] < 1e-5
    assert record.heldout_max_prob_diff > 10 * same["heldout_max_prob_diff"]


def test_the_runtime_is_chosen_once_pytorch_on_a_gpu_or_when_asked(tmp_path: Path) -> None:
    record = RuntimeRecord(ONNX_FILE, "fp32", 10, 1.0, 0.0)
    (tmp_path / RECORD_FILE).write_text(record.to_json())

    def sentinel() -> Any:
        return "torch"

    assert select_forward(tmp_path, "auto", torch.device("cuda"), 1, sentinel) == "torch"
    assert select_forward(tmp_path, "torch", torch.device("cpu"), 1, sentinel) == "torch"
    assert select_forward(tmp_path / "unsealed", "auto", torch.device("cpu"), 1, sentinel) == (
        "torch"
    )


@pytest.mark.slow
def test_the_sealed_bundle_holds_checked_exports_that_scoring_verifies(
    tiny_run: Path, tmp_path: Path
) -> None:
    bundle = open_bundle(tiny_run / "bundle")
    report = TrainingReport.from_dict(bundle.manifest["metrics"])
    deep = [s.name for s in bundle.config.models() if s.kind != "tfidf_svm"]
    assert sorted(report.runtimes) == sorted(deep)
    files = bundle.manifest["files"]
    assert any(record.file for record in report.runtimes.values())
    for name, record in report.runtimes.items():
        folder = BundleLayout.model(name)
        assert f"{folder}/{RECORD_FILE}" in files
        kept = record.fp32_agreement >= bundle.config.export.min_agreement
        kept = kept and record.row_independent
        assert (record.file is not None) == kept
        if kept:
            assert f"{folder}/{record.file}" in files
        # Held-out logits computed on CPUs, rescored on CPUs: the same arithmetic, and the
        # measured difference (other call sizes, and ONNX Runtime's kernels) recorded.
        assert report.base_models[name].heldout_precision == "fp32"
        assert (record.heldout_precision, record.scoring_precision) == ("fp32", "fp32")
        assert record.precision_matches is True
        assert record.heldout_agreement >= 0.99 and record.heldout_max_prob_diff < 1e-4
        sealed = json.loads(bundle.verified(f"{folder}/{RECORD_FILE}").read_text())
        assert RuntimeRecord(**sealed) == record
    assert report.base_models["tfidf_svm"].heldout_precision is None

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", copy)
    name, record = next((n, r) for n, r in report.runtimes.items() if r.file)
    export = copy / BundleLayout.model(name) / record.file
    data = bytearray(export.read_bytes())
    data[len(data) // 2] ^= 0xFF
    export.write_bytes(bytes(data))
    stage = TextStage if name in {s.name for s in bundle.config.text_models} else ImageStage
    with pytest.raises(BundleError, match="sha256"):
        stage(str(copy), StagePool())


@pytest.mark.slow
def test_images_are_decoded_and_cropped_apart_from_the_models(
    tiny_run: Path, tiny_catalogue: Path
) -> None:
    bundle = open_bundle(tiny_run / "bundle")
    catalogue = CatalogueDir(tiny_catalogue)
    image_dir = catalogue.image_dir("test")
    products = pd.read_csv(catalogue.x_test, index_col=0).head(6).reset_index(drop=True)
    products.loc[1, "imageid"] = 999_999_999  # no such file
    products.loc[2, "productid"] = None  # no id to name one
    prep = ImagePrepStage(str(tiny_run / "bundle"), str(image_dir), StagePool())
    prepared = prep(products)
    status = prepared["image_status"].tolist()
    assert status[1] == ImageStatus.MISSING.value and status[2] == ImageStatus.INVALID_ID.value
    ok = status.index(ImageStatus.OK.value)
    loaded = load_image(image_path(image_dir, products.loc[ok, "imageid"],
                                   products.loc[ok, "productid"]))  # fmt: skip
    columns = [c for c in prepared.columns if c.startswith(CROP_PREFIX)]
    models = {e.name: bundle.verified(e.folder) for e in bundle.fusion.image_models}
    classifiers = [load_image_model(folder, device="cpu") for folder in models.values()]
    assert sorted(columns) == sorted({c.settings.crop_column for c in classifiers})
    for classifier in classifiers:
        crops = np.stack(prepared[classifier.settings.crop_column].to_numpy())
        size = classifier.settings.image_size
        assert crops.shape == (6, size, size, 3) and crops.dtype == np.uint8
        assert not crops[[1, 2]].any()  # unusable products: zeros, never scored
        np.testing.assert_array_equal(crops[ok], classifier.crops([loaded.image])[0])
    scored = ImageStage(str(tiny_run / "bundle"), StagePool())(prepared)
    assert not any(c.startswith(CROP_PREFIX) for c in scored.columns)
