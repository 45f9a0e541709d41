"""Continuing an interrupted training run in its own folder (``rakuten-ray train --resume``).

A run writes what it trains on before it starts (``RUN/run.json``, a
:class:`~rakuten_ray.lifecycle.RunRecord`: the fingerprint of its data and the resolved config
but for the sections that do not change training) and, as each base model finishes training
and scoring its held-out rows, a record of that model (``finished.json`` in its folder: its
fit and the sha256 of every file it produced). A resumed run must see the same config and
data, or it is refused naming what differs. A base model whose record checks out is reused
as it is; any other trains again, a Ray Train run from its latest checkpoint (Ray Train
restores a run created again with the same name and storage). Fusion, refit and sealing then
run as usual.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.catalog import LABEL_COLUMN, X_COLUMNS
from rakuten_ray.config import RunConfig
from rakuten_ray.hashing import sha256_file
from rakuten_ray.layout import RunLayout
from rakuten_ray.lifecycle import ResumeError, RunRecord, data_fingerprint, resume_record
from rakuten_ray.models.spec import ModelSpec
from rakuten_ray.training.base_models import BaseModelRun
from rakuten_ray.training.data import TrainingData
from rakuten_ray.training.fitted import FitResult

#: Config sections that change how a bundle scores or serves, not what a run trains: a
#: resumed run may change them.
UNTRAINED_SECTIONS = ("scoring", "serving")
#: The training data's entry in a run's inputs: the option that names it.
DATA_INPUT = "--data"


def data_table(data: TrainingData) -> pd.DataFrame:
    """Every labelled row (index, fields, label) with its image file's name and size (-1
    when absent): what the data's fingerprint covers, so a changed row, label or image file
    changes it.

    Image sizes are read, not image contents: a full catalogue's images are too many to hash
    before a run starts. The file's name, not its folder, so that the same rows and images
    give the same fingerprint wherever they are: a moved folder, or a Parquet catalogue
    whose images were written to this node's cache.
    """
    columns = [*X_COLUMNS, LABEL_COLUMN]
    rows = pd.concat([data.labelled, data.images_only])
    paths = [Path(p) for p in rows["image_path"]]
    sizes = [p.stat().st_size if p.is_file() else -1 for p in paths]
    return rows[columns].assign(
        image_file=[p.name for p in paths], image_bytes=np.asarray(sizes, dtype=np.int64)
    )


def training_record(config: RunConfig, data: TrainingData) -> RunRecord:
    """What a run trains on: its data's fingerprint and the config sections that train."""
    settings = {k: v for k, v in config.to_dict().items() if k not in UNTRAINED_SECTIONS}
    return RunRecord("training", {DATA_INPUT: data_fingerprint(data_table(data))}, settings)


def check_resumable(layout: RunLayout, record: RunRecord) -> None:
    """Refuse to resume unless ``layout`` holds a run of the same config and data.

    Raises:
        ResumeError: no run to resume, or each setting or input that differs.
    """
    advice = "resume with the interrupted run's config and data, or train into a new --out"
    if resume_record(layout.identity, record, advice) is None:
        raise ResumeError(
            f"{layout.root}: nothing to resume (no {layout.identity.name}; start a run "
            f"without --resume)"
        )


def _files(layout: RunLayout, name: str, fit: FitResult) -> list[Path]:
    """What a finished base model produced: its model folder's files and held-out scores."""
    model_files = sorted(p for p in fit.model_dir.rglob("*") if p.is_file())
    return [*model_files, layout.heldout_scores(name)]


def record_finished(layout: RunLayout, run: BaseModelRun) -> None:
    """Write base model ``run``'s record, last, once its files are all written."""
    name, root = run.spec.name, layout.root
    record = {
        "model_dir": run.fit.model_dir.relative_to(root).as_posix(),
        "history": run.fit.history,
        "best_epoch": run.fit.best_epoch,
        "seconds": run.seconds,
        "heldout_precision": run.heldout_precision,
        "files": {
            p.relative_to(root).as_posix(): sha256_file(p) for p in _files(layout, name, run.fit)
        },
    }
    layout.finished(name).write_text(json.dumps(record, indent=1))


def finished_run(layout: RunLayout, spec: ModelSpec) -> tuple[BaseModelRun | None, str]:
    """Base model ``spec`` as an interrupted run finished it, if its record checks out;
    else None. The second value says why, for the log."""
    path = layout.finished(spec.name)
    if not path.is_file():
        return None, "not finished"
    record = json.loads(path.read_text())
    fit = FitResult(layout.root / record["model_dir"], record["history"], record["best_epoch"])
    files = {p.relative_to(layout.root).as_posix() for p in _files(layout, spec.name, fit)}
    if files != set(record["files"]):
        return (
            None,
            f"its files differ from its record ({len(files)} now, {len(record['files'])} recorded)",
        )
    for rel, digest in record["files"].items():
        if sha256_file(layout.root / rel) != digest:
            return None, f"{rel} changed since it was recorded"
    scores = pd.read_parquet(layout.heldout_scores(spec.name))
    scores.columns = scores.columns.astype(int)  # saved with string names (Parquet)
    precision = record.get("heldout_precision")
    return BaseModelRun(spec, fit, scores, record["seconds"], precision), "finished and checked"
