"""``rakuten-ray audit``: the products whose current category the model disputes.

A scoring run's predictions are compared with the codes a catalogue holds today (a Y file).
A product is a suspect when the model's code differs from its current one; suspects are
ranked by the **dispute score** ``log(p_model / p_current)``: how many times more probable
the model finds its own code than the current one (the probabilities are calibrated, so a
score of 3 means the current code is about 20 times less likely than the proposed one). The
predictions are read in batches, so catalogues of millions of rows fit in memory; the page
shows the top suspects, the files hold them all.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from pyarrow.fs import FileType

from rakuten_ray import storage
from rakuten_ray.catalog import (
    CATEGORY_NAMES,
    CLASS_CODES,
    MAX_QUOTED_ROWS,
    SchemaError,
    codes_to_indices,
    image_filename,
    read_labels,
)
from rakuten_ray.images import load_image_at
from rakuten_ray.layout import FINAL_PROBS, INDEX_COLUMN, AuditLayout, ImageStatus, ScoringLayout
from rakuten_ray.storage import Location

#: Probability floor in the dispute score: a current code the model rules out stays finite.
PROBABILITY_FLOOR = 1e-12
#: Rows of predictions read at a time.
BATCH_ROWS = 65_536
#: Longest side of a thumbnail on the page, in pixels.
THUMBNAIL_SIZE = 128
#: Suspect columns carried from the predictions.
CARRIED = [INDEX_COLUMN, "productid", "imageid", "text_prdtypecode", "image_prdtypecode",
           "image_status"]  # fmt: skip


@dataclass(frozen=True)
class AuditSummary:
    """What an audit found (also in ``AUDIT/summary.json``)."""

    rows: int
    suspects: int
    agreement_rate: float
    expected_errors: float


def _predicted_index(folder: Path) -> pd.Index:
    return pd.Index(ds.dataset(folder).to_table(columns=[INDEX_COLUMN]).column(0).to_numpy())


def check_labels(labels: pd.Series, predicted: pd.Index, labels_csv: Path) -> None:
    """Refuse, before any work, labels that do not match the predicted rows one to one."""
    missing = predicted.difference(labels.index)
    if len(missing):
        raise SchemaError(
            f"{labels_csv}: no current code for {len(missing)} predicted row(s), e.g. index "
            f"{list(missing[:MAX_QUOTED_ROWS])}"
        )
    extra = labels.index.difference(predicted)
    if len(extra):
        raise SchemaError(
            f"{labels_csv}: {len(extra)} row(s) that the predictions do not have, e.g. index "
            f"{list(extra[:MAX_QUOTED_ROWS])} (audit the scoring output of the same catalogue)"
        )


class _Tally:
    """Counts accumulated batch by batch."""

    def __init__(self) -> None:
        size = len(CLASS_CODES)
        self.confusion = np.zeros((size, size), dtype=np.int64)  # current x predicted
        self.expected_errors = np.zeros(size)  # per current class: sum of 1 - p(current)
        self.suspects: list[pd.DataFrame] = []

    def add(self, batch: pd.DataFrame, labels: pd.Series) -> None:
        probs = batch[FINAL_PROBS].to_numpy(dtype=np.float64)
        current = labels.loc[batch[INDEX_COLUMN].to_numpy()].to_numpy()
        current_idx, predicted_idx = codes_to_indices(current), probs.argmax(axis=1)
        np.add.at(self.confusion, (current_idx, predicted_idx), 1)
        p_current = probs[np.arange(len(probs)), current_idx]
        np.add.at(self.expected_errors, current_idx, 1.0 - p_current)
        disputed = predicted_idx != current_idx
        if not disputed.any():
            return
        p_model = probs[disputed, predicted_idx[disputed]]
        kept = batch.loc[disputed, CARRIED].reset_index(drop=True)
        kept["current_prdtypecode"] = current[disputed]
        kept["proposed_prdtypecode"] = np.asarray(CLASS_CODES)[predicted_idx[disputed]]
        kept["p_current"] = p_current[disputed]
        kept["p_proposed"] = p_model
        kept["dispute_score"] = np.log(p_model) - np.log(
            np.maximum(p_current[disputed], PROBABILITY_FLOOR)
        )
        self.suspects.append(kept)


def _ranked(tally: _Tally) -> pd.DataFrame:
    columns = [*CARRIED, "current_prdtypecode", "proposed_prdtypecode", "p_current",
               "p_proposed", "dispute_score"]  # fmt: skip
    suspects = pd.concat(tally.suspects, ignore_index=True) if tally.suspects else None
    if suspects is None:
        suspects = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    suspects = suspects.sort_values(
        ["dispute_score", INDEX_COLUMN], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    suspects.insert(0, "rank", np.arange(1, len(suspects) + 1))
    for side in ("current", "proposed"):
        codes = suspects[f"{side}_prdtypecode"]
        suspects[f"{side}_category"] = [CATEGORY_NAMES.get(int(c), "") for c in codes]
    return suspects


def _summary(tally: _Tally, suspects: pd.DataFrame) -> dict[str, Any]:
    confusion = tally.confusion
    rows = int(confusion.sum())
    agree = np.diag(confusion)
    per_class = {}
    for i, code in enumerate(CLASS_CODES):
        count = int(confusion[i].sum())
        per_class[str(code)] = {
            "category": CATEGORY_NAMES[code],
            "rows": count,
            "agreement_rate": float(agree[i] / count) if count else None,
            "expected_errors": float(tally.expected_errors[i]),
        }
    pairs = [
        {"current": CLASS_CODES[i], "proposed": CLASS_CODES[j], "rows": int(confusion[i, j])}
        for i, j in zip(*np.nonzero(confusion), strict=True)
        if i != j
    ]
    return {
        "rows": rows,
        "suspects": int(len(suspects)),
        "agreement_rate": float(agree.sum() / rows) if rows else None,
        "expected_errors": float(tally.expected_errors.sum()),
        "dispute_score": "log(p_proposed / p_current), calibrated final probabilities",
        "per_class": per_class,
        "top_confusions": sorted(pairs, key=lambda p: -p["rows"])[:50],
        "confusion": {"codes": list(CLASS_CODES), "current_by_proposed": confusion.tolist()},
    }


def _titles(products_csv: Path | None, wanted: set[int]) -> dict[int, str]:
    """Designations of the ``wanted`` row indices, read a chunk at a time."""
    if products_csv is None or not wanted:
        return {}
    found: dict[int, str] = {}
    for chunk in pd.read_csv(products_csv, index_col=0, usecols=[0, 1], dtype=str,
                             keep_default_na=False, chunksize=BATCH_ROWS):  # fmt: skip
        index = pd.to_numeric(chunk.index, errors="coerce")
        for row, title in zip(index, chunk.iloc[:, 0], strict=True):
            if row in wanted:
                found[int(row)] = title
    return found


def _thumbnail(row: pd.Series, image_dir: Location | None, out: AuditLayout) -> str | None:
    """A downscaled copy of the row's image (read from a local or object-storage folder)
    next to the page; its relative path."""
    if image_dir is None or row["image_status"] != ImageStatus.OK.value:
        return None
    filename = image_filename(int(row["imageid"]), int(row["productid"]))
    loaded = load_image_at(storage.join(image_dir, filename))
    if loaded.image is None:
        return None
    out.thumbnails.mkdir(parents=True, exist_ok=True)
    name = f"{int(row[INDEX_COLUMN])}.jpg"
    image = loaded.image.copy()
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image.save(out.thumbnails / name, quality=85)
    return f"{out.thumbnails.name}/{name}"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#1d2330}
h1{margin-bottom:.2em} .lede{color:#555} .cards{display:flex;gap:1em;margin:1em 0}
.card{border:1px solid #dde;border-radius:8px;padding:.6em 1em;min-width:10em}
.card b{display:block;font-size:1.6em}
table{border-collapse:collapse;width:100%} th,td{padding:6px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:middle} th{background:#f5f6fa;position:sticky;top:0}
img{max-width:96px;max-height:96px;border-radius:4px} .noimg{color:#aaa;font-size:.85em}
.bar{height:10px;border-radius:5px;display:inline-block;vertical-align:middle}
.cur{background:#e4572e} .pro{background:#2e86de} .code{color:#777;font-size:.85em}
label{margin-right:1em}
"""

