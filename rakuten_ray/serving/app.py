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
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve

from rakuten_ray.bundle import open_bundle
from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.serving.online import OnlineScorer, answer
from rakuten_ray.serving.page import PAGE_HTML
from rakuten_ray.serving.readiness import (
    ReplicaLoader,
    create_drain_flag,
    is_draining,
    readiness,
)
from rakuten_ray.serving.requests import Product, RequestError, parse_products, parse_top_k
from rakuten_ray.storage import is_remote

APP_NAME = "rakuten-ray"
#: Seconds a ``/predict`` request waits for a replica that is still loading its models.
LOAD_WAIT_S = 300.0
api = FastAPI(title="rakuten-ray", description="Product type codes for Rakuten France listings")


@serve.deployment
@serve.ingress(api)
class ProductClassifier:
    """One replica: the bundle's models, loaded once on a thread of its own, answering over
    HTTP (``/readyz`` says when: :mod:`rakuten_ray.serving.readiness`)."""

    def __init__(self, bundle_dir: str, overrides: tuple[str, ...] = ()) -> None:
        bundle = open_bundle(bundle_dir)
        self.bundle_id = bundle.bundle_id
        self.serving = bundle.settings(overrides).serving
        self._score_batch.set_max_batch_size(self.serving.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(self.serving.batch_wait_timeout_s)
        self.loader = ReplicaLoader(lambda: OnlineScorer(bundle_dir, overrides))
        #: Products per pass through the stages, as ``@serve.batch`` grouped them.
        self.batches: list[int] = []

    # Two batches in flight: while one is fused and answered on one thread, the next one's
    # models keep the other core busy (at 16 clients on 2 cores, one in flight left a fifth
    # of the CPU idle).
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def _score_batch(self, products: list[Product]) -> list[dict[str, Any]]:
        self.batches.append(len(products))
        # The stages hold the GIL only between model calls: a worker thread keeps the event
        # loop free to read and parse the next requests meanwhile.
        return await asyncio.to_thread(self.loader.scorer.predict, products)

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        serving = self.serving
        try:
            k = parse_top_k(request.query_params.get("k"), len(CLASS_CODES))
            body = await request.body()
            products = parse_products(body, serving.max_products, serving.max_body_bytes)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        # A request that reaches a replica still loading waits for it rather than failing.
        if not self.loader.ready:
            await asyncio.to_thread(self.loader.wait, LOAD_WAIT_S)
        if not self.loader.ready:
            reason = self.loader.error or "models still loading"
            return JSONResponse({"error": f"replica not ready: {reason}"}, status_code=503)
        scored = await asyncio.gather(*(self._score_batch(p) for p in products))
        answers = [answer(s, k, self.bundle_id) for s in scored]
        return JSONResponse({"products": answers} if len(answers) > 1 else answers[0])

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        draining = self.loader.ready and await is_draining()
        status, body = readiness(self.loader, draining, self.bundle_id)
        return JSONResponse(body, status_code=status)

    @api.get("/info")
    async def info(self) -> JSONResponse:
        if not self.loader.ready:
            status, body = readiness(self.loader, False, self.bundle_id)
            return JSONResponse(body, status_code=status)
        batches = self.batches
        grouping = {"batches": len(batches), "products": sum(batches),
                    "largest": max(batches, default=0)}  # fmt: skip
        return JSONResponse({**self.loader.scorer.info, "batching": grouping})

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> str:
        return PAGE_HTML


def build_app(bundle_dir: str | Path, overrides: tuple[str, ...] = ()) -> serve.Application:
    """The application for a bundle, with its replicas' count and resources from the bundle's
    ``serving`` settings (and ``overrides``)."""
    serving = open_bundle(bundle_dir).settings(overrides).serving
    deployment = ProductClassifier.options(
        num_replicas=serving.replicas,
        ray_actor_options={"num_cpus": serving.num_cpus, "num_gpus": serving.num_gpus},
        max_ongoing_requests=4 * serving.max_batch_size,
    )
    # A URI stays one: each replica's node copies the bundle into its own cache.
    target = str(bundle_dir) if is_remote(bundle_dir) else str(Path(bundle_dir).resolve())
    return deployment.bind(target, tuple(overrides))


def app_builder(args: dict[str, str]) -> serve.Application:
    """For ``serve run rakuten_ray.serving.app:app_builder bundle=B [set=KEY=VALUE,...]`` and
    Serve config files (``import_path`` with ``args``)."""
    overrides = tuple(item for item in args.get("set", "").split(",") if item)
    return build_app(args["bundle"], overrides)


def run_service(
    bundle_dir: str | Path,
    host: str,
    port: int,
    address: str | None,
    overrides: tuple[str, ...],
    drain_s: float = 5.0,
) -> None:
    """Verify the bundle, deploy the application and serve until SIGINT or SIGTERM; then
    the replicas answer ``/readyz`` with 503 for ``drain_s`` seconds, still serving what
    reaches them, before Serve stops.

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
        drain_flag = create_drain_flag()
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(bundle_dir, overrides), name=APP_NAME, route_prefix="/")
        print(f"serving {bundle_dir} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        stop.wait()
        ray.get(drain_flag.drain.remote())
        print(f"draining: /readyz answers 503 for {drain_s:g} s, then stopping", flush=True)
        time.sleep(drain_s)
    finally:
        serve.shutdown()
        ray.shutdown()
