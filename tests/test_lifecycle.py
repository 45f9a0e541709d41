"""The run lifecycle: records written and read back, the resume check naming each field that
differs, the data fingerprint and the phase clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rakuten_ray.lifecycle import (
    PhaseClock,
    ResumeError,
    RunRecord,
    data_fingerprint,
    resume_record,
)

ADVICE = "resume with the same, or use --overwrite"


def _record(
    kind: str = "scoring", inputs: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
) -> RunRecord:  # fmt: skip
    """A scoring run's record, or one with the given fields."""
    default_settings = {
        "seed": 42,
        "text_models": [{"name": "tfidf", "max_features": 1000}, {"name": "bert", "epochs": 3}],
        "scoring": {"text": {"micro_batch_size": 16, "runtime": "auto"}},
    }
    default_inputs = {"--input": "ab" * 32, "--images": "/data/images"}
    return RunRecord(kind, inputs or default_inputs, settings or default_settings)


def test_a_saved_record_reads_back_with_its_progress(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    assert RunRecord.load(path) is None
    record = _record().with_progress(staged_rows=63)
    record.save(path)
    assert RunRecord.load(path) == record
    assert resume_record(path, _record(), ADVICE) == record  # progress is never compared


def test_resume_names_every_input_and_setting_that_differs(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    _record().save(path)
    settings = _record().settings
    now = _record(
        inputs={"--input": "ab" * 32, "--images": "/elsewhere"},
        settings={
            **settings,
            "seed": 7,
            "text_models": [{"name": "tfidf", "max_features": 1000}, {"name": "bert", "epochs": 2}],
            "scoring": {"text": {"micro_batch_size": 16, "runtime": "torch", "threads": 2}},
        },
    )
    with pytest.raises(ResumeError) as refused:
        resume_record(path, now, ADVICE)
    message = str(refused.value)
    for difference in (
        "--images: was /data/images, now /elsewhere",
        "seed: was 42, now 7",
        "text_models[bert].epochs: was 3, now 2",
        "scoring.text.runtime: was auto, now torch",
        "scoring.text.threads: was absent, now 2",
    ):
        assert difference in message
    assert "--input" not in message and "tfidf" not in message
    assert message.startswith(f"{tmp_path}: --resume:") and message.endswith(ADVICE)


def test_resume_refuses_another_kind_or_model_list(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    _record().save(path)
    with pytest.raises(ResumeError, match="kind: was scoring, now training"):
        resume_record(path, _record(kind="training"), ADVICE)
    fewer = {**_record().settings, "text_models": [{"name": "tfidf", "max_features": 1000}]}
    with pytest.raises(ResumeError, match=r"text_models: was \['tfidf', 'bert'\], now \['tfidf'\]"):
        resume_record(path, _record(settings=fewer), ADVICE)


def test_a_file_that_is_not_a_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"bundle_id": "0123", "input_sha256": "ab"}')
    with pytest.raises(ResumeError, match="not a run record"):
        resume_record(path, _record(), ADVICE)


def test_settings_compare_as_they_read_back_from_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    _record(settings={"crop": [224, 224]}).save(path)
    assert resume_record(path, _record(settings={"crop": (224, 224)}), ADVICE) is not None


def test_data_fingerprint_follows_values_and_index_not_row_order() -> None:
    table = pd.DataFrame({"text": ["chaise", "lampe", "tapis"], "label": [10, 40, 50]})
    fingerprint = data_fingerprint(table)
    assert len(fingerprint) == 64
    assert data_fingerprint(table.iloc[::-1]) == fingerprint
    assert data_fingerprint(table.assign(label=[10, 40, 60])) != fingerprint
    assert data_fingerprint(table.set_axis([0, 1, 3])) != fingerprint
    assert data_fingerprint(table.iloc[:2]) != fingerprint


def test_the_phase_clock_times_and_announces_each_phase() -> None:
    said: list[str] = []
    clock = PhaseClock(said.append, label="phase ")
    with clock.phase("stage"):
        pass
    with clock.phase("score"):
        pass
    assert list(clock.seconds) == ["stage", "score"]
    assert said[0] == "phase stage ..." and said[1].startswith("phase stage done in ")
    assert said[2] == "phase score ..."
    assert 0 <= clock.seconds["score"] <= clock.since("stage") <= clock.total
