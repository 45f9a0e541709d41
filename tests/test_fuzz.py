"""Property-based fuzzing of the input boundary: text preparation and the CSV readers.

Whatever bytes or values come in, nothing escapes but :class:`SchemaError` (an input refused
before any work), and what comes out keeps the documented shape.
"""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_text import SEP_TEMPLATE, TITLE_TEMPLATE

from rakuten_ray.catalog import X_COLUMNS, SchemaError, read_labels, read_products
from rakuten_ray.scoring.rows import (
    INDEX_COLUMN,
    ROW_COLUMN,
    check_headers,
    normalise_batch,
    stage_inputs,
)
from rakuten_ray.text import MAX_TEXT_CHARS, TextTemplate, clean_text, prepare_texts, render_text

#: Hypothesis runs many examples per test: a fresh tmp_path each is not needed, one per test is.
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --- text preparation ---------------------------------------------------------------------


def assert_clean(out: str, limit: int) -> None:
    """Plain, normalised, single-spaced text no longer than ``limit``."""
    assert isinstance(out, str)
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in out)
    assert out == out.strip()
    assert "  " not in out
    assert len(out) <= limit
    assert unicodedata.is_normalized("NFC", out)


# Markup-heavy alphabet so the fuzzer reaches tags, entities and scripts, plus any text.
MARKUP_PIECES = (
    "<", ">", "/", "&", ";", "#", "amp", "lt", "gt", "eacute", "script", "style", "!--", "-->",
    "br", "{", "}", "x", "é", "😀", " ", "\n", "\x00", "\u0301", "\ud800", "\u202e", "\u200f",
)  # fmt: skip
markup = st.lists(st.sampled_from(MARKUP_PIECES), max_size=60).map("".join)
any_text = st.one_of(st.text(), markup)
#: Everything a pandas cell can hold: text, missing markers, numbers, bytes.
field_value = st.one_of(
    any_text, st.none(), st.just(pd.NA), st.floats(), st.integers(), st.binary(max_size=8)
)
#: Text that cleaning leaves as it is on a second pass: no markup and no entity to decode.
#: (With them, one pass can assemble a new tag or entity, e.g. "<sc<b>ript>" or "&amp;lt;".)
plain_text = st.text().filter(lambda text: "<" not in text and "&" not in text)


@FUZZ
@given(field_value)
def test_clean_text_fuzz(raw: object) -> None:
    assert_clean(clean_text(raw), MAX_TEXT_CHARS)


