"""Scoring a catalogue: both engines agree, rows without images go text-only, runs resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import REPO_ROOT, assert_same_predictions, read_predictions

from rakuten_ray.bundle import load_bundle, seal_bundle
from rakuten_ray.catalog import CLASS_CODES, X_TEST_FILE, image_path, read_products
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.fusion.stacking import load_meta_model
from rakuten_ray.images import load_image
from rakuten_ray.layout import (
    FINAL_PROBS,
    IMAGE_PROBS,
    TEXT_PROBS,
    BundleLayout,
    ImageStatus,
    ScoringLayout,
    empty_predictions,
)
from rakuten_ray.scoring.local import FinalPipeline
from rakuten_ray.scoring.run import run_scoring

#: Columns every predictions table carries, whichever engine wrote it.
OUTPUT_COLUMNS = {
    "row", "index", "productid", "imageid", "prdtypecode", "confidence", "text_prdtypecode",
    "image_prdtypecode", "image_status", *FINAL_PROBS,
}  # fmt: skip
#: Rows per prediction file of the engines' runs: several files for the case's 63 rows.
ROWS_PER_FILE = 20
ROWS_PER_FILE_SET = f"--set=scoring.rows_per_output_file={ROWS_PER_FILE}"
#: Staged shard size of the interrupted run: many small prediction files, so a kill lands midway.
RESUME_SHARD_ROWS = 5
PROB_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ScoringCase:
    """An input CSV and an image folder with every kind of image problem."""

    input_csv: Path
    image_dir: Path
    raw: pd.DataFrame
    ok: list[int]
    missing: list[int]
    unreadable: list[int]
    invalid_id: list[int]
    damaged: list[int]

    @property
    def without_image(self) -> list[int]:
        return sorted(self.missing + self.unreadable + self.invalid_id)


def _status(image_dir: Path, row: pd.Series) -> str:
    return load_image(image_path(image_dir, int(row["imageid"]), int(row["productid"]))).status


@pytest.fixture(scope="module")
def case(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoringCase:
    """The 60 test rows plus rows with absent files and a bad id; two images damaged."""
    root = tmp_path_factory.mktemp("scoring_case")
    image_dir = root / "images"
    shutil.copytree(tiny_catalogue / "images/image_test", image_dir)
    raw = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0, dtype=str, keep_default_na=False)
    raw.index = raw.index.astype("int64")
    assert len(raw) == 60
    first_ok = [i for i, r in raw.iterrows() if _status(image_dir, r) == ImageStatus.OK][:2]
    truncated, zeroed = (
        image_path(image_dir, *raw.loc[i, ["imageid", "productid"]]) for i in first_ok
    )
    truncated.write_bytes(truncated.read_bytes()[:100])
    zeroed.write_bytes(b"")

    extra = raw.iloc[[5, 6, 7]].copy()
    extra.index = [900001, 900002, 900003]
    extra["imageid"] = ["999999001", "999999002", extra["imageid"].iloc[2]]
    extra.loc[900003, "productid"] = "12a"
    raw = pd.concat([raw, extra])
    input_csv = root / "input.csv"
    raw.to_csv(input_csv)

    statuses = {
        i: (ImageStatus.OK if i == 900003 else _status(image_dir, r)) for i, r in raw.iterrows()
    }
    return ScoringCase(
        input_csv=input_csv,
        image_dir=image_dir,
        raw=raw,
        ok=[i for i, s in statuses.items() if s == ImageStatus.OK and i != 900003],
        missing=[i for i, s in statuses.items() if s == ImageStatus.MISSING],
        unreadable=[i for i, s in statuses.items() if s == ImageStatus.UNREADABLE],
        invalid_id=[900003],
        damaged=first_ok,
    )


def _score_argv(bundle: Path, case: ScoringCase, out: Path, *extra: str) -> list[str]:
    return [
        "score", "--bundle", str(bundle), "--input", str(case.input_csv),
        "--images", str(case.image_dir), "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local_out(tiny_run: Path, case: ScoringCase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The case scored through ``rakuten-ray score --engine local`` (one uninterrupted run)."""
    out = tmp_path_factory.mktemp("scored") / "local"
    argv = _score_argv(tiny_run / "bundle", case, out, "--engine", "local", ROWS_PER_FILE_SET)
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def ray_out(tiny_run: Path, case: ScoringCase, ray_local, tmp_path_factory) -> Path:
    """The case scored by the Ray Data engine in this process."""
    out = tmp_path_factory.mktemp("scored") / "ray"
    run_scoring(
        tiny_run / "bundle", case.input_csv, case.image_dir, out, engine="ray",
        # The text pool autoscales between one and two actors.
        overrides=(ROWS_PER_FILE_SET.removeprefix("--set="), "scoring.text.max_pool_size=2"),
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_both_engines_write_files_of_the_set_size_and_one_schema(
    local_out: Path, ray_out: Path, case: ScoringCase
) -> None:
    """Files hold ``rows_per_output_file`` rows (the last of a write fewer), and both engines'
    files have the same Arrow schema, so pandas reads them back with the same types."""
    rows = len(case.raw)
    sizes = {}
    for name, out in (("local", local_out), ("ray", ray_out)):
        files = sorted(ScoringLayout(out).predictions.glob("*.parquet"))
        sizes[name] = sorted((pq.ParquetFile(f).metadata.num_rows for f in files), reverse=True)
        assert sum(sizes[name]) == rows
        assert max(sizes[name]) == ROWS_PER_FILE, sizes
    full, rest = divmod(rows, ROWS_PER_FILE)
    assert sizes["local"] == [ROWS_PER_FILE] * full + [rest]
    # Each Ray write task ends with its own shorter file: one more at most here.
    assert len(sizes["ray"]) <= full + 2, sizes
    schemas = {
        name: pq.read_schema(next(ScoringLayout(out).predictions.glob("*.parquet")))
        for name, out in (("local", local_out), ("ray", ray_out))
    }
    assert schemas["local"].remove_metadata() == schemas["ray"].remove_metadata()
    local, ray = read_predictions(local_out), read_predictions(ray_out)
    assert local.dtypes.to_dict() == ray.dtypes.to_dict()
    assert str(ray["productid"].dtype) == "Int64"


@pytest.fixture(scope="module")
def pipeline(tiny_run: Path) -> FinalPipeline:
    """The in-process engine on the tiny bundle."""
    return FinalPipeline(tiny_run / "bundle", batch_size=32)


def _check_output(out: Path, case: ScoringCase) -> pd.DataFrame:
    predictions = read_predictions(out)
    assert set(predictions.columns) >= OUTPUT_COLUMNS
    assert predictions["row"].tolist() == list(range(len(case.raw)))
    assert predictions["index"].astype("int64").tolist() == case.raw.index.tolist()
    probs = predictions[FINAL_PROBS].to_numpy(dtype=np.float64)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(predictions["confidence"], probs.max(axis=1), atol=1e-12)
    submission = pd.read_csv(ScoringLayout(out).submission, index_col=0)
    assert submission.index.name is None and list(submission.columns) == ["prdtypecode"]
    assert submission.index.tolist() == case.raw.index.tolist()
    assert submission["prdtypecode"].tolist() == predictions["prdtypecode"].tolist()
    return predictions


@pytest.mark.slow
@pytest.mark.parametrize("engine_out", ["local_out", "ray_out"])
def test_one_prediction_per_row_in_input_order(
    engine_out: str, case: ScoringCase, request: pytest.FixtureRequest
) -> None:
    """Both engines: one row per input row, valid probabilities, submission in input order."""
    predictions = _check_output(request.getfixturevalue(engine_out), case)
    assert set(predictions["image_status"]) == {"ok", "missing", "unreadable", "invalid_id"}


@pytest.mark.slow
def test_engines_agree(local_out: Path, ray_out: Path) -> None:
    """The Ray Data engine gives the in-process engine's predictions, bit for bit."""
    assert_same_predictions(local_out, ray_out)


@pytest.mark.slow
def test_image_status_of_every_row(local_out: Path, case: ScoringCase) -> None:
    """Absent files are missing, damaged ones unreadable, bad ids invalid; only ok rows vote."""
    predictions = read_predictions(local_out).set_index(case.raw.index)
    assert len(case.missing) >= 3 and len(case.unreadable) >= 3 and len(case.ok) >= 40
    assert set(case.damaged) <= set(case.unreadable)
    expected = {
        **dict.fromkeys(case.ok, "ok"),
        **dict.fromkeys(case.missing, "missing"),
        **dict.fromkeys(case.unreadable, "unreadable"),
        **dict.fromkeys(case.invalid_id, "invalid_id"),
    }
    assert predictions["image_status"].to_dict() == expected
    assert predictions.loc[case.without_image, "image_prdtypecode"].isna().all()
    assert predictions.loc[case.ok, "image_prdtypecode"].notna().all()


@pytest.mark.slow
def test_bad_productid_is_scored_from_text(local_out: Path, case: ScoringCase) -> None:
    """A non-integer productid does not stop the CLI run: its row is kept, its id null.

    That it is scored by the text-only meta-model is checked in ``test_fusion_path_per_row``.
    """
    assert (ScoringLayout(local_out).submission).is_file()
    predictions = read_predictions(local_out).set_index(case.raw.index)
    row = predictions.loc[case.invalid_id[0]]
    assert row["image_status"] == "invalid_id"
    assert pd.isna(row["productid"]) and pd.isna(row["image_prdtypecode"])
    assert int(row["imageid"]) == int(case.raw.loc[case.invalid_id[0], "imageid"])
    assert int(row["prdtypecode"]) in CLASS_CODES


def _staged(case: ScoringCase, indices: list[int]) -> pd.DataFrame:
    """Rows of the input as a stage receives them (``row`` and ``index`` columns, raw text)."""
    frame = case.raw.rename_axis("index").reset_index()
    frame.insert(0, "row", np.arange(len(frame)))
    return frame[frame["index"].isin(indices)].reset_index(drop=True)


@pytest.mark.slow
def test_fusion_path_per_row(
    local_out: Path, case: ScoringCase, pipeline: FinalPipeline, tiny_run: Path
) -> None:
    """Rows without a usable image get the text-only meta-model; the others the stack."""
    bundle = load_bundle(tiny_run / "bundle")
    text_only = load_meta_model(bundle.path(bundle.fusion.meta_text_only))
    with_image = load_meta_model(bundle.path(bundle.fusion.meta_with_image))
    predictions = read_predictions(local_out).set_index(case.raw.index)

    no_image = pipeline.text(_staged(case, case.without_image))
    text_probs = no_image[TEXT_PROBS].to_numpy(dtype=np.float64)
    got = predictions.loc[no_image["index"].astype("int64"), FINAL_PROBS].to_numpy(np.float64)
    np.testing.assert_allclose(got, text_only.predict_proba(text_probs), atol=PROB_TOLERANCE)

    texted = pipeline.text(_staged(case, case.ok[:8]))
    ok = pipeline.image(pipeline._prep_stage(str(case.image_dir))(texted))
    assert (ok["image_status"] == "ok").all()
    both = ok[TEXT_PROBS + IMAGE_PROBS].to_numpy(dtype=np.float64)
    got = predictions.loc[ok["index"].astype("int64"), FINAL_PROBS].to_numpy(np.float64)
    np.testing.assert_allclose(got, with_image.predict_proba(both), atol=PROB_TOLERANCE)
    from_text = text_only.predict_proba(ok[TEXT_PROBS].to_numpy(dtype=np.float64))
    assert np.abs(got - from_text).max() > 1e-3


@pytest.mark.slow
def test_final_pipeline_matches_scoring_run(
    local_out: Path, case: ScoringCase, pipeline: FinalPipeline, tiny_catalogue: Path
) -> None:
    """``FinalPipeline.predict``, the Python API, gives the scoring run's labels, in input order."""
    products = read_products(tiny_catalogue / X_TEST_FILE)
    result = pipeline.predict(products, case.image_dir)
    assert result["index"].astype("int64").tolist() == products.index.tolist()
    scored = read_predictions(local_out).set_index(case.raw.index).loc[products.index]
    assert result["prdtypecode"].tolist() == scored["prdtypecode"].tolist()
    assert result["image_status"].tolist() == scored["image_status"].tolist()
    np.testing.assert_array_equal(
        result[FINAL_PROBS].to_numpy(np.float64), scored[FINAL_PROBS].to_numpy(np.float64)
    )
    labels = pipeline.predict_labels(products, case.image_dir)
    assert labels.tolist() == scored["prdtypecode"].tolist()


@pytest.mark.slow
def test_stages_side_by_side_score_as_one_after_another(
    pipeline: FinalPipeline, case: ScoringCase, tiny_catalogue: Path, tiny_run: Path
) -> None:
    """The in-process engine's stages on threads of their own give the bytes they give one
    after another (``scoring.overlap_stages: false``)."""
    from rakuten_ray.bundle import open_bundle

    products = read_products(tiny_catalogue / X_TEST_FILE).head(100)
    settings = open_bundle(tiny_run / "bundle").scoring(("scoring.overlap_stages=false",))
    sequential = FinalPipeline(tiny_run / "bundle", batch_size=32, scoring=settings)
    assert pipeline.overlapping and not sequential.overlapping
    pd.testing.assert_frame_equal(
        pipeline.predict(products, case.image_dir), sequential.predict(products, case.image_dir)
    )


@pytest.mark.slow
def test_final_pipeline_on_empty_input(
    pipeline: FinalPipeline, case: ScoringCase, tiny_catalogue: Path, local_out: Path
) -> None:
    """No rows in, an empty frame with the output columns out."""
    products = read_products(tiny_catalogue / X_TEST_FILE).iloc[:0]
    result = pipeline.predict(products, case.image_dir)
    assert result.empty
    assert list(result.columns) == list(empty_predictions().columns)
    assert set(result.columns) == set(read_predictions(local_out).columns)
    assert pipeline.predict_labels(products, case.image_dir).shape == (0,)


@pytest.fixture(scope="module")
def interrupted_out(
    tiny_run: Path, case: ScoringCase, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ``rakuten-ray score`` subprocess killed (SIGKILL) after its first prediction file."""
    out = tmp_path_factory.mktemp("interrupted") / "out"
    argv = _score_argv(
        tiny_run / "bundle", case, out, "--engine", "local",
        "--rows-per-shard", str(RESUME_SHARD_ROWS),
        f"--set=scoring.rows_per_output_file={RESUME_SHARD_ROWS}",
    )  # fmt: skip
    log = out.parent / "score.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "rakuten_ray.cli", *argv], cwd=REPO_ROOT, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    predictions = ScoringLayout(out).predictions
    deadline = time.monotonic() + 300
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if predictions.is_dir() and any(predictions.glob("*.parquet")):
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text(errors="replace")
    return out


def _check_resumed(out: Path, interrupted: Path, baseline: Path, case: ScoringCase) -> None:
    written = sorted(ScoringLayout(interrupted).predictions.glob("*.parquet"))
    shards = -(-len(case.raw) // RESUME_SHARD_ROWS)
    assert 1 <= len(written) < shards
    already = sum(len(pd.read_parquet(p)) for p in written)
    assert not read_predictions(out)["row"].duplicated().any()
    assert_same_predictions(out, baseline)
    summary = pd.read_json(ScoringLayout(out).summary, typ="series")
    assert summary["rows"] == len(case.raw)
    assert summary["rows_scored_now"] == len(case.raw) - already
    assert summary["rows_staged_now"] == 0  # the interrupted run's staged shards were reused
    assert list(summary["phase_seconds"]) == [
        "check inputs", "run record", "stage", "check images", "score", "finish",
    ]  # fmt: skip


@pytest.mark.slow
def test_resume_after_kill_local(
    interrupted_out: Path, local_out: Path, case: ScoringCase, tiny_run: Path, tmp_path: Path
) -> None:
    """``--resume`` finishes a killed run: no row twice, predictions as an uninterrupted run's."""
    out = tmp_path / "out"
    shutil.copytree(interrupted_out, out)
    assert not (ScoringLayout(out).submission).exists()
    # A torn file (as a crash while writing would leave) is discarded, its rows rescored.
    (ScoringLayout(out).predictions / "local-torn.parquet").write_bytes(b"PAR1 torn")
    argv = _score_argv(tiny_run / "bundle", case, out, "--engine", "local", "--resume")
    # Neither changes a row's output, so the resume accepts them.
    argv += ["--allow-missing-images", "--set=scoring.text.batch_size=7"]
    assert main(argv) == 0
    _check_resumed(out, interrupted_out, local_out, case)


@pytest.mark.slow
def test_resume_after_kill_with_ray(
    interrupted_out: Path, local_out: Path, case: ScoringCase, tiny_run: Path, tmp_path: Path,
    ray_local,
) -> None:  # fmt: skip
    """The Ray engine also skips the rows already predicted."""
    out = tmp_path / "out"
    shutil.copytree(interrupted_out, out)
    run_scoring(tiny_run / "bundle", case.input_csv, case.image_dir, out, engine="ray", resume=True)
    _check_resumed(out, interrupted_out, local_out, case)


def _resealed_copy(bundle: Path, dest: Path) -> Path:
    """Another bundle (another id) with the same models: the copy sealed again."""
    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / BundleLayout.MANIFEST).read_text())
    (dest / BundleLayout.MANIFEST).unlink()
    seal_bundle(dest, manifest["training_data_sha256"], {**manifest["metrics"], "copy": True})
    return dest