_FILTER_SCRIPT = """
function applyFilter(){
  const cur=document.getElementById('current').value, pro=document.getElementById('proposed').value;
  let shown=0;
  for(const row of document.querySelectorAll('tbody tr')){
    const ok=(!cur||row.dataset.current===cur)&&(!pro||row.dataset.proposed===pro);
    row.style.display=ok?'':'none'; if(ok) shown++;
  }
  document.getElementById('shown').textContent=shown;
}
"""


def _page(suspects: pd.DataFrame, summary: dict[str, Any], thumbs: list[str | None],
          titles: dict[int, str]) -> str:  # fmt: skip
    options = "".join(
        f'<option value="{code}">{code} {html.escape(CATEGORY_NAMES[code])}</option>'
        for code in CLASS_CODES
    )
    rows = []
    for (_, row), thumb in zip(suspects.iterrows(), thumbs, strict=True):
        cur, pro = int(row["current_prdtypecode"]), int(row["proposed_prdtypecode"])
        picture = f'<img src="{html.escape(thumb)}" alt="">' if thumb else (
            f'<span class="noimg">{html.escape(str(row["image_status"]))}</span>'
        )  # fmt: skip
        title = html.escape(titles.get(int(row[INDEX_COLUMN]), ""))
        bars = (
            f'<span class="bar cur" style="width:{100 * row["p_current"]:.0f}px"></span> '
            f'{row["p_current"]:.2f}<br><span class="bar pro" '
            f'style="width:{100 * row["p_proposed"]:.0f}px"></span> {row["p_proposed"]:.2f}'
        )
        rows.append(
            f'<tr data-current="{cur}" data-proposed="{pro}"><td>{int(row["rank"])}</td>'
            f'<td>{picture}</td><td>{title}<br><span class="code">index '
            f'{int(row[INDEX_COLUMN])}</span></td>'
            f'<td>{html.escape(CATEGORY_NAMES[cur])} <span class="code">{cur}</span></td>'
            f'<td>{html.escape(CATEGORY_NAMES[pro])} <span class="code">{pro}</span></td>'
            f'<td>{bars}</td><td>{row["dispute_score"]:.2f}</td></tr>'
        )
    agreement = summary["agreement_rate"]
    cards = [
        ("products audited", f"{summary['rows']:,}"),
        ("agree with the model", f"{100 * agreement:.1f}%" if agreement is not None else "-"),
        ("suspects", f"{summary['suspects']:,}"),
        ("expected wrong codes", f"{summary['expected_errors']:,.0f}"),
    ]
    return f"""<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>Catalogue audit</title><style>{_STYLE}</style><script>{_FILTER_SCRIPT}</script></head>
<body><h1>Catalogue audit</h1>
<p class="lede">Products whose current category the model disputes, most suspect first
(dispute score: log of how many times more probable the proposed code is than the current
one). The page shows the top {len(suspects)}; <code>suspects.parquet</code> holds all
{summary['suspects']:,}.</p>
<div class="cards">{"".join(f'<div class="card"><b>{v}</b>{k}</div>' for k, v in cards)}</div>
<p><label>current <select id="current" onchange="applyFilter()"><option value="">all</option>
{options}</select></label><label>proposed <select id="proposed" onchange="applyFilter()">
<option value="">all</option>{options}</select></label> showing <span id="shown">{len(rows)}
</span></p>
<table><thead><tr><th>#</th><th>image</th><th>product</th><th>current</th><th>proposed</th>
<th>p(current) / p(proposed)</th><th>dispute</th></tr></thead><tbody>
{"".join(rows)}</tbody></table></body></html>"""


