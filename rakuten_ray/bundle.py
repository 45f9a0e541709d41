"""The model bundle: one sealed folder holding everything scoring needs.

``manifest.json`` records a format version, the sha256 and size of every other file, the
library versions, a fingerprint of the training data and the training metrics. A bundle is
verified before anything in it is read: a missing, extra or modified file, or an unknown format
version, is refused with an error that names it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from rakuten_ray.config import ScoringParams, load_config
from rakuten_ray.hashing import sha256_file

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
FUSION_FILE = "fusion.json"
CONFIG_FILE = "config.yaml"
#: Libraries whose versions decide whether a bundle loads and scores the same way.
RECORDED_LIBRARIES = (
    "rakuten-ray", "torch", "transformers", "timm", "scikit-learn", "skops", "safetensors",
    "numpy", "pandas", "pyarrow", "pillow", "ray",
)  # fmt: skip


class BundleError(ValueError):
    """A bundle is incomplete, modified, or of an unknown format."""


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`RECORDED_LIBRARIES` (and Python)."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over the training rows' index, ids, text and labels, in a fixed order."""
    ordered = frame.sort_index()
    hashed = pd.util.hash_pandas_object(ordered, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _bundle_files(root: Path) -> list[str]:
    """Relative paths of every file under ``root`` except the manifest, sorted."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
        if p.relative_to(root).as_posix() != MANIFEST_FILE
    )


def seal_bundle(root: Path, data_sha256: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` for the files now in ``root``; returns the manifest."""
    for rel in _bundle_files(root):
        if (root / rel).is_symlink():
            raise BundleError(f"{root / rel}: symbolic links are not allowed in a bundle")
    manifest = {
        "format_version": FORMAT_VERSION,
        "files": {
            rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
            for rel in _bundle_files(root)
        },
        "libraries": library_versions(),
        "training_data_sha256": data_sha256,
        "metrics": metrics,
    }
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_bundle(root: str | Path) -> dict[str, Any]:
    """Check every file of a bundle against its manifest.

    Returns:
        The manifest.

    Raises:
        BundleError: no manifest, unknown format version, or a missing, extra, resized or
            modified file (the message names it).
    """
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {MANIFEST_FILE})")
    if manifest_path.is_symlink():
        raise BundleError(f"{manifest_path}: symbolic links are not allowed in a bundle")
    try:
        manifest = json.loads(manifest_path.read_text())
        version, files = manifest["format_version"], manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: unknown format version {version!r} (this software reads "
            f"{FORMAT_VERSION})"
        )
    present = set(_bundle_files(root))
    missing = sorted(set(files) - present)
    if missing:
        raise BundleError(f"{root}: file listed in the manifest is missing: {missing[0]}")
    extra = sorted(present - set(files))
    if extra:
        raise BundleError(f"{root}: file not listed in the manifest: {extra[0]}")
    for rel, expected in sorted(files.items()):
        path = root / rel
        if path.is_symlink():
            raise BundleError(f"{path}: symbolic links are not allowed in a bundle")
        if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
            raise BundleError(f"{path}: modified since the bundle was sealed (sha256 mismatch)")
    return manifest


@dataclass(frozen=True)
class ModelEntry:
    """One base model of a bundle, with its calibration and blend weight."""

    name: str
    kind: str
    folder: str
    temperature: float
    weight: float


@dataclass(frozen=True)
class FusionState:
    """The fusion parameters as stored in ``fusion.json``."""

    class_codes: list[int]
    text_models: list[ModelEntry]
    image_models: list[ModelEntry]
    meta_with_image: str
    meta_text_only: str

    def to_json(self) -> str:
        """Serialised form written into the bundle."""
        data = {
            "class_codes": self.class_codes,
            "text_models": [m.__dict__ for m in self.text_models],
            "image_models": [m.__dict__ for m in self.image_models],
            "meta_with_image": self.meta_with_image,
            "meta_text_only": self.meta_text_only,
        }
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FusionState:
        """Parse ``fusion.json``."""
        data = json.loads(text)
        return cls(
            class_codes=[int(c) for c in data["class_codes"]],
            text_models=[ModelEntry(**m) for m in data["text_models"]],
            image_models=[ModelEntry(**m) for m in data["image_models"]],
            meta_with_image=data["meta_with_image"],
            meta_text_only=data["meta_text_only"],
        )


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: dict[str, Any]
    fusion: FusionState

    def path(self, relative: str) -> Path:
        """Absolute path of a file or folder inside the bundle."""
        return self.root / relative

    def scoring(self, overrides: tuple[str, ...] = ()) -> ScoringParams:
        """The scoring settings frozen with the bundle, with ``KEY=VALUE`` overrides."""
        return load_config(self.path(CONFIG_FILE), overrides).scoring


def load_bundle(root: str | Path) -> Bundle:
    """Verify a bundle, then read its fusion parameters.

    Raises:
        BundleError: see :func:`verify_bundle`; also when the class order differs from this
            software's.
    """
    from rakuten_ray.catalog import CLASS_CODES

    root = Path(root).resolve()
    manifest = verify_bundle(root)
    fusion = FusionState.from_json((root / FUSION_FILE).read_text())
    if tuple(fusion.class_codes) != CLASS_CODES:
        raise BundleError(f"{root / FUSION_FILE}: class order differs from the 27 known codes")
    return Bundle(root=root, manifest=manifest, fusion=fusion)
