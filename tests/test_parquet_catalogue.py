"""Training reads a labelled Parquet catalogue as it reads the raw layout: the same rows,
labels, texts, images and data fingerprint, locally and from object storage; a bad Parquet
catalogue is refused by ``rakuten-ray train`` before any work (exit 2, naming the problem)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from helpers import labelled_parquet_table
from object_store import ObjectStore

from rakuten_ray.catalog import LABEL_COLUMN, X_COLUMNS, image_filename
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.lifecycle import data_fingerprint
from rakuten_ray.storage import CACHE_ENV, cache_dir
from rakuten_ray.training.data import TrainingData, load_training_data
from rakuten_ray.training.parquet_catalogue import CACHE_KIND
from rakuten_ray.training.resume import data_table

REPO_ROOT = Path(__file__).resolve().parent.parent
RELIABILITY_DOC = REPO_ROOT / "docs/reliability.md"
#: Labelled rows of the catalogue: the generator leaves one without image, one unreadable.
ROWS = 40


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's node cache a folder of its own."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def raw_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rakuten_ray.synthetic import generate_catalogue

    root = tmp_path_factory.mktemp("raw_layout")
    generate_catalogue(root, rows=ROWS, test_rows=0, seed=5, workers=1)
    return root


@pytest.fixture(scope="module")
def reference(raw_layout: Path) -> TrainingData:
    return load_training_data(raw_layout)


@pytest.fixture(scope="module")
def good_table(raw_layout: Path) -> pd.DataFrame:
    """The catalogue as one Parquet table, each row's image as bytes."""
    return labelled_parquet_table(raw_layout)


def _names(rows: pd.DataFrame) -> list[str]:
    return [image_filename(i, p) for i, p in zip(rows["imageid"], rows["productid"], strict=True)]


def _image_bytes(paths: pd.Series) -> list[bytes | None]:
    return [Path(p).read_bytes() if Path(p).is_file() else None for p in paths]


def assert_same_training_data(got: TrainingData, expected: TrainingData) -> None:
    """Same rows, labels and texts in the same order, and each image file's bytes equal (or
    both absent); the same data fingerprint."""
    columns = [*X_COLUMNS, LABEL_COLUMN]
    pd.testing.assert_frame_equal(got.labelled[columns], expected.labelled[columns])
    assert got.images_only.empty and expected.images_only.empty
    assert _image_bytes(got.labelled["image_path"]) == _image_bytes(expected.labelled["image_path"])
    assert data_fingerprint(data_table(got)) == data_fingerprint(data_table(expected))


def test_parquet_catalogues_load_as_the_raw_layout(
    raw_layout: Path, reference: TrainingData, good_table: pd.DataFrame, tmp_path: Path
) -> None:
    """Images as bytes (a folder of two files; no bytes where the folder has no file, the
    unreadable file's bytes as they are) and as local paths: the same training data as the
    folder's, the bytes written once into this node's cache."""
    images = _image_bytes(reference.labelled["image_path"])
    assert images.count(None) == 1  # the generator's missing image
    table = good_table
    folder = tmp_path / "bytes"
    folder.mkdir()
    table.iloc[:15].to_parquet(folder / "part-0.parquet")
    table.iloc[15:].to_parquet(folder / "part-1.parquet")
    from_bytes = load_training_data(folder)
    assert_same_training_data(from_bytes, reference)
    written = Path(from_bytes.labelled["image_path"].iloc[0]).parent
    assert written.parent == cache_dir(CACHE_KIND)
    assert sorted(p.name for p in written.iterdir()) == sorted(
        n for n, b in zip(_names(reference.labelled), images, strict=True) if b is not None
    )
    assert load_training_data(folder).labelled.equals(from_bytes.labelled)  # the cache reused

    # A row whose folder has no file gets a null: it trains the text models only.
    paths = [p if Path(p).is_file() else None for p in reference.labelled["image_path"]]
    labelled_parquet_table(raw_layout, image_uri=paths).to_parquet(tmp_path / "uris.parquet")
    from_uris = load_training_data(tmp_path / "uris.parquet")
    assert_same_training_data(from_uris, reference)
    used_in_place = from_uris.labelled["image_path"] == reference.labelled["image_path"]
    assert used_in_place.sum() == ROWS - 1


