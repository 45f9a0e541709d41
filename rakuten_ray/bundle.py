"""The model bundle: one sealed folder holding everything scoring needs.

``manifest.json`` records a format version, the sha256 and size of every other file, the
library versions, a fingerprint of the training data and the training report. Nothing in a
bundle is read before it is checked: :func:`open_bundle` checks the manifest, the file list
and every size, and hashes the small files it reads itself (fusion and config); a scoring
stage hashes the model files it loads (:meth:`Bundle.verified`), so a stage of one modality
never reads the other's gigabytes. :func:`load_bundle` hashes everything. Each file is hashed
once per process unless it changes on disk. A missing, extra, resized or modified file, a
symbolic link or an unknown format version is refused with an error that names it.

A bundle in object storage (``s3://...``) is copied once per node into the local cache
(:func:`rakuten_ray.storage.cache_dir`), in a folder named by its manifest's sha256, and
checked there like a local one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rakuten_ray.config import RunConfig, ScoringParams, load_config
from rakuten_ray.hashing import sha256_file
from rakuten_ray.layout import BundleLayout
from rakuten_ray.storage import cache_dir, download, is_remote, join, read_bytes

FORMAT_VERSION = 2
MANIFEST_FILE = BundleLayout.MANIFEST
#: Libraries whose versions decide whether a bundle loads and scores the same way.
RECORDED_LIBRARIES = (
    "rakuten-ray", "torch", "transformers", "timm", "scikit-learn", "skops", "safetensors",
    "numpy", "pandas", "pyarrow", "pillow", "ray", "onnxruntime",
)  # fmt: skip
#: Hex digits of the manifest's sha256 that name a bundle.
BUNDLE_ID_LENGTH = 16
#: Digests computed in this process, by path: reused while the file's identity, size and
#: modification time stay the same.
_DIGESTS: dict[Path, tuple[tuple[int, int, int], str]] = {}


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


def _bundle_files(root: Path) -> list[str]:
    """Relative paths of every file under ``root`` except the manifest, sorted."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
        if p.relative_to(root).as_posix() != MANIFEST_FILE
    )


def _digest(path: Path) -> str:
    """sha256 of ``path``, from this process's cache while the file is unchanged."""
    stat = path.stat()
    identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _DIGESTS.get(path)
    if cached is None or cached[0] != identity:
        cached = (identity, sha256_file(path))
        _DIGESTS[path] = cached
    return cached[1]


