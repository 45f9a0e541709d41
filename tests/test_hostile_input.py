"""Hostile input: one corpus of bad rows and bad images, scored by both engines.

Every row comes out exactly once with valid probabilities and the image status its case
documents (docs/reliability.md lists them); inputs that cannot be read at all are refused
with a :class:`SchemaError` before any output exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO_ROOT, assert_same_predictions, nullable_ints, read_predictions
from hostile_corpus import ALL_CASES, Corpus, expected_index, write_corpus

from rakuten_ray.catalog import CLASS_CODES, X_COLUMNS, SchemaError
from rakuten_ray.layout import FINAL_PROBS, ScoringLayout
from rakuten_ray.scoring.run import run_scoring

PROB_TOLERANCE = 1e-6
RELIABILITY_DOC = REPO_ROOT / "docs/reliability.md"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("hostile"))


def _score(tiny_run: Path, corpus: Corpus, out: Path, engine: str) -> Path:
    run_scoring(tiny_run / "bundle", corpus.csv, corpus.image_dir, out, engine=engine)
    return out


@pytest.fixture(scope="module")
def local_out(tiny_run: Path, corpus: Corpus, tmp_path_factory) -> Path:
    """The corpus scored by the in-process engine."""
    return _score(tiny_run, corpus, tmp_path_factory.mktemp("hostile_out") / "local", "local")


@pytest.fixture(scope="module")
def ray_out(tiny_run: Path, corpus: Corpus, ray_local, tmp_path_factory) -> Path:
    """The corpus scored by the Ray Data engine."""
    return _score(tiny_run, corpus, tmp_path_factory.mktemp("hostile_out") / "ray", "ray")


def test_corpus_covers_enough_cases() -> None:
    names = [case.name for case in ALL_CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    statuses = {case.status for case in ALL_CASES}
    assert statuses == {"ok", "missing", "unreadable", "too_large", "invalid_id"}


def test_docs_list_every_case() -> None:
    """The reliability table names every case with the status the tests check."""
    doc = RELIABILITY_DOC.read_text(encoding="utf-8")
    for case in ALL_CASES:
        assert f"| {case.name} | `{case.status}` |" in doc, case.name


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_every_row_scored_once_with_its_status(
    engine: str, corpus: Corpus, request: pytest.FixtureRequest
) -> None:
    out = request.getfixturevalue(f"{engine}_out")
    predictions = read_predictions(out)
    assert predictions["row"].tolist() == list(range(len(corpus.cases)))
    expected = [expected_index(case, i) for i, case in enumerate(corpus.cases)]
    assert nullable_ints(predictions["index"]) == expected
    probs = predictions[FINAL_PROBS].to_numpy(dtype=np.float64)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=PROB_TOLERANCE)
    assert predictions["prdtypecode"].isin(CLASS_CODES).all()
    got = dict(zip([c.name for c in corpus.cases], predictions["image_status"], strict=True))
    assert got == {case.name: case.status for case in corpus.cases}
    has_image = predictions["image_status"] == "ok"
    assert predictions["image_prdtypecode"].notna().tolist() == has_image.tolist()
    # A row whose index is not an integer stays in the submission, with an empty index.
    submission = pd.read_csv(ScoringLayout(out).submission, index_col=0)
    assert submission["prdtypecode"].tolist() == predictions["prdtypecode"].tolist()


@pytest.mark.slow
def test_engines_agree_on_the_corpus(local_out: Path, ray_out: Path) -> None:
    assert_same_predictions(local_out, ray_out)


HEADER = ",".join(("", *X_COLUMNS))

#: Inputs refused as a whole: (name, file bytes, part of the message).
REFUSED: list[tuple[str, bytes, str]] = [
    ("missing column", b",designation,description,productid\n0,a,b,1\n", "['imageid']"),
    ("empty file", b"", "first column must be the unnamed row index"),
    ("no header", b"0,Lampe,Lin,1,2\n1,Chaise,Bois,3,4\n", "first column must be the unnamed"),
    ("named first column", b"id" + HEADER.encode() + b"\n0,a,b,1,2\n", "first column must be"),
    ("header only", HEADER.encode() + b"\r\n\r\n", "no rows to score"),
    ("binary file", bytes(range(256)) * 4, "first column must be the unnamed row index"),
    (
        "unclosed quote in the header",
        b',"designation' + b"x" * 200_000 + b"\n0,a,b,1,2\n",
        "unreadable CSV header",
    ),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_unreadable_input_is_refused_before_any_output(
    tmp_path: Path, data: bytes, message: str
) -> None:
    """Checked before the bundle is even opened, so no bundle is needed here."""
    source = tmp_path / "input.csv"
    source.write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(SchemaError) as refusal:
        run_scoring(tmp_path / "no_bundle", source, tmp_path, out, engine="local")
    assert str(source) in str(refusal.value) and message in str(refusal.value)
    assert not out.exists()


def _absent(root: Path) -> Path:
    return root / "absent.csv"


def _no_inputs(root: Path) -> Path:
    (root / "inputs").mkdir()
    (root / "inputs/notes.txt").write_text("not an input")
    return root / "inputs"


def _mixed_formats(root: Path) -> Path:
    folder = root / "inputs"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + "\n0,a,b,1,2\n")
    row = {"index": [1], "designation": ["a"], "description": ["b"]}
    pd.DataFrame({**row, "productid": [3], "imageid": [4]}).to_parquet(folder / "b.parquet")
    return folder


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (_absent, "input not found"),
        (_no_inputs, "no .csv or .parquet input files"),
        (_mixed_formats, "mixes CSV and Parquet inputs"),
    ],
)
def test_unusable_source_is_refused(
    tmp_path: Path, make_source: Callable[[Path], Path], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match=message):
        run_scoring(tmp_path / "no_bundle", make_source(tmp_path), tmp_path, out)
    assert not out.exists()


@pytest.mark.slow
def test_unparsable_body_is_refused_leaving_no_output(tiny_run: Path, tmp_path: Path) -> None:
    """A body fault shows only while staging (after the header check): nothing is left."""
    source = tmp_path / "input.csv"
    source.write_bytes(HEADER.encode() + b'\n0,a,b,1,2\n1,"never closed,b,3,4\n')
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match="not a readable CSV file"):
        run_scoring(tiny_run / "bundle", source, tmp_path, out, engine="local")
    assert not out.exists()
