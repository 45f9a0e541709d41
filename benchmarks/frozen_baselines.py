"""Frozen baselines of a config's deep models: pretrained backbone + logistic-regression probe.

What fine-tuning must beat. For each ``hf_text`` and ``timm_image`` model of the config, the
pretrained backbone, not fine-tuned, embeds the rows of the same splits ``rakuten-ray train``
uses (same seed, fractions, template, token limit, image size and eval transform): text as
the mean of the last layer's token vectors (how sentence encoders such as MiniLM are trained)
and as its first token's vector, images as timm's pooled features. A multinomial logistic
regression fitted on the training rows, with its strength picked on the validation rows' log
loss, is scored on the internal test rows (the image models on those with an image file,
as in ``RUN/metrics.json``). With ``--run``, the fine-tuned models' figures from that run's
``metrics.json`` are printed next to the probes.

    .venv/bin/python benchmarks/frozen_baselines.py [--config configs/demo.yaml]
        [--data ../shared/data/rakuten_sample] [--run RUN] [--set KEY=VALUE] [--model NAME]
        [--name RESULTS_NAME]

Prints a table and writes ``benchmarks/results/<--name>.json`` (``frozen_baselines``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common
import numpy as np
import pandas as pd
import torch

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.config import load_config
from rakuten_ray.images import load_image
from rakuten_ray.layout import RunLayout
from rakuten_ray.metrics import log_loss, weighted_f1
from rakuten_ray.models.image_backbones import create_image_model
from rakuten_ray.models.kinds.hf_text import HfTextSpec
from rakuten_ray.models.kinds.timm_image import TimmImageSpec
from rakuten_ray.models.registry import Modality
from rakuten_ray.models.tables import image_table, text_table
from rakuten_ray.models.transformer import resolve_text_source, tokenize
from rakuten_ray.models.vision import image_transforms
from rakuten_ray.training.data import load_training_data
from rakuten_ray.training.probe import fit_probe_head
from rakuten_ray.training.protocol import split_rows
from rakuten_ray.training.report import TrainingReport

BATCH = 64
Embed = Callable[[list[Any]], np.ndarray]


def batches(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def text_embedders(spec: HfTextSpec) -> dict[str, Embed]:
    """Mean-of-tokens and first-token embeddings from the frozen pretrained text encoder."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_text_source(spec.model)
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    encoder.eval()

    pooled: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    @torch.inference_mode()
    def both(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and first-token vectors of ``texts``: one forward pass serves both probes."""
        key = tuple(texts)
        if key not in pooled:
            means, firsts = [], []
            for chunk in batches(texts):
                inputs = tokenize(tokenizer, chunk, spec.max_length)
                hidden = encoder(**inputs).last_hidden_state
                mask = inputs["attention_mask"].unsqueeze(-1)
                means.append((hidden * mask).sum(1) / mask.sum(1))
                firsts.append(hidden[:, 0])
            pooled[key] = (torch.cat(means).numpy(), torch.cat(firsts).numpy())
        return pooled[key]

    def mean(texts: list[str]) -> np.ndarray:
        return both(texts)[0]

    def first(texts: list[str]) -> np.ndarray:
        return both(texts)[1]

    return {"mean of tokens": mean, "first token": first}


def image_embedder(spec: TimmImageSpec) -> Embed:
    """timm's pooled features of the frozen pretrained image model, eval transform."""
    model = create_image_model(
        spec.model, NUM_CLASSES, spec.pretrained, model_args=spec.model_args,
        revision=spec.revision,
    ).eval()  # fmt: skip
    _, transform = image_transforms(model, spec.image_size)

    @torch.inference_mode()
    def embed(paths: list[str]) -> np.ndarray:
        parts = []
        for chunk in batches(paths):
            pixels = torch.stack([transform(load_image(p).image) for p in chunk])
            parts.append(model.forward_head(model.forward_features(pixels), pre_logits=True))
        return torch.cat(parts).numpy()

    return embed


def probe(embed: Embed, tables: dict[str, pd.DataFrame], column: str) -> dict[str, Any]:
    """Fit on ``train``, pick C on ``val``, score ``test`` (the fit of ``head_fit: probe``)."""
    started, cpu = time.perf_counter(), time.process_time()
    x = {part: embed(table[column].tolist()) for part, table in tables.items()}
    y = {part: table["label"].to_numpy() for part, table in tables.items()}
    head = fit_probe_head(x["train"], y["train"], x["val"], y["val"], NUM_CLASSES)
    test = head.probs(x["test"])
    return {
        "C": head.C,
        "weighted_f1": weighted_f1(y["test"], test.argmax(axis=1)),
        "log_loss": log_loss(test, y["test"]),
        "rows": {part: len(table) for part, table in tables.items()},
        "seconds": round(time.perf_counter() - started, 1),
        # This process's CPU time, every thread's: a cost that does not depend on the load.
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def fine_tuned(run: Path | None, name: str) -> dict[str, float] | None:
    if run is None:
        return None
    scores = TrainingReport.load(RunLayout(run).metrics).base_models[name].internal_test
    return {"weighted_f1": scores.weighted_f1, "log_loss": scores.log_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=common.REPO / "configs" / "demo.yaml")
    parser.add_argument("--data", type=Path, default=common.SAMPLE)
    parser.add_argument("--run", type=Path, default=None, help="a training run of the config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="frozen_baselines", help="results file name")
    parser.add_argument(
        "--model", action="append", default=[], help="only this model of the config (repeatable)"
    )
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    data = load_training_data(args.data)
    with tempfile.TemporaryDirectory() as scratch:
        rows = split_rows(config, data, RunLayout(Path(scratch)), log=lambda _: None)
    text, images = rows.by_modality[Modality.TEXT], rows.by_modality[Modality.IMAGE]
    results: list[dict[str, Any]] = []
    chosen = set(args.model) or {spec.name for spec in config.text_models + config.image_models}
    for spec in config.text_models:
        if not isinstance(spec, HfTextSpec) or spec.name not in chosen:
            continue
        tables = {
            "train": text_table(text.train, spec.template),
            "val": text_table(text.val, spec.template),
            "test": text_table(text.heldout.loc[rows.splits.test], spec.template),
        }
        for pooling, embed in text_embedders(spec).items():
            print(f"[baseline] {spec.name}: frozen, {pooling}", flush=True)
            found = probe(embed, tables, "text")
            results.append({"model": spec.name, "features": pooling, **found})
    for spec in config.image_models:
        if spec.name not in chosen:
            continue
        tables = {
            "train": image_table(images.train),
            "val": image_table(images.val),
            "test": image_table(images.heldout.loc[rows.test]),
        }
        print(f"[baseline] {spec.name}: frozen, {spec.image_size} px", flush=True)
        found = probe(image_embedder(spec), tables, "path")
        results.append({"model": spec.name, "features": f"pooled, {spec.image_size} px", **found})
    for result in results:
        result["fine_tuned"] = fine_tuned(args.run, result["model"])
    header = ["model", "frozen features", "C", "test rows", "probe F1", "probe log loss",
              "fine-tuned F1", "fine-tuned log loss"]  # fmt: skip
    rows = [
        [r["model"], r["features"], r["C"], r["rows"]["test"], r["weighted_f1"], r["log_loss"],
         (r["fine_tuned"] or {}).get("weighted_f1"), (r["fine_tuned"] or {}).get("log_loss")]
        for r in results
    ]  # fmt: skip
    print("\n" + common.format_table(header, rows))
    payload = {
        "config": str(args.config), "overrides": args.set, "data": str(args.data),
        "run": str(args.run) if args.run else None, "results": results,
        "machine": common.machine(),
    }  # fmt: skip
    common.write_results(args.name, payload)


if __name__ == "__main__":
    main()
