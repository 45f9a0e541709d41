"""Reading ``POST /predict`` bodies: JSON in, checked field by field, or a clear 4xx.

A body is one product ``{"designation": str, "description": str | null, "image": base64 |
null}`` or ``{"products": [...]}``. Every problem with the request itself (malformed JSON, a
wrong type, a missing designation, a text over its length, too many products, a body too
large) is refused with a message that names the field; a bad image is not a request problem:
it becomes the product's ``image_status``, as in batch scoring.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from rakuten_ray.text import MAX_TEXT_CHARS

#: Largest image accepted per product, in bytes once decoded from base64.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: ``k`` of the ``top`` list: the default and the largest.
DEFAULT_TOP_K = 5
FIELDS = ("designation", "description", "image")


class RequestError(ValueError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Product:
    """One product to classify; ``image`` holds the decoded upload's bytes, if any."""

    designation: str
    description: str
    image: bytes | None


def _text(item: dict[str, Any], name: str, where: str, required: bool) -> str:
    value = item.get(name)
    if value is None:
        if required:
            raise RequestError(422, f"{where}{name}: required (a string)")
        return ""
    if not isinstance(value, str):
        raise RequestError(422, f"{where}{name}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(
            422, f"{where}{name}: {len(value)} characters, more than the {MAX_TEXT_CHARS} allowed"
        )
    return value


def _image(item: dict[str, Any], where: str) -> bytes | None:
    value = item.get("image")
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(422, f"{where}image: expected base64 text, got {type(value).__name__}")
    if len(value) > 4 * MAX_IMAGE_BYTES // 3 + 4:
        raise RequestError(413, f"{where}image: larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, f"{where}image: not valid base64") from None


def _product(item: Any, where: str) -> Product:
    if not isinstance(item, dict):
        raise RequestError(422, f"{where.rstrip('.') or 'body'}: expected an object")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise RequestError(422, f"{where}{unknown[0]}: unknown field (known: {list(FIELDS)})")
    return Product(
        designation=_text(item, "designation", where, required=True),
        description=_text(item, "description", where, required=False),
        image=_image(item, where),
    )


def parse_products(body: bytes, max_products: int, max_body_bytes: int) -> list[Product]:
    """The products of a ``POST /predict`` body.

    Raises:
        RequestError: 413 for a body over ``max_body_bytes``; 400 for a body that is not
            JSON; 422 for a body of the wrong shape, naming the field.
    """
    if len(body) > max_body_bytes:
        raise RequestError(413, f"body: {len(body)} bytes, more than the {max_body_bytes} allowed")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "products" in data:
        items = data["products"]
        if set(data) != {"products"}:
            raise RequestError(422, "body: 'products' comes alone")
        if not isinstance(items, list) or not items:
            raise RequestError(422, "products: expected a non-empty list")
        if len(items) > max_products:
            raise RequestError(
                413, f"products: {len(items)} products, more than the {max_products} allowed"
            )
        return [_product(item, f"products[{i}].") for i, item in enumerate(items)]
    return [_product(data, "")]


def parse_top_k(raw: str | None, classes: int) -> int:
    """The ``k`` query parameter."""
    if raw is None:
        return DEFAULT_TOP_K
    try:
        k = int(raw)
    except ValueError:
        raise RequestError(422, f"k: expected an integer, got {raw!r}") from None
    if not 1 <= k <= classes:
        raise RequestError(422, f"k: must be between 1 and {classes}, got {k}")
    return k
