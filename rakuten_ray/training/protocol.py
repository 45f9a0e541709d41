"""A whole training run, in named phases: split, train the base models, fit the fusion, refit,
seal the bundle.

Leak-free protocol: base models train on ``train`` (deep models stop early on ``val``);
temperatures, blend weights and meta-models are fitted on ``val`` + ``test`` scores; then
each model is refit (the TF-IDF model on every labelled row; deep models keep their weights
or are retrained on every row with a small technical validation), and
everything is sealed into ``RUN/bundle``. Labelled rows without text (image-only rows) are
split the same way and serve the image models only: their held-out part calibrates and
blends the image models, the stacks see rows with text alone.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.bundle import FusionState, ModelEntry, seal_bundle
from rakuten_ray.catalog import CLASS_CODES, LABEL_COLUMN, SchemaError, codes_to_indices
from rakuten_ray.config import RunConfig
from rakuten_ray.fusion.fitting import (
    ModalityFit,
    ScoredModel,
    StackFit,
    fit_modality,
    fit_stack,
    fusion_folds,
)
from rakuten_ray.fusion.routing import RoutingFit, fit_routing
from rakuten_ray.layout import BundleLayout, RunLayout
from rakuten_ray.lifecycle import PhaseClock
from rakuten_ray.models.registry import Modality, kind_of
from rakuten_ray.models.runtime import HeldoutLogits, RuntimeRecord
from rakuten_ray.models.spec import ModelSpec
from rakuten_ray.splits import Splits, stratified_splits
from rakuten_ray.storage import Location
from rakuten_ray.training.base_models import BaseModelRun, train_base_model
from rakuten_ray.training.data import TrainingData, load_training_data
from rakuten_ray.training.report import (
    BaseModelReport,
    BlendReport,
    Calibration,
    RoutingEstimate,
    RoutingReport,
    RowCounts,
    Scores,
    StackReport,
    TrainingReport,
)
from rakuten_ray.training.resume import (
    DATA_INPUT,
    check_resumable,
    finished_run,
    record_finished,
    training_record,
)
from rakuten_ray.training.scheduling import Job, run_side_by_side
from rakuten_ray.training.trainers import refit_model

Log = Callable[[str], None]


@dataclass(frozen=True)
class ModalityRows:
    """The rows one modality's models train, stop early, are scored and refit on."""

    train: pd.DataFrame
    val: pd.DataFrame
    heldout: pd.DataFrame
    #: Every labelled row of the modality: what a model refit on all rows sees.
    every: pd.DataFrame


@dataclass(frozen=True)
class RunRows:
    """The split of a run's rows, per modality.

    Image-only rows (no text) are split per class with the same fractions and added to the
    image models' parts, so those train, stop early and are measured on many more images.
    """

    splits: Splits
    images_only_splits: Splits
    by_modality: dict[Modality, ModalityRows]
    #: Internal-test rows of both kinds: where base models and blends are measured.
    test: pd.Index

    def counts(self, heldout_images: int, heldout_with_image: int) -> RowCounts:
        extra = self.images_only_splits
        return RowCounts(
            train=len(self.splits.train),
            val=len(self.splits.val),
            internal_test=len(self.splits.test),
            images_only=len(extra.train) + len(extra.val) + len(extra.test),
            images_only_train=len(extra.train),
            images_only_val=len(extra.val),
            images_only_internal_test=len(extra.test),
            heldout_images=heldout_images,
            heldout_with_image=heldout_with_image,
        )


