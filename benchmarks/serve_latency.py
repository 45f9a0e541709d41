"""Online scoring latency and throughput: a local ``rakuten-ray serve`` driven over loopback.

The service runs in its own process (its own local Ray instance, one replica) on the bundle;
this script sends real products from the Rakuten sample (their texts, and the real test JPEGs
as base64) from ``c`` client threads at once, each sending its next request when the last is
answered, for each concurrency level, text-only and with an image. Each level stops after
``--requests`` requests or ``--seconds`` seconds, whichever comes first. Then, with the
service stopped, the in-process engine (:class:`FinalPipeline`, built once) scores the same
products from their CSV and image folder: the reference for throughput.

Each level also records where the CPU went: milliseconds of CPU per request in the replica,
the HTTP proxy, the rest of the service's Ray processes, and this client.

Last, what splitting the stages into composed deployments would add: each stage's time for
one product (in this process), against one DeploymentHandle hop carrying a stage's output for
one product and for a full batch (a Serve application of two deployments on a local Ray).

    .venv/bin/python benchmarks/serve_latency.py [--bundle B] [--levels 1 4 16] \
        [--requests 200] [--seconds 60] [--set serving.micro_batch_size=null]

Prints a table and writes ``benchmarks/results/serve_latency.json``.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import (
    base_parser,
    ensure_bundle,
    format_table,
    load_line,
    machine,
    real_catalogue,
    tree_cpu_s,
    write_results,
)

from rakuten_ray.catalog import image_path, read_products
from rakuten_ray.serving.client import Client, LocalService, product

#: Targets for one replica of the demo bundle on 2 cores, client included.
P50_TARGET_MS = 90.0
THROUGHPUT_TARGET = 0.8
#: Requests sent before each level's timing starts (first calls pay for lazy set-up).
WARMUP = 4


def request_bodies(source: Path, image_dir: Path, with_image: bool) -> list[bytes]:
    """One ``POST /predict`` body per product of the CSV, with its JPEG bytes or none."""
    rows = read_products(source)
    bodies = []
    for row in rows.itertuples():
        data = None
        if with_image:
            data = image_path(image_dir, int(row.imageid), int(row.productid)).read_bytes()
        bodies.append(json.dumps(product(row.designation, row.description, data)).encode())
    return bodies


def drive(
    client: Client, bodies: list[bytes], concurrency: int, requests: int, seconds: float
) -> dict[str, Any]:
    """``concurrency`` closed-loop clients; latency percentiles and requests/s."""
    for body in bodies[:WARMUP]:
        client.predict(body)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    sent = iter(range(requests))
    deadline = time.perf_counter() + seconds

    def client_loop() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            with lock:
                i = next(sent, None)
            if i is None:
                return
            started = time.perf_counter()
            status, _ = client.predict(bodies[i % len(bodies)])
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                failures += status != 200

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client_loop) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": failures,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 3),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
    }


def service_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of the service's processes, by role."""
    used = {"replica": 0.0, "proxy": 0.0, "other_ray": 0.0}
    for title, seconds in tree_cpu_s(pid).items():
        role = ("replica" if "ProductClassifier" in title
                else "proxy" if "ProxyActor" in title else "other_ray")  # fmt: skip
        used[role] += seconds
    return used


def drive_measured(
    service: LocalService, bodies: list[bytes], concurrency: int, requests: int, seconds: float
) -> dict[str, Any]:
    """:func:`drive`, with the CPU milliseconds per request of each part of the service and
    of the client."""
    assert service.process is not None
    before, client_before = service_cpu_s(service.process.pid), time.process_time()
    result = drive(service.client, bodies, concurrency, requests, seconds)
    after, client = service_cpu_s(service.process.pid), time.process_time() - client_before
    used = {role: after[role] - before[role] for role in after} | {"client": client}
    # The warm-up requests before the timed ones are in these figures too.
    sent = result["requests"] + WARMUP
    result["cpu_ms_per_request"] = {k: round(v * 1000 / sent, 1) for k, v in used.items()}
    return result


def in_process_rows_per_s(bundle: Path, source: Path, image_dir: Path) -> dict[str, Any]:
    """The in-process engine on the same products: built once, then timed on all rows."""
    from rakuten_ray.scoring.local import FinalPipeline

    pipeline = FinalPipeline(bundle)
    rows = read_products(source)
    pipeline.predict(rows.head(WARMUP), image_dir)
    started = time.perf_counter()
    pipeline.predict(rows, image_dir)
    wall = time.perf_counter() - started
    return {"rows": len(rows), "wall_s": round(wall, 3), "rows_per_s": round(len(rows) / wall, 3)}


