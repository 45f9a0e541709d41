"""Checks the GPU paths: training epochs under autocast, and scoring on the GPU against the CPU.

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--rows 384] [--epochs 2]
        [--precision bf16|fp16|fp32] [--out FILE]

It builds the test suite's tiny models of the production architectures
(``tests/tiny_models.py``: a CamemBERT text model and a ConvNeXt image model), sets them in
``configs/production.yaml`` as the tests do, and writes a synthetic catalogue with real JPEGs.
Each model trains for ``--epochs`` epochs on the GPU through the epoch code that Ray Train
runs (``prepare_training`` and ``run_epoch``; ConvNeXt's first epoch trains its head alone),
autocast at its ``scaling.precision`` (or ``--precision``), and is saved as the bundle holds
it. Its kind's scorer then loads it on the GPU and on the CPU, and both score every row.
Printed: each epoch's seconds and training rows/s, scoring rows/s on each device, peak GPU
memory (``torch.cuda.max_memory_allocated``), and how well the GPU's predictions agree with
the CPU's (share of equal labels, largest absolute probability difference). That comparison is
the one a bundle sealed on a GPU cluster records per model (``runtime.json``, ``heldout_*``):
fusion is fitted on held-out logits computed at the GPU's precision, CPU nodes rescore in
fp32. A GPU without bf16 (before Ampere) runs ``bf16`` as ``fp16``, and says so.

Nothing here imports Ray: it runs on a bare GPU machine whose Python holds torch,
transformers, timm, tokenizers, scikit-learn, pandas, pyarrow, pyyaml, safetensors and
pillow. Without a visible CUDA device it refuses, exit status 2, before any work;
``--device cpu`` runs the whole check on the CPU instead (the test suite does): training in
fp32, as a CPU always trains, and scoring autocast to the model's precision on the CPU against
fp32 on the CPU, so the reduced-precision path is still compared with another.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from rakuten_ray.config import RunConfig, load_config
from rakuten_ray.models.precision import autocast_dtype, dtype_for
from rakuten_ray.models.registry import kind_of
from rakuten_ray.models.runtime import forward_precision, label_agreement, max_prob_diff
from rakuten_ray.models.spec import DeepModelSpec, Precision
from rakuten_ray.synthetic import generate_catalogue
from rakuten_ray.training.data import load_training_data
from rakuten_ray.training.loop import prepare_training, run_epoch

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "production.yaml"
#: The production models checked, by their config entries: one text and one image model.
MODELS = {"camembert_large": "text_models", "convnext_base": "image_models"}
SEED = 42
#: Every fourth row validates the training epochs.
VAL_EVERY = 4
NO_CUDA_STATUS = 2
NO_CUDA_MESSAGE = (
    "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
    "run it on a machine with an NVIDIA GPU"
)


def tiny_models() -> ModuleType:
    """``tests/tiny_models.py``, which builds the test suite's tiny production models."""
    sys.path.append(str(REPO / "tests"))
    return importlib.import_module("tiny_models")


def checked_config(tiny: Any, precision: str | None) -> RunConfig:
    """The production config set to the tiny models, as the tests set it; with
    ``precision``, every checked model's ``scaling.precision`` is that."""
    overrides = tiny.overrides()
    if precision is not None:
        for name, group in MODELS.items():
            overrides.append(f"{group}.{name}.scaling.precision={precision}")
    return load_config(CONFIG, overrides, warn_unpinned=False)


