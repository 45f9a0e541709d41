"""Where files live: a local path or an object-storage URI (``s3://``, ``gs://``, ``abfs://``).

Every location a command takes goes through :func:`resolve`, which gives the
``pyarrow.fs`` filesystem Ray Data itself uses and the path inside it. Credentials and
endpoints come only from each cloud's standard environment variables and config files (for
S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, an instance's role), never from project settings.

A remote location is checked before any work (:func:`check_reachable`): a missing bucket or
key, refused credentials and an unreachable endpoint are refused with a :class:`StorageError`
naming the URI. Connections give up after :data:`CONNECT_TIMEOUT_S`, so an unreachable
endpoint fails in seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlparse

import pyarrow.fs as pafs

#: Schemes read through pyarrow's own filesystems.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az")
#: Seconds to open a connection to an object store before giving up.
CONNECT_TIMEOUT_S = 5.0
#: Attempts per S3 request (transient errors are retried, a refused connection too).
S3_ATTEMPTS = 3
#: The local cache of remote bundles and output working folders; overridable because a
#: node's home may be small or read-only.
CACHE_ENV = "RAKUTEN_RAY_CACHE"
_S3_CREDENTIAL_SOURCES = (
    "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)  # fmt: skip
_CHUNK = 1 << 20


class StorageError(ValueError):
    """A location cannot be used: missing, refused, unreachable or of an unknown scheme."""


Location = str | Path


def is_remote(location: Location) -> bool:
    """Whether ``location`` is an object-storage URI rather than a local path."""
    return urlparse(str(location)).scheme in REMOTE_SCHEMES


def join(location: Location, *parts: str) -> str:
    """``location`` with ``parts`` appended, as a URI for a URI and a path for a path."""
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location).joinpath(*parts))


def name(location: Location) -> str:
    """The last component of a location (a file's name)."""
    return PurePosixPath(str(location).rstrip("/")).name


#: The variables an S3 filesystem is built from; a change to one builds a new filesystem.
_S3_ENV = (
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION",
    *_S3_CREDENTIAL_SOURCES, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
)  # fmt: skip


@cache
def _filesystem(scheme: str, authority: str, env: tuple[str | None, ...]) -> pafs.FileSystem:
    """One filesystem per scheme, bucket and environment in a process (each opens its own
    connections); ``env`` is the values of :data:`_S3_ENV`, part of the key only."""
    if scheme == "s3":
        # pyarrow's S3FileSystem reads the credentials, profiles and roles itself, but not the
        # endpoint variables, which the AWS SDKs and CLI honour: they are read here.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        parsed = urlparse(endpoint) if endpoint else None
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        return pafs.S3FileSystem(
            region=region, connect_timeout=CONNECT_TIMEOUT_S,
            endpoint_override=parsed.netloc if parsed else None,
            scheme=parsed.scheme if parsed else "https",
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        )  # fmt: skip
    filesystem, _ = pafs.FileSystem.from_uri(f"{scheme}://{authority}/")
    return filesystem


def resolve(location: Location) -> tuple[pafs.FileSystem, str]:
    """The filesystem that holds ``location`` and its path inside it.

    Raises:
        StorageError: a URI of a scheme no filesystem here reads.
    """
    text = str(location)
    parsed = urlparse(text)
    if not parsed.scheme or parsed.scheme == "file" or len(parsed.scheme) == 1:
        local = parsed.path if parsed.scheme == "file" else text
        return pafs.LocalFileSystem(), str(Path(local).absolute())
    if parsed.scheme not in REMOTE_SCHEMES:
        raise StorageError(f"{text}: unknown scheme {parsed.scheme!r} (use {REMOTE_SCHEMES})")
    try:
        env = tuple(os.environ.get(name) for name in _S3_ENV)
        filesystem = _filesystem(parsed.scheme, parsed.netloc, env)
    except (OSError, ValueError) as exc:
        raise StorageError(f"{text}: {exc}") from exc
    return filesystem, f"{parsed.netloc}{parsed.path}".rstrip("/")


def _has_s3_credentials() -> bool:
    """Whether a standard S3 credential source is configured here (an instance's role, which
    nothing local shows, is known only by the store's answer)."""
    files = (
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials",
        os.environ.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config",
    )
    return any(os.environ.get(v) for v in _S3_CREDENTIAL_SOURCES) or any(
        Path(f).is_file() for f in files
    )


def _explain(location: Location, exc: Exception) -> StorageError:
    """A storage failure as the refusal a user can act on."""
    message = str(exc)
    if "NETWORK_CONNECTION" in message or "connect" in message.lower():
        return StorageError(f"{location}: storage endpoint unreachable: {message}")
    if urlparse(str(location)).scheme == "s3" and not _has_s3_credentials():
        return StorageError(
            f"{location}: refused, and no S3 credentials are configured here (set "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): {message}"
        )
    if "ACCESS_DENIED" in message or "403" in message:
        return StorageError(f"{location}: access denied by the store: {message}")
    if "bucket" in message.lower() and "not found" in message.lower():
        return StorageError(f"{location}: bucket does not exist: {message}")
    return StorageError(f"{location}: {message}")


def info(location: Location) -> pafs.FileInfo:
    """What is at ``location`` (a file, a folder or nothing).

    Raises:
        StorageError: the store refuses or cannot be reached (see :func:`check_reachable`).
    """
    filesystem, path = resolve(location)
    try:
        return filesystem.get_file_info(path)
    except OSError as exc:
        raise _explain(location, exc) from exc


