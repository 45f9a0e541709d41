"""A client of the service, and a local ``rakuten-ray serve`` process to talk to (for
scripts, the latency benchmark and the tests): standard library HTTP on loopback."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: Seconds a local service may take to start Ray, deploy and load its models.
START_TIMEOUT_S = 300


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def product(designation: str, description: str = "", image: bytes | None = None) -> dict:
    """A product as ``POST /predict`` takes it."""
    encoded = base64.b64encode(image).decode("ascii") if image is not None else None
    return {"designation": designation, "description": description, "image": encoded}


class Client:
    """JSON over HTTP to a running service."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """Status and decoded reply (JSON, else text); an HTTP error is a status, not raised."""
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def predict(self, payload: dict | bytes, k: int | None = None) -> tuple[int, Any]:
        """``POST /predict`` of one product, ``{"products": [...]}``, or raw bytes."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/predict" + (f"?k={k}" if k else ""), body)


class LocalService:
    """``rakuten-ray serve`` in a child process (its own Ray instance), ready on entry and
    stopped by SIGTERM on exit.

    Args:
        bundle: the sealed bundle.
        overrides: ``--set`` settings (``serving.*``).
        log: file for the process's output (default: discarded).
    """

    def __init__(
        self, bundle: Path, overrides: tuple[str, ...] = (), log: Path | None = None
    ) -> None:
        self.port = free_port()
        self.client = Client(f"http://127.0.0.1:{self.port}")
        self.log = log
        argv = [sys.executable, "-m", "rakuten_ray.cli", "serve", "--bundle", str(bundle),
                "--port", str(self.port)]  # fmt: skip
        self.argv = argv + [item for key in overrides for item in ("--set", key)]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalService:
        out = open(self.log, "w") if self.log else subprocess.DEVNULL  # noqa: SIM115
        # Its own session: a hard stop reaches Ray's processes too. No RAY_ADDRESS: a job's
        # cluster is not this service's.
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.process = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with status {self.process.returncode}")
            try:
                if self.client.get("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"serve was not ready within {START_TIMEOUT_S} s")

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM, as an operator stops it; returns its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()
