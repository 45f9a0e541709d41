"""Continuing an interrupted training run in its own folder (``rakuten-ray train --resume``).

A run writes what it trains on before it starts (``RUN/run.json``: the resolved config and a
fingerprint of the data) and, as each base model finishes training and scoring its held-out
rows, a record of that model (``finished.json`` in its folder: its fit and the sha256 of
every file it produced). A resumed run must see the same config and data, or it is refused
naming what differs. A base model whose record checks out is reused as it is; any other
trains again, a Ray Train run from its latest checkpoint (Ray Train restores a run created
again with the same name and storage). Fusion, refit and sealing then run as usual.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_ray.catalog import LABEL_COLUMN, X_COLUMNS, SchemaError
from rakuten_ray.config import RunConfig
from rakuten_ray.hashing import sha256_file
from rakuten_ray.layout import RunLayout
from rakuten_ray.models.registry import FitResult
from rakuten_ray.models.spec import ModelSpec
from rakuten_ray.training.base_models import BaseModelRun
from rakuten_ray.training.data import TrainingData

#: Config sections that change how a bundle scores or serves, not what a run trains: a
#: resumed run may change them.
UNTRAINED_SECTIONS = ("scoring", "serving")


class ResumeError(SchemaError):
    """The run folder cannot be resumed with this config and data (exit status 2)."""


def data_fingerprint(data: TrainingData) -> str:
    """sha256 over every labelled row (index, fields, label, image path) and the size of each
    row's image file (-1 when absent): a changed row, label or image file changes it.

    Image sizes are read, not image contents: a full catalogue's images are too many to hash
    before a run starts.
    """
    columns = [*X_COLUMNS, LABEL_COLUMN, "image_path"]
    rows = pd.concat([data.labelled[columns], data.images_only[columns]]).sort_index()
    sizes = [Path(p).stat().st_size if Path(p).is_file() else -1 for p in rows["image_path"]]
    rows = rows.assign(image_bytes=np.asarray(sizes, dtype=np.int64))
    hashed = pd.util.hash_pandas_object(rows.astype(str), index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """What a run trains on: its resolved config and its data's fingerprint."""

    config: dict[str, Any]
    data_sha256: str

    @classmethod
    def of(cls, config: RunConfig, data: TrainingData) -> RunIdentity:
        return cls(json.loads(json.dumps(config.to_dict())), data_fingerprint(data))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> RunIdentity:
        return cls(**json.loads(path.read_text()))


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of model entries keyed by their names (None when it is not such a list)."""
    if items and all(isinstance(i, dict) and "name" in i for i in items):
        return {str(i["name"]): i for i in items}
    return None


def config_differences(then: Any, now: Any, key: str = "") -> list[str]:
    """Every setting that differs between two resolved configs, by its key path
    (``text_models[minilm].train.epochs: 3 then, 2 now``)."""
    if isinstance(then, dict) and isinstance(now, dict):
        found = []
        for name in sorted(set(then) | set(now), key=str):
            path = f"{key}.{name}" if key else str(name)
            if name not in now or name not in then:
                state = "absent now" if name not in now else "absent then"
                found.append(f"{path}: {state}")
            else:
                found.extend(config_differences(then[name], now[name], path))
        return found
    if isinstance(then, list) and isinstance(now, list):
        by_name_then, by_name_now = _named(then), _named(now)
        if by_name_then is not None and by_name_now is not None:
            if list(by_name_then) != list(by_name_now):
                return [f"{key}: models {list(by_name_then)} then, {list(by_name_now)} now"]
            return [
                diff
                for name in by_name_then
                for diff in config_differences(
                    by_name_then[name], by_name_now[name], f"{key}[{name}]"
                )
            ]
    return [] if then == now else [f"{key}: {then!r} then, {now!r} now"]


def check_resumable(layout: RunLayout, identity: RunIdentity) -> None:
    """Refuse to resume unless ``layout`` holds a run of the same config and data.

    Raises:
        ResumeError: no run to resume, or what differs (config keys, data fingerprint).
    """
    if not layout.identity.is_file():
        raise ResumeError(
            f"{layout.root}: nothing to resume (no {layout.identity.name}; start a run "
            f"without --resume)"
        )
    saved = RunIdentity.load(layout.identity)

    def trained(config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in UNTRAINED_SECTIONS}

    differences = config_differences(trained(saved.config), trained(identity.config))
    if differences:
        raise ResumeError(
            f"{layout.root}: the config differs from the interrupted run's: "
            + "; ".join(differences[:10])
            + (f" ({len(differences)} differences)" if len(differences) > 10 else "")
        )
    if saved.data_sha256 != identity.data_sha256:
        raise ResumeError(
            f"{layout.root}: the training data differs from the interrupted run's (rows, "
            f"labels or image files; fingerprint {saved.data_sha256[:12]} then, "
            f"{identity.data_sha256[:12]} now)"
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
