"""Would a third, classic text model lift a run's stack? Each candidate is fitted on the run's
training rows and scores its held-out rows; then the run's fusion is fitted again, by the
same cross-fitted code as training (temperatures, blend weights, meta-models, review
routing), with the candidate beside the run's own text models. Nothing is retrained: the
run's base models keep their held-out scores.

Candidates, each on the cleaned title and description joined:

- ``cnb_word``: word 1-2 gram TF-IDF, complement naive Bayes (alpha 0.3);
- ``lr_char``: character 2-5 gram TF-IDF (200,000 features), logistic regression (C 20);
- ``lr_title``: word 1-2 gram TF-IDF of the title alone, logistic regression (C 20).

    .venv/bin/python benchmarks/stack_candidates.py --run RUN
        [--data ../shared/data/rakuten_sample] [--candidates cnb_word lr_char lr_title]

RUN: a training run's folder (its config, splits and held-out scores). Prints each
candidate's internal-test weighted F1 alone and, for the run's text models with and without
each candidate, the stack's internal-test weighted F1, log loss and ECE and the review
routing's cross-fitted coverage; writes ``benchmarks/results/stack_candidates.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import SAMPLE, format_table, machine, write_results
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB

from rakuten_ray.catalog import LABEL_COLUMN, NUM_CLASSES, codes_to_indices
from rakuten_ray.config import load_config
from rakuten_ray.fusion.fitting import ScoredModel, fit_modality, fit_stack
from rakuten_ray.fusion.routing import fit_routing
from rakuten_ray.layout import RunLayout
from rakuten_ray.metrics import weighted_f1
from rakuten_ray.text import clean_text
from rakuten_ray.training.data import load_training_data
from rakuten_ray.training.protocol import rows_with_text

#: Log-probability given to a class a candidate never saw in training.
ABSENT = -30.0
Candidate = Callable[[pd.Series, np.ndarray, pd.Series], tuple[np.ndarray, np.ndarray]]


def _fitted(vectorizer: TfidfVectorizer, model: Any) -> Candidate:
    def run(train: pd.Series, y: np.ndarray, heldout: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        fitted = model.fit(vectorizer.fit_transform(train), y)
        return fitted.predict_log_proba(vectorizer.transform(heldout)), fitted.classes_

    return run


CANDIDATES: dict[str, tuple[str, Candidate]] = {
    "cnb_word": ("both", _fitted(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), ComplementNB(alpha=0.3))),
    "lr_char": ("both", _fitted(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                        max_features=200_000),
        LogisticRegression(C=20, max_iter=300))),
    "lr_title": ("title", _fitted(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(C=20, max_iter=300))),
}  # fmt: skip


def candidate_scores(
    name: str, texts: dict[str, pd.Series], y: pd.Series, train: pd.Index, heldout: pd.Index
) -> pd.DataFrame:
    """The candidate's log-probabilities over all classes on the held-out rows."""
    field, fit = CANDIDATES[name]
    column = texts[field]
    log_probs, classes = fit(column.loc[train], y.loc[train].to_numpy(), column.loc[heldout])
    out = np.full((len(heldout), NUM_CLASSES), ABSENT)
    out[:, classes] = log_probs
    return pd.DataFrame(out, index=heldout)


def stack_figures(
    layout: RunLayout, text_models: list[ScoredModel], test_rows: pd.Index
) -> dict[str, float]:
    """The run's fusion fitted again on these text models and its image models."""
    config = load_config(layout.config)
    labels = pd.read_parquet(layout.heldout_labels)
    y_idx, folds = labels["label"], labels["fold"]
    method = config.fusion.blend
    text = fit_modality(text_models, y_idx, folds, test_rows, method)
    image = None
    if config.image_models:
        images = [ScoredModel(s.name, s.kind, _scores(layout, s.name)) for s in config.image_models]
        fitted = fit_modality(images, y_idx, folds, test_rows, method)
        image = rows_with_text(fitted, text_models[0].scores.index)
    stack = fit_stack(text, image, y_idx, folds, test_rows, config.fusion)
    heldout = stack.heldout_probs
    routing = fit_routing(
        heldout.to_numpy(), y_idx.loc[heldout.index].to_numpy(), stack.has_image,
        heldout.index.isin(test_rows), config.review, config.seed,
    )  # fmt: skip
    test = stack.report["final_internal_test"]
    return {
        "weighted_f1": round(test["weighted_f1"], 4),
        "log_loss": round(test["log_loss"], 4),
        "ece": round(test["ece"], 4),
        "coverage": round(routing.expected["coverage"], 4),
    }


def _scores(layout: RunLayout, name: str) -> pd.DataFrame:
    scores = pd.read_parquet(layout.heldout_scores(name))
    scores.columns = scores.columns.astype(int)  # saved with string names (Parquet)
    return scores


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a training run's folder")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="the run's catalogue")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    args = parser.parse_args()
    layout = RunLayout(args.run)
    config = load_config(layout.config)
    splits = json.loads(layout.splits.read_text())
    labelled = load_training_data(args.data).labelled
    y = pd.Series(codes_to_indices(labelled[LABEL_COLUMN]), index=labelled.index)
    title = labelled["designation"].map(clean_text)
    texts = {"title": title, "both": title + " | " + labelled["description"].map(clean_text)}
    own = [ScoredModel(s.name, s.kind, _scores(layout, s.name)) for s in config.text_models]
    heldout, test_rows = own[0].scores.index, pd.Index(splits["test"])
    payload: dict[str, Any] = {"run": str(args.run), "machine_before": machine(), "sets": []}
    rows = []

    def measure(models: list[ScoredModel], alone: float | None) -> None:
        figures = stack_figures(layout, models, test_rows)
        names = [m.name for m in models]
        payload["sets"].append({"text_models": names, "alone_f1": alone, **figures})
        rows.append(["+".join(names), alone if alone is not None else "-", *figures.values()])

    measure(own, None)
    for name in args.candidates:
        started = time.perf_counter()
        scores = candidate_scores(name, texts, y, pd.Index(splits["train"]), heldout)
        seconds = time.perf_counter() - started
        alone = weighted_f1(y.loc[test_rows].to_numpy(), scores.loc[test_rows].to_numpy().argmax(1))
        print(f"[bench] {name}: fitted and scored in {seconds:.1f} s", flush=True)
        measure([*own, ScoredModel(name, "candidate", scores)], round(float(alone), 4))
    header = ["text models", "alone F1", "stack F1", "log loss", "ECE", "coverage"]
    print(format_table(header, rows))
    payload["machine_after"] = machine()
    write_results("stack_candidates", payload)


if __name__ == "__main__":
    main()
