"""What ``GET /readyz`` answers: a replica is ready once its models are loaded, checked and
warmed up, and stops being ready when the service starts shutting down.

A replica loads its bundle on a thread of its own (:class:`ReplicaLoader`), so that the HTTP
routes answer while the models load: ``/healthz`` says the process lives, ``/readyz`` says 503
until one warm-up product has gone through every stage and its answer has been checked. The
draining flag is a small named Ray actor (:class:`DrainFlag`) that ``rakuten-ray serve`` sets
on SIGTERM before it stops Serve: a load balancer that polls ``/readyz`` takes the replicas
out of rotation while they still answer the requests already sent.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from typing import Any

import ray

from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.layout import ImageStatus

#: What the warm-up JPEG may become: scored, or read by no model in a text-only bundle.
WARM_UP_IMAGE_STATUSES = (ImageStatus.OK.value, ImageStatus.NO_IMAGE_MODEL.value)

#: The named actor that holds the service's draining flag, in its own namespace.
DRAIN_FLAG_NAME = "rakuten-ray-drain-flag"
DRAIN_FLAG_NAMESPACE = "rakuten-ray"


class WarmUpError(RuntimeError):
    """The warm-up product's answer is not a valid answer: the replica must not serve."""


def warm_up_product() -> Any:
    """A product with a title, a description and a real JPEG, as a seller would send it."""
    from PIL import Image

    from rakuten_ray.serving.requests import Product

    buffer = io.BytesIO()
    Image.new("RGB", (96, 72), (180, 120, 60)).save(buffer, format="JPEG")
    return Product("Chaise de jardin en bois", "Pliante, 2 places", buffer.getvalue())


def check_answer(scored: dict[str, Any]) -> None:
    """Refuse an answer that could not come from a working replica.

    Raises:
        WarmUpError: unknown code, probabilities that are not 27 finite numbers summing to
            1, or an image that the stages could not read (a bundle without image models
            reads none, and says so).
    """
    probs = scored["probabilities"]
    if scored["prdtypecode"] not in CLASS_CODES:
        raise WarmUpError(f"warm-up answered an unknown code {scored['prdtypecode']!r}")
    if len(probs) != len(CLASS_CODES) or not all(math.isfinite(p) for p in probs):
        raise WarmUpError("warm-up probabilities are not 27 finite numbers")
    if abs(math.fsum(probs) - 1.0) > 1e-4:
        raise WarmUpError(f"warm-up probabilities sum to {math.fsum(probs):.6f}, not 1")
    if scored["image_status"] not in WARM_UP_IMAGE_STATUSES:
        raise WarmUpError(f"warm-up image was not scored: {scored['image_status']}")


class ReplicaLoader:
    """Builds a replica's scorer on a background thread and says where that stands.

    Args:
        load: builds the scorer (loading and hashing the bundle's models); the result must
            have ``predict(products) -> list[dict]``.
    """

    def __init__(self, load: Callable[[], Any]) -> None:
        self.scorer: Any = None
        self.error: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(load,), daemon=True)
        self._thread.start()

    def _run(self, load: Callable[[], Any]) -> None:
        try:
            scorer = load()
            [scored] = scorer.predict([warm_up_product()])
            check_answer(scored)
            self.scorer = scorer
        except Exception as error:  # noqa: BLE001 - any failure leaves the replica unready
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        """The scorer is loaded and its warm-up answer checked."""
        return self.scorer is not None

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until loading has ended (either way); ``False`` on timeout."""
        return self._done.wait(timeout_s)

    def state(self) -> str:
        """``loading``, ``ready`` or ``failed``."""
        if not self._done.is_set():
            return "loading"
        return "ready" if self.ready else "failed"


@ray.remote(num_cpus=0)
class DrainFlag:
    """Set once when the service begins to shut down; read by every replica's ``/readyz``."""

    def __init__(self) -> None:
        self.draining = False

    def drain(self) -> None:
        self.draining = True

    def is_draining(self) -> bool:
        return self.draining


def create_drain_flag() -> Any:
    """The service's draining flag (an actor handle), for ``rakuten-ray serve`` to set."""
    # Lives as long as the driver that made it; a second service on the cluster shares it,
    # as it shares the application's name.
    return DrainFlag.options(
        name=DRAIN_FLAG_NAME, namespace=DRAIN_FLAG_NAMESPACE, get_if_exists=True
    ).remote()


async def is_draining() -> bool:
    """Whether the service that runs this replica is shutting down. An application deployed
    without ``rakuten-ray serve`` (``serve run``, a Serve config) has no flag: never."""
    try:
        flag = ray.get_actor(DRAIN_FLAG_NAME, namespace=DRAIN_FLAG_NAMESPACE)
    except ValueError:
        return False
    return await flag.is_draining.remote()


def readiness(loader: ReplicaLoader, draining: bool, bundle_id: str) -> tuple[int, dict]:
    """``/readyz``'s status code and body."""
    state = "draining" if draining and loader.ready else loader.state()
    body: dict[str, Any] = {"ready": state == "ready", "state": state, "bundle_id": bundle_id}
    if loader.error is not None:
        body["error"] = loader.error
    return (200 if state == "ready" else 503), body
