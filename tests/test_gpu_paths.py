"""What runs differently on a GPU, checked on the CPU: the precision setting from the config to
training and scoring, fp16 loss scaling, and DDP's search for unused parameters, which only
frozen epochs need. ``benchmarks/gpu_check.py`` runs the rest on a GPU."""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from helpers import REPO_ROOT, write_tiny_text_backbone
from torch.nn.parallel import DistributedDataParallel

from rakuten_ray.bundle import ModelEntry
from rakuten_ray.config import ConfigError, StagePool, load_config, model_spec_from_dict
from rakuten_ray.models.precision import autocast_dtype, effective_precision, precision_of
from rakuten_ray.models.registry import get_kind, kind_of
from rakuten_ray.scoring import stages
from rakuten_ray.training.loop import (
    ddp_for_epoch,
    freeze_backbone,
    prepare_training,
    run_epoch,
)

PRODUCTION = REPO_ROOT / "configs" / "production.yaml"


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", None)],
)
def test_autocast_follows_the_precision_on_a_gpu_and_never_on_a_cpu(
    precision: Any, expected: torch.dtype | None
) -> None:
    assert autocast_dtype(precision, torch.device("cuda"), bf16_supported=True) == expected
    assert autocast_dtype(precision, torch.device("cpu")) is None
    assert precision_of(expected) == precision


@pytest.mark.parametrize(
    ("precision", "device", "bf16_supported", "expected"),
    [
        ("bf16", "cuda", True, "bf16"), ("bf16", "cuda", False, "fp16"),
        ("fp16", "cuda", False, "fp16"), ("fp32", "cuda", False, "fp32"),
        ("bf16", "cpu", True, "fp32"), ("fp16", "cpu", True, "fp32"),
    ],
)  # fmt: skip
def test_bf16_falls_back_to_fp16_on_a_gpu_without_it_and_a_cpu_runs_fp32(
    precision: Any, device: str, bf16_supported: bool, expected: str
) -> None:
    assert effective_precision(precision, device, bf16_supported) == expected


def test_a_gpu_without_bf16_autocasts_to_fp16_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert autocast_dtype("bf16", torch.device("cuda:0"), bf16_supported=False) == torch.float16
    assert capsys.readouterr().err == (
        "precision: cuda:0 has no bf16 arithmetic (compute capability below 8.0); forward "
        "passes set to bf16 autocast to fp16 instead\n"
    )
    autocast_dtype("fp16", torch.device("cuda:0"), bf16_supported=False)
    assert capsys.readouterr().err == ""


def test_a_models_precision_is_a_checked_config_key() -> None:
    key = "image_models.convnext_base.scaling.precision"
    config = load_config(PRODUCTION, [f"{key}=fp16"], warn_unpinned=False)
    precisions = {spec.name: spec.scaling.precision for spec in config.models()}
    assert precisions["convnext_base"] == "fp16" and precisions["swin_base"] == "bf16"
    with pytest.raises(ConfigError, match=r"convnext_base\]\.scaling\.precision: 'fp8'"):
        load_config(PRODUCTION, [f"{key}=fp8"], warn_unpinned=False)


def test_scoring_stages_load_each_model_at_the_precision_of_the_bundles_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(
        PRODUCTION,
        ["text_models.camembert_large.scaling.precision=fp32",
         "image_models.swin_base.scaling.precision=fp16"],
        warn_unpinned=False,
    )  # fmt: skip
    loaded: dict[str, str] = {}

    def load_scorer(self: Any, folder: Path, batch_size: Any = None, precision: Any = None,
                    device: Any = None, **settings: Any) -> object:  # fmt: skip
        loaded[folder.name] = precision
        return object()

    for kind in ("tfidf_svm", "hf_text", "timm_image"):
        monkeypatch.setattr(type(get_kind(kind)), "load_scorer", load_scorer)
    entries = {
        group: [ModelEntry(s.name, s.kind, f"models/{s.name}", 1.0, 1.0) for s in specs]
        for group, specs in (("text", config.text_models), ("image", config.image_models))
    }
    bundle = SimpleNamespace(
        config=config,
        fusion=SimpleNamespace(text_models=entries["text"], image_models=entries["image"]),
        verified=Path,
    )
    monkeypatch.setattr(stages, "open_bundle", lambda _: bundle)
    monkeypatch.setattr(stages, "limit_threads", lambda _: None)  # this process's threads stay
    stages.TextStage("bundle", StagePool())
    stages.ImageStage("bundle", StagePool())
    assert loaded == {
        "tfidf_svm": "bf16", "camembert_large": "fp32", "xlm_roberta": "bf16",
        "convnext_base": "bf16", "swin_base": "fp16",
    }  # fmt: skip