def seal_bundle(root: Path, data_sha256: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` for the files now in ``root``; returns the manifest.

    ``data_sha256`` is the training data's fingerprint, as the run recorded it
    (:func:`rakuten_ray.lifecycle.data_fingerprint`).
    """
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


def _read_manifest(root: Path) -> tuple[dict[str, Any], bytes]:
    """The manifest, checked for its format and against the files present (names, kinds
    and sizes; no content is hashed), and its raw bytes."""
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {MANIFEST_FILE})")
    if manifest_path.is_symlink():
        raise BundleError(f"{manifest_path}: symbolic links are not allowed in a bundle")
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
        version, files = manifest["format_version"], manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
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
        if path.stat().st_size != expected["size"]:
            raise BundleError(f"{path}: modified since the bundle was sealed (size differs)")
    return manifest, raw


def _verify_files(root: Path, manifest: dict[str, Any], relative: str) -> None:
    """Hash every listed file at or under ``relative`` (``""``: all of them)."""
    prefix = relative.rstrip("/") + "/"
    files = manifest["files"]
    chosen = [rel for rel in files if not relative or rel == relative or rel.startswith(prefix)]
    if not chosen:
        raise BundleError(f"{root}: nothing in the manifest at {relative!r}")
    for rel in sorted(chosen):
        if _digest(root / rel) != files[rel]["sha256"]:
            raise BundleError(
                f"{root / rel}: modified since the bundle was sealed (sha256 mismatch)"
            )


def verify_bundle(root: str | Path) -> dict[str, Any]:
    """Check every file of a bundle against its manifest.

    Returns:
        The manifest.

    Raises:
        BundleError: no manifest, unknown format version, or a missing, extra, resized or
            modified file (the message names it).
    """
    root = Path(root)
    manifest, _ = _read_manifest(root)
    _verify_files(root, manifest, "")
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
    """An opened bundle: its manifest, fusion parameters and config are checked and read;
    model files are hashed when asked for (:meth:`verified`)."""

    root: Path
    manifest: dict[str, Any]
    fusion: FusionState
    config: RunConfig
    #: The first hex digits of the manifest's sha256: names the exact bundle that answered.
    bundle_id: str

    def path(self, relative: str) -> Path:
        """Absolute path of a file or folder inside the bundle (not yet hashed)."""
        return self.root / relative

    def verified(self, relative: str) -> Path:
        """Absolute path of a file or folder inside the bundle, after hashing every file in
        it against the manifest (once per process).

        Raises:
            BundleError: a file was modified, or the manifest lists nothing there.
        """
        _verify_files(self.root, self.manifest, relative)
        return self.root / relative

    def verify_all(self) -> Bundle:
        """Hash every file of the bundle; returns the bundle."""
        _verify_files(self.root, self.manifest, "")
        return self

    def settings(self, overrides: tuple[str, ...] = ()) -> RunConfig:
        """The config frozen with the bundle, with ``KEY=VALUE`` overrides."""
        if not overrides:
            return self.config
        return load_config(self.path(BundleLayout.CONFIG), overrides, warn_unpinned=False)

    def scoring(self, overrides: tuple[str, ...] = ()) -> ScoringParams:
        """The scoring settings frozen with the bundle, with ``KEY=VALUE`` overrides."""
        return self.settings(overrides).scoring


def _safe_relative(root: str, rel: object) -> str:
    """A manifest entry as a plain relative path: a hostile manifest must not make the copy
    write outside its folder."""
    if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/") or "\\" in rel:
        raise BundleError(f"{root}: manifest lists a path outside the bundle: {rel!r}")
    return rel


def local_copy(root: str | Path) -> Path:
    """The local folder of a bundle: ``root`` itself, or for a URI this node's cached copy,
    made on first use (files downloaded into a hidden folder that is renamed when complete,
    so a crash or a concurrent copy never leaves a partial bundle under the final name).

    Raises:
        BundleError: no manifest at ``root``, or a manifest that names a path outside it.
    """
    if not is_remote(root):
        return Path(root)
    location = str(root)
    raw = read_bytes(join(location, MANIFEST_FILE))
    if raw is None:
        raise BundleError(f"{location}: not a model bundle (no {MANIFEST_FILE})")
    target = cache_dir("bundles") / hashlib.sha256(raw).hexdigest()
    if (target / MANIFEST_FILE).is_file():
        return target
    try:
        files = json.loads(raw)["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{location}/{MANIFEST_FILE}: unreadable manifest ({exc})") from exc
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        for rel in sorted(files):
            download(join(location, _safe_relative(location, rel)), partial / rel)
        (partial / MANIFEST_FILE).write_bytes(raw)
        os.rename(partial, target)
    except OSError:
        if not (target / MANIFEST_FILE).is_file():  # not another process's complete copy
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def open_bundle(root: str | Path) -> Bundle:
    """Check a bundle's manifest and files (names and sizes), hash and read its fusion
    parameters and config; model files are hashed by :meth:`Bundle.verified`.

    ``root`` may be a URI: see :func:`local_copy`.

    Raises:
        BundleError: see :func:`verify_bundle`; also when the class order differs from this
            software's.
    """
    from rakuten_ray.catalog import CLASS_CODES

    root = local_copy(root).resolve()
    manifest, raw = _read_manifest(root)
    bundle_id = hashlib.sha256(raw).hexdigest()[:BUNDLE_ID_LENGTH]
    fusion_path = root / BundleLayout.FUSION
    config_path = root / BundleLayout.CONFIG
    for path in (fusion_path, config_path):
        _verify_files(root, manifest, path.name)
    fusion = FusionState.from_json(fusion_path.read_text())
    if tuple(fusion.class_codes) != CLASS_CODES:
        raise BundleError(f"{fusion_path}: class order differs from the 27 known codes")
    config = load_config(config_path, warn_unpinned=False)
    return Bundle(root, manifest, fusion, config, bundle_id)


def load_bundle(root: str | Path) -> Bundle:
    """Open a bundle and hash every file in it (:func:`open_bundle`, then all of it)."""
    return open_bundle(root).verify_all()
