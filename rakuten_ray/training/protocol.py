"""A whole training run: splits, base models, fusion, final refit and the sealed bundle.

Leak-free protocol: base models train on ``train`` (deep models stop early on ``val``);
temperatures, blend weights and meta-models are fitted on ``val`` + ``test`` scores; then the
classic model is refit on every labelled row, deep models keep their weights or are
retrained on every row with a small technical validation, and everything is sealed into
``RUN/bundle``. Labelled rows without text (image-only rows) are split the same way and
serve the image models only: their held-out part calibrates and blends the image models,
the stacks see rows with text alone.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_ray.bundle import (
    CONFIG_FILE,
    FUSION_FILE,
    FusionState,
    ModelEntry,
    data_fingerprint,
    seal_bundle,
)
from rakuten_ray.catalog import CLASS_CODES, LABEL_COLUMN, X_COLUMNS, codes_to_indices
from rakuten_ray.config import ModelSpec, RunConfig
from rakuten_ray.evaluation import HELDOUT_LABELS_FILE, HELDOUT_SCORES_FILE
from rakuten_ray.fusion.fitting import ModalityFit, ScoredModel, fit_modality, fit_stack
from rakuten_ray.splits import Splits, stratified_splits
from rakuten_ray.training.base_models import BaseModelRun, fit_tfidf_model, train_base_model
from rakuten_ray.training.data import TrainingData, load_training_data

#: The image-only rows' own split, saved like ``splits.json``.
IMAGES_ONLY_SPLITS_FILE = "splits_images_only.json"
META_WITH_IMAGE_FILE = "meta_with_image.skops"
META_TEXT_ONLY_FILE = "meta_text_only.skops"
#: Share of all rows held back to early-stop a deep model retrained on everything.
TECHNICAL_VAL_FRACTION = 0.05

Log = Callable[[str], None]


@dataclass
class RunLayout:
    """Where a training run writes."""

    root: Path

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def base(self) -> Path:
        return self.root / "base_models"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"


@dataclass(frozen=True)
class ImageRows:
    """The image models' rows: the labelled split plus the image-only rows, split alike.

    Image-only rows (no text) are split per class with the same fractions, so the image
    models train, stop early and are measured on many more images; their held-out part feeds
    the image temperatures and blend weights, never the stacks, which need text.
    """

    train: pd.DataFrame
    val: pd.DataFrame
    heldout: pd.DataFrame
    test: pd.Index
    extra: Splits


def image_rows(data: TrainingData, splits: Splits) -> ImageRows:
    """Split the image-only rows like ``splits`` and add each part to the labelled one."""
    rows, extra_rows = data.labelled, data.images_only
    extra = stratified_splits(
        extra_rows[LABEL_COLUMN], splits.seed, splits.test_fraction, splits.val_fraction
    )

    def both(labelled: np.ndarray, images_only: np.ndarray) -> pd.DataFrame:
        return pd.concat([rows.loc[labelled], extra_rows.loc[images_only]])

    return ImageRows(
        train=both(splits.train, extra.train),
        val=both(splits.val, extra.val),
        heldout=both(splits.held_out, extra.held_out),
        test=pd.Index(np.concatenate([splits.test, extra.test])),
        extra=extra,
    )


def rows_with_text(fit: ModalityFit, text_rows: pd.Index) -> ModalityFit:
    """``fit`` with its blended probabilities kept on ``text_rows`` only (for the stacks)."""
    return dataclasses.replace(fit, probs=fit.probs.loc[fit.probs.index.isin(text_rows)])


def _base_model_metrics(run: BaseModelRun, fit: ModalityFit) -> dict[str, Any]:
    metrics = dict(fit.report["models"][run.spec.name])
    metrics["train_seconds"] = run.seconds
    if run.history:
        metrics["epochs"] = run.history
        metrics["best_epoch"] = run.best_epoch
    return metrics


def _refit(
    spec: ModelSpec, run: BaseModelRun, data: TrainingData, layout: RunLayout, seed: int
) -> Path:
    """The final model folder of ``spec`` (refit on all rows, or the kept weights)."""
    rows = data.labelled
    if spec.kind == "tfidf_svm":
        return fit_tfidf_model(spec, rows, layout.base / spec.name / "refit", seed)
    if spec.refit == "keep":
        return run.model_dir
    if spec.kind == "timm_image":
        rows = pd.concat([rows, data.images_only])
    technical = stratified_splits(
        rows[LABEL_COLUMN], seed=seed, test_fraction=TECHNICAL_VAL_FRACTION, val_fraction=0.5
    )
    train_rows = rows.loc[np.concatenate([technical.train, technical.val])]
    folder = layout.base / spec.name / "refit"
    technical_val = rows.loc[technical.test]
    refit = train_base_model(spec, train_rows, technical_val, rows.iloc[:0], folder, seed)
    return refit.model_dir


def _write_bundle(
    config: RunConfig,
    layout: RunLayout,
    final_dirs: dict[str, Path],
    text: ModalityFit,
    image: ModalityFit | None,
    stack: Any,
    fingerprint: str,
    metrics: dict[str, Any],
) -> None:
    bundle = layout.bundle
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "models").mkdir(parents=True)
    for name, folder in final_dirs.items():
        shutil.copytree(folder, bundle / "models" / name)

    def entries(specs: list[ModelSpec], fit: ModalityFit | None) -> list[ModelEntry]:
        if fit is None:
            return []
        return [
            ModelEntry(spec.name, spec.kind, f"models/{spec.name}", temperature, weight)
            for spec, temperature, weight in zip(specs, fit.temperatures, fit.weights, strict=True)
        ]

    stack.text_only.save(bundle / META_TEXT_ONLY_FILE)
    if stack.with_image is not None:
        stack.with_image.save(bundle / META_WITH_IMAGE_FILE)
    fusion = FusionState(
        class_codes=list(CLASS_CODES),
        text_models=entries(config.text_models, text),
        image_models=entries(config.image_models, image) if stack.with_image else [],
        meta_with_image=META_WITH_IMAGE_FILE if stack.with_image is not None else "",
        meta_text_only=META_TEXT_ONLY_FILE,
    )
    (bundle / FUSION_FILE).write_text(fusion.to_json())
    config.save(bundle / CONFIG_FILE)
    seal_bundle(bundle, fingerprint, metrics)


def run_training(config: RunConfig, data_dir: Path, out_dir: Path, log: Log = print) -> dict:
    """Run the whole protocol; returns the metrics also written to ``RUN/metrics.json``.

    Raises:
        SchemaError: the data folder is malformed (raised before any training).
    """
    started = time.perf_counter()
    layout = RunLayout(out_dir)
    data = load_training_data(Path(data_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.yaml")
    splits: Splits = stratified_splits(
        data.labelled[LABEL_COLUMN], config.seed, config.splits.test_fraction,
        config.splits.val_fraction,
    )  # fmt: skip
    splits.save(out_dir / "splits.json")
    rows = data.labelled
    train, val = rows.loc[splits.train], rows.loc[splits.val]
    heldout = rows.loc[splits.held_out]
    images = image_rows(data, splits)
    images.extra.save(out_dir / IMAGES_ONLY_SPLITS_FILE)
    log(
        f"splits: train {len(train)}, val {len(val)}, internal test {len(splits.test)}; "
        f"image-only rows: train {len(images.extra.train)}, val {len(images.extra.val)}, "
        f"internal test {len(images.extra.test)}"
    )

    runs: dict[str, BaseModelRun] = {}
    for spec in config.models():
        phase = time.perf_counter()
        parts = (images.train, images.val, images.heldout)
        if spec.kind != "timm_image":
            parts = (train, val, heldout)
        runs[spec.name] = train_base_model(spec, *parts, layout.base / spec.name, config.seed)
        log(f"base model {spec.name} ({spec.kind}) trained in {time.perf_counter() - phase:.0f}s")

    y_idx = pd.Series(codes_to_indices(images.heldout[LABEL_COLUMN]), index=images.heldout.index)
    test_rows = images.test
    # Kept next to the run so reports can redraw calibration before and after temperature.
    y_idx.rename("label").to_frame().to_parquet(out_dir / HELDOUT_LABELS_FILE)
    for name, run in runs.items():
        scores = run.heldout_scores
        scores.columns = [str(c) for c in scores.columns]
        scores.to_parquet(layout.base / name / HELDOUT_SCORES_FILE)

    def scored(specs: list[ModelSpec]) -> list[ScoredModel]:
        return [ScoredModel(s.name, s.kind, runs[s.name].heldout_scores) for s in specs]

    text = fit_modality(scored(config.text_models), y_idx, test_rows, config.fusion.blend)
    image = None
    if config.image_models and all(len(runs[s.name].heldout_scores) for s in config.image_models):
        image = fit_modality(scored(config.image_models), y_idx, test_rows, config.fusion.blend)
    # Image temperatures and weights use every held-out image; the stacks only rows with text.
    image_with_text = rows_with_text(image, heldout.index) if image is not None else None
    stack = fit_stack(text, image_with_text, y_idx, test_rows, config.fusion, config.seed)
    scores = {
        part: round(v["weighted_f1"], 4) for part, v in stack.report.items() if "choice" not in part
    }
    log(f"fusion fitted, weighted F1 (cross-fitted on held-out rows): {scores}")

    phase = time.perf_counter()
    final_dirs = {
        spec.name: _refit(spec, runs[spec.name], data, layout, config.seed)
        for spec in config.models()
    }
    log(f"final refit done in {time.perf_counter() - phase:.0f}s")

    fits = {spec.name: text for spec in config.text_models}
    fits.update({spec.name: image for spec in config.image_models if image is not None})
    metrics = {
        "base_models": {name: _base_model_metrics(runs[name], fit) for name, fit in fits.items()},
        "blends": {
            name: fit.report["blend"] for name, fit in (("text", text), ("image", image)) if fit
        },
        "stack": stack.report,
        "rows": {
            "train": len(train),
            "val": len(val),
            "internal_test": len(splits.test),
            "images_only": len(data.images_only),
            "images_only_train": len(images.extra.train),
            "images_only_val": len(images.extra.val),
            "images_only_internal_test": len(images.extra.test),
            "heldout_images": len(image.probs) if image else 0,
            "heldout_with_image": len(image_with_text.probs) if image_with_text else 0,
        },
        "seconds": time.perf_counter() - started,
    }
    fingerprint = data_fingerprint(rows[[*X_COLUMNS, LABEL_COLUMN]])
    _write_bundle(config, layout, final_dirs, text, image, stack, fingerprint, metrics)
    layout.metrics.write_text(json.dumps(metrics, indent=1))
    log(f"bundle sealed in {layout.bundle} ({time.perf_counter() - started:.0f}s in all)")
    return metrics