@dataclass(frozen=True)
class FusionFit:
    """Calibrated blends per modality and the stack, fitted on the held-out rows."""

    text: ModalityFit
    image: ModalityFit | None
    #: The image blend on the held-out rows that also have text: what the stack saw.
    image_with_text: ModalityFit | None
    stack: StackFit
    routing: RoutingFit


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def split_rows(config: RunConfig, data: TrainingData, layout: RunLayout, log: Log) -> RunRows:
    """Split the labelled rows and, alike, the image-only rows; save both splits."""
    fractions = (config.seed, config.splits.test_fraction, config.splits.val_fraction)
    splits = stratified_splits(data.labelled[LABEL_COLUMN], *fractions)
    extra = stratified_splits(data.images_only[LABEL_COLUMN], *fractions)
    splits.save(layout.splits)
    extra.save(layout.images_only_splits)
    rows, extra_rows = data.labelled, data.images_only

    def both(labelled: np.ndarray, images_only: np.ndarray) -> pd.DataFrame:
        return pd.concat([rows.loc[labelled], extra_rows.loc[images_only]])

    text = ModalityRows(
        rows.loc[splits.train],
        rows.loc[splits.val],
        rows.loc[splits.held_out],
        every=data.rows_for(Modality.TEXT),
    )
    image = ModalityRows(
        both(splits.train, extra.train),
        both(splits.val, extra.val),
        both(splits.held_out, extra.held_out),
        every=data.rows_for(Modality.IMAGE),
    )
    log(
        f"splits: train {len(splits.train)}, val {len(splits.val)}, internal test "
        f"{len(splits.test)}; image-only rows: train {len(extra.train)}, val {len(extra.val)}, "
        f"internal test {len(extra.test)}"
    )
    return RunRows(
        splits=splits,
        images_only_splits=extra,
        by_modality={Modality.TEXT: text, Modality.IMAGE: image},
        test=pd.Index(np.concatenate([splits.test, extra.test])),
    )


def train_base_models(
    config: RunConfig, rows: RunRows, layout: RunLayout, log: Log, resume: bool = False
) -> dict[str, BaseModelRun]:
    """Train every base model on its modality's rows and score its held-out rows; up to
    ``training.max_concurrent_models`` at once, each waiting in Ray for its own resources
    (:mod:`rakuten_ray.training.scheduling`), so models whose resources the cluster holds
    together, now or once an autoscaler has added nodes, train side by side. With
    ``resume``, a model that an interrupted run finished is reused once its record checks
    out (:mod:`rakuten_ray.training.resume`)."""

    def train(spec: ModelSpec) -> BaseModelRun:
        kind = kind_of(spec)
        if resume:
            reused, why = finished_run(layout, spec)
            if reused is not None:
                log(f"base model {spec.name} reused from the interrupted run ({why})")
                return reused
            log(f"base model {spec.name}: {why}, training it (from its latest checkpoint if any)")
        layout.finished(spec.name).unlink(missing_ok=True)
        part = rows.by_modality[kind.modality]
        work_dir = layout.model_dir(spec.name)
        pool = {Modality.TEXT: config.scoring.text, Modality.IMAGE: config.scoring.image}
        run = train_base_model(
            spec, part.train, part.val, part.heldout, work_dir, config.seed,
            pool[kind.modality],
        )  # fmt: skip
        scores = run.heldout_scores
        # Kept next to the run so reports can redraw calibration before and after temperature.
        scores.set_axis([str(c) for c in scores.columns], axis=1).to_parquet(
            layout.heldout_scores(spec.name)
        )
        record_finished(layout, run)
        log(f"base model {spec.name} ({kind.name}, {kind.trainer}) trained in {run.seconds:.0f}s")
        return run

    jobs = [Job(spec.name, partial(train, spec)) for spec in config.models()]
    runs = run_side_by_side(jobs, config.training.max_concurrent_models)
    return {spec.name: runs[spec.name] for spec in config.models()}


def rows_with_text(fit: ModalityFit, text_rows: pd.Index) -> ModalityFit:
    """``fit`` with its blended probabilities kept on ``text_rows`` only (for the stacks)."""
    return fit.on_rows(fit.probs.index[fit.probs.index.isin(text_rows)])


