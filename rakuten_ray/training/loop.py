"""Fine-tuning one deep base model with Ray Train.

Every deep model goes through the same loop: DDP through ``prepare_model``, the training
rows sharded to workers by ``prepare_data_loader``, AdamW with warmup and a cosine (or linear)
schedule, gradient clipping, autocast on GPU at the model's ``scaling.precision``, evaluation
on the validation rows each epoch, early stopping, and a checkpoint each epoch. When a worker
dies, Ray Train restarts the group and the loop resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.metrics import log_loss, softmax, weighted_f1
from rakuten_ray.models.precision import autocast_dtype, autocast_to
from rakuten_ray.models.registry import kind_of
from rakuten_ray.models.spec import TrainParams
from rakuten_ray.models.tasks import DeepTask, RowsDataset
from rakuten_ray.training.probe import fit_probe_head

TRAIN_STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.json"
MONITOR = "val_log_loss"


def move_to(inputs: Any, device: torch.device) -> Any:
    """Move a tensor or a mapping of tensors to ``device``."""
    if isinstance(inputs, dict):
        return {key: value.to(device, non_blocking=True) for key, value in inputs.items()}
    return inputs.to(device, non_blocking=True)


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
class Training:
    """Everything the epoch loop mutates."""

    model: torch.nn.Module
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: LoopState
    #: Submodules of the (unwrapped) model that form the new classification head.
    head: tuple[str, ...]
    #: Submodules that keep their pretrained weights in every epoch (DeepTask.fixed_names).
    fixed: tuple[str, ...] = ()


def _network(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, unwrapped from DistributedDataParallel."""
    return getattr(model, "module", model)


def _in_head(name: str, head: tuple[str, ...]) -> bool:
    return any(name == h or name.startswith(f"{h}.") for h in head)


def parameter_groups(
    model: torch.nn.Module,
    head: tuple[str, ...],
    params: TrainParams,
    fixed: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """AdamW parameter groups: the head at ``learning_rate``, the backbone at a fraction of it;
    the ``fixed`` submodules in neither (the optimiser keeps no state for them).

    Raises:
        ValueError: ``head`` names no parameter of the model.
    """
    named = list(_network(model).named_parameters())
    head_params = [p for name, p in named if _in_head(name, head)]
    if not head_params:
        raise ValueError(f"no classification head among the model's parameters (head: {head})")
    backbone = [p for name, p in named if not (_in_head(name, head) or _in_head(name, fixed))]
    return [
        {"params": head_params, "lr": params.learning_rate},
        {"params": backbone, "lr": params.learning_rate * params.backbone_lr_scale},
    ]


def freeze_backbone(
    model: torch.nn.Module,
    head: tuple[str, ...],
    frozen: bool,
    batchnorm_frozen: bool = False,
    fixed: tuple[str, ...] = (),
) -> None:
    """Stop (or restart) training the backbone; call after ``model.train()``. The ``fixed``
    submodules never train.

    A frozen backbone gets no gradient, so the optimiser leaves it alone and the backward pass
    stops at the head. Its batch-norm layers (also with ``batchnorm_frozen`` alone) use their
    running statistics without updating them, so its features stay the pretrained ones.
    """
    network = _network(model)
    for name, param in network.named_parameters():
        if not _in_head(name, head):
            param.requires_grad_(not (frozen or _in_head(name, fixed)))
    if not (frozen or batchnorm_frozen):
        return
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not _in_head(name, head):
            module.eval()


def ddp_for_epoch(model: torch.nn.Module, frozen: bool) -> torch.nn.Module:
    """``model`` with DDP's search for unused parameters on only while the backbone is frozen.

    A frozen backbone gets no gradient, which DDP must be told (``find_unused_parameters``);
    once everything trains, that search would only walk the autograd graph at every step. DDP
    fixes the setting when it is built, so the epoch that switches wraps the same module anew
    (on the old wrapper's devices): the parameters, and the optimiser holding them, stay. Call
    after :func:`freeze_backbone`. A model outside DDP is returned as it is.
    """
    if not isinstance(model, DistributedDataParallel) or model.find_unused_parameters == frozen:
        return model
    # The old wrapper's gradient hooks would otherwise stay on the parameters.
    model._remove_autograd_hooks()
    return DistributedDataParallel(
        model.module,
        device_ids=model.device_ids,
        output_device=model.output_device,
        find_unused_parameters=frozen,
    )


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


Forward = Callable[[torch.nn.Module, Any], torch.Tensor]


@torch.inference_mode()
def predict_rows(
    task: DeepTask,
    model: torch.nn.Module,
    dataset: RowsDataset,
    batch_size: int,
    device: torch.device,
    autocast: torch.dtype | None,
    forward: Forward,
) -> tuple[np.ndarray, np.ndarray]:
    """``forward``'s outputs for every row of ``dataset`` in eval mode, and whether each row's
    input was usable (an unusable image is a blank one), computed in rank-strided slices and
    gathered on every rank. Forward passes autocast to ``autocast`` (``None``: fp32)."""
    rank, world = _world()
    positions = np.arange(rank, len(dataset), world)
    shard = RowsDataset([dataset.rows[i] for i in positions])
    loader = DataLoader(
        shard,
        batch_size=batch_size,
        collate_fn=task.collate(False),
        pin_memory=device.type == "cuda",
    )
    model.eval()
    chunks, usable = [], []
    for inputs, _, weights in loader:
        with autocast_to(device, autocast):
            chunks.append(forward(model, move_to(inputs, device)).float().cpu().numpy())
        usable.append(weights.numpy() > 0)
    local = np.concatenate(chunks) if chunks else np.empty((0, 0), dtype=np.float32)
    local_usable = np.concatenate(usable) if usable else np.empty(0, dtype=bool)
    if world == 1:
        return local, local_usable
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (positions, local, local_usable))
    width = max(part.shape[1] for _, part, _ in gathered)
    out = np.empty((len(dataset), width), dtype=np.float32)
    out_usable = np.empty(len(dataset), dtype=bool)
    for part_positions, part, part_usable in gathered:
        out[part_positions], out_usable[part_positions] = part, part_usable
    return out, out_usable


