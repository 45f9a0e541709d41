"""A model hub on 127.0.0.1 that answers the Hugging Face hub's model-info API
(``GET /api/models/<repo>`` and ``GET /api/models/<repo>/revision/<ref>``) from a table of
repositories and their refs, with the hub's error codes for an unknown repository or ref, so
that ``huggingface_hub.HfApi`` talks to it over HTTP as it does to the real hub."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

#: The ref a request without a revision asks for.
DEFAULT_BRANCH = "main"
_PREFIX = "/api/models/"


class SimulatedHub:
    """Repositories (``org/name``) mapped to their refs (branch, tag or commit) and the commit
    each ref is at; ``requests`` lists the paths asked for."""

    def __init__(self, repositories: dict[str, dict[str, str]]) -> None:
        self.repositories = repositories
        self.requests: list[str] = []
        self.url = ""

    def answer(self, path: str) -> tuple[int, dict[str, str], dict[str, str]]:
        """Status, headers and JSON body for one request path."""
        self.requests.append(path)
        if not path.startswith(_PREFIX):
            return 404, {}, {"error": "not found"}
        repository, _, ref = unquote(path[len(_PREFIX) :]).partition("/revision/")
        refs = self.repositories.get(repository)
        if refs is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        commit = refs.get(ref or DEFAULT_BRANCH)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": f"Invalid rev id: {ref}"}
        return 200, {}, {"id": repository, "modelId": repository, "sha": commit}


def _handler(hub: SimulatedHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
            status, headers, body = hub.answer(urlsplit(self.path).path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet: the test output is not the place for an access log."""

    return Handler


@contextmanager
def serve_hub(repositories: dict[str, dict[str, str]]) -> Iterator[SimulatedHub]:
    """Serve a :class:`SimulatedHub` on a free port while the block runs."""
    hub = SimulatedHub(repositories)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