def check_reachable(location: Location, must_exist: bool, what: str) -> pafs.FileInfo:
    """Refuse ``location`` (named as ``what``) unless its store answers, and, with
    ``must_exist``, something is there; before any work.

    Raises:
        StorageError: naming the location and what is wrong with it.
    """
    found = info(location)
    if must_exist and found.type == pafs.FileType.NotFound:
        raise StorageError(f"{location}: {what} does not exist")
    return found


def check_bucket(location: Location) -> None:
    """Refuse a URI whose bucket (or container) does not exist, before any work: a run
    writing there would otherwise fail only when it publishes."""
    parsed = urlparse(str(location))
    check_reachable(f"{parsed.scheme}://{parsed.netloc}", must_exist=True, what="bucket")


def is_file(location: Location) -> bool:
    """Whether a file is at ``location``."""
    return info(location).type == pafs.FileType.File


def list_files(folder: Location) -> list[str]:
    """The files directly in ``folder``, as locations of its kind, sorted."""
    filesystem, path = resolve(folder)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, recursive=False))
    except OSError as exc:
        raise _explain(folder, exc) from exc
    return sorted(
        join(folder, name(entry.path)) for entry in entries if entry.type == pafs.FileType.File
    )


@contextmanager
def open_input(location: Location) -> Iterator[BinaryIO]:
    """A seekable binary reader of one file (Parquet and CSV readers take it as it is)."""
    filesystem, path = resolve(location)
    try:
        handle = filesystem.open_input_file(path)
    except OSError as exc:
        raise _explain(location, exc) from exc
    with handle:
        yield handle


def read_bytes(location: Location) -> bytes | None:
    """The whole content of a file, or ``None`` when nothing is there (an image lookup)."""
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _explain(location, exc) from exc


def sha256(location: Location) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open_input(location) as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(location: Location, target: Path) -> None:
    """Copy one remote file to a local path, streamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_input(location) as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink, _CHUNK)


def upload(source: Path, location: Location) -> None:
    """Copy one local file to ``location``; an object appears whole or not at all."""
    filesystem, path = resolve(location)
    try:
        with open(source, "rb") as handle, filesystem.open_output_stream(path) as sink:
            shutil.copyfileobj(handle, sink, _CHUNK)
    except OSError as exc:
        raise _explain(location, exc) from exc


def delete_contents(folder: Location) -> None:
    """Remove everything under ``folder`` (missing_dir_ok)."""
    filesystem, path = resolve(folder)
    try:
        filesystem.delete_dir_contents(path, missing_dir_ok=True)
    except OSError as exc:
        raise _explain(folder, exc) from exc


def cache_dir(kind: str) -> Path:
    """This node's local cache folder for ``kind`` (``bundles``, ``runs``)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rakuten-ray"
    folder = Path(root) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _key(location: Location) -> str:
    """A cache folder name for ``location``."""
    return hashlib.sha256(str(location).encode()).hexdigest()[:16]


def fetched(location: Location, what: str) -> Path:
    """``location`` as a local path: the path itself, or for a URI a copy made now in this
    node's cache (the file, or the folder with everything under it).

    Raises:
        StorageError: nothing is there (named as ``what``), or the store refuses.
    """
    if not is_remote(location):
        return Path(location)
    found = check_reachable(location, must_exist=True, what=what)
    target = cache_dir("inputs") / _key(location) / name(location)
    shutil.rmtree(target.parent, ignore_errors=True)
    if found.type == pafs.FileType.File:
        download(location, target)
        return target
    filesystem, path = resolve(location)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    except OSError as exc:
        raise _explain(location, exc) from exc
    target.mkdir(parents=True)
    for entry in entries:
        if entry.type == pafs.FileType.File:
            relative = PurePosixPath(entry.path).relative_to(path).parts
            download(join(location, *relative), target.joinpath(*relative))
    return target


def work_folder(out: Location, kind: str, overwrite: bool, keep: bool) -> Path:
    """Where a command writes before publishing to ``out``: ``out`` itself when local, else
    a folder of this node's cache for it (kept with ``keep``, to resume). Refuses a remote
    ``out`` in a missing bucket, or a non-empty one unless ``overwrite`` or ``keep``, before
    any work (an object store has no empty folders: a prefix is there only while it holds
    objects)."""
    if not is_remote(out):
        return Path(out)
    check_bucket(out)
    found = check_reachable(out, must_exist=False, what="output folder")
    if found.type != pafs.FileType.NotFound and not (overwrite or keep):
        raise StorageError(
            f"{out}: output folder is not empty (use --overwrite to replace it, or --resume "
            "to finish an interrupted run)"
        )
    folder = cache_dir(kind) / _key(out)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def publish(local: Path, out: Location, last: tuple[str, ...] = ()) -> None:
    """Copy the folder ``local`` to a remote ``out`` (nothing to do for a local one), the
    files named in ``last`` after the rest, so that a reader waiting for them never sees a
    partial output; then drop the local copy."""
    if not is_remote(out) or Path(out) == local:
        return
    delete_contents(out)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    ordered = [p for p in files if p.name not in last] + [p for p in files if p.name in last]
    for path in ordered:
        upload(path, join(out, *path.relative_to(local).parts))
    shutil.rmtree(local)

