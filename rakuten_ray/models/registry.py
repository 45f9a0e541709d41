"""The registry of model kinds: the one place where a model's kind decides what happens.

The kinds are the classes listed in :data:`rakuten_ray.models.kinds.KINDS`; each declares
what :class:`~rakuten_ray.models.kind.ModelKind` asks. Every other module asks the registry,
so a kind is added or replaced without touching them (``DEVELOPERS.md`` lists the steps).
"""

from __future__ import annotations

from collections.abc import Iterable

from rakuten_ray.models.kind import DeepKind, Modality, ModelKind
from rakuten_ray.models.kinds import KINDS
from rakuten_ray.models.spec import DeepModelSpec, ModelSpec

__all__ = ["Modality", "ModelKind", "get_kind", "kind_names", "kind_of"]


def _by_name(kinds: Iterable[type[ModelKind]]) -> dict[str, ModelKind]:
    """One instance of each kind, under its :attr:`~ModelKind.name`."""
    table: dict[str, ModelKind] = {}
    for kind in kinds:
        if kind.name in table:
            raise ValueError(f"model kind {kind.name!r} is listed twice")
        if issubclass(kind, DeepKind) and not issubclass(kind.spec_type, DeepModelSpec):
            raise TypeError(f"{kind.__name__}: Ray Train kinds take a DeepModelSpec subclass")
        table[kind.name] = kind()
    return table


_KINDS = _by_name(KINDS)


def kind_names() -> list[str]:
    """Every kind, sorted."""
    return sorted(_KINDS)


def get_kind(name: str) -> ModelKind:
    """The kind called ``name``.

    Raises:
        KeyError: no such kind (the message lists the known ones).
    """
    if name not in _KINDS:
        raise KeyError(f"unknown model kind {name!r}; known: {kind_names()}")
    return _KINDS[name]


def kind_of(spec: ModelSpec) -> ModelKind:
    """The kind of a model's settings."""
    return get_kind(spec.kind)
