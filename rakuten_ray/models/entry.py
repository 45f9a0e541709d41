"""A model entry of a config, read into the settings class its ``kind`` names.

The registry (:mod:`rakuten_ray.models.registry`) gives each kind's settings class; the entry
validates itself as that class. Config files read their ``text_models`` and ``image_models``
through :func:`read_model_spec`; a Ray Train worker rebuilds the spec it was sent (plain
data) with :func:`model_spec_from_dict`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from rakuten_ray.models.registry import get_kind, kind_names
from rakuten_ray.models.settings import config_error, problem
from rakuten_ray.models.spec import ModelSpec

__all__ = ["model_spec_from_dict", "read_model_spec"]


def _spec_type(entry: Any) -> type[ModelSpec]:
    """The settings class of ``entry`` (a mapping or a spec), chosen by its ``kind``."""
    kind = entry.get("kind") if isinstance(entry, dict) else getattr(entry, "kind", None)
    if kind is None:
        raise problem(["kind"], f"required key is missing (known: {kind_names()})", entry)
    try:
        return get_kind(kind).spec_type
    except (KeyError, TypeError):
        raise problem(["kind"], f"{kind!r} is not one of {kind_names()}", kind) from None


def read_model_spec(entry: Any) -> ModelSpec:
    """``entry`` validated as its kind's settings class.

    Raises:
        pydantic.ValidationError: errors worded for a config's reader, located in ``entry``.
    """
    if not isinstance(entry, dict | ModelSpec):
        raise problem([], f"expected a mapping, got {type(entry).__name__}", entry)
    return _spec_type(entry).model_validate(entry)


def model_spec_from_dict(data: dict[str, Any]) -> ModelSpec:
    """Validate one model entry (as carried to Ray Train workers) into its kind's settings.

    Raises:
        ConfigError: the message names the key, below ``models[<name>]``.
    """
    try:
        return read_model_spec(data)
    except ValidationError as exc:
        key = f"models[{data.get('name', '?')}]"
        raise config_error(exc, ModelSpec, data, key) from None
