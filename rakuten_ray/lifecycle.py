"""The life of a long run, training or scoring: what it is, whether it may resume, its phases.

A run writes its :class:`RunRecord` into its folder before any work: its kind, a fingerprint
or location of each input (named by its command-line option) and the settings that change
its results. ``--resume`` compares the stored record with the new run's and refuses, naming
every field that differs (:func:`resume_record`); the record also carries what the run has
done that a resume reuses (its ``progress``). A :class:`PhaseClock` times the named phases.

This module sits low in the package: it knows nothing of configs, training or scoring, whose
modules say what goes into their records.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

#: Differences named in a refusal, at most; the message then says how many there were.
NAMED_DIFFERENCES = 10


class ResumeError(ValueError):
    """A run folder cannot be resumed with these inputs and settings (exit status 2)."""


def data_fingerprint(table: pd.DataFrame) -> str:
    """sha256 over a table of input data: its index and every value (as text), rows in index
    order, so the order the rows were read in does not change it."""
    rows = table.sort_index().astype(str)
    hashed = pd.util.hash_pandas_object(rows, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of entries keyed by their names (None when it is not such a list)."""
    if items and all(isinstance(i, dict) and "name" in i for i in items):
        return {str(i["name"]): i for i in items}
    return None


def _difference(key: str, then: Any, now: Any) -> str:
    return f"{key}: was {then}, now {now}"


def settings_differences(then: Any, now: Any, key: str = "") -> list[str]:
    """Every setting that differs between two nested settings, by its key path
    (``text_models[minilm].train.epochs: was 3, now 2``); lists of named entries (models)
    are compared by name."""
    if isinstance(then, dict) and isinstance(now, dict):
        found = []
        for name in sorted(set(then) | set(now), key=str):
            path = f"{key}.{name}" if key else str(name)
            if name not in now or name not in then:
                found.append(_difference(path, then.get(name, "absent"), now.get(name, "absent")))
            else:
                found.extend(settings_differences(then[name], now[name], path))
        return found
    if isinstance(then, list) and isinstance(now, list):
        by_name_then, by_name_now = _named(then), _named(now)
        if by_name_then is not None and by_name_now is not None:
            if list(by_name_then) != list(by_name_now):
                return [_difference(key, list(by_name_then), list(by_name_now))]
            return [
                diff
                for name in by_name_then
                for diff in settings_differences(
                    by_name_then[name], by_name_now[name], f"{key}[{name}]"
                )
            ]
    return [] if then == now else [_difference(key, then, now)]


@dataclass(frozen=True)
class RunRecord:
    """What a run is (its kind, its inputs, its settings) and what it has done so far."""

    #: ``training`` or ``scoring``.
    kind: str
    #: Each input's fingerprint or location, by the command-line option that names it.
    inputs: dict[str, str]
    #: The settings that change the run's results, as plain (JSON) data.
    settings: dict[str, Any]
    #: What the run has done that a resume reuses; never compared.
    progress: dict[str, Any] = field(default_factory=dict)

    def differences(self, now: RunRecord) -> list[str]:
        """Each field in which run ``now`` differs from this (earlier) one."""
        then, current = _plain(asdict(self)), _plain(asdict(now))
        if then["kind"] != current["kind"]:
            return [_difference("kind", then["kind"], current["kind"])]
        return settings_differences(then["inputs"], current["inputs"]) + settings_differences(
            then["settings"], current["settings"]
        )

    def with_progress(self, **done: Any) -> RunRecord:
        """This record with ``done`` added to its progress."""
        return replace(self, progress={**self.progress, **done})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        """The record stored at ``path``; None when there is none.

        Raises:
            ResumeError: the file is not a record this software writes.
        """
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise ResumeError(f"{path}: not a run record this software can resume ({exc})") from exc


def resume_record(path: Path, record: RunRecord, advice: str) -> RunRecord | None:
    """The record stored at ``path`` (with its progress), once it describes the same run as
    ``record``; None when nothing is stored there.

    Raises:
        ResumeError: naming each field that differs, then ``advice``.
    """
    saved = RunRecord.load(path)
    if saved is None:
        return None
    differences = saved.differences(record)
    if differences:
        count = f" ({len(differences)} differences)" if len(differences) > NAMED_DIFFERENCES else ""
        raise ResumeError(
            f"{path.parent}: --resume: the interrupted {saved.kind} run differs: "
            f"{'; '.join(differences[:NAMED_DIFFERENCES])}{count}; {advice}"
        )
    return saved


class PhaseClock:
    """Times each named phase of a run and says when it starts and how long it took."""

    def __init__(self, say: Callable[[str], None] = print, label: str = "") -> None:
        self.say = say
        self.label = label
        self.seconds: dict[str, float] = {}
        self.starts: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as phase ``name``."""
        self.say(f"{self.label}{name} ...")
        self.starts[name] = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - self.starts[name]
        self.say(f"{self.label}{name} done in {self.seconds[name]:.0f}s (total {self.total:.0f}s)")

    def since(self, name: str) -> float:
        """Seconds since phase ``name`` started."""
        return time.perf_counter() - self.starts[name]

    @property
    def total(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.started