def stage_ms(
    bundle: Path, source: Path, image_dir: Path, repeats: int = 20
) -> tuple[dict[str, float], pd.DataFrame]:
    """Median milliseconds of each stage of the online engine on one product with its image,
    and the image stage's output (the rows a fusion deployment would receive)."""
    from rakuten_ray.images import load_image_bytes
    from rakuten_ray.serving.online import OnlineScorer, product_rows
    from rakuten_ray.serving.requests import Product

    row = read_products(source).iloc[0]
    data = image_path(image_dir, int(row["imageid"]), int(row["productid"])).read_bytes()
    scorer = OnlineScorer(str(bundle))
    rows = product_rows([Product(row["designation"], row["description"], data)])
    timings: dict[str, list[float]] = {"text": [], "image": [], "fusion": []}
    for _ in range(repeats):
        started = time.perf_counter()
        texted = scorer.text(rows)
        timings["text"].append(time.perf_counter() - started)
        started = time.perf_counter()
        imaged = scorer.image(scorer.prep.prepare(texted, [load_image_bytes(data)]))
        timings["image"].append(time.perf_counter() - started)
        started = time.perf_counter()
        scorer.fusion(imaged)
        timings["fusion"].append(time.perf_counter() - started)
    medians = {k: round(float(np.median(v)) * 1000, 2) for k, v in timings.items()}
    medians["handed_on_bytes"] = int(imaged.memory_usage(deep=True).sum())
    return medians, imaged


def hop_ms(frame: pd.DataFrame, batch: int, repeats: int = 50) -> dict[str, float]:
    """Median milliseconds of one DeploymentHandle call that carries ``frame`` (one product's
    stage output) and ``batch`` copies of it to a second deployment and back."""
    import ray
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class NextStage:
        def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
            return rows

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Stage:
        def __init__(self, nxt: Any) -> None:
            self.next = nxt

        async def __call__(self, rows: pd.DataFrame) -> float:
            started = time.perf_counter()
            await self.next.remote(rows)
            return time.perf_counter() - started

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        handle = serve.run(Stage.bind(NextStage.bind()), name="hop", route_prefix=None)
        results = {}
        for label, rows in (("one_product", frame), (f"batch_{batch}", pd.concat([frame] * batch))):
            took = [handle.remote(rows).result() for _ in range(repeats)]
            results[label] = round(float(np.median(took)) * 1000, 2)
        return results
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="most seconds per level")
    parser.add_argument("--products", type=int, default=200, help="distinct products sent")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a serving setting for the service, e.g. serving.micro_batch_size=null",
    )  # fmt: skip
    args = parser.parse_args()
    bundle = ensure_bundle(args.bundle)
    source = real_catalogue(args.sample, args.workdir, args.products)
    image_dir = args.sample / "images" / "image_test"
    payload: dict[str, Any] = {"bundle": str(bundle), "settings": args.set,
                               "machine_before": machine(), "levels": []}  # fmt: skip
    log = args.workdir / "serve_latency.log"
    with LocalService(bundle, tuple(args.set), log=log) as service:
        for with_image in (False, True):
            bodies = request_bodies(source, image_dir, with_image)
            for level in args.levels:
                result = drive_measured(service, bodies, level, args.requests, args.seconds)
                result["image"] = with_image
                payload["levels"].append(result)
                print(f"[bench] image={with_image} c={level}: {result}", flush=True)
    payload["in_process"] = in_process_rows_per_s(bundle, source, image_dir)
    payload["stage_ms"], handed_on = stage_ms(bundle, source, image_dir)
    payload["hop_ms"] = hop_ms(handed_on, batch=16)
    payload["machine_after"] = machine()
    print(report(payload))
    write_results("serve_latency", payload)


def report(payload: dict[str, Any]) -> str:
    """The table, then the two targets against what was measured."""
    levels = payload["levels"]
    rows = [
        [("text + image" if r["image"] else "text only"), r["concurrency"], r["requests"],
         r["p50_ms"], r["p95_ms"], r["p99_ms"], r["requests_per_s"], r["failures"]]
        for r in levels
    ]  # fmt: skip
    header = ["request", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "failed"]
    lines = [format_table(header, rows), "\nCPU ms per request:"]
    for r in levels:
        used = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_request"].items())
        label = "text + image" if r["image"] else "text only"
        lines.append(f"  {label}, {r['concurrency']} clients: {used}")
    local = payload["in_process"]["rows_per_s"]
    lines.append(f"\nin-process engine, same products with images: {local:.2f} rows/s")
    with_image = pd.DataFrame([r for r in levels if r["image"]]).set_index("concurrency")
    if 1 in with_image.index:
        p50 = with_image.loc[1, "p50_ms"]
        verdict = "met" if p50 < P50_TARGET_MS else "missed"
        lines.append(f"p50 at 1 client, text + image: {p50:.0f} ms (target < "
                     f"{P50_TARGET_MS:.0f} ms: {verdict})")  # fmt: skip
    top = with_image.index.max()
    ratio = with_image.loc[top, "requests_per_s"] / local
    verdict = "met" if ratio >= THROUGHPUT_TARGET else "missed"
    lines.append(f"throughput at {top} clients / in-process: {ratio:.2f}x (target >= "
                 f"{THROUGHPUT_TARGET}x: {verdict})")  # fmt: skip
    payload["throughput_ratio"] = round(float(ratio), 3)
    stages, hops = payload["stage_ms"], payload["hop_ms"]
    lines.append(
        f"one product, in process: text {stages['text']} ms, image {stages['image']} ms, "
        f"fusion {stages['fusion']} ms; one DeploymentHandle hop with a stage's output: "
        + ", ".join(f"{k} {v} ms" for k, v in hops.items())
    )
    lines.append(load_line(payload))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
