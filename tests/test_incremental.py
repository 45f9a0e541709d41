"""Incremental rescoring (``--previous``): rows of unchanged content and bundle are carried
over, and the output equals a full rescore on both engines; ``changes.parquet`` lists the
rows whose code moved; a previous output from another bundle carries nothing over."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_same_predictions, read_predictions

from rakuten_ray.catalog import X_TEST_FILE, image_path
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.layout import ScoringLayout
from rakuten_ray.scoring.incremental import CHANGE_DTYPES
from rakuten_ray.scoring.run import run_scoring

pytestmark = pytest.mark.slow

#: Rows of the previous input; the new one drops its first, edits some, adds two.
OLD_ROWS = 30
EDITED = (3, 7, 11)
ADDED = 2


@dataclass(frozen=True)
class Inputs:
    old_csv: Path
    new_csv: Path
    old_images: Path
    new_images: Path
    #: Rows of the new input whose content differs from every row of the old one.
    rescored: int


@pytest.fixture(scope="module")
def inputs(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """A previous input, and the new one: the first row gone, three titles edited, one image
    file's bytes replaced (same ids), two products added."""
    root = tmp_path_factory.mktemp("incremental")
    raw = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0, dtype=str, keep_default_na=False)
    old = raw.iloc[:OLD_ROWS]
    new = pd.concat([old.iloc[1:], raw.iloc[OLD_ROWS : OLD_ROWS + ADDED]])
    for position in EDITED:
        new.iloc[position, new.columns.get_loc("designation")] += " (édition 2)"
    old_images = tiny_catalogue / "images" / "image_test"
    new_images = root / "images"
    shutil.copytree(old_images, new_images)
    files = [image_path(new_images, int(r.imageid), int(r.productid)) for r in new.itertuples()]
    replaced = next(i for i, f in enumerate(files) if i not in EDITED and f.is_file())
    donor = next(f for f in sorted(new_images.iterdir()) if f not in files)
    shutil.copyfile(donor, files[replaced])
    old.to_csv(root / "old.csv")
    new.to_csv(root / "new.csv")
    rescored = len(EDITED) + 1 + ADDED
    return Inputs(root / "old.csv", root / "new.csv", old_images, new_images, rescored)


def _score(bundle: Path, source: Path, images: Path, out: Path, **options) -> dict:
    run_scoring(bundle, source, images, out, engine=options.pop("engine", "local"), **options)
    return json.loads(ScoringLayout(out).summary.read_text())


@pytest.fixture(scope="module")
def previous(tiny_run: Path, inputs: Inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("previous") / "out"
    _score(tiny_run / "bundle", inputs.old_csv, inputs.old_images, out)
    return out


@pytest.fixture(scope="module")
def full(tiny_run: Path, inputs: Inputs, tmp_path_factory) -> Path:
    """The new input scored in full, with no previous output."""
    out = tmp_path_factory.mktemp("full") / "out"
    _score(tiny_run / "bundle", inputs.new_csv, inputs.new_images, out)
    return out


def _expected_changes(previous: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    before = previous[["productid", "prdtypecode"]].rename(
        columns={"prdtypecode": "previous_prdtypecode"}
    )
    merged = now.merge(before, on="productid")
    moved = merged[merged["prdtypecode"] != merged["previous_prdtypecode"]]
    return moved[list(CHANGE_DTYPES)].sort_values("row").reset_index(drop=True)


def _changes(out: Path) -> pd.DataFrame:
    changes = pd.read_parquet(ScoringLayout(out).changes)
    return changes.sort_values("row").reset_index(drop=True)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_carried_over_rows_equal_a_full_rescore(
    engine: str, tiny_run: Path, inputs: Inputs, previous: Path, full: Path, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    if engine == "ray":
        request.getfixturevalue("ray_local")
    out, lines = tmp_path / "out", []
    summary = _score(
        tiny_run / "bundle", inputs.new_csv, inputs.new_images, out, engine=engine,
        previous=previous, log=lines.append,
    )  # fmt: skip
    new_rows = OLD_ROWS - 1 + ADDED
    assert summary["rows_scored_now"] == inputs.rescored
    assert summary["rows_carried_over"] == new_rows - inputs.rescored
    assert summary["previous"]["carried_nothing_because"] is None
    assert_same_predictions(full, out)
    predictions = read_predictions(out)
    bundle_id = json.loads(ScoringLayout(previous).record.read_text())["inputs"]["--bundle"]
    assert set(predictions["bundle_id"]) == {bundle_id}
    assert predictions["content_hash"].notna().all()
    expected = _expected_changes(read_predictions(previous), predictions)
    pd.testing.assert_frame_equal(_changes(out), expected, check_dtype=False)
    assert summary["previous"]["rows_changed"] == len(expected)
    if engine == "local":  # the in-process engine's progress, as a log sees it
        assert f"scored {inputs.rescored} of {inputs.rescored} rows (100%)" in "\n".join(lines)


def test_a_previous_output_of_another_bundle_carries_nothing_over(
    tiny_run: Path, inputs: Inputs, previous: Path, full: Path, tmp_path: Path
) -> None:
    """Its rows all scored again, the summary says why, and the codes it gave that differ
    from this bundle's are the changes."""
    other = tmp_path / "other"
    shutil.copytree(previous, other)
    layout = ScoringLayout(other)
    record = json.loads(layout.record.read_text())
    record["inputs"]["--bundle"] = "0123456789ab"
    layout.record.write_text(json.dumps(record))
    for path in layout.predictions.glob("*.parquet"):
        table = pd.read_parquet(path)
        table["bundle_id"] = "0123456789ab"
        # The other bundle put every fifth product in the next class.
        table.loc[::5, "prdtypecode"] = table.loc[::5, "prdtypecode"] + 1
        table.to_parquet(path, index=False)
    out = tmp_path / "out"
    summary = _score(tiny_run / "bundle", inputs.new_csv, inputs.new_images, out, previous=other)
    assert summary["rows_carried_over"] == 0
    assert summary["rows_scored_now"] == OLD_ROWS - 1 + ADDED
    assert "scored by bundle 0123456789ab" in summary["previous"]["carried_nothing_because"]
    assert_same_predictions(full, out)
    expected = _expected_changes(read_predictions(other), read_predictions(out))
    assert len(expected) >= OLD_ROWS // 5 - 1
    pd.testing.assert_frame_equal(_changes(out), expected, check_dtype=False)


def test_previous_must_be_another_scoring_output(
    tiny_run: Path, inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["score", "--bundle", str(tiny_run / "bundle"), "--input", str(inputs.new_csv),
            "--images", str(inputs.new_images), "--out", str(out)]  # fmt: skip
    assert main([*argv, "--previous", str(inputs.old_images)]) == EXIT_SCHEMA_ERROR
    assert f"{inputs.old_images}: --previous is not a scoring output" in capsys.readouterr().err
    out.mkdir()
    assert main([*argv, "--previous", str(out), "--resume"]) == EXIT_SCHEMA_ERROR
    assert "--previous must be another folder than --out" in capsys.readouterr().err
    assert not any(out.iterdir())