def predict_logits(
    task: DeepTask,
    model: torch.nn.Module,
    table: pd.DataFrame,
    batch_size: int,
    device: torch.device,
    autocast: torch.dtype | None,
) -> np.ndarray:
    """Logits of every row of ``table``."""
    dataset = task.dataset(table)
    return predict_rows(task, model, dataset, batch_size, device, autocast, task.forward)[0]


def _fit_probe_head(
    task: DeepTask,
    run: Training,
    params: TrainParams,
    val_table: pd.DataFrame,
    device: torch.device,
    autocast: torch.dtype | None,
) -> tuple[dict[str, float], np.ndarray]:
    """``head_fit: probe``: set the head to a logistic regression fitted on the frozen
    backbone's features of the training rows; returns the fit's training loss and strength,
    and the validation rows' logits under the new head.

    Every rank fits on the same gathered features; rank 0's head is then broadcast so the
    DDP replicas cannot drift apart by a rounding difference. The validation logits come from
    the features already computed (the head is linear on them), not from another forward pass.
    """
    # The features and the head are read on the unwrapped model: DistributedDataParallel
    # only exposes ``forward``.
    network = _network(run.model)
    features, every_val_row = {}, np.empty(0)
    for part, dataset in (("train", run.loader.dataset), ("val", task.dataset(val_table))):
        values, usable = predict_rows(
            task, network, dataset, params.eval_batch_size, device, autocast, task.features
        )
        labels = np.array([label for _, label in dataset.rows], dtype=np.int64)
        features[part] = (values[usable], labels[usable])
        every_val_row = values  # the last part: rows with a blank image are validated too
    head = fit_probe_head(*features["train"], *features["val"], NUM_CLASSES)
    layer = task.head_layer(network)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight))
        layer.bias.copy_(torch.from_numpy(head.bias))
        if _world()[1] > 1:
            for tensor in (layer.weight, layer.bias):
                dist.broadcast(tensor, src=0)
    val_logits = (every_val_row @ head.weight.T + head.bias).astype(np.float32)
    return {"train_loss": head.train_log_loss, "head_C": head.C}, val_logits


def _train_one_epoch(
    task: DeepTask,
    run: Training,
    params: TrainParams,
    device: torch.device,
    autocast: torch.dtype | None,
    frozen: bool,
) -> float:
    """One pass over this worker's shard; returns the mean training loss."""
    optimizer, scheduler = run.optimizer, run.scheduler
    run.model.train()
    freeze_backbone(run.model, run.head, frozen, params.freeze_batchnorm, run.fixed)
    # After freezing: DDP takes in the parameters that require a gradient when it is built.
    run.model = model = ddp_for_epoch(run.model, frozen)
    criterion = torch.nn.CrossEntropyLoss(reduction="none", label_smoothing=params.label_smoothing)
    # fp16 gradients underflow unless the loss is scaled up (bf16 has fp32's range). A fresh
    # scaler each epoch keeps an epoch the same whether or not the run resumed before it.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    total, weight_sum = 0.0, 0.0
    for inputs, labels, weights in run.loader:
        labels, weights = labels.to(device), weights.to(device)
        with autocast_to(device, autocast):
            logits = task.forward(model, move_to(inputs, device))
        per_row = criterion(logits.float(), labels) * weights
        loss = per_row.sum() / weights.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(per_row.detach().sum())
        weight_sum += float(weights.sum())
    return total / max(weight_sum, 1.0)


def _save_checkpoint(task: DeepTask, run: Training, folder: Path) -> None:
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


