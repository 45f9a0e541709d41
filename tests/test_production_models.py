"""The production configuration's architectures, proven without a download.

``tiny_run`` trains ``configs/production.yaml`` with tiny local stand-ins of its four deep
models (tests/tiny_models.py): a CamemBERT and an XLM-R (RoBERTa family, Unigram tokenizers
trained on the catalogue's text), a ConvNeXt and a Swin (timm, random init, safetensors),
CamemBERT and ConvNeXt on 2 Ray Train workers. Every scoring test scores with that bundle;
this file checks what the production path itself must hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import production_shaped_config
from quality_bounds import assert_accuracy_beats_majority, assert_log_loss_beats_class_shares
from tiny_models import TINY_CONVNEXT_ARGS, TinyProductionModels, write_tiny_roberta
from transformers import AutoTokenizer

from rakuten_ray.bundle import open_bundle
from rakuten_ray.catalog import CatalogueDir
from rakuten_ray.layout import BundleLayout, RunLayout
from rakuten_ray.models.transformer import TextSettings, create_text_model, save_text_model
from rakuten_ray.models.vision import load_image_model
from rakuten_ray.splits import Splits
from rakuten_ray.training.report import Scores, TrainingReport

pytestmark = pytest.mark.slow

#: Each production model's architecture class, as its saved config names it.
ARCHITECTURES = {
    "camembert_large": "CamembertForSequenceClassification",
    "xlm_roberta": "XLMRobertaForSequenceClassification",
}
TIMM_ARCHS = {
    "convnext_base": "convnext_base.fb_in22k_ft_in1k_384",
    "swin_base": "swin_base_patch4_window7_224",
}


def test_production_config_trains_every_original_architecture(tiny_run: Path) -> None:
    bundle = open_bundle(tiny_run / "bundle").verify_all()
    kinds = {e.name: e.kind for e in [*bundle.fusion.text_models, *bundle.fusion.image_models]}
    assert kinds == {
        "tfidf_svm": "tfidf_svm", "camembert_large": "hf_text", "xlm_roberta": "hf_text",
        "convnext_base": "timm_image", "swin_base": "timm_image",
    }  # fmt: skip
    for name, architecture in ARCHITECTURES.items():
        folder = bundle.path(BundleLayout.model(name))
        assert json.loads((folder / "config.json").read_text())["architectures"] == [architecture]
        # RoBERTa-family tokenizers frame with <s> ... </s> and give no token type ids.
        encoded = AutoTokenizer.from_pretrained(folder)("chaise", "bois")
        assert "token_type_ids" not in encoded
    for name, arch in TIMM_ARCHS.items():
        folder = bundle.path(BundleLayout.model(name))
        settings = json.loads((folder / "image_model.json").read_text())
        assert settings["arch"] == arch and settings["model_args"]
        assert (folder / "model.safetensors").is_file()


def test_each_deep_model_trained_by_the_production_recipe(tiny_run: Path) -> None:
    report = TrainingReport.load(RunLayout(tiny_run).metrics)
    assert report.to_dict() == open_bundle(tiny_run / "bundle").manifest["metrics"]
    workers = {"camembert_large": 2, "xlm_roberta": 1, "convnext_base": 2, "swin_base": 1}
    for name, count in workers.items():
        epochs = report.base_models[name].epochs
        assert [e["epoch"] for e in epochs] == [0, 1]
        assert all(e["workers"] == count for e in epochs), (name, epochs)
        assert all(np.isfinite(e["val_log_loss"]) for e in epochs), (name, epochs)
    # The image recipe's first epoch trains the head alone with SGD steps (DDP included).
    assert np.isfinite(report.base_models["convnext_base"].epochs[0]["train_loss"])


def test_what_the_bundle_serves_beats_a_blind_model_on_the_internal_test_rows(
    tiny_run: Path,
) -> None:
    """The TF-IDF model, the text blend and the final stack, against the class shares of the
    internal-test rows they were measured on (measured: log loss 0.79 to 1.05 against their
    entropy 3.16, accuracy 0.76 to 0.79 against the largest class's 0.11). The tiny deep
    models stay near chance after two epochs (log loss 3.18 to 3.31): they prove the
    production recipes run, not that they learn; tests/test_training.py shows the packaged
    models learning."""
    layout = RunLayout(tiny_run)
    report = TrainingReport.load(layout.metrics)
    labels = pd.read_parquet(layout.heldout_labels)["label"]
    internal_test = labels.loc[Splits.load(layout.splits).test]
    measured: dict[str, Scores] = {
        "tfidf_svm": report.base_models["tfidf_svm"].internal_test,
        "text blend": report.blends["text"].internal_test,
        "stack": report.stack.final_internal_test,
    }
    for name, scores in measured.items():
        assert scores.rows == len(internal_test), name
        assert_log_loss_beats_class_shares(scores.log_loss, internal_test, margin=1.0)
        assert_accuracy_beats_majority(scores.accuracy, internal_test, margin=0.3)


def test_markers_are_single_special_tokens(tiny_run: Path) -> None:
    """The seed's ``[TITRE]`` / ``[DESC]`` markers: one token each, with their own embedding
    rows, in the sealed model that scoring loads."""
    from transformers import AutoModelForSequenceClassification

    folder = open_bundle(tiny_run / "bundle").verified(BundleLayout.model("camembert_large"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("[TITRE] chaise [DESC] bois")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count("[TITRE]") == 1 and tokens.count("[DESC]") == 1
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)


def test_a_checkpoint_without_safetensors_loads_as_tensors_and_saves_as_safetensors(
    tmp_path: Path, tiny_catalogue: Path
) -> None:
    """Hub checkpoints that ship only ``pytorch_model.bin`` load (``weights_only``); what the
    bundle gets is safetensors."""
    from transformers import AutoModel

    rows = CatalogueDir(tiny_catalogue).labelled()
    folder = write_tiny_roberta(tmp_path / "bin_only", "xlm-roberta", rows["designation"].tolist())
    encoder = AutoModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(encoder.state_dict(), folder / "pytorch_model.bin")

    tokenizer, model = create_text_model(str(folder), markers=["[SEP]"])
    embeddings = model.network.base_model.embeddings.word_embeddings.weight
    assert torch.equal(embeddings[: len(encoder.embeddings.word_embeddings.weight)],
                       encoder.embeddings.word_embeddings.weight)  # fmt: skip
    save_text_model(model, tokenizer, TextSettings("{designation}", 16), tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    assert not (tmp_path / "saved" / "pytorch_model.bin").exists()


def test_a_tiny_convnext_saved_by_the_run_loads_back_with_its_args(tiny_run: Path) -> None:
    folder = open_bundle(tiny_run / "bundle").verified(BundleLayout.model("convnext_base"))
    classifier = load_image_model(folder, device="cpu", runtime="torch")
    network = classifier.forward.module.network
    dims = [stage.blocks[0].conv_dw.in_channels for stage in network.stages]
    assert dims == TINY_CONVNEXT_ARGS["dims"]


def test_production_overrides_keep_the_recipes(
    tiny_production_models: TinyProductionModels,
) -> None:
    config = production_shaped_config(tiny_production_models)
    specs = {spec.name: spec for spec in config.models()}
    assert specs["camembert_large"].train.schedule == "linear"
    assert specs["convnext_base"].train.schedule == "cosine"
    assert specs["convnext_base"].train.freeze_backbone_epochs == 1
    assert specs["convnext_base"].train.head_fit == "sgd"
    assert specs["swin_base"].train.label_smoothing == pytest.approx(0.1)
    assert specs["convnext_base"].train.backbone_lr_scale == pytest.approx(0.1)
