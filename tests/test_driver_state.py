"""What the scoring driver keeps while a run goes: one bit per row for the rows done, the
submission written partition by partition, the rows' content digests, the local engine's
progress lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rakuten_ray.layout import PREDICTION_DTYPES, ROW_COLUMN
from rakuten_ray.scoring.progress import RowProgress
from rakuten_ray.scoring.rows import content_hashes
from rakuten_ray.scoring.rowset import RowSet, done_rows
from rakuten_ray.scoring.submission import write_submission


def test_row_set_holds_what_a_python_set_holds() -> None:
    generator = np.random.default_rng(0)
    rows = generator.integers(0, 1001, size=700)
    members = RowSet(1001)
    members.add(rows[:400])
    members.add(rows[400:])
    probe = np.arange(1001)
    assert members.contains(probe).tolist() == [int(r) in set(rows.tolist()) for r in probe]
    assert len(members) == len(set(rows.tolist()))
    assert members.bits.nbytes == 126


def _write(folder: Path, parts: list[list[int]]) -> Path:
    """Prediction files of the columns the submission reads (index: row + 100)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, rows in enumerate(parts):
        frame = pd.DataFrame(
            {
                ROW_COLUMN: rows,
                "index": [r + 100 for r in rows],
                "prdtypecode": [10 + r for r in rows],
                "image_status": ["ok" if r % 3 else "missing" for r in rows],
            }
        ).astype({name: PREDICTION_DTYPES[name] for name in ("index", "prdtypecode")})
        frame.to_parquet(folder / f"p{number}.parquet", index=False)
    return folder


def test_the_submission_follows_input_order_from_unordered_files(tmp_path: Path) -> None:
    """Files in any order, rows spread over partitions of 3: the CSV is in row order, and
    the same as writing it from one sorted table."""
    predictions = _write(tmp_path / "predictions", [[7, 2, 9], [0, 5], [1, 8, 3, 6, 4]])
    submission = tmp_path / "submission.csv"
    counts = write_submission(predictions, 10, submission, tmp_path / "scratch", 3)
    expected = pd.DataFrame({"prdtypecode": [10 + r for r in range(10)]}, index=range(100, 110))
    assert submission.read_text() == expected.to_csv()
    assert counts == {"missing": 4, "ok": 6}
    assert done_rows(predictions, 10).contains(np.arange(10)).all()
    assert not (tmp_path / "scratch").exists()


@pytest.mark.parametrize(
    "parts, message",
    [
        ([[0, 1, 2], [3, 4], [4]], "6 predictions for 5 input rows (1 repeated)"),
        ([[0, 1, 2], [4]], "4 predictions for 5 input rows (0 repeated)"),
        ([[0, 1, 2, 3, 4, 5]], "6 predictions for 5 input rows (0 repeated)"),
    ],
)
def test_a_row_repeated_or_missing_writes_no_submission(
    tmp_path: Path, parts: list[list[int]], message: str
) -> None:
    predictions = _write(tmp_path / "predictions", parts)
    submission = tmp_path / "submission.csv"
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_submission(predictions, 5, submission, tmp_path / "scratch", 2)
    assert list(tmp_path.glob("*.csv*")) == [] and list(tmp_path.glob(".*")) == []


def test_a_content_digest_follows_texts_ids_and_image_bytes(tmp_path: Path) -> None:
    (tmp_path / "image_1_product_2.jpg").write_bytes(b"first")
    frame = pd.DataFrame(
        {
            "designation": ["ab", "a", "ab", "ab"],
            "description": ["", "b", "", ""],
            "productid": ["2", "2", "2", "3"],
            "imageid": ["1", "1", "1", "1"],
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    before = content_hashes(table, tmp_path, images=True)
    assert before[0] == before[2] and len(set(before)) == 3  # shifting text between fields
    assert content_hashes(table, None, images=False) != before
    (tmp_path / "image_1_product_2.jpg").write_bytes(b"second")
    after = content_hashes(table, tmp_path, images=True)
    assert after[0] != before[0] and after[3] == before[3]
    # An input that carries its images: the column's bytes, not the folder's files.
    carried = table.append_column("image", pa.array([b"x", b"x", b"x", None], pa.binary()))
    own = content_hashes(carried, tmp_path, images=True)
    changed = carried.set_column(4, "image", pa.array([b"y", b"x", b"x", None], pa.binary()))
    assert own[0] != after[0] and content_hashes(changed, tmp_path, images=True)[1:] == own[1:]
    assert content_hashes(changed, tmp_path, images=True)[0] != own[0]


def test_progress_lines_give_rows_rate_and_time_left() -> None:
    lines: list[str] = []
    progress = RowProgress(40, lines.append, interval=0.0, terminal=False)
    progress.update(10)
    assert lines[-1].startswith("scored 10 of 40 rows (25%) in 0m00s, ")
    assert "rows/s, about " in lines[-1] and lines[-1].endswith(" left")
    progress.update(30)
    progress.close()
    assert len(lines) == 2 and lines[-1].startswith("scored 40 of 40 rows (100%)")