def with_epochs(spec: DeepModelSpec, epochs: int) -> DeepModelSpec:
    """``spec`` training ``epochs`` epochs (its head-only epochs capped to as many)."""
    train = spec.train.model_copy(update={
        "epochs": epochs, "freeze_backbone_epochs": min(spec.train.freeze_backbone_epochs, epochs),
    })  # fmt: skip
    return spec.model_copy(update={"train": train})


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring peak GPU memory anew, once the GPU's pending work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    """Largest GPU memory held by tensors since :func:`reset_peak_memory`; ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def train(
    spec: DeepModelSpec,
    table: pd.DataFrame,
    device: torch.device,
    folder: Path,
) -> dict[str, Any]:
    """Train ``spec`` on ``device`` on the rows of ``table`` (one in :data:`VAL_EVERY`
    validates), then save it into ``folder`` in the format the bundle holds."""
    val = table.iloc[::VAL_EVERY]
    rows = table.drop(index=val.index)
    task = kind_of(spec).task(spec)
    autocast = autocast_dtype(spec.scaling.precision, device)
    torch.manual_seed(SEED)
    reset_peak_memory(device)
    run = prepare_training(task, spec.train, rows, device=device)
    epochs = []
    for epoch in range(spec.train.epochs):
        metrics = run_epoch(task, run, spec.train, val, epoch, SEED, device, autocast)
        epochs.append({
            "epoch": epoch,
            "frozen": epoch < spec.train.freeze_backbone_epochs,
            "train_seconds": metrics["train_seconds"],
            "epoch_seconds": metrics["epoch_seconds"],
            "train_rows_per_s": len(rows) / metrics["train_seconds"],
            "val_log_loss": metrics["val_log_loss"],
        })  # fmt: skip
    peak = peak_memory_mib(device)
    task.save(run.model, folder)
    return {
        "train_rows": len(rows),
        "val_rows": len(val),
        "autocast": str(autocast).removeprefix("torch.") if autocast else "none (fp32)",
        "epochs": epochs,
        "peak_memory_mib": peak,
    }


@dataclasses.dataclass(frozen=True)
class Scored:
    """One scoring pass over the rows."""

    logits: pd.DataFrame
    #: What its forward passes computed in (``fp32``, ``bf16``, ``fp16``).
    precision: str
    rows_per_s: float
    peak_memory_mib: float | None


def score(
    spec: DeepModelSpec,
    folder: Path,
    rows: pd.DataFrame,
    batch_size: int,
    device: torch.device,
    cpu_autocast: Precision | None = None,
) -> Scored:
    """Logits of ``rows`` (those it can score) by the kind's scorer of the model in ``folder``
    on ``device``, rows/s (after one warm-up batch) and peak GPU memory. ``cpu_autocast``: on
    a CPU, what forward passes autocast to instead of fp32 (scoring never asks a CPU to; the
    check does, to compare that path with fp32)."""
    scorer = kind_of(spec).load_scorer(
        folder, batch_size, spec.scaling.precision, str(device), runtime="torch"
    )
    if device.type == "cpu" and cpu_autocast is not None:
        scorer.forward.autocast = dtype_for(cpu_autocast)
    scorer.score_rows(rows.iloc[:batch_size])  # kernels chosen, caches filled
    reset_peak_memory(device)
    started = time.perf_counter()
    logits = scorer.score_rows(rows)  # on the CPU: the GPU's work is done
    rows_per_s = len(rows) / (time.perf_counter() - started)
    return Scored(logits, forward_precision(scorer), rows_per_s, peak_memory_mib(device))