@FUZZ
@given(plain_text)
def test_clean_text_is_idempotent_on_plain_text(raw: str) -> None:
    once = clean_text(raw)
    assert clean_text(once) == once


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=3), st.integers(MAX_TEXT_CHARS // 3, 3 * MAX_TEXT_CHARS))
def test_clean_text_caps_long_fields(piece: str, repeat: int) -> None:
    assert_clean(clean_text(piece * repeat), MAX_TEXT_CHARS)


@FUZZ
@given(st.sampled_from([TITLE_TEMPLATE, SEP_TEMPLATE]), field_value, field_value)
def test_render_text_fuzz(template: str, designation: object, description: object) -> None:
    out = render_text(template, designation, description)
    assert_clean(out, 2 * MAX_TEXT_CHARS + len(template))
    marker = "[SEP]" if template == SEP_TEMPLATE else "[DESC]"
    assert marker in out


@FUZZ
@given(st.lists(st.tuples(field_value, field_value), max_size=8))
def test_prepare_texts_renders_each_row(rows: list[tuple[object, object]]) -> None:
    designations, descriptions = [d for d, _ in rows], [e for _, e in rows]
    out = prepare_texts(designations, descriptions, SEP_TEMPLATE)
    assert out == [render_text(SEP_TEMPLATE, d, e) for d, e in rows]


@FUZZ
@given(st.text())
def test_template_validation_fuzz(template: str) -> None:
    try:
        compiled = TextTemplate(template)
    except ValueError as exc:
        assert "template" in str(exc)
    else:
        assert_clean(compiled.render("a {b}", "c"), 2 * MAX_TEXT_CHARS + len(template))


# --- CSV readers ----------------------------------------------------------------------------

X_HEADER = ["", *X_COLUMNS]
#: Cells near the edges of what the readers parse: ids, numbers, quotes, separators.
CELL_PIECES = (
    "0", "7", "12.0", "-3", "1e30", "inf", "nan", "NaN", "NA", "null", "", " ", "x", "index",
    "designation", "prdtypecode", "10", "2583", '"', ",", "\n", "\r", "\x00", "é", "\ufeff",
    "１２", "9" * 19,
)  # fmt: skip
cell = st.one_of(st.lists(st.sampled_from(CELL_PIECES), max_size=4).map("".join), st.text())
#: A header: the scoring layout, the label layout, or anything.
header = st.one_of(
    st.just(X_HEADER),
    st.just(["", "prdtypecode"]),
    st.lists(st.sampled_from(["", *X_COLUMNS, "prdtypecode", "index", "x"]), max_size=7),
)


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    """A CSV-shaped file: a header and ragged rows, odd line ends, maybe a BOM or stray bytes."""
    lines = [draw(header), *draw(st.lists(st.lists(cell, max_size=7), max_size=6))]
    text = io.StringIO()
    csv.writer(text, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"]))).writerows(lines)
    data = text.getvalue().encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.booleans()):  # bytes that are not UTF-8, somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


any_file = st.one_of(csv_bytes(), st.binary(max_size=300))


def _write(folder: Path, name: str, data: bytes) -> Path:
    """``data`` in a new folder under ``folder`` (hypothesis reuses one tmp_path per test)."""
    path = Path(tempfile.mkdtemp(dir=folder)) / name
    path.write_bytes(data)
    return path


@FUZZ
@given(any_file)
def test_catalogue_readers_only_raise_schema_error(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path, "fuzz.csv", data)
    for reader in (read_products, read_labels):
        try:
            frame = reader(path)
        except SchemaError as exc:
            assert str(path) in str(exc)
        else:
            assert frame.index.dtype == np.int64 and frame.index.is_unique


def _data_rows(rows: list[list[str]]) -> list[list[str]]:
    """Rows in one shape (index, the four X columns), written from plain ASCII ids and text."""
    return [[str(i), *cells] for i, cells in enumerate(rows)]


#: Row cells that keep the file's record count unambiguous: any text, in the X layout.
x_row = st.lists(st.text(), min_size=0, max_size=6)


#: Line end and quoting of a well-formed file. A writer quotes a cell holding "\r" only when
#: "\r" is in its line end; unquoted, a bare "\r" ends a record for every CSV reader.
WELL_FORMED = st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL)])


@settings(FUZZ, max_examples=40)
@given(st.lists(x_row, min_size=1, max_size=8), WELL_FORMED, st.booleans())
def test_stage_inputs_keeps_every_row(
    tmp_path: Path, rows: list[list[str]], dialect: tuple[str, int], bom: bool
) -> None:
    """Ragged rows (missing or surplus fields) and any text: one staged row per CSV record."""
    text = io.StringIO()
    line_end, quoting = dialect
    writer = csv.writer(text, lineterminator=line_end, quoting=quoting)
    writer.writerows([X_HEADER, *_data_rows(rows)])
    data = ("\ufeff" if bom else "") + text.getvalue()
    path = _write(tmp_path, "rows.csv", data.encode("utf-8", errors="surrogatepass"))
    check_headers([path])
    staging = path.parent / "staging"
    assert stage_inputs([path], staging, rows_per_shard=3) == len(rows)
    staged = _read_staged(staging)
    assert staged[ROW_COLUMN].tolist() == list(range(len(rows)))
    assert staged[INDEX_COLUMN].tolist() == [str(i) for i in range(len(rows))]
    normalised = normalise_batch(staged)
    assert normalised[INDEX_COLUMN].tolist() == list(range(len(rows)))


