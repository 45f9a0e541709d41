"""The catalogue data layer: raw layout, schema checks at the boundary, label joins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten_ray.catalog import (
    CATEGORY_NAMES,
    CLASS_CODES,
    CatalogueDir,
    SchemaError,
    codes_to_indices,
    image_path,
    indices_to_codes,
    read_labels,
    read_products,
)
from rakuten_ray.cli import main

X_HEADER = ",designation,description,productid,imageid\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def x_rows(n: int, start: int = 0) -> str:
    return "".join(
        f'{i},"Titre {i}, avec virgule","<p>desc {i}</p>",{1000 + i},{2000 + i}\n'
        for i in range(start, start + n)
    )


def test_class_order_and_names() -> None:
    assert list(CLASS_CODES) == sorted(CLASS_CODES) and len(CLASS_CODES) == 27
    assert set(CATEGORY_NAMES) == set(CLASS_CODES)
    codes = np.array([2905, 10, 1281])
    assert list(codes_to_indices(codes)) == [26, 0, 8]
    assert list(indices_to_codes(codes_to_indices(codes))) == list(codes)


def test_read_products_types_and_index(tmp_path: Path) -> None:
    path = write(tmp_path / "X.csv", X_HEADER + x_rows(3, start=10) + '13,"",,1013,2013\n')
    products = read_products(path)
    assert list(products.index) == [10, 11, 12, 13]
    assert products["productid"].dtype == np.int64 and products["imageid"].dtype == np.int64
    assert products.loc[10, "designation"] == "Titre 10, avec virgule"
    assert products.loc[13, "description"] == ""


def test_labels_join_by_index_not_position(tmp_path: Path) -> None:
    write(tmp_path / "X_train_update.csv", X_HEADER + x_rows(4))
    codes = {0: 10, 1: 2583, 2: 1280, 3: 2905}
    shuffled = [3, 1, 0, 2]
    write(
        tmp_path / "Y_train_CVw08PX.csv",
        ",prdtypecode\n" + "".join(f"{i},{codes[i]}\n" for i in shuffled),
    )
    labelled = CatalogueDir(tmp_path).labelled()
    assert labelled["prdtypecode"].to_dict() == codes


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        (",designation,description,imageid\n0,a,b,1\n", "productid", "missing column"),
        (X_HEADER + "0,a,b,12x,5\n1,a,b,-3,5\n2,a,b,1.5,5\n", "productid", "row 0: '12x'"),
        (X_HEADER + "0,a,b,1,\n", "imageid", "not a non-negative integer"),
        (X_HEADER + "x,a,b,1,2\n", "index", "not an integer"),
        (X_HEADER + "0,a,b,1,2\n0,c,d,3,4\n", "index", "duplicate"),
    ],
)
def test_product_schema_errors(tmp_path: Path, text: str, column: str, fragment: str) -> None:
    path = write(tmp_path / "X.csv", text)
    with pytest.raises(SchemaError) as err:
        read_products(path)
    message = str(err.value)
    assert str(path) in message and column in message and fragment in message


def test_error_quotes_at_most_five_rows(tmp_path: Path) -> None:
    rows = "".join(f"{i},a,b,bad{i},1\n" for i in range(8))
    path = write(tmp_path / "X.csv", X_HEADER + rows)
    with pytest.raises(SchemaError) as err:
        read_products(path)
    message = str(err.value)
    assert "8 row(s)" in message and "bad4" in message and "bad5" not in message
    assert "3 more" in message


def test_label_outside_the_27_codes(tmp_path: Path) -> None:
    path = write(tmp_path / "Y.csv", ",prdtypecode\n0,10\n1,11\n2,2583\n")
    with pytest.raises(SchemaError, match=r"prdtypecode.*row 1: '11'"):
        read_labels(path)


def test_product_without_label(tmp_path: Path) -> None:
    write(tmp_path / "X_train_update.csv", X_HEADER + x_rows(3))
    write(tmp_path / "Y_train_CVw08PX.csv", ",prdtypecode\n0,10\n1,10\n")
    with pytest.raises(SchemaError, match="has no label"):
        CatalogueDir(tmp_path).labelled()


def test_image_path_from_integers_only(tmp_path: Path) -> None:
    assert image_path(tmp_path, 12, 34) == tmp_path / "image_12_product_34.jpg"
    with pytest.raises(ValueError):
        image_path(tmp_path, "../../etc/passwd", 1)  # type: ignore[arg-type]


def test_cli_exits_2_on_schema_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "X_train_update.csv", X_HEADER + "0,a,b,oops,1\n")
    write(tmp_path / "Y_train_CVw08PX.csv", ",prdtypecode\n0,10\n")
    assert main(["inspect", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "X_train_update.csv" in err and "productid" in err and "oops" in err


def test_console_script_exit_status(tmp_path: Path) -> None:
    write(tmp_path / "X_train_update.csv", X_HEADER + x_rows(2))
    write(tmp_path / "Y_train_CVw08PX.csv", ",prdtypecode\n0,10\n1,99\n")
    done = subprocess.run(
        [sys.executable, "-m", "rakuten_ray.cli", "inspect", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "Y_train_CVw08PX.csv" in done.stderr and "'99'" in done.stderr


def test_reads_the_real_sample(rakuten_sample: Path) -> None:
    catalogue = CatalogueDir(rakuten_sample)
    labelled = catalogue.labelled()
    assert len(labelled) == 4942
    assert set(labelled["prdtypecode"]) == set(CLASS_CODES)
    test = read_products(catalogue.x_test)
    assert len(test) == 499 and test.index.min() == 84916
    present = sum(
        image_path(catalogue.image_dir("test"), i, p).is_file()
        for i, p in zip(test["imageid"], test["productid"], strict=True)
    )
    assert present == 490
    assert isinstance(labelled, pd.DataFrame)