def prepare_training(
    task: DeepTask,
    params: TrainParams,
    train_table: pd.DataFrame,
    restored: Path | None = None,
    device: torch.device | None = None,
) -> Training:
    """Model, loader, optimiser and schedule; restored from a checkpoint if given.

    Inside a Ray Train worker (``device`` None) the model goes through ``prepare_model`` (DDP
    across workers) and the loader through ``prepare_data_loader`` (one shard per worker);
    with a ``device``, they are plain PyTorch in this process.
    """
    saved = None
    if restored is not None:
        # Tensors come to the CPU whichever device wrote them (another GPU, another node's);
        # the optimiser moves its state next to the parameters it updates.
        saved = torch.load(restored / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    state = LoopState() if saved is None else LoopState(**saved["loop"])
    network = task.build(weights_from=restored)
    head, fixed = task.head_names(network), task.fixed_names(network)
    in_ray_train = device is None
    if in_ray_train:
        import ray.train.torch

        device = ray.train.torch.get_device()
        # Frozen epochs leave the backbone without gradients, which DDP must be told about
        # (from the epoch the run starts at; ddp_for_epoch switches it later).
        frozen = state.next_epoch < params.freeze_backbone_epochs
        ddp = {"find_unused_parameters": frozen}
        model = ray.train.torch.prepare_model(network, parallel_strategy_kwargs=ddp)
    else:
        model = network.to(device)
    loader = DataLoader(
        task.dataset(train_table),
        batch_size=params.batch_size,
        shuffle=True,
        drop_last=len(train_table) > params.batch_size,
        collate_fn=task.collate(True),
        num_workers=params.loader_workers,
        persistent_workers=params.loader_workers > 0,
        pin_memory=device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
    )
    if in_ray_train:
        loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, head, params, fixed), weight_decay=params.weight_decay
    )
    # A probe head fit takes no optimiser step: the schedule spans the epochs that do.
    stepped_epochs = params.epochs - (params.head_fit == "probe")
    total_steps = max(1, len(loader) * stepped_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(params, total_steps))
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    return Training(model, loader, optimizer, scheduler, state, head, fixed)


def run_epoch(
    task: DeepTask,
    run: Training,
    params: TrainParams,
    val_table: pd.DataFrame,
    epoch: int,
    seed: int,
    device: torch.device,
    autocast: torch.dtype | None,
) -> dict[str, float]:
    """Train one epoch, then evaluate on ``val_table``; returns the epoch's metrics. Forward
    passes autocast to ``autocast`` (:func:`~rakuten_ray.models.precision.autocast_dtype`).

    The Ray Train loop and the plain-PyTorch benchmark both run exactly this.
    """
    started = time.perf_counter()
    # Seeding per epoch makes an epoch's shuffle and dropout the same whether or not the
    # run was resumed before it.
    torch.manual_seed(seed + epoch)
    sampler = getattr(run.loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)  # a different shuffle each epoch under DistributedSampler
    frozen = epoch < params.freeze_backbone_epochs
    if epoch == 0 and params.head_fit == "probe":
        fitted, logits = _fit_probe_head(task, run, params, val_table, device, autocast)
        train_seconds = time.perf_counter() - started
    else:
        fitted = {"train_loss": _train_one_epoch(task, run, params, device, autocast, frozen)}
        train_seconds = time.perf_counter() - started
        logits = predict_logits(
            task, run.model, val_table, params.eval_batch_size, device, autocast
        )
    probs = softmax(logits)
    y_val = val_table["label"].to_numpy(dtype=np.int64)
    return {
        "epoch": epoch,
        "workers": _world()[1],
        **fitted,
        MONITOR: log_loss(probs, y_val),
        "val_weighted_f1": weighted_f1(y_val, probs.argmax(axis=1)),
        "train_seconds": train_seconds,
        "epoch_seconds": time.perf_counter() - started,
    }


def _record(state: LoopState, metrics: dict[str, float]) -> None:
    """Early-stopping bookkeeping after an epoch."""
    improved = metrics[MONITOR] < state.best_loss - 1e-6
    state.best_loss = min(state.best_loss, metrics[MONITOR])
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    state.next_epoch = int(metrics["epoch"]) + 1
    state.history.append(metrics)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function each Ray Train worker runs.

    ``loop_config`` holds ``spec`` (the model's settings object, pickled to each worker),
    ``train_table`` and ``val_table`` (Parquet paths) and ``seed``.
    """
    import ray.train
    import ray.train.torch

    spec = loop_config["spec"]
    params = spec.train
    torch.manual_seed(loop_config["seed"])
    torch.set_num_threads(max(1, int(spec.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device()
    autocast = autocast_dtype(spec.scaling.precision, device)
    task = kind_of(spec).task(spec)
    train_table = pd.read_parquet(loop_config["train_table"])
    val_table = pd.read_parquet(loop_config["val_table"])

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        run = prepare_training(task, params, train_table)
    else:
        with checkpoint.as_directory() as restored:
            run = prepare_training(task, params, train_table, Path(restored))
    start_epoch = run.state.next_epoch
    if run.state.bad_epochs >= params.patience:
        return  # restored from a run that had already stopped early
    for epoch in range(start_epoch, params.epochs):
        metrics = run_epoch(
            task, run, params, val_table, epoch, loop_config["seed"], device, autocast
        )
        metrics["attempt_start_epoch"] = start_epoch
        _record(run.state, metrics)
        with tempfile.TemporaryDirectory() as folder:
            report_checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                _save_checkpoint(task, run, Path(folder))
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=report_checkpoint)
        if run.state.bad_epochs >= params.patience:
            break
