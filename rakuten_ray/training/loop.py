"""Fine-tuning one deep base model with Ray Train.

Every deep model goes through the same loop: DDP through ``prepare_model``, the training
rows sharded to workers by ``prepare_data_loader``, AdamW with warmup and a cosine (or linear)
schedule, gradient clipping, bf16 autocast on GPU, evaluation on the validation rows each
epoch, early stopping, and a checkpoint each epoch. When a worker dies, Ray Train restarts the
group and the loop resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from rakuten_ray.config import TrainParams, model_spec_from_dict
from rakuten_ray.metrics import log_loss, softmax, weighted_f1
from rakuten_ray.training.tasks import DeepTask, make_task, move_to

TRAIN_STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.json"
MONITOR = "val_log_loss"


def lr_lambda(params: TrainParams, total_steps: int) -> Any:
    """Multiplier of the base learning rate at each step: linear warmup, then the schedule."""
    warmup = int(params.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if params.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if params.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@dataclass
class LoopState:
    """What a checkpoint must carry besides the weights to resume exactly."""

    next_epoch: int = 0
    best_loss: float = math.inf
    bad_epochs: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


@dataclass
class _Training:
    """Everything the epoch loop mutates."""

    model: torch.nn.Module
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: LoopState


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.inference_mode()
def predict_logits(
    task: DeepTask,
    model: torch.nn.Module,
    table: pd.DataFrame,
    batch_size: int,
    device: torch.device,
    autocast: bool,
) -> np.ndarray:
    """Logits of every row of ``table``, computed in rank-strided slices and gathered."""
    rank, world = _world()
    positions = np.arange(rank, len(table), world)
    loader = DataLoader(
        task.dataset(table.iloc[positions]), batch_size=batch_size, collate_fn=task.collate(False)
    )
    model.eval()
    chunks = []
    for inputs, _, _ in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            chunks.append(task.forward(model, move_to(inputs, device)).float().cpu().numpy())
    local = np.concatenate(chunks) if chunks else np.empty((0, 0), dtype=np.float32)
    if world == 1:
        return local
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (positions, local))
    out = np.empty((len(table), max(part.shape[1] for _, part in gathered)), dtype=np.float32)
    for part_positions, part in gathered:
        out[part_positions] = part
    return out


def _train_one_epoch(
    task: DeepTask, run: _Training, params: TrainParams, device: torch.device, autocast: bool
) -> float:
    """One pass over this worker's shard; returns the mean training loss."""
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    model.train()
    criterion = torch.nn.CrossEntropyLoss(reduction="none", label_smoothing=params.label_smoothing)
    total, weight_sum = 0.0, 0.0
    for inputs, labels, weights in run.loader:
        labels, weights = labels.to(device), weights.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = task.forward(model, move_to(inputs, device))
        per_row = criterion(logits.float(), labels) * weights
        loss = per_row.sum() / weights.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        scheduler.step()
        total += float(per_row.detach().sum())
        weight_sum += float(weights.sum())
    return total / max(weight_sum, 1.0)


def _save_checkpoint(task: DeepTask, run: _Training, folder: Path) -> None:
    """The deployable model plus the optimiser, schedule and loop state to resume from."""
    task.save(getattr(run.model, "module", run.model), folder)
    torch.save(
        {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "loop": dataclasses.asdict(run.state),
        },
        folder / TRAIN_STATE_FILE,
    )
    (folder / HISTORY_FILE).write_text(json.dumps(run.state.history, indent=1))


def _prepare(
    task: DeepTask, params: TrainParams, train_table: pd.DataFrame, restored: Path | None
) -> _Training:
    """Model, sharded loader, optimiser and schedule; restored from a checkpoint if given."""
    import ray.train.torch

    model = ray.train.torch.prepare_model(task.build(weights_from=restored))
    loader = DataLoader(
        task.dataset(train_table),
        batch_size=params.batch_size,
        shuffle=True,
        drop_last=len(train_table) > params.batch_size,
        collate_fn=task.collate(True),
        num_workers=params.loader_workers,
        persistent_workers=params.loader_workers > 0,
    )
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    total_steps = max(1, len(loader) * params.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(params, total_steps))
    state = LoopState()
    if restored is not None:
        saved = torch.load(restored / TRAIN_STATE_FILE, weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = LoopState(**saved["loop"])
    return _Training(model, loader, optimizer, scheduler, state)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function each Ray Train worker runs.

    ``loop_config`` holds ``spec`` (a model spec as plain data), ``train_table`` and
    ``val_table`` (Parquet paths) and ``seed``.
    """
    import ray.train
    import ray.train.torch

    spec = model_spec_from_dict(loop_config["spec"])
    params = spec.train
    torch.manual_seed(loop_config["seed"])
    torch.set_num_threads(max(1, int(spec.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device()
    autocast = device.type == "cuda" and spec.scaling.bf16
    task = make_task(spec)
    train_table = pd.read_parquet(loop_config["train_table"])
    val_table = pd.read_parquet(loop_config["val_table"])
    y_val = val_table["label"].to_numpy(dtype=np.int64)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        run = _prepare(task, params, train_table, None)
    else:
        with checkpoint.as_directory() as restored:
            run = _prepare(task, params, train_table, Path(restored))
    state = run.state
    start_epoch = state.next_epoch
    for epoch in range(start_epoch, params.epochs):
        started = time.perf_counter()
        # Seeding per epoch makes an epoch's shuffle and dropout the same whether or not the
        # run was resumed before it.
        torch.manual_seed(loop_config["seed"] + epoch)
        sampler = getattr(run.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a different shuffle each epoch under DistributedSampler
        train_loss = _train_one_epoch(task, run, params, device, autocast)
        train_seconds = time.perf_counter() - started
        logits = predict_logits(
            task, run.model, val_table, params.eval_batch_size, device, autocast
        )
        probs = softmax(logits)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            MONITOR: log_loss(probs, y_val),
            "val_weighted_f1": weighted_f1(y_val, probs.argmax(axis=1)),
            "train_seconds": train_seconds,
            "epoch_seconds": time.perf_counter() - started,
            "attempt_start_epoch": start_epoch,
        }
        improved = metrics[MONITOR] < state.best_loss - 1e-6
        state.best_loss = min(state.best_loss, metrics[MONITOR])
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        state.next_epoch = epoch + 1
        state.history.append(metrics)
        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                _save_checkpoint(task, run, Path(folder))
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=report_checkpoint)
        if state.bad_epochs >= params.patience:
            break
