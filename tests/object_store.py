"""A real S3-protocol server on loopback (moto's ``ThreadedMotoServer``) for the test session,
reached only through the standard ``AWS_*`` variables, and helpers that copy folders to and
from it with pyarrow's S3 client (the one the code under test uses)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Variables the server is reached through; the test session sets them before Ray starts, so
#: that every Ray worker sees them, as a cluster's nodes see their cloud's.
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class ObjectStore:
    """The running server: its endpoint, as ``AWS_ENDPOINT_URL`` names it."""

    endpoint: str

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new); its ``s3://`` URI."""
        filesystem = _s3()
        filesystem.create_dir(name)
        return f"s3://{name}"

    def upload(self, local: Path, uri: str) -> str:
        """Copy a local file or folder to ``uri``; returns ``uri``."""
        import pyarrow.fs as pafs

        pafs.copy_files(str(local), uri.removeprefix("s3://"), destination_filesystem=_s3())
        return uri

    def download(self, uri: str, local: Path) -> Path:
        """Copy a folder from ``uri`` to ``local``; returns ``local``."""
        import pyarrow.fs as pafs

        pafs.copy_files(uri.removeprefix("s3://"), str(local), source_filesystem=_s3())
        return local

    def keys(self, uri: str) -> list[str]:
        """Every object under ``uri``, relative to it."""
        import pyarrow.fs as pafs

        prefix = uri.removeprefix("s3://").rstrip("/")
        found = _s3().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return sorted(f.path[len(prefix) + 1 :] for f in found if f.type == pafs.FileType.File)


def _s3():
    import pyarrow.fs as pafs

    endpoint = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://")
    return pafs.S3FileSystem(
        region=ENV["AWS_DEFAULT_REGION"], endpoint_override=endpoint, scheme="http",
        allow_bucket_creation=True,
    )  # fmt: skip


@contextmanager
def running_object_store(cache: Path) -> Iterator[ObjectStore]:
    """Start the server, point the standard variables (and the bundle cache) at it, and
    restore the environment afterwards."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings = {**ENV, "AWS_ENDPOINT_URL": endpoint, "RAKUTEN_RAY_CACHE": str(cache)}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield ObjectStore(endpoint)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