@pytest.mark.slow
def test_resume_refuses_another_bundle_or_input(
    interrupted_out: Path, case: ScoringCase, tiny_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """An interrupted run continues only with the bundle and the input it started with."""
    out = tmp_path / "out"
    shutil.copytree(interrupted_out, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    other_bundle = _resealed_copy(tiny_run / "bundle", tmp_path / "other_bundle")
    argv = _score_argv(other_bundle, case, out, "--engine", "local", "--resume")
    assert main(argv) == EXIT_SCHEMA_ERROR
    assert "--bundle: was " in capsys.readouterr().err

    changed = tmp_path / "input.csv"
    raw = case.raw.copy()
    raw.iloc[0, raw.columns.get_loc("designation")] += " (modifié)"
    raw.to_csv(changed)
    argv = [*_score_argv(tiny_run / "bundle", case, out, "--engine", "local", "--resume")]
    argv[argv.index("--input") + 1] = str(changed)
    assert main(argv) == EXIT_SCHEMA_ERROR
    assert "--input: was " in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.slow
def test_resume_refuses_another_image_folder_or_settings_that_change_results(
    interrupted_out: Path, case: ScoringCase, tiny_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The same images in another folder, or rows per model call changed: refused before any
    work, naming each difference (settings that only cut the work differently are not)."""
    out = tmp_path / "out"
    shutil.copytree(interrupted_out, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    resume = _score_argv(tiny_run / "bundle", case, out, "--engine", "local", "--resume")
    other_images = shutil.copytree(case.image_dir, tmp_path / "other_images")
    argv = [*resume]
    argv[argv.index("--images") + 1] = str(other_images)
    assert main(argv) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert f"--images: was {case.image_dir.resolve()}, now {other_images.resolve()}" in err

    changed = ("scoring.text.micro_batch_size=3", "scoring.fusion.micro_batch_size=5")
    cut = ("scoring.text.batch_size=7", "scoring.rows_per_output_file=11")
    argv = [*resume, *(f"--set={s}" for s in changed + cut), "--allow-missing-images"]
    assert main(argv) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    bundle = load_bundle(tiny_run / "bundle").scoring()
    for setting in changed:
        key, value = setting.split("=")
        pool = getattr(bundle, key.split(".")[1])
        assert f"{key}: was {pool.micro_batch_size}, now {value}" in err
    assert "scoring.text.batch_size" not in err and "rows_per_output_file" not in err
    assert "--images" not in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.slow
def test_an_image_folder_that_is_not_one_is_refused(
    case: ScoringCase, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "images.zip"
    not_a_folder.write_bytes(b"PK")
    for images, reason in (
        (tmp_path / "nowhere", "does not exist"),
        (not_a_folder, "not a folder"),
    ):
        out = tmp_path / f"out_{images.name}"
        argv = _score_argv(tiny_run / "bundle", case, out, "--engine", "local")
        argv[argv.index("--images") + 1] = str(images)
        assert main(argv) == EXIT_SCHEMA_ERROR
        err = capsys.readouterr().err
        assert str(images) in err and reason in err
        assert not out.exists()


@pytest.mark.slow
def test_a_folder_where_most_rows_find_no_image_is_refused_unless_accepted(
    case: ScoringCase, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong (here empty) image folder stops the run before any model loads, saying how
    many rows find no image and which; the flag scores them from their text."""
    empty = tmp_path / "empty_images"
    empty.mkdir()
    out = tmp_path / "out"
    argv = _score_argv(tiny_run / "bundle", case, out, "--engine", "local")
    argv[argv.index("--images") + 1] = str(empty)
    assert main(argv) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    rows = len(case.raw)
    assert f"{rows} of {rows} rows checked (100%) find no image" in err
    first = case.raw.iloc[0]
    assert str(image_path(empty, int(first["imageid"]), int(first["productid"]))) in err
    assert not out.exists()

    assert main([*argv, "--allow-missing-images"]) == 0
    predictions = read_predictions(out)
    assert len(predictions) == rows
    assert set(predictions["image_status"]) <= {"missing", "invalid_id"}


@pytest.mark.slow
def test_non_empty_out_is_refused(
    local_out: Path, case: ScoringCase, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --overwrite or --resume, existing outputs are never mixed with a new run."""
    before = {p: p.stat().st_mtime_ns for p in local_out.rglob("*")}
    argv = _score_argv(tiny_run / "bundle", case, local_out, "--engine", "local")
    assert main(argv) == EXIT_SCHEMA_ERROR
    assert "not empty" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in local_out.rglob("*")} == before


def test_missing_column_is_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An input without ``imageid`` exits 2 naming the file and the column; nothing is written."""
    bad = tmp_path / "no_imageid.csv"
    bad.write_text(",designation,description,productid\n0,Chaise,Bois,123\n")
    out = tmp_path / "out"
    argv = [
        "score", "--bundle", str(tmp_path / "not_checked_yet"), "--input", str(bad),
        "--images", str(tmp_path), "--out", str(out), "--engine", "local",
    ]  # fmt: skip
    assert main(argv) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert str(bad) in err and "'imageid'" in err
    assert not out.exists()
