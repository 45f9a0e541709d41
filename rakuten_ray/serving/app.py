"""The Ray Serve application: ``POST /predict`` and friends over one :class:`OnlineScorer`
per replica.

Concurrent requests are grouped by ``@serve.batch`` into one pass through the stages; a
product's answer does not depend on what it was grouped with, because every model call inside
the stages runs at one fixed shape (:mod:`rakuten_ray.batching`). Text, image and fusion run in
one deployment: a product's three stages take milliseconds each on one replica, and handing a
batch between deployments would copy its rows and add a hop per stage for no gain in
throughput (docs/serving.md).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route parameters'
# annotations at run time, and Serve's ingress wrapper cannot resolve them as strings.
import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve

from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.serving.online import OnlineScorer, answer
from rakuten_ray.serving.page import PAGE_HTML
from rakuten_ray.serving.requests import Product, RequestError, parse_products, parse_top_k

APP_NAME = "rakuten-ray"
api = FastAPI(title="rakuten-ray", description="Product type codes for Rakuten France listings")


@serve.deployment
@serve.ingress(api)
class ProductClassifier:
    """One replica: the bundle's models, loaded once, answering over HTTP."""

    def __init__(self, bundle_dir: str, overrides: tuple[str, ...] = ()) -> None:
        self.scorer = OnlineScorer(bundle_dir, overrides)
        serving = self.scorer.serving
        self._score_batch.set_max_batch_size(serving.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(serving.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _score_batch(self, products: list[Product]) -> list[dict[str, Any]]:
        # The stages hold the GIL only between torch calls: a worker thread keeps the event
        # loop free to read and parse the next requests meanwhile.
        return await asyncio.to_thread(self.scorer.predict, products)

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        serving = self.scorer.serving
        try:
            k = parse_top_k(request.query_params.get("k"), len(CLASS_CODES))
            body = await request.body()
            products = parse_products(body, serving.max_products, serving.max_body_bytes)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        scored = await asyncio.gather(*(self._score_batch(p) for p in products))
        answers = [answer(s, k, self.scorer.bundle_id) for s in scored]
        return JSONResponse({"products": answers} if len(answers) > 1 else answers[0])

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> dict[str, Any]:
        # The constructor loaded every model before the replica took its first request.
        return {"ready": True, "bundle_id": self.scorer.bundle_id}

    @api.get("/info")
    async def info(self) -> dict[str, Any]:
        return self.scorer.info

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> str:
        return PAGE_HTML


def build_app(bundle_dir: str | Path, overrides: tuple[str, ...] = ()) -> serve.Application:
    """The application for a bundle, with its replicas' count and resources from the bundle's
    ``serving`` settings (and ``overrides``)."""
    from rakuten_ray.bundle import open_bundle

    serving = open_bundle(bundle_dir).settings(overrides).serving
    deployment = ProductClassifier.options(
        num_replicas=serving.replicas,
        ray_actor_options={"num_cpus": serving.num_cpus, "num_gpus": serving.num_gpus},
        max_ongoing_requests=4 * serving.max_batch_size,
    )
    return deployment.bind(str(Path(bundle_dir).resolve()), tuple(overrides))


def app_builder(args: dict[str, str]) -> serve.Application:
    """For ``serve run rakuten_ray.serving.app:app_builder bundle=B [set=KEY=VALUE,...]`` and
    Serve config files (``import_path`` with ``args``)."""
    overrides = tuple(item for item in args.get("set", "").split(",") if item)
    return build_app(args["bundle"], overrides)


def run_service(
    bundle_dir: Path, host: str, port: int, address: str | None, overrides: tuple[str, ...]
) -> None:
    """Verify the bundle, deploy the application and serve until SIGINT or SIGTERM.

    Raises:
        BundleError: the bundle fails verification (nothing is started).
    """
    import ray

    from rakuten_ray.bundle import load_bundle
    from rakuten_ray.ray_session import ensure_ray

    load_bundle(bundle_dir)  # every file hashed before anything listens
    ensure_ray(address)
    # After ``ray.init``, which installs its own SIGTERM handler (a stack dump, then abort).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(bundle_dir, overrides), name=APP_NAME, route_prefix="/")
        print(f"serving {bundle_dir} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
