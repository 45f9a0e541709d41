"""A hub model pinned by ``revision`` loads that commit's weights, for Hugging Face text models
and timm image models alike. The hub is simulated by an offline cache holding two commits of
each repository (as a mirror or a warmed cache does); the loading code is the production one,
in a fresh process so the cache settings apply. A bundle trained from a hub model without a
commit scores only when allowed to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_models import write_tiny_roberta, write_tiny_timm

from rakuten_ray.bundle import MANIFEST_FILE, open_bundle, seal_bundle
from rakuten_ray.catalog import X_TEST_FILE
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.revisions import unpinned

pytestmark = pytest.mark.slow

TEXT_REPO = "org/tiny-camembert"
IMAGE_ARCH = "convnext_atto"
COMMITS = ("1" * 40, "2" * 40)
HERE = Path(__file__).resolve().parent


def _snapshot(cache: Path, repo: str, commit: str) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    folder.mkdir(parents=True)
    refs = folder.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(COMMITS[-1])
    return folder


def _load(cache: Path, revision: str) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(HERE / "pinned_download.py"), TEXT_REPO, IMAGE_ARCH, revision],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_revision_loads_its_own_weights(tmp_path: Path) -> None:
    import timm
    from transformers import AutoModel

    cache = tmp_path / "hub"
    image_repo = timm.models.get_pretrained_cfg(IMAGE_ARCH).hf_hub_id
    expected = []
    for seed, commit in enumerate(COMMITS):
        folder = _snapshot(cache, TEXT_REPO, commit)
        text = write_tiny_roberta(folder, "camembert", ["chaise en bois"] * 20, seed=seed)
        weights = _snapshot(cache, image_repo, commit) / "model.safetensors"
        write_tiny_timm(weights, IMAGE_ARCH, {}, seed=seed)
        encoder = AutoModel.from_pretrained(text)
        expected.append(float(encoder.embeddings.word_embeddings.weight.sum()))
    loaded = [_load(cache, commit) for commit in COMMITS]
    assert loaded[0]["text_embedding_sum"] != loaded[1]["text_embedding_sum"]
    assert loaded[0]["image_stem_sum"] != loaded[1]["image_stem_sum"]
    for got, want in zip(loaded, expected, strict=True):
        assert got["text_embedding_sum"] == pytest.approx(want, rel=1e-6)


def _as_trained_from_the_hub(source: Path, bundle: Path, model: str) -> None:
    """A copy of ``source`` whose config records its ``camembert_large`` as the hub model
    ``model`` with no revision (its weights are the bundle's own), sealed again."""
    shutil.copytree(source, bundle)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    config = yaml.safe_load((bundle / "config.yaml").read_text())
    entry = next(e for e in config["text_models"] if e["name"] == "camembert_large")
    entry.update(model=model, revision=None)
    (bundle / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    seal_bundle(bundle, manifest["training_data_sha256"], manifest["metrics"])


def test_a_bundle_from_an_unpinned_hub_model_scores_only_when_allowed(
    tiny_run: Path, tiny_catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny run's bundle, trained from local models, has nothing to pin. Recorded as
    trained from an unpinned hub model it is refused, naming the model, before any output;
    with ``--allow-unpinned`` it scores."""
    assert unpinned(open_bundle(tiny_run / "bundle").config) == []
    bundle = tmp_path / "bundle"
    _as_trained_from_the_hub(tiny_run / "bundle", bundle, "almanach/camembert-large")
    products = tmp_path / "products.csv"
    pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0).head(4).to_csv(products)
    argv = [
        "score", "--bundle", str(bundle), "--input", str(products),
        "--images", str(tiny_catalogue / "images/image_test"), "--engine", "local",
    ]  # fmt: skip
    refused = tmp_path / "refused"
    assert main([*argv, "--out", str(refused)]) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert "text_models[camembert_large]" in err and "'almanach/camembert-large'" in err
    assert not refused.exists()
    scored = tmp_path / "scored"
    assert main([*argv, "--out", str(scored), "--allow-unpinned"]) == 0
    assert len(pd.read_csv(scored / "submission.csv", index_col=0)) == 4