def fit_fusion(
    config: RunConfig, runs: dict[str, BaseModelRun], rows: RunRows, layout: RunLayout, log: Log
) -> FusionFit:
    """Temperatures, blend weights and the stack, on the held-out rows (their class indices
    and cross-fitting folds are saved next to the run, for reports)."""
    heldout = rows.by_modality[Modality.IMAGE].heldout  # the labelled held-out rows and more
    y_idx = pd.Series(codes_to_indices(heldout[LABEL_COLUMN]), index=heldout.index)
    folds = fusion_folds(y_idx, config.fusion.cv_folds, config.seed)
    y_idx.rename("label").to_frame().assign(fold=folds).to_parquet(layout.heldout_labels)

    def scored(specs: list[ModelSpec]) -> list[ScoredModel]:
        return [ScoredModel(s.name, s.kind, runs[s.name].heldout_scores) for s in specs]

    method = config.fusion.blend
    text = fit_modality(scored(config.text_models), y_idx, folds, rows.test, method)
    image = None
    if config.image_models and all(len(runs[s.name].heldout_scores) for s in config.image_models):
        image = fit_modality(scored(config.image_models), y_idx, folds, rows.test, method)
    # Image temperatures and weights use every held-out image; the stacks only rows with text.
    text_rows = rows.by_modality[Modality.TEXT].heldout.index
    image_with_text = rows_with_text(image, text_rows) if image is not None else None
    stack = fit_stack(text, image_with_text, y_idx, folds, rows.test, config.fusion)
    scores = {
        part: round(v["weighted_f1"], 4) for part, v in stack.report.items() if "choice" not in part
    }
    log(f"fusion fitted, weighted F1 (cross-fitted on held-out rows): {scores}")
    heldout = stack.heldout_probs
    routing = fit_routing(
        heldout.to_numpy(), y_idx.loc[heldout.index].to_numpy(), stack.has_image,
        heldout.index.isin(rows.test), config.review, config.seed,
    )  # fmt: skip
    expected = routing.expected
    log(
        f"review routing at {config.review.target_precision:.0%} precision: "
        f"{expected['coverage']:.1%} of held-out rows accepted automatically (cross-fitted)"
    )
    for path, estimate in routing.expected_per_path.items():
        if estimate["auto_rows"]:
            low, high = estimate["precision_interval"]
            log(
                f"  {path}: {estimate['auto_rows']} of {estimate['rows']} rows accepted, "
                f"precision {estimate['precision']:.3f} ({low:.3f} to {high:.3f})"
            )
    return FusionFit(text, image, image_with_text, stack, routing)


def refit_base_models(
    config: RunConfig, runs: dict[str, BaseModelRun], rows: RunRows, layout: RunLayout
) -> dict[str, Path]:
    """The folder of each model that goes into the bundle, refit as training decides
    (:func:`~rakuten_ray.training.trainers.refit_model`)."""
    final = {}
    for spec in config.models():
        every = rows.by_modality[kind_of(spec).modality].every
        final[spec.name] = refit_model(
            spec, runs[spec.name].fit, every, layout.model_dir(spec.name), config.seed
        )
    return final


