"""Online scoring: request checks, the online engine against batch scoring, and the Ray Serve
application for real (a ``rakuten-ray serve`` process, HTTP on loopback, the page in Chromium,
clean shutdown)."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import chromium, read_predictions
from PIL import Image

from rakuten_ray.catalog import CLASS_CODES, X_TEST_FILE, image_path
from rakuten_ray.layout import FINAL_PROBS
from rakuten_ray.scoring.run import run_scoring
from rakuten_ray.serving.client import LocalService, product
from rakuten_ray.serving.requests import (
    DEFAULT_TOP_K,
    RequestError,
    parse_products,
    parse_top_k,
)
from rakuten_ray.text import MAX_TEXT_CHARS

LIMITS = {"max_products": 4, "max_body_bytes": 100_000}


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def jpeg_bytes(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 40, 40)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def test_one_product_or_a_list() -> None:
    one = parse_products(body({"designation": "Chaise", "image": b64(b"x")}), **LIMITS)
    assert len(one) == 1 and one[0].designation == "Chaise" and one[0].image == b"x"
    assert one[0].description == ""
    many = parse_products(body({"products": [{"designation": "a"}, {"designation": "b"}]}),
                          **LIMITS)  # fmt: skip
    assert [p.designation for p in many] == ["a", "b"] and many[1].image is None


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{not json", 400, "body: not valid JSON"),
        (body([1, 2]), 422, "body: expected an object"),
        (body({"description": "x"}), 422, "designation: required"),
        (body({"designation": 12}), 422, "designation: expected a string, got int"),
        (body({"designation": "a", "description": ["x"]}), 422, "description: expected a string"),
        (body({"designation": "a", "image": 5}), 422, "image: expected base64 text"),
        (body({"designation": "a", "image": "@@@"}), 422, "image: not valid base64"),
        (body({"designation": "a", "colour": "red"}), 422, "colour: unknown field"),
        (body({"designation": "x" * (MAX_TEXT_CHARS + 1)}), 422, "designation: 10001 characters"),
        (body({"products": []}), 422, "products: expected a non-empty list"),
        (body({"products": [{"designation": "a"}] * 5}), 413, "products: 5 products, more than"),
        (body({"products": [{"designation": "a"}, 3]}), 422, "products[1]: expected an object"),
        (body({"products": [{"designation": "a"}, {}]}), 422, "products[1].designation: required"),
        (body({"designation": "a" * 200_000}), 413, "body: "),
    ],
)
def test_bad_requests_name_the_field(raw: bytes, status: int, message: str) -> None:
    with pytest.raises(RequestError, match=f"^{message.replace('[', '.').replace(']', '.')}") as e:
        parse_products(raw, **LIMITS)
    assert e.value.status == status


def test_top_k_parameter() -> None:
    assert parse_top_k(None, 27) == DEFAULT_TOP_K
    assert parse_top_k("3", 27) == 3
    for raw in ("0", "28", "two"):
        with pytest.raises(RequestError, match="^k: "):
            parse_top_k(raw, 27)


# --------------------------------------------------------------------------------------------
# Readiness
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_replica_is_ready_only_after_its_warm_up(tiny_run: Path) -> None:
    """503 while the models load (held back here until the test lets them), 200 once the
    warm-up product's answer is checked; a load that fails stays 503 and says why."""
    import threading

    from rakuten_ray.serving.online import OnlineScorer
    from rakuten_ray.serving.readiness import ReplicaLoader, readiness

    release = threading.Event()

    def load() -> OnlineScorer:
        release.wait(60)
        return OnlineScorer(str(tiny_run / "bundle"))

    loader = ReplicaLoader(load)
    assert readiness(loader, False, "b") == (503, {"ready": False, "state": "loading",
                                                   "bundle_id": "b"})  # fmt: skip
    release.set()
    assert loader.wait(120)
    assert readiness(loader, False, "b") == (200, {"ready": True, "state": "ready",
                                                   "bundle_id": "b"})  # fmt: skip
    assert readiness(loader, True, "b")[0] == 503
    broken = ReplicaLoader(lambda: OnlineScorer(str(tiny_run / "no-such-bundle")))
    assert broken.wait(60)
    status, body = readiness(broken, False, "b")
    assert status == 503 and body["state"] == "failed" and "BundleError" in body["error"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prdtypecode": 7}, "unknown code"),
        ({"probabilities": [1.0] + [0.0] * 25}, "27 finite"),
        ({"probabilities": [float("nan")] * 27}, "27 finite"),
        ({"probabilities": [0.5] * 27}, "sum to"),
        ({"image_status": "unreadable"}, "image was not scored"),
    ],
)
def test_warm_up_refuses_an_answer_no_working_replica_gives(change: dict, message: str) -> None:
    from rakuten_ray.serving.readiness import WarmUpError, check_answer

    good = {"prdtypecode": CLASS_CODES[0], "probabilities": [1.0] + [0.0] * 26,
            "image_status": "ok"}  # fmt: skip
    check_answer(good)
    check_answer({**good, "image_status": "no_image_model"})  # a text-only bundle
    with pytest.raises(WarmUpError, match=message):
        check_answer({**good, **change})