def _read_staged(staging: Path) -> pd.DataFrame:
    shards = sorted(staging.glob("shard-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)


@FUZZ
@given(any_file, st.sampled_from(["in.csv", "in.parquet"]))
def test_header_check_and_staging_only_raise_schema_error(
    tmp_path: Path, data: bytes, name: str
) -> None:
    path = _write(tmp_path, name, data)
    staging = path.parent / "staging"
    try:
        check_headers([path])
        total = stage_inputs([path], staging, rows_per_shard=4)
    except SchemaError as exc:
        assert str(path) in str(exc)
        return
    staged = _read_staged(staging)
    assert len(staged) == total
    normalised = normalise_batch(staged)
    assert len(normalised) == total
    assert normalised[ROW_COLUMN].tolist() == list(range(total))
    for column in ("designation", "description"):
        assert all(isinstance(v, str) for v in normalised[column])


# --- normalise_batch on frames --------------------------------------------------------------

#: Values a batch's id columns can carry from any reader: text, numbers, missing markers.
id_value = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.sampled_from(["12", " 12 ", "12.0", "12.5", "-1", "1e3", "", "١٢", "9" * 19, "0" * 18]),
    st.text(max_size=6),
    st.none(),
    st.just(pd.NA),
    st.booleans(),
)


def _column(values: list[object], typed: bool) -> pd.Series:
    """Values as an object column or, when they allow it, as the column type a reader infers."""
    series = pd.Series(values, dtype=object)
    if typed:
        for dtype in ("Int64", "float64", "string"):
            try:
                return series.astype(dtype)
            except (TypeError, ValueError, OverflowError):
                continue
    return series


def _expected_id(value: object) -> int | None:
    """What a valid id is worth: a non-negative integer of at most 18 digits, else null."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    head, _, tail = str(value).strip().partition(".")
    valid = 1 <= len(head) <= 18 and head.isdecimal() and set(tail) <= {"0"}
    return int(head) if valid else None


@FUZZ
@given(
    st.lists(st.tuples(id_value, field_value, field_value, id_value, id_value), max_size=10),
    st.booleans(),
)
def test_normalise_batch_fuzz(rows: list[tuple[object, ...]], typed: bool) -> None:
    names = [INDEX_COLUMN, *X_COLUMNS]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    batch = pd.DataFrame({name: _column(values, typed) for name, values in columns.items()})
    batch.insert(0, ROW_COLUMN, np.arange(len(rows)) + 100)
    out = normalise_batch(batch)
    assert len(out) == len(rows)
    assert out[ROW_COLUMN].dtype == np.int64 and out[ROW_COLUMN].tolist() == list(batch["row"])
    for column in ("designation", "description"):
        assert all(isinstance(v, str) for v in out[column])
    for column in (INDEX_COLUMN, *X_COLUMNS[2:]):
        assert str(out[column].dtype) == "Int64"
        if not typed:
            got = [None if pd.isna(v) else int(v) for v in out[column]]
            assert got == [_expected_id(v) for v in columns[column]]


@pytest.mark.parametrize("count", [0, 1, 5])
def test_staged_row_positions_continue_across_files(tmp_path: Path, count: int) -> None:
    """Two files: the second's rows continue the first's positions."""
    files = []
    for part in range(2):
        rows = _data_rows([["t", "d", str(i), str(i)] for i in range(count + part)])
        text = io.StringIO()
        csv.writer(text).writerows([X_HEADER, *rows])
        files.append(_write(tmp_path, f"part-{part}.csv", text.getvalue().encode()))
    check_headers(files)
    total = stage_inputs(files, tmp_path / "staging", rows_per_shard=2)
    assert total == 2 * count + 1
    staged = _read_staged(tmp_path / "staging")
    assert staged[ROW_COLUMN].tolist() == list(range(total))
    expected = itertools.chain(range(count), range(count + 1))
    assert staged[INDEX_COLUMN].tolist() == [str(i) for i in expected]