def export_models(
    config: RunConfig,
    bundle: BundleLayout,
    final_dirs: dict[str, Path],
    rows: RunRows,
    log: Log,
    runs: dict[str, BaseModelRun],
) -> dict[str, RuntimeRecord]:
    """Copy each model into a new bundle folder with its CPU runtime export, checked on its
    modality's held-out rows, and against the held-out logits fusion was fitted on where the
    bundle keeps the weights that computed them; returns what each check measured."""
    if bundle.root.exists():
        shutil.rmtree(bundle.root)
    (bundle.root / BundleLayout.MODELS).mkdir(parents=True)
    runtimes = {}
    for spec in config.models():
        kind = kind_of(spec)
        heldout = rows.by_modality[kind.modality].heldout
        dest = bundle.path(BundleLayout.model(spec.name))
        run = runs[spec.name]
        kept = final_dirs[spec.name] == run.model_dir and run.heldout_precision is not None
        fitted_on = HeldoutLogits(run.heldout_scores, run.heldout_precision) if kept else None
        record = kind.export(final_dirs[spec.name], dest, heldout, config.export, fitted_on)
        if record is not None:
            runtimes[spec.name] = record
            int8 = "not tried"
            if record.int8_agreement is not None:
                speed = record.fp32_seconds / record.int8_seconds
                int8 = f"{record.int8_agreement:.2%}, model calls {speed:.2f}x as fast"
            log(
                f"{spec.name}: CPU runtime {record.file or 'PyTorch (export not kept)'}; labels "
                f"as PyTorch's on {record.fp32_agreement:.2%} of {record.checked_rows} "
                f"held-out rows (fp32 export), {int8} (int8 copy)"
            )
            if record.heldout_precision is not None:
                log(
                    f"{spec.name}: held-out logits at {record.heldout_precision}, CPU scoring at "
                    f"{record.scoring_precision}: labels alike on {record.heldout_agreement:.2%}"
                    f", probabilities within {record.heldout_max_prob_diff:.1e}"
                )
    return runtimes


def seal_run_bundle(
    config: RunConfig,
    bundle: BundleLayout,
    fusion: FusionFit,
    fingerprint: str,
    report: TrainingReport,
) -> None:
    """Write the fusion and the config beside the exported models, then the manifest."""

    def entries(specs: list[ModelSpec], fit: ModalityFit | None) -> list[ModelEntry]:
        if fit is None:
            return []
        return [
            ModelEntry(spec.name, spec.kind, BundleLayout.model(spec.name), temperature, weight)
            for spec, temperature, weight in zip(specs, fit.temperatures, fit.weights, strict=True)
        ]

    stack = fusion.stack
    stack.text_only.save(bundle.path(BundleLayout.META_TEXT_ONLY))
    if stack.with_image is not None:
        stack.with_image.save(bundle.path(BundleLayout.META_WITH_IMAGE))
    state = FusionState(
        class_codes=list(CLASS_CODES),
        text_models=entries(config.text_models, fusion.text),
        image_models=entries(config.image_models, fusion.image) if stack.with_image else [],
        meta_with_image=BundleLayout.META_WITH_IMAGE if stack.with_image is not None else "",
        meta_text_only=BundleLayout.META_TEXT_ONLY,
    )
    bundle.path(BundleLayout.FUSION).write_text(state.to_json())
    bundle.path(BundleLayout.REVIEW).write_text(fusion.routing.policy.to_json())
    config.save(bundle.path(BundleLayout.CONFIG))
    seal_bundle(bundle.root, fingerprint, report.to_dict())


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _model_report(spec: ModelSpec, run: BaseModelRun, fit: ModalityFit) -> BaseModelReport:
    kind = kind_of(spec)
    measured = fit.report["models"][spec.name]
    return BaseModelReport(
        kind=kind.name,
        modality=kind.modality.value,
        internal_test=Scores(**measured["internal_test"]),
        calibration=Calibration(**measured["calibration"]),
        blend_weight=fit.report["blend"]["weights"][spec.name],
        train_seconds=run.seconds,
        epochs=run.fit.history,
        best_epoch=run.fit.best_epoch,
        heldout_precision=run.heldout_precision,
    )


def _blend_report(fit: ModalityFit) -> BlendReport:
    blend = fit.report["blend"]
    return BlendReport(
        method=blend["method"],
        weights=blend["weights"],
        rules=blend["rules"],
        internal_test=Scores(**blend["internal_test"]),
        rows=fit.report["rows"],
    )


def _stack_report(stack: StackFit) -> StackReport:
    values = {
        key: Scores(**value) if "choice" not in key else value
        for key, value in stack.report.items()
    }
    return StackReport(**values)