# --------------------------------------------------------------------------------------------
# The online engine, in process
# --------------------------------------------------------------------------------------------


def image_cases(tiny_catalogue: Path) -> dict[str, bytes | None]:
    """Real image bytes of every kind a seller may send."""
    test = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0)
    first = test.iloc[0]
    jpeg = image_path(tiny_catalogue / "images/image_test", first["imageid"], first["productid"])
    jpeg_data = jpeg.read_bytes()
    png = io.BytesIO()
    Image.open(jpeg).save(png, format="PNG")
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000)).save(bomb, format="PNG", optimize=True)
    return {
        "jpeg": jpeg_data,
        "png": png.getvalue(),
        "truncated": jpeg_data[: len(jpeg_data) // 3],
        "bomb": bomb.getvalue(),
        "not_an_image": b"%PDF-1.4 not an image at all",
        "none": None,
    }


EXPECTED_STATUS = {
    "jpeg": "ok", "png": "ok", "truncated": "unreadable", "bomb": "too_large",
    "not_an_image": "unreadable", "none": "missing",
}  # fmt: skip


def catalogue_products(tiny_catalogue: Path) -> list[tuple[str, str, bytes | None]]:
    """The tiny catalogue's test rows as a seller would send them: texts and image bytes."""
    source = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0, keep_default_na=False)
    images = tiny_catalogue / "images/image_test"
    products = []
    for _, row in source.iterrows():
        file = image_path(images, int(row["imageid"]), int(row["productid"]))
        products.append(
            (row["designation"], row["description"], file.read_bytes() if file.is_file() else None)
        )
    return products


@pytest.fixture(scope="module")
def batch(tiny_run: Path, tiny_catalogue: Path, tmp_path_factory) -> pd.DataFrame:
    """The test rows scored by the in-process batch engine."""
    out = tmp_path_factory.mktemp("batch") / "out"
    run_scoring(tiny_run / "bundle", tiny_catalogue / X_TEST_FILE,
                tiny_catalogue / "images/image_test", out, engine="local")  # fmt: skip
    return read_predictions(out)


@pytest.mark.slow
def test_online_answers_equal_batch_scoring(
    tiny_run: Path, tiny_catalogue: Path, batch: pd.DataFrame
) -> None:
    """With the batch engines' model shapes (``serving.micro_batch_size: null``) an online
    answer equals the batch one bit for bit; with the default shape of one row, to rounding
    (docs/serving.md states the tolerance)."""
    from rakuten_ray.serving.online import OnlineScorer
    from rakuten_ray.serving.requests import Product

    products = [Product(*fields) for fields in catalogue_products(tiny_catalogue)]
    bundle = str(tiny_run / "bundle")
    exact = OnlineScorer(bundle, ("serving.micro_batch_size=null",)).predict(products)
    fast = OnlineScorer(bundle).predict(products)
    expected = batch[FINAL_PROBS].to_numpy()
    assert np.array_equal(np.array([a["probabilities"] for a in exact]), expected)
    assert [a["prdtypecode"] for a in exact] == batch["prdtypecode"].tolist()
    assert [a["decision"] for a in exact] == batch["decision"].tolist()
    np.testing.assert_allclose([a["probabilities"] for a in fast], expected, rtol=0, atol=1e-5)
    assert [a["prdtypecode"] for a in fast] == batch["prdtypecode"].tolist()
    # An answer never depends on the products sent with it.
    alone = [OnlineScorer(bundle).predict([p])[0] for p in products[:3]]
    assert [a["probabilities"] for a in alone] == [a["probabilities"] for a in fast[:3]]