def agreement(checked: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Share of rows given the same label, and the largest absolute probability difference
    (the measures of a bundle's export check)."""
    pd.testing.assert_index_equal(checked.index, reference.index)
    ours, theirs = checked.to_numpy(), reference.to_numpy()
    return {
        "label_agreement": label_agreement(ours, theirs),
        "max_abs_prob_diff": max_prob_diff(ours, theirs),
    }


def run_check(
    device: torch.device, rows: int, epochs: int, precision: str | None, scratch: Path
) -> dict[str, Any]:
    """Train, save and score each checked model; returns the report."""
    catalogue = scratch / "catalogue"
    generate_catalogue(catalogue, rows=rows, test_rows=0, seed=SEED)
    labelled = load_training_data(catalogue).labelled
    tiny = tiny_models().TinyProductionModels.build(
        scratch / "tiny_models", [*labelled["designation"], *labelled["description"]]
    )
    config = checked_config(tiny, precision)
    specs = {spec.name: spec for spec in config.models()}
    batch_sizes = {"text_models": config.scoring.text.micro_batch_size,
                   "image_models": config.scoring.image.micro_batch_size}  # fmt: skip
    cpu = torch.device("cpu")
    report: dict[str, Any] = {}
    for name, group in MODELS.items():
        spec = with_epochs(specs[name], epochs)
        kind = kind_of(spec)
        folder = scratch / "models" / name
        training = train(spec, kind.table(spec, labelled), device, folder)
        batch_size = batch_sizes[group]
        checked = score(spec, folder, labelled, batch_size, device, spec.scaling.precision)
        reference = score(spec, folder, labelled, batch_size, cpu)
        report[name] = {
            "kind": spec.kind,
            "precision": spec.scaling.precision,
            "training": training,
            "scoring": {
                "rows": len(labelled),
                "batch_size": batch_size,
                "checked": f"{checked.precision} on {device.type}",
                "reference": f"{reference.precision} on cpu",
                "rows_per_s": checked.rows_per_s,
                "cpu_rows_per_s": reference.rows_per_s,
                "peak_memory_mib": checked.peak_memory_mib,
                **agreement(checked.logits, reference.logits),
            },
        }
    return report


def environment(device: torch.device) -> dict[str, Any]:
    """What the check ran on."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def print_report(env: dict[str, Any], models: dict[str, Any]) -> None:
    print(f"gpu_check on {env['device']} (torch {env['torch']}, CUDA {env['cuda']})")
    print(f"\n{'training':<17}{'autocast':>13}{'epoch':>6}{'frozen':>7}{'train s':>9}"
          f"{'epoch s':>9}{'rows/s':>9}{'val loss':>9}{'peak MiB':>10}")  # fmt: skip
    for name, model in models.items():
        training = model["training"]
        for epoch in training["epochs"]:
            print(
                f"{name:<17}{training['autocast']:>13}{epoch['epoch']:>6}"
                f"{'yes' if epoch['frozen'] else 'no':>7}{epoch['train_seconds']:>9.2f}"
                f"{epoch['epoch_seconds']:>9.2f}{epoch['train_rows_per_s']:>9.0f}"
                f"{epoch['val_log_loss']:>9.3f}{_mib(training['peak_memory_mib']):>10}"
            )
    print(f"\n{'scoring':<17}{'rows':>6}{'checked':>13}{'rows/s':>9}{'reference':>12}"
          f"{'rows/s':>9}{'peak MiB':>10}{'agreement':>11}{'max |dp|':>10}")  # fmt: skip
    for name, model in models.items():
        scoring = model["scoring"]
        print(
            f"{name:<17}{scoring['rows']:>6}{scoring['checked']:>13}"
            f"{scoring['rows_per_s']:>9.0f}{scoring['reference']:>12}"
            f"{scoring['cpu_rows_per_s']:>9.0f}{_mib(scoring['peak_memory_mib']):>10}"
            f"{scoring['label_agreement']:>11.4f}{scoring['max_abs_prob_diff']:>10.2e}"
        )
    print(
        "\nagreement, max |dp|: the checked logits against the reference's; on a GPU, what a "
        "bundle records of its held-out logits (fitted on at the GPU's precision) against "
        "CPU rescoring (fp32)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=384, help="catalogue rows (at least 27)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per model")
    parser.add_argument(
        "--precision", choices=["bf16", "fp16", "fp32"], default=None,
        help="autocast of every checked model (default: each one's scaling.precision)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    # The test suite runs the whole check on the CPU; on a GPU machine there is no need.
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return NO_CUDA_STATUS
    env = environment(device)
    with tempfile.TemporaryDirectory() as scratch:
        models = run_check(device, args.rows, args.epochs, args.precision, Path(scratch))
    print_report(env, models)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": env, "models": models}, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
