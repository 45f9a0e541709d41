"""Streaming file digests, used to pin packaged weights and to seal model bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large weights never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumError(ValueError):
    """A file's content does not match its pinned or recorded sha256."""


def verify_sha256(path: str | Path, expected: str) -> None:
    """Refuse ``path`` unless its sha256 equals ``expected``.

    Raises:
        ChecksumError: naming the file, the expected and the actual digest.
    """
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"{path}: sha256 {actual} does not match the expected {expected}")