@pytest.mark.slow
def test_fp16_epochs_scale_the_loss_and_bf16_epochs_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU, which autocasts to either dtype when told to (scoring never tells it)."""
    backbone = write_tiny_text_backbone(tmp_path / "bert")
    spec = model_spec_from_dict({
        "name": "tiny", "kind": "hf_text", "model": str(backbone), "max_length": 32,
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
    })  # fmt: skip
    table = pd.DataFrame({
        "text": [f"{'chaise bois' if i % 2 else 'piscine ronde'} {i}" for i in range(32)],
        "label": [i % 2 for i in range(32)],
    })  # fmt: skip
    scaled: list[bool] = []
    update = torch.amp.GradScaler.update

    def record(scaler: torch.amp.GradScaler, *args: Any) -> None:
        scaled.append(scaler.is_enabled())
        update(scaler, *args)

    monkeypatch.setattr(torch.amp.GradScaler, "update", record)
    cpu = torch.device("cpu")
    for dtype, scales in ((torch.float16, True), (torch.bfloat16, False)):
        scaled.clear()
        task = kind_of(spec).task(spec)
        torch.manual_seed(0)
        run = prepare_training(task, spec.train, table, device=cpu)
        start = copy.deepcopy(run.model.state_dict())
        metrics = run_epoch(task, run, spec.train, table, 0, 0, cpu, autocast=dtype)
        assert scaled == [scales] * 4  # one per step
        assert torch.isfinite(torch.tensor(metrics["train_loss"]))
        moved = [k for k, v in run.model.state_dict().items() if not torch.equal(v, start[k])]
        assert any(k.startswith("network.classifier") for k in moved)
        assert any(k.startswith("network.bert.encoder") for k in moved)


def _batch(rank: int) -> torch.Tensor:
    """Rank ``rank``'s inputs: each rank trains on different rows."""
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(rank))


def _switch_across_the_unfrozen_epoch(rank: int, world: int, rendezvous: str) -> None:
    """One rank of a gloo group: a frozen step, then the switch, then a full step."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        torch.manual_seed(0)
        network = torch.nn.Sequential(OrderedDict(
            backbone=torch.nn.Linear(4, 8), act=torch.nn.ReLU(), head=torch.nn.Linear(8, 3)
        ))  # fmt: skip
        optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
        model: torch.nn.Module = DistributedDataParallel(network, find_unused_parameters=True)

        freeze_backbone(model, ("head",), frozen=True)
        assert ddp_for_epoch(model, frozen=True) is model
        model(_batch(rank)).square().mean().backward()  # the backbone gets no gradient
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        freeze_backbone(model, ("head",), frozen=False)
        switched = ddp_for_epoch(model, frozen=False)
        assert switched is not model and switched.module is network
        assert not switched.find_unused_parameters
        reference = copy.deepcopy(network)
        switched(_batch(rank)).square().mean().backward()
        # Every gradient, the backbone's included, is the mean of the ranks' own.
        losses = [reference(_batch(r)).square().mean() for r in range(world)]
        (sum(losses) / world).backward()
        for (name, param), expected in zip(
            network.named_parameters(), reference.parameters(), strict=True
        ):
            torch.testing.assert_close(param.grad, expected.grad, msg=name)
        backbone = network.backbone.weight.detach().clone()
        optimizer.step()  # the optimiser still holds the wrapped module's parameters
        assert not torch.equal(backbone, network.backbone.weight)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_searches_for_unused_parameters_only_while_the_backbone_is_frozen(
    tmp_path: Path,
) -> None:
    world = 2
    torch.multiprocessing.spawn(
        _switch_across_the_unfrozen_epoch,
        args=(world, str(tmp_path / "rendezvous")),
        nprocs=world,
        join=True,
    )
