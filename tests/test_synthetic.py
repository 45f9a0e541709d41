"""Tests of the synthetic demo catalogue: layout, readers, proportions, defects, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rakuten_ray import catalog
from rakuten_ray.data import read_json
from rakuten_ray.synthetic import (
    CLASS_SHARES,
    Y_TEST_FILE,
    CatalogueSummary,
    allocate_counts,
    generate_catalogue,
)
from rakuten_ray.synthetic_images import render_image
from rakuten_ray.synthetic_text import EMPTY_DESCRIPTION_RATE

TRAIN_ROWS = 400
# 300 test rows give the test split its own unreadable image.
TEST_ROWS = 300
LARGE_ROWS, LARGE_TEST_ROWS = 10_000, 1_000
CSV_FILES = (catalog.X_TRAIN_FILE, catalog.Y_TRAIN_FILE, catalog.X_TEST_FILE, Y_TEST_FILE)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> CatalogueSummary:
    """One catalogue with images, shared by the read-only tests."""
    return generate_catalogue(
        tmp_path_factory.mktemp("demo"), rows=TRAIN_ROWS, test_rows=TEST_ROWS, seed=7, workers=2
    )


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory) -> catalog.CatalogueDir:
    """A larger catalogue without images, for proportions."""
    root = tmp_path_factory.mktemp("large")
    generate_catalogue(root, rows=LARGE_ROWS, test_rows=LARGE_TEST_ROWS, seed=3, images=False)
    return catalog.CatalogueDir(root)


def _products(summary: CatalogueSummary, split: str) -> pd.DataFrame:
    name = catalog.X_TRAIN_FILE if split == "train" else catalog.X_TEST_FILE
    return catalog.read_products(summary.root / name)


def _image_files(summary: CatalogueSummary, split: str) -> list[Path]:
    """Expected image path of every row of ``split``, in row order."""
    image_dir = catalog.CatalogueDir(summary.root).image_dir(split)
    products = _products(summary, split)
    return [
        catalog.image_path(image_dir, iid, pid)
        for iid, pid in zip(products["imageid"], products["productid"], strict=True)
    ]


def _is_readable_jpeg(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
            return image.format == "JPEG"
    except OSError:
        return False


def test_writes_the_raw_layout(demo: CatalogueSummary) -> None:
    assert demo.csv_files == tuple(demo.root / name for name in CSV_FILES)
    assert all(path.is_file() for path in demo.csv_files)
    assert demo.image_dirs == tuple(demo.root / d for d in catalog.IMAGE_SUBDIRS.values())
    assert (demo.train_rows, demo.test_rows) == (TRAIN_ROWS, TEST_ROWS)
    headers = {
        name: (demo.root / name).read_text(encoding="utf-8").splitlines()[0] for name in CSV_FILES
    }
    x_header = "," + ",".join(catalog.X_COLUMNS)
    assert headers == {
        catalog.X_TRAIN_FILE: x_header,
        catalog.X_TEST_FILE: x_header,
        catalog.Y_TRAIN_FILE: ",prdtypecode",
        Y_TEST_FILE: ",prdtypecode",
    }


def test_catalogue_readers_accept_the_files(demo: CatalogueSummary) -> None:
    labelled = catalog.CatalogueDir(demo.root).labelled()
    assert list(labelled.index) == list(range(TRAIN_ROWS))
    assert set(labelled[catalog.LABEL_COLUMN]) == set(catalog.CLASS_CODES)
    assert (labelled["designation"].str.len() > 0).all()
    test_x = _products(demo, "test")
    test_y = catalog.read_labels(demo.root / Y_TEST_FILE)
    # The test index continues after the training rows, as in the challenge.
    assert list(test_x.index) == list(range(TRAIN_ROWS, TRAIN_ROWS + TEST_ROWS))
    assert test_y.index.equals(test_x.index)
    assert set(test_y) == set(catalog.CLASS_CODES)


def test_ids_are_unique_and_realistic(demo: CatalogueSummary) -> None:
    products = pd.concat([_products(demo, "train"), _products(demo, "test")])
    for column in catalog.ID_COLUMNS:
        assert products[column].is_unique
    assert products["productid"].between(1, 4_300_000_000).all()
    assert products["imageid"].between(1_000_000_000, 1_330_000_000).all()


def test_text_has_empty_descriptions_html_and_numbers(
    large_csv: catalog.CatalogueDir,
) -> None:
    products = catalog.read_products(large_csv.x_train)
    empty = (products["description"] == "").mean()
    assert abs(empty - EMPTY_DESCRIPTION_RATE) < 0.03
    descriptions = products["description"]
    for fragment in ("<br />", "<p>", "&eacute;", "&nbsp;", "<li>"):
        assert descriptions.str.contains(fragment, regex=False).any(), fragment
    assert products["designation"].str.contains(r"\d", regex=True).mean() > 0.2
    assert products["designation"].str.len().std() > 5


def test_class_proportions_follow_the_targets(large_csv: catalog.CatalogueDir) -> None:
    for path, rows in (
        (large_csv.y_train, LARGE_ROWS),
        (large_csv.root / Y_TEST_FILE, LARGE_TEST_ROWS),
    ):
        counts = catalog.read_labels(path).value_counts()
        assert set(counts.index) == set(catalog.CLASS_CODES)
        total = sum(CLASS_SHARES.values())
        for code, share in CLASS_SHARES.items():
            # Largest remainder: each count is its quota rounded up or down.
            assert abs(counts[code] - share / total * rows) < 1, code


@pytest.mark.parametrize("rows", [27, 28, 50, 101, 999])
def test_allocation_is_exact_and_covers_every_class(rows: int) -> None:
    counts = allocate_counts(rows)
    assert sum(counts.values()) == rows
    assert min(counts.values()) >= 1


def test_images_are_500px_rgb_jpegs(demo: CatalogueSummary) -> None:
    paths = [p for p in _image_files(demo, "train") if p.is_file() and p.stat().st_size > 0]
    for path in paths[:: len(paths) // 20]:
        if _is_readable_jpeg(path):
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (500, 500))


def test_missing_and_unreadable_images(demo: CatalogueSummary) -> None:
    kinds: dict[str, int] = {"missing": 0, "empty": 0, "truncated": 0, "text": 0}
    for split in ("train", "test"):
        split_kinds = [_defect_kind(path) for path in _image_files(demo, split)]
        assert "missing" in split_kinds and {"empty", "truncated", "text"} & set(split_kinds)
        assert split_kinds.count("ok") > 0.95 * len(split_kinds)
        for kind in kinds:
            kinds[kind] += split_kinds.count(kind)
    assert (
        kinds["missing"]
        == demo.missing_images
        == round(0.02 * TRAIN_ROWS) + round(0.02 * TEST_ROWS)
    )
    assert demo.unreadable_images == kinds["empty"] + kinds["truncated"] + kinds["text"]
    assert min(kinds["empty"], kinds["truncated"], kinds["text"]) >= 1


def _defect_kind(path: Path) -> str:
    """Classify an image file by how it is (or is not) broken."""
    if not path.exists():
        return "missing"
    data = path.read_bytes()
    if not data:
        return "empty"
    if not data.startswith(b"\xff\xd8"):
        return "text"
    return "ok" if _is_readable_jpeg(path) else "truncated"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _small(root: Path, seed: int = 0, workers: int = 1, images: bool = True) -> Path:
    generate_catalogue(root, rows=60, test_rows=30, seed=seed, workers=workers, images=images)
    return root


def test_same_seed_gives_same_bytes(tmp_path: Path) -> None:
    assert _tree(_small(tmp_path / "a")) == _tree(_small(tmp_path / "b"))


def test_serial_and_parallel_give_same_bytes(tmp_path: Path) -> None:
    serial = _tree(_small(tmp_path / "serial", workers=1))
    assert serial == _tree(_small(tmp_path / "parallel", workers=2))
    assert sum(name.endswith(".jpg") for name in serial) >= 85


def test_other_seed_gives_other_catalogue(tmp_path: Path) -> None:
    first = _small(tmp_path / "a", seed=0, images=False)
    second = _small(tmp_path / "b", seed=1, images=False)
    for name in CSV_FILES[:3]:
        assert (first / name).read_bytes() != (second / name).read_bytes()


def _mean_blue_minus_red(code: int, count: int = 40) -> float:
    images = [render_image(code, np.random.default_rng(k)) for k in range(count)]
    rgb = np.stack([np.asarray(image.reduce(10), dtype=np.float64) for image in images])
    return float(rgb[..., 2].mean() - rgb[..., 0].mean())


def test_images_carry_a_class_signal() -> None:
    # Pool images lean blue, old books lean brown, despite noise and ambiguous recipes.
    assert _mean_blue_minus_red(2583) > _mean_blue_minus_red(10) + 5


def test_the_packaged_word_lists_and_looks_cover_every_class_and_name_known_pools() -> None:
    vocabulary = read_json("synthetic_vocabulary.json")
    looks = read_json("synthetic_looks.json")
    codes = {str(code) for code in catalog.CLASS_CODES}
    assert set(vocabulary["classes"]) == codes == set(looks["classes"])
    for lists in vocabulary["classes"].values():
        assert set(lists["families"]) <= set(vocabulary["families"])
        assert all(lists[field] for field in ("nouns", "qualifiers", "brands", "units", "phrases"))
    assert {recipe["tone"] for recipe in looks["classes"].values()} <= set(looks["tones"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 26}, "rows"),
        ({"test_rows": -1}, "test_rows"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_catalogue(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