def _routing_report(routing: RoutingFit) -> RoutingReport:
    policy = routing.policy
    return RoutingReport(
        target_precision=policy.target_precision,
        expected=RoutingEstimate(**routing.expected),
        expected_internal_test=RoutingEstimate(**routing.expected_internal_test),
        expected_per_path={
            path: RoutingEstimate(**values) for path, values in routing.expected_per_path.items()
        },
        thresholds={"with_image": asdict(policy.with_image), "text_only": asdict(policy.text_only)},
        curve=routing.curve,
    )


def build_report(
    config: RunConfig,
    runs: dict[str, BaseModelRun],
    fusion: FusionFit,
    rows: RunRows,
    timer: PhaseClock,
) -> TrainingReport:
    """The typed report of the run so far."""
    fits = {spec.name: fusion.text for spec in config.text_models}
    if fusion.image is not None:
        fits.update({spec.name: fusion.image for spec in config.image_models})
    blends = {Modality.TEXT.value: _blend_report(fusion.text)}
    if fusion.image is not None:
        blends[Modality.IMAGE.value] = _blend_report(fusion.image)
    return TrainingReport(
        base_models={
            spec.name: _model_report(spec, runs[spec.name], fits[spec.name])
            for spec in config.models()
            if spec.name in fits
        },
        blends=blends,
        stack=_stack_report(fusion.stack),
        routing=_routing_report(fusion.routing),
        rows=rows.counts(
            heldout_images=len(fusion.image.probs) if fusion.image else 0,
            heldout_with_image=len(fusion.image_with_text.probs) if fusion.image_with_text else 0,
        ),
        phase_seconds=dict(timer.seconds),
        seconds=timer.total,
    )


def run_training(
    config: RunConfig, data: TrainingData | Location, out_dir: Path, log: Log = print,
    resume: bool = False,
) -> TrainingReport:  # fmt: skip
    """Run the whole protocol on ``data`` (as read by
    :func:`~rakuten_ray.training.data.load_training_data`, or the location it reads); returns
    the report also written to ``RUN/metrics.json``.

    With ``resume``, continue the interrupted run in ``out_dir``: base models it finished
    are reused, an interrupted Ray Train run continues from its latest checkpoint. Without
    it, ``out_dir`` must be empty or absent: a Ray Train run finds its checkpoints by folder,
    so a new run in an old run's folder would quietly continue the old run's training.

    Raises:
        SchemaError: the data is malformed, or ``out_dir`` holds files and ``resume`` is off
            (raised before any training).
        ResumeError: ``resume`` and ``out_dir`` holds no run of this config and data.
    """
    layout = RunLayout(Path(out_dir))
    if not resume and layout.root.is_dir() and any(layout.root.iterdir()):
        raise SchemaError(
            f"{layout.root}: a new run needs an empty folder (resume=True continues the run "
            f"there; remove the folder to start again)"
        )
    timer = PhaseClock(log, label="phase ")
    if not isinstance(data, TrainingData):
        data = load_training_data(data)
    record = training_record(config, data)
    if resume:
        check_resumable(layout, record)
    layout.root.mkdir(parents=True, exist_ok=True)
    record.save(layout.identity)
    config.save(layout.config)
    with timer.phase("split"):
        rows = split_rows(config, data, layout, log)
    with timer.phase("base models"):
        runs = train_base_models(config, rows, layout, log, resume)
    with timer.phase("fusion"):
        fusion = fit_fusion(config, runs, rows, layout, log)
    with timer.phase("refit"):
        final_dirs = refit_base_models(config, runs, rows, layout)
    with timer.phase("export"):
        runtimes = export_models(config, layout.bundle, final_dirs, rows, log, runs)
    report = dataclasses.replace(build_report(config, runs, fusion, rows, timer), runtimes=runtimes)
    seal_run_bundle(config, layout.bundle, fusion, record.inputs[DATA_INPUT], report)
    report.save(layout.metrics)
    log(f"bundle sealed in {layout.bundle.root} ({timer.total:.0f}s in all)")
    return report