def test_parquet_catalogue_in_object_storage(
    raw_layout: Path, reference: TrainingData, object_store: ObjectStore, tmp_path: Path
) -> None:
    """A remote Parquet file whose ``image_uri`` point into the same bucket (one at an
    object that is not there), and the raw layout in the same bucket: both read as the
    local folder."""
    bucket = object_store.bucket("training-parquet")
    images = object_store.upload(raw_layout / "images" / "image_train", f"{bucket}/images")
    uris = [f"{images}/{name}" for name in _names(reference.labelled)]
    labelled_parquet_table(raw_layout, image_uri=uris).to_parquet(tmp_path / "catalogue.parquet")
    source = object_store.upload(tmp_path / "catalogue.parquet", f"{bucket}/catalogue.parquet")
    assert_same_training_data(load_training_data(source), reference)
    folder = object_store.upload(raw_layout, f"{bucket}/raw")
    assert_same_training_data(load_training_data(folder), reference)


def _one_file(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Spoiler:
    """A catalogue of one file, ``change`` made to its table."""

    def spoil(table: pd.DataFrame, folder: Path) -> Path:
        folder.mkdir()
        change(table).to_parquet(folder / "c.parquet")
        return folder / "c.parquet"

    return spoil


def _index_twice(table: pd.DataFrame) -> pd.DataFrame:
    index = table["index"].to_list()
    return table.assign(index=[index[0], *index[:-1]])


def _not_parquet(table: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir()
    (folder / "c.parquet").write_bytes(b"PAR1 and no more")
    return folder / "c.parquet"


def _no_catalogue(table: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir()
    table.to_csv(folder / "rows.csv")
    return folder


def _index_in_two_files(table: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir()
    table.to_parquet(folder / "a.parquet")
    table.iloc[:1].to_parquet(folder / "b.parquet")
    return folder


Spoiler = Callable[[pd.DataFrame, Path], Path]
#: Catalogues refused as a whole: (name, what writes it and names it, part of the message).
REFUSED: list[tuple[str, Spoiler, str]] = [
    (
        "a column missing",
        _one_file(lambda t: t.drop(columns="imageid")),
        "missing column(s) ['imageid']",
    ),
    (
        "a column of the wrong type",
        _one_file(lambda t: t.assign(productid=t["productid"] + 0.5)),
        "column 'productid' holds double; expected integers",
    ),
    (
        "an unknown code",
        _one_file(lambda t: t.assign(prdtypecode=[11, *t["prdtypecode"][1:]])),
        "column 'prdtypecode' holds a code outside the 27 product type codes",
    ),
    ("a row index used twice", _one_file(_index_twice), "column 'index' has duplicate values"),
    (
        "both image columns",
        _one_file(lambda t: t.assign(image=b"x", image_uri="x.jpg")),
        "carries both ['image', 'image_uri']; keep one image column",
    ),
    (
        "two rows of the same ids with different images",
        _one_file(lambda t: t.assign(image=[b"a", *[b"b"] * (len(t) - 1)], imageid=1, productid=2)),
        "share imageid and productid (image_1_product_2.jpg) but carry different images",
    ),
    ("a file that is not Parquet", _not_parquet, "not a readable Parquet file"),
    ("no row", _one_file(lambda t: t.iloc[:0]), "no labelled rows"),
    (
        "a folder of neither layout",
        _no_catalogue,
        "neither the raw layout (no X_train_update.csv) nor .parquet files",
    ),
    ("a row index in two files", _index_in_two_files, "row index used in more than one file: ["),
]


@pytest.mark.parametrize(
    ("spoil", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_bad_parquet_catalogue_refused_before_any_work(
    good_table: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    spoil: Spoiler, message: str,
) -> None:  # fmt: skip
    data = spoil(good_table.copy(), tmp_path / "data")
    out = tmp_path / "out"
    before = set(cache_dir(CACHE_KIND).iterdir())
    status = main([
        "train", "--config", str(REPO_ROOT / "configs/demo.yaml"), "--data", str(data),
        "--out", str(out), "--allow-unpinned",
    ])  # fmt: skip
    error = capsys.readouterr().err
    assert status == EXIT_SCHEMA_ERROR, error
    assert str(data) in error and message in error
    assert not out.exists() and set(cache_dir(CACHE_KIND).iterdir()) == before


def test_docs_list_every_training_refusal() -> None:
    doc = RELIABILITY_DOC.read_text(encoding="utf-8")
    section = doc[doc.index("### Training catalogues refused as a whole") :]
    for name, _, message in REFUSED:
        row = re.search(rf"^\| {re.escape(name)} \| `([^`]*)`", section, re.MULTILINE)
        assert row and row.group(1) in message, name
