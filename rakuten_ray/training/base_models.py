"""Training one base model on the ``train`` rows and scoring the held-out rows.

Each model trains with its kind's trainer (:mod:`rakuten_ray.training.trainers`: a Ray task,
or Ray Train). Held-out rows are then scored in Ray tasks (one per training worker) by the
scorer that the scoring stages load, so fusion is fitted on exactly what scoring will produce.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from rakuten_ray.config import StagePool
from rakuten_ray.models.registry import Modality, get_kind, kind_of
from rakuten_ray.models.runtime import forward_precision
from rakuten_ray.models.scorers import ImageScorer, TextScorer
from rakuten_ray.models.spec import ModelSpec, Precision
from rakuten_ray.training.fitted import FitResult
from rakuten_ray.training.trainers import fit_model

#: The catalogue columns each modality's scorer reads: all that its tasks are sent.
_SCORER_COLUMNS = {Modality.TEXT: TextScorer.columns, Modality.IMAGE: ImageScorer.columns}


@dataclass
class BaseModelRun:
    """A trained base model and its scores (logits) on held-out rows, keyed by row index."""

    spec: ModelSpec
    fit: FitResult
    heldout_scores: pd.DataFrame
    seconds: float
    #: What the held-out scores' forward passes computed in (``fp32`` on a CPU, ``bf16`` or
    #: ``fp16`` on a GPU); ``None`` for a model without forward passes (TF-IDF).
    heldout_precision: str | None = None

    @property
    def model_dir(self) -> Path:
        return self.fit.model_dir


@ray.remote
def _score_rows(
    kind: str, folder: str, precision: Precision, pool: StagePool | None, rows: pd.DataFrame
) -> tuple[pd.DataFrame, str | None]:
    """Logits of one shard of held-out rows, by the scorer that the scoring stages load (at
    the model's precision and with the pool's call sizes, as they load it), and what its
    forward passes computed in on this worker's device."""
    model = get_kind(kind)
    if pool is None:
        scorer = model.load_scorer(Path(folder), precision=precision)
    else:
        scorer = model.load_for_pool(Path(folder), pool, precision)
    return scorer.score_rows(rows), forward_precision(scorer)


def heldout_scores(
    spec: ModelSpec, model_dir: Path, rows: pd.DataFrame, pool: StagePool | None = None
) -> tuple[pd.DataFrame, str | None]:
    """Logits of ``rows`` by a trained model, indexed like ``rows`` (image models score only
    rows with a usable image), and what they computed in (``fp32`` on a CPU; on a GPU the
    model's precision, ``fp16`` for ``bf16`` where the GPU lacks it; shards that ran
    differently are joined with ``+``). ``pool``: the scoring stage whose call sizes the
    bundle will score with (the kind's defaults when ``None``).

    A model trained on N workers scores in N Ray tasks, each with one worker's CPUs and GPU
    and a contiguous shard of the rows, so a model trained on 4 GPUs scores on 4; the shards'
    logits are concatenated in row order. Each task gets only the columns its scorer reads,
    and scores them a chunk at a time (:meth:`Scorer.score_rows`).
    """
    kind, scaling = kind_of(spec), spec.scaling
    columns = list(_SCORER_COLUMNS[kind.modality])
    task = _score_rows.options(
        num_cpus=scaling.cpus_per_worker, num_gpus=1.0 if scaling.use_gpu else 0.0
    )
    shards = max(1, min(scaling.num_workers, len(rows)))
    bounds = np.linspace(0, len(rows), shards + 1).astype(int)
    refs = [
        task.remote(
            spec.kind, str(model_dir), scaling.precision, pool, rows.iloc[start:stop][columns]
        )
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    shards = ray.get(refs)
    ran = sorted({precision for _, precision in shards if precision is not None})
    return pd.concat(logits for logits, _ in shards), "+".join(ran) or None


def train_base_model(
    spec: ModelSpec,
    train: pd.DataFrame,
    val: pd.DataFrame,
    heldout: pd.DataFrame,
    work_dir: Path,
    seed: int,
    pool: StagePool | None = None,
) -> BaseModelRun:
    """Train ``spec`` on ``train`` (``val`` for early stopping) and score ``heldout`` (with
    the call sizes of scoring ``pool``).

    Args:
        spec: the base model.
        train: training rows (catalogue columns, ``prdtypecode``, ``image_path``).
        val: validation rows for deep models' early stopping and checkpoint choice.
        heldout: rows no base model trains on, scored for fusion.
        work_dir: this model's folder in the run.
        seed: random seed.
    """
    started = time.perf_counter()
    fit = fit_model(spec, train, val, work_dir, seed)
    scores, precision = heldout_scores(spec, fit.model_dir, heldout, pool)
    seconds = time.perf_counter() - started
    return BaseModelRun(spec, fit, scores, seconds, heldout_precision=precision)