@pytest.mark.slow
def test_concurrent_stages_equal_sequential_ones(tiny_run: Path, tiny_catalogue: Path) -> None:
    """The text stage on its own thread beside the image stages gives the rows that running
    the stages one after the other gives, bit for bit, images or none."""
    from rakuten_ray.images import load_image_bytes
    from rakuten_ray.serving.online import OnlineScorer, product_rows
    from rakuten_ray.serving.requests import Product

    products = [Product(*fields) for fields in catalogue_products(tiny_catalogue)]
    products += [Product("Piscine", "", data) for data in image_cases(tiny_catalogue).values()]
    scorer = OnlineScorer(str(tiny_run / "bundle"))
    loaded = [load_image_bytes(p.image) for p in products]
    one_by_one = scorer.fusion(
        scorer.image(scorer.prep.prepare(scorer.text(product_rows(products)), loaded))
    )
    side_by_side = scorer.scored_rows(products)
    assert side_by_side.equals(one_by_one[side_by_side.columns])
    assert list(side_by_side.columns) == list(one_by_one.columns)


# --------------------------------------------------------------------------------------------
# The Ray Serve application
# --------------------------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Ray's raylet, GCS, workers...)."""
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if children.exists():
            for child in children.read_text().split():
                found.add(int(child))
                frontier.append(int(child))
    return found