def run_audit(
    predictions: Path,
    labels_csv: Path,
    out: Path,
    image_dir: Location | None = None,
    products_csv: Path | None = None,
    page_rows: int = 200,
    overwrite: bool = False,
) -> AuditSummary:
    """Audit a scoring output against the catalogue's current codes; write ``out``.

    Args:
        predictions: a scoring output folder (or its ``predictions/`` folder).
        labels_csv: the current codes (unnamed index, ``prdtypecode``), one per predicted row.
        out: the audit folder.
        image_dir: the catalogue's images, for the page's thumbnails.
        products_csv: the catalogue's X file, for the page's product titles.
        page_rows: suspects shown on the page.
        overwrite: replace a non-empty ``out``.

    Raises:
        SchemaError: a non-empty ``out``, unreadable labels, unknown codes, or labels that do
            not match the predicted rows one to one (before anything is written).
    """
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SchemaError(f"{out}: output folder is not empty (use --overwrite to replace it)")
    folder = ScoringLayout(predictions).parquet_dir()
    if not any(folder.glob("*.parquet")):
        raise SchemaError(f"{predictions}: no predictions (*.parquet) to audit")
    labels = read_labels(labels_csv)
    check_labels(labels, _predicted_index(folder), labels_csv)
    if image_dir is not None and storage.info(image_dir).type != FileType.Directory:
        raise SchemaError(f"{image_dir}: --images is not a folder")

    tally = _Tally()
    columns = [*CARRIED, *FINAL_PROBS]
    for batch in ds.dataset(folder).to_batches(columns=columns, batch_size=BATCH_ROWS):
        tally.add(batch.to_pandas(), labels)
    suspects = _ranked(tally)
    summary = _summary(tally, suspects)

    layout = AuditLayout(out)
    if out.exists():
        shutil.rmtree(out)
    layout.root.mkdir(parents=True)
    suspects.to_parquet(layout.suspects, index=False)
    suspects.to_csv(layout.suspects_csv, index=False)
    layout.summary.write_text(json.dumps(summary, indent=1))
    top = suspects.head(page_rows)
    thumbs = [_thumbnail(row, image_dir, layout) for _, row in top.iterrows()]
    titles = _titles(products_csv, set(top[INDEX_COLUMN].astype(int)))
    layout.page.write_text(_page(top, summary, thumbs, titles), encoding="utf-8")
    return AuditSummary(
        rows=summary["rows"],
        suspects=summary["suspects"],
        agreement_rate=summary["agreement_rate"] or 0.0,
        expected_errors=summary["expected_errors"],
    )
