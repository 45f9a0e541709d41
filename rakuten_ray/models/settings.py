"""What every section of a config file shares: strict reading, and errors that name the key.

A :class:`Section` is a pydantic model that refuses unknown keys and takes each value only
in its own type (an integer also serves as a float; NaN and infinities are refused). Its
field errors are reworded as the project words them (``must be in (0, 1]``, ``unknown key
(known: [...])``), and :func:`config_error` turns a ``ValidationError`` into a
:class:`ConfigError` that names each problem's full key path, list entries by their name
(``image_models[effnet_lite0].train.epochs: must be at least 1 (got 0)``).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "ConfigError", "Real", "RuleError", "Section", "config_error", "problem",
]  # fmt: skip


class ConfigError(ValueError):
    """A config file or override does not match the schema."""


class RuleError(ValueError):
    """A rule across a section's settings is broken.

    Raised by a section's ``model_validator``; ``key`` is the setting the message is about,
    dotted and relative to the section (``train.head_fit``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


#: A decimal number written as text, scientific notation included (not "nan" or "inf").
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _decimal_text(value: Any) -> Any:
    # YAML 1.1 reads ``3e-4`` (no dot) as a string; it is meant as a number.
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value)
    return value


#: A float setting; also takes a decimal number written as text.
Real = Annotated[float, BeforeValidator(_decimal_text)]

#: The error type of a problem already worded for a config's reader.
_WORDED = "config"

_EXPECTED = {
    "int_type": "int", "int_parsing": "int", "int_from_float": "int",
    "float_type": "float", "float_parsing": "float",
    "bool_type": "bool", "bool_parsing": "bool",
    "string_type": "str",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list",
}  # fmt: skip
_RANGES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _detail(loc: Sequence[str | int], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError(_WORDED, "{message}", {"message": message}),
        loc=tuple(loc),
        input=value,
    )


def problem(loc: Sequence[str | int], message: str, value: Any) -> ValidationError:
    """A validation error at ``loc`` whose message is already worded for the reader."""
    return ValidationError.from_exception_data("config", [_detail(loc, message, value)])


def _bounds(info: FieldInfo) -> str:
    """A field's range in words: ``at least 1``, ``in (0, 1]``."""
    found = {
        name: getattr(item, name)
        for item in info.metadata
        for name in ("gt", "ge", "lt", "le")
        if getattr(item, name, None) is not None
    }
    low = ("(", found["gt"]) if "gt" in found else ("[", found["ge"]) if "ge" in found else None
    high = (")", found["lt"]) if "lt" in found else ("]", found["le"]) if "le" in found else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if high:
        return f"{'less than' if high[0] == ')' else 'at most'} {high[1]}"
    return f"{'greater than' if low[0] == '(' else 'at least'} {low[1]}"


def _nullable(info: FieldInfo) -> bool:
    return type(None) in typing.get_args(info.annotation)


def _worded(section: type[BaseModel], error: Any) -> tuple[tuple[str | int, ...], str]:
    """The key path (relative to ``section``) and message of one pydantic error."""
    loc, kind, value = tuple(error["loc"]), error["type"], error["input"]
    context = error.get("ctx") or {}
    cause = context.get("error")
    if kind == _WORDED:
        return loc, context["message"]
    if isinstance(cause, RuleError):
        return (*loc, *cause.key.split(".")), str(cause)
    info = section.model_fields.get(loc[0]) if len(loc) == 1 else None
    if kind == "extra_forbidden" and len(loc) == 1:
        return loc, f"unknown key (known: {sorted(section.model_fields)})"
    if kind == "missing":
        return loc, "required key is missing"
    if kind in _RANGES and info is not None:
        null = ", or null" if _nullable(info) else ""
        return loc, f"must be {_bounds(info)}{null} (got {value!r})"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {type(value).__name__}"
    if kind == "finite_number":
        return loc, f"expected a finite number, got {value!r}"
    if kind == "literal_error":
        return loc, f"{value!r} is not one of {context['expected']}"
    if kind == "string_too_short":
        return loc, "must not be empty"
    return loc, str(cause) if cause is not None else error["msg"]


class Section(BaseModel):
    """One mapping of a config file (the whole file, a model entry, a nested section)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _reworded(cls, data: Any, handler: Any) -> Any:
        """Field errors worded here, where the fields' ranges and names are known; errors
        of nested sections come worded already and keep their wording."""
        try:
            return handler(data)
        except ValidationError as exc:
            details = [_detail(*_worded(cls, error), error["input"]) for error in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, details) from None


def _key_path(loc: Sequence[str | int], data: Any, prefix: str) -> str:
    """``loc`` as a config key path; an entry of a list is named by its ``name`` in ``data``."""
    path, node = prefix, data
    for part in loc:
        if part == "[key]":
            # pydantic's marker of an error in a mapping's key rather than its value
            continue
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
            path += f"[{name if isinstance(name, str) else part}]"
            node = item
        else:
            path += f".{part}" if path else part
            node = node.get(part) if isinstance(node, dict) else None
    return path or "config"


def config_error(
    exc: ValidationError, section: type[BaseModel], data: Any, key: str = ""
) -> ConfigError:
    """``exc``, raised validating ``data`` as ``section``, as a :class:`ConfigError` with one
    line per problem, each naming its key path (below ``key``, the path of ``data``)."""
    lines = []
    for error in exc.errors():
        loc, message = _worded(section, error)
        lines.append(f"{_key_path(loc, data, key)}: {message}")
    return ConfigError("\n".join(lines))