@pytest.fixture(scope="module")
def service(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """``rakuten-ray serve`` on the session bundle, on a free loopback port."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # Requests sent together wait up to 50 ms for each other: the batching test relies on it.
    overrides = ("serving.num_cpus=1", "serving.max_batch_size=8",
                 "serving.batch_wait_timeout_s=0.05")  # fmt: skip
    running = LocalService(tiny_run / "bundle", overrides, log=log)
    try:
        with running:
            yield running
    except (RuntimeError, TimeoutError) as error:
        pytest.fail(f"{error}:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_health_info_and_the_page(service: LocalService) -> None:
    client = service.client
    assert client.get("/healthz") == (200, {"status": "ok"})
    status, ready = client.get("/readyz")
    assert status == 200 and ready["ready"] and len(ready["bundle_id"]) == 16
    status, info = client.get("/info")
    assert status == 200 and info["bundle_id"] == ready["bundle_id"]
    assert {m["name"] for m in info["models"]} >= {"camembert_large", "convnext_base"}
    assert [c["prdtypecode"] for c in info["classes"]] == list(CLASS_CODES)
    status, page = client.get("/")
    assert status == 200 and "<form" in page and "http" not in page.split("<script>")[0]


@pytest.mark.slow
def test_predict_answers_every_kind_of_image(service: LocalService, tiny_catalogue: Path) -> None:
    cases = image_cases(tiny_catalogue)
    products = [product("Piscine gonflable", "pour enfants", data) for data in cases.values()]
    status, reply = service.client.predict({"products": products}, k=3)
    assert status == 200, reply
    answers = reply["products"]
    assert [a["image_status"] for a in answers] == [EXPECTED_STATUS[c] for c in cases]
    for name, item in zip(cases, answers, strict=True):
        assert item["prdtypecode"] in CLASS_CODES and len(item["top"]) == 3
        assert item["top"][0]["prdtypecode"] == item["prdtypecode"]
        assert item["top"][0]["probability"] == pytest.approx(item["confidence"])
        assert (item["image_prdtypecode"] is None) == (EXPECTED_STATUS[name] != "ok")
        assert item["decision"] in ("auto", "review") and item["category"]
    # One product alone gets the same answer it got among the others.
    status, alone = service.client.predict(products[0])
    assert status == 200 and alone["prdtypecode"] == answers[0]["prdtypecode"]
    assert alone["confidence"] == answers[0]["confidence"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        (b"{oops", 400, "body"),
        (body({"description": "no title"}), 422, "designation"),
        (body({"designation": ["a"]}), 422, "designation"),
        (body({"designation": "a", "image": "not base64!"}), 422, "image"),
        (body({"products": [{"designation": "a"}] * 40}), 413, "products"),
        (body({"designation": "x" * (MAX_TEXT_CHARS + 1)}), 422, "designation"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(
    service: LocalService, payload: bytes, status: int, field: str
) -> None:
    got, reply = service.client.predict(payload)
    assert got == status and reply["error"].startswith(field), reply
    assert service.client.get("/healthz")[0] == 200  # the service is still up


@pytest.mark.slow
def test_service_answers_equal_batch_scoring(
    service: LocalService, tiny_catalogue: Path, batch: pd.DataFrame
) -> None:
    """Every test row over HTTP, four per request: the codes and decisions of batch scoring,
    all 27 probabilities to 1e-5 (docs/serving.md)."""
    sent = [product(*fields) for fields in catalogue_products(tiny_catalogue)]
    answers = []
    for start in range(0, len(sent), 4):
        status, reply = service.client.predict({"products": sent[start : start + 4]}, k=27)
        assert status == 200, reply
        answers += reply["products"]
    assert [a["prdtypecode"] for a in answers] == batch["prdtypecode"].tolist()
    assert [a["decision"] for a in answers] == batch["decision"].tolist()
    assert [a["image_status"] for a in answers] == batch["image_status"].tolist()
    probabilities = [
        [{t["prdtypecode"]: t["probability"] for t in a["top"]}[code] for code in CLASS_CODES]
        for a in answers
    ]
    np.testing.assert_allclose(probabilities, batch[FINAL_PROBS].to_numpy(), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_page_classifies_a_product_in_a_browser(
    service: LocalService, tiny_catalogue: Path, tmp_path: Path
) -> None:
    """Type a title, drop an image, submit: the category, the top 5 and the per-modality
    answers appear (real headless Chromium, driven by Playwright)."""
    playwright = pytest.importorskip("playwright.sync_api")
    image = tmp_path / "product.jpg"
    image.write_bytes(image_cases(tiny_catalogue)["jpeg"])
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(service.client.url + "/")
        page.fill("#designation", "Piscine gonflable pour enfants")
        page.fill("#description", "Bassin rond, 2 m, avec pompe")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#preview[src^='data:image']", state="attached")
        page.click("#submit")
        page.wait_for_selector("#result", state="visible", timeout=60_000)
        category = page.text_content("#category")
        assert category and page.text_content("#code").isdigit()
        assert len(page.query_selector_all("#top .row")) == 5
        assert page.text_content("#image") and "no usable image" not in page.text_content("#image")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.slow
def test_concurrent_requests_are_scored_together(service: LocalService) -> None:
    """Eight products sent at once by eight clients go through the stages in fewer passes
    than products, and each still gets the answer it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    _, before = service.client.get("/info")
    sent = [product(f"Piscine gonflable {i}", "pour enfants") for i in range(8)]
    with ThreadPoolExecutor(len(sent)) as clients:
        replies = list(clients.map(service.client.predict, sent))
    assert all(status == 200 for status, _ in replies), replies
    _, after = service.client.get("/info")
    passes = after["batching"]["batches"] - before["batching"]["batches"]
    assert after["batching"]["products"] - before["batching"]["products"] == len(sent)
    assert passes < len(sent) and after["batching"]["largest"] >= 2, after["batching"]
    status, alone = service.client.predict(sent[3])
    assert status == 200 and alone["confidence"] == replies[3][1]["confidence"]


@pytest.mark.slow
def test_sigterm_drains_then_stops_the_service_and_its_ray_processes(
    service: LocalService,
) -> None:
    """After SIGTERM the replica says it is not ready (a load balancer stops sending), still
    answers what reaches it, then the service and every Ray process it started exit."""
    children = descendants(service.process.pid)
    assert children, "the service started no Ray process"
    service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 4
    states = []
    while time.monotonic() < deadline and "draining" not in states:
        status, body = service.client.get("/readyz")
        states.append(body["state"] if status == 503 else status)
        time.sleep(0.1)
    assert "draining" in states, states
    assert service.client.predict(product("Chaise de jardin"))[0] == 200
    assert service.stop() == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(1)
    left = [p for p in children if Path(f"/proc/{p}").exists()]
    assert not left, f"Ray processes left behind: {left}"


@pytest.mark.slow
def test_a_tampered_bundle_stops_the_service_before_it_listens(
    tiny_run: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", copy)
    weights = next(copy.glob("models/*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    done = subprocess.run(
        [sys.executable, "-m", "rakuten_ray.cli", "serve", "--bundle", str(copy),
         "--port", "8"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "modified since the bundle was sealed" in done.stderr
