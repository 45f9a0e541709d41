"""Planning text model calls: per-length call sizes, their token counters, and the
``scoring.text.tokens_per_call`` setting from the config to the scorer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rakuten_ray.batching import plan_length_calls, rows_per_call
from rakuten_ray.bundle import ModelEntry
from rakuten_ray.config import ConfigError, ServingParams, StagePool, config_from_dict
from rakuten_ray.models.registry import get_kind
from rakuten_ray.scoring import stages
from rakuten_ray.serving.online import online_pool

MINIMAL = {"name": "x", "text_models": [{"name": "t", "kind": "tfidf_svm"}]}


def calls(plan: Any) -> list[tuple[int, list[int], list[int]]]:
    return [(c.length, c.members.tolist(), c.rows.tolist()) for c in plan.calls]


def test_a_token_budget_sizes_each_length_s_calls_and_the_counters_add_up() -> None:
    # Padded to 16, 16, 16, 48 and 16 tokens.
    tokens = np.array([3, 16, 40, 10, 7])
    plan = plan_length_calls(tokens, max_length=48, rows=2, tokens_per_call=32)
    # 32 tokens: calls of 2 rows at 16 tokens; at 48, one row (a call is never empty).
    assert calls(plan) == [(16, [0, 1], [0, 1]), (16, [3, 4], [3, 4]), (48, [2], [2])]
    assert plan.padded.tolist() == [16, 16, 48, 16, 16]
    assert plan.tokens_needed == 76
    assert plan.tokens_rounded == 4 * 16 + 48
    assert plan.tokens_computed == 2 * 16 + 2 * 16 + 1 * 48

    # Without a budget every call takes ``rows`` rows, padded by repeating the last one.
    plan = plan_length_calls(tokens[:4], max_length=48, rows=2)
    assert calls(plan) == [(16, [0, 1], [0, 1]), (16, [3], [3, 3]), (48, [2], [2, 2])]
    assert (plan.tokens_needed, plan.tokens_rounded, plan.tokens_computed) == (69, 96, 160)


def test_lengths_round_up_to_the_step_but_never_past_max_length() -> None:
    plan = plan_length_calls(np.array([1, 17, 33, 40]), max_length=40, rows=1)
    assert plan.padded.tolist() == [16, 32, 40, 40]
    assert [c.length for c in plan.calls] == [16, 32, 40, 40]
    assert plan_length_calls(np.array([], dtype=np.int64), 40, rows=4).calls == []


def test_rows_per_call() -> None:
    assert rows_per_call(384, 256, None) == 256
    assert [rows_per_call(n, 256, 8192) for n in (16, 48, 384)] == [512, 170, 21]
    assert rows_per_call(64, 256, 32) == 1


def test_tokens_per_call_is_a_checked_text_stage_setting() -> None:
    scoring = config_from_dict({**MINIMAL, "scoring": {"text": {"tokens_per_call": 4096}}}).scoring
    assert scoring.text.tokens_per_call == 4096 and scoring.text.micro_batch_size == 16
    assert scoring.image.tokens_per_call is None and StagePool().tokens_per_call is None
    for value, error in (
        (0, r"scoring\.text\.tokens_per_call: must be at least 1, or null"),
        (2.5, r"scoring\.text\.tokens_per_call: expected int"),
    ):
        with pytest.raises(ConfigError, match=error):
            config_from_dict({**MINIMAL, "scoring": {"text": {"tokens_per_call": value}}})
    with pytest.raises(ConfigError, match=r"scoring\.image\.tokens_per_call: only the text stage"):
        config_from_dict({**MINIMAL, "scoring": {"image": {"tokens_per_call": 4096}}})


def test_the_text_stage_hands_the_budget_to_the_kinds_that_take_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_from_dict({
        **MINIMAL, "text_models": [{"name": "t", "kind": "tfidf_svm"},
                                   {"name": "h", "kind": "hf_text", "model": "/m"}],
    })  # fmt: skip
    loaded: dict[str, tuple[Any, dict[str, Any]]] = {}

    def load_scorer(self: Any, folder: Path, batch_size: Any = None, *args: Any,
                    **settings: Any) -> object:  # fmt: skip
        loaded[folder.name] = (batch_size, settings)
        return object()

    for kind in ("tfidf_svm", "hf_text"):
        monkeypatch.setattr(type(get_kind(kind)), "load_scorer", load_scorer)
    entries = [ModelEntry(s.name, s.kind, f"models/{s.name}", 1.0, 1.0) for s in config.models()]
    bundle = SimpleNamespace(
        config=config, fusion=SimpleNamespace(text_models=entries), verified=Path
    )
    monkeypatch.setattr(stages, "open_bundle", lambda _: bundle)
    monkeypatch.setattr(stages, "limit_threads", lambda _: None)  # this process's threads stay
    stages.TextStage("bundle", StagePool(micro_batch_size=8, tokens_per_call=512))
    runtime = {"runtime": "auto", "threads": 1}
    assert loaded == {"t": (8, {}), "h": (8, {"tokens_per_call": 512, **runtime})}
    stages.TextStage("bundle", StagePool(micro_batch_size=8, num_cpus=1.5, runtime="torch"))
    assert loaded == {"t": (8, {}), "h": (8, {"runtime": "torch", "threads": 2})}


def test_serving_keeps_its_own_call_size_unless_it_asks_for_the_batch_engines() -> None:
    pool = StagePool(num_cpus=0.6, micro_batch_size=16, tokens_per_call=1024)
    one = online_pool(pool, ServingParams(num_cpus=2.0, micro_batch_size=1))
    # Text and image run side by side on a replica: each gets half its CPUs.
    assert (one.micro_batch_size, one.tokens_per_call, one.num_cpus, one.threads) == (
        1, None, 1.0, 1
    )  # fmt: skip
    same = online_pool(pool, ServingParams(num_cpus=3.0, micro_batch_size=None))
    assert (same.micro_batch_size, same.tokens_per_call, same.num_cpus, same.threads) == (
        16, 1024, 1.5, 2
    )  # fmt: skip
