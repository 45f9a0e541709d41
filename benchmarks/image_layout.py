"""Cost per image of the image models' training step and forward pass, by memory layout.

For each image model of a config, at its own image size, on random pixels (the layout
changes the arithmetic's speed, not its inputs): a training step at the training batch size
(forward, cross-entropy, backward, AdamW; batch-norm statistics frozen, as the demo trains)
and an eval forward pass (validation and the probe head's features) at each of
``FORWARD_BATCHES`` images, once with the model and batch in the default contiguous layout
and once in channels-last. Each is timed ``--repeats`` times after one warm-up and the fastest
counts (other jobs only ever slow a step down); the two layouts alternate in one run.

    .venv/bin/python benchmarks/image_layout.py [--config configs/demo.yaml] [--repeats 4]

Prints a table and writes ``benchmarks/results/image_layout.json``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import common
import torch

from rakuten_ray.config import load_config
from rakuten_ray.models.kinds.timm_image import TimmImageSpec
from rakuten_ray.models.registry import kind_of
from rakuten_ray.training.loop import freeze_backbone

THREADS = 2
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# A forward pass per image costs more past a few dozen images on 2 threads (the activations
# outgrow the caches), which is what sets the image models' eval_batch_size.
FORWARD_BATCHES = (32, 128)


def fastest(step: Callable[[], None], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def training_step(
    spec: TimmImageSpec, layout: torch.memory_format
) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The image model of ``spec`` in ``layout`` and one training step of it on random pixels
    at the training batch size (batch-norm statistics frozen as the config says)."""
    torch.manual_seed(0)
    task = kind_of(spec).task(spec)
    model = task.build().to(memory_format=layout)
    batch, size = spec.train.batch_size, spec.image_size
    pixels = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    labels = torch.randint(0, 27, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.train.learning_rate)

    def step() -> None:
        model.train()
        freeze_backbone(model, task.head_names(model), False, spec.train.freeze_batchnorm)
        loss = torch.nn.functional.cross_entropy(model(pixels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def measure(spec: TimmImageSpec, layout: torch.memory_format, repeats: int) -> dict[str, float]:
    """Milliseconds per image of a training step and of eval forward passes."""
    model, train_step = training_step(spec, layout)
    batch, size = spec.train.batch_size, spec.image_size

    @torch.inference_mode()
    def forward(images: torch.Tensor) -> None:
        model.eval()
        model(images)

    found = {"train_ms_per_image": 1000 * fastest(train_step, repeats) / batch}
    for count in FORWARD_BATCHES:
        images = torch.randn(count, 3, size, size).contiguous(memory_format=layout)
        seconds = fastest(functools.partial(forward, images), repeats)
        found[f"forward_{count}_ms_per_image"] = 1000 * seconds / count
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(common.REPO / "configs" / "demo.yaml"))
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    results = []
    for spec in load_config(args.config).image_models:
        found = {name: measure(spec, layout, args.repeats) for name, layout in LAYOUTS.items()}
        results.append({"model": spec.name, "image_size": spec.image_size,
                        "batch": spec.train.batch_size, **found})  # fmt: skip
        print(f"[bench] {spec.name}: {found}", flush=True)
    keys = list(results[0]["contiguous"])
    header = ["model", "px", "train batch", "layout", *(key.replace("_ms_per_image", " ms/image")
              .replace("_", " ") for key in keys)]  # fmt: skip
    rows = [
        [r["model"], r["image_size"], r["batch"], layout, *(r[layout][key] for key in keys)]
        for r in results for layout in LAYOUTS
    ]  # fmt: skip
    print("\n" + common.format_table(header, rows))
    for r in results:
        ratios = {key: r["contiguous"][key] / r["channels_last"][key] for key in keys}
        r["contiguous_over_channels_last"] = ratios
        print(f"{r['model']}: contiguous / channels-last = {ratios}")
    payload = {"config": args.config, "threads": THREADS, "repeats": args.repeats,
               "results": results, "machine": common.machine()}  # fmt: skip
    common.write_results("image_layout", payload)


if __name__ == "__main__":
    main()
