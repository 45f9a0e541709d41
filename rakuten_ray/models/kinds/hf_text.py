"""``hf_text``: a Hugging Face sequence classifier (BERT, CamemBERT, XLM-R, any
``AutoModelForSequenceClassification``) fine-tuned with Ray Train
(:mod:`rakuten_ray.models.transformer`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from rakuten_ray.models.kind import DeepKind, Modality
from rakuten_ray.models.packaged import PACKAGE_PREFIX
from rakuten_ray.models.settings import RuleError
from rakuten_ray.models.spec import DEFAULT_PRECISION, DeepModelSpec, Precision, TrainParams
from rakuten_ray.models.tables import text_table
from rakuten_ray.models.tasks import Batch, DeepTask

if TYPE_CHECKING:
    import torch

    from rakuten_ray.models.runtime import RuntimeName
    from rakuten_ray.models.transformer import TextClassifier

#: Submodules of a Hugging Face sequence classifier that belong to its classification head.
TEXT_HEADS = ("pre_classifier", "classifier")


class HfTextSpec(DeepModelSpec):
    """Settings of a Hugging Face text classifier.

    ``template`` renders a product's fields into the model's input; ``markers`` are the
    template's tokens that become special tokens (default: its bracketed upper-case words,
    such as ``[TITRE]`` and ``[DESC]``; ``[]`` adds none).
    """

    template: str = "{designation} [SEP] {description}"
    max_length: int = Field(128, ge=8)
    #: ``first``: the model's own head on the first token; ``mean``: masked mean of the
    #: tokens into a linear head (sentence encoders such as MiniLM).
    pooling: Literal["first", "mean"] = "first"
    markers: list[str] | None = None
    #: Keep the pretrained token embeddings as they are: a multilingual vocabulary's matrix
    #: (96M of multilingual-e5-small's 118M parameters) then costs no gradient or optimiser
    #: state; the markers' new rows stay at their initial values.
    freeze_embeddings: bool = False
    train: TrainParams = Field(default_factory=TrainParams)

    @model_validator(mode="after")
    def _probe_needs_a_linear_head(self) -> HfTextSpec:
        # Only the mean pooling feeds one linear layer; a first-token head is not always one
        # (RoBERTa's is two), so no exact fit exists for it.
        if self.train.head_fit == "probe" and self.pooling != "mean":
            raise RuleError(
                "train.head_fit", "'probe' needs pooling 'mean' (a linear head on pooled tokens)"
            )
        return self

    def hub_source(self) -> str | None:
        local = self.model.startswith((PACKAGE_PREFIX, "/", ".")) or Path(self.model).exists()
        return None if local else self.model

    def marker_tokens(self) -> list[str]:
        """The markers added to the tokenizer."""
        from rakuten_ray.models.transformer import template_markers

        return template_markers(self.template) if self.markers is None else list(self.markers)


class TextTask(DeepTask):
    """Fine-tuning a Hugging Face sequence classifier on rendered texts."""

    input_column = "text"

    def __init__(self, spec: HfTextSpec) -> None:
        super().__init__(spec)
        self.tokenizer: Any = None

    def build(self, weights_from: Path | None = None) -> torch.nn.Module:
        from rakuten_ray.catalog import NUM_CLASSES
        from rakuten_ray.models.transformer import create_text_model

        spec = self.spec
        # A checkpoint folder already holds the markers and the resized embeddings.
        source, revision = (spec.model, spec.revision) if weights_from is None else (
            str(weights_from), None
        )  # fmt: skip
        self.tokenizer, model = create_text_model(
            source, NUM_CLASSES, spec.pooling, revision, spec.marker_tokens()
        )
        return model

    def collate(self, training: bool) -> Callable[[Sequence[tuple[Any, int]]], Batch]:
        import torch

        from rakuten_ray.models.transformer import tokenize

        def collate(items: Sequence[tuple[Any, int]]) -> Batch:
            texts, labels = zip(*items, strict=True)
            inputs = tokenize(self.tokenizer, texts, self.spec.max_length)
            return inputs, torch.tensor(labels), torch.ones(len(labels))

        return collate

    def forward(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        return model(**inputs)

    def save(self, model: torch.nn.Module, folder: Path) -> None:
        from rakuten_ray.models.transformer import TextSettings, save_text_model

        spec = self.spec
        settings = TextSettings(spec.template, spec.max_length, spec.pooling)
        save_text_model(model, self.tokenizer, settings, folder)

    def head_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        # Hugging Face sequence classifiers put their head in ``classifier`` (a linear layer
        # for BERT, dense + projection for RoBERTa; DistilBERT-like models add a
        # ``pre_classifier``); SequenceClassifier holds that model as ``network``.
        network = model.network
        return tuple(f"network.{name}" for name in TEXT_HEADS if hasattr(network, name))

    def features(self, model: torch.nn.Module, inputs: Any) -> torch.Tensor:
        return model.pooled(**inputs)

    def head_layer(self, model: torch.nn.Module) -> torch.nn.Linear:
        return model.network.classifier

    def fixed_names(self, model: torch.nn.Module) -> tuple[str, ...]:
        if not self.spec.freeze_embeddings:
            return ()
        prefix = model.network.base_model_prefix
        return (f"network.{prefix}.embeddings.word_embeddings",)


class HfTextKind(DeepKind):
    name = "hf_text"
    modality = Modality.TEXT
    spec_type = HfTextSpec
    task_type = TextTask
    # The encoder's matrix products: its work, and what int8 kernels speed up.
    int8_operators = ("MatMul", "Gemm")
    scorer_settings = ("tokens_per_call", "runtime", "threads")

    def table(self, spec: HfTextSpec, rows: pd.DataFrame) -> pd.DataFrame:
        return text_table(rows, spec.template)

    def load_scorer(
        self,
        folder: Path,
        batch_size: int | None = None,
        precision: Precision = DEFAULT_PRECISION,
        device: str | None = None,
        tokens_per_call: int | None = None,
        runtime: RuntimeName = "auto",
        threads: int = 1,
    ) -> TextClassifier:
        from rakuten_ray.models.transformer import TEXT_BATCH_SIZE, TextClassifier

        return TextClassifier(
            folder, device, batch_size or TEXT_BATCH_SIZE, precision, tokens_per_call,
            runtime, threads,
        )  # fmt: skip
