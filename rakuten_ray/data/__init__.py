"""Data files that ship inside the package, and their reader."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def read_json(name: str) -> Any:
    """A JSON file of this folder, read from the installed package (a wheel or a checkout)."""
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))
