"""The online engine: the scoring stages for products sent with their image bytes.

A replica of the service holds one :class:`OnlineScorer`; so can a test or any Python process. Rows
go through exactly the code of batch scoring (:mod:`rakuten_ray.scoring.stages`), only the
image comes from the request instead of the image folder.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from rakuten_ray.bundle import open_bundle
from rakuten_ray.catalog import CATEGORY_NAMES, CLASS_CODES
from rakuten_ray.config import ServingParams, StagePool
from rakuten_ray.images import load_image_bytes
from rakuten_ray.layout import FINAL_PROBS, IMAGE_PROBS, INDEX_COLUMN, ROW_COLUMN
from rakuten_ray.models.registry import get_kind
from rakuten_ray.scoring.stages import FusionStage, ImagePrepStage, ImageStage, TextStage
from rakuten_ray.serving.requests import MAX_IMAGE_BYTES, Product
from rakuten_ray.text import MAX_TEXT_CHARS
from rakuten_ray.training.report import TrainingReport

#: Branches of a request that run side by side: the text stage, and the image stages.
SIDE_BY_SIDE = 2


def online_pool(pool: StagePool, serving: ServingParams) -> StagePool:
    """A batch stage's settings as a replica runs them: an equal share of its CPUs for each
    branch running side by side and, unless ``null``, the serving micro-batch in place of the
    batch engines' call shapes (token budget included).

    The share, not all of them: on 2 CPUs, one thread per branch answered one product in
    32 ms against 38 ms with two threads each, which then competed for the same cores.
    """
    share = serving.num_cpus / SIDE_BY_SIDE
    pool = pool.model_copy(update={"num_cpus": share, "num_gpus": serving.num_gpus})
    if serving.micro_batch_size is None:
        return pool
    return pool.model_copy(
        update={"micro_batch_size": serving.micro_batch_size, "tokens_per_call": None}
    )


def product_rows(products: list[Product]) -> pd.DataFrame:
    """Products as the stages take rows: positions for ``row`` and ``index``, no ids (their
    images come with the request, not from a folder)."""
    return pd.DataFrame(
        {
            ROW_COLUMN: np.arange(len(products)),
            INDEX_COLUMN: np.arange(len(products)),
            "designation": [p.designation for p in products],
            "description": [p.description for p in products],
            "productid": None,
            "imageid": None,
        }
    )


def with_image_columns(text_rows: pd.DataFrame, image_rows: pd.DataFrame) -> pd.DataFrame:
    """The text stage's rows with the image stage's status and probabilities beside them, as
    the fusion stage takes them."""
    return pd.concat([text_rows, image_rows[["image_status", *IMAGE_PROBS]]], axis=1)


class OnlineScorer:
    """Scores products with a bundle: built once (each stage hashes and loads its models),
    then called on small batches of products.

    Args:
        bundle_dir: a sealed bundle.
        overrides: ``KEY=VALUE`` settings over the bundle's config (``serving.*``).
    """

    def __init__(self, bundle_dir: str, overrides: tuple[str, ...] = ()) -> None:
        bundle = open_bundle(bundle_dir)
        config = bundle.settings(overrides)
        self.serving = config.serving
        pools = config.scoring
        self.text = TextStage(bundle_dir, online_pool(pools.text, self.serving))
        self.prep = ImagePrepStage(bundle_dir, None, online_pool(pools.image_prep, self.serving))
        self.image = ImageStage(bundle_dir, online_pool(pools.image, self.serving))
        self.fusion = FusionStage(bundle_dir, online_pool(pools.fusion, self.serving))
        self.text_thread = ThreadPoolExecutor(1)
        self.bundle_id = bundle.bundle_id
        self.info = _info(bundle, config.serving)

    def scored_rows(self, products: list[Product]) -> pd.DataFrame:
        """The fusion stage's output rows for ``products``, in order.

        The text stage runs on a thread of its own while this one decodes, crops and scores
        the images: the model runtimes release the GIL, so a product takes about the longer
        of the two stages rather than their sum. Each stage sees the rows it sees in batch
        scoring, so the answer is the same as running them one after the other.
        """
        rows = product_rows(products)
        text = self.text_thread.submit(self.text, rows)
        # Decoded on the preparation stage's threads, as batch scoring decodes files.
        loaded = list(self.prep.workers.map(load_image_bytes, [p.image for p in products]))
        images = self.image(self.prep.prepare(rows, loaded))
        return self.fusion(with_image_columns(text.result(), images))

    def predict(self, products: list[Product]) -> list[dict[str, Any]]:
        """One answer per product, in order, with the full probability vector
        (:func:`answer` shapes it for a reply)."""
        scored = self.scored_rows(products)
        probs = scored[FINAL_PROBS].to_numpy(dtype=np.float64)
        out = []
        for i, row in enumerate(scored.itertuples(index=False)):
            image_code = row.image_prdtypecode
            out.append(
                {
                    "prdtypecode": int(row.prdtypecode),
                    "confidence": float(row.confidence),
                    "text_prdtypecode": int(row.text_prdtypecode),
                    "image_prdtypecode": None if pd.isna(image_code) else int(image_code),
                    "image_status": row.image_status,
                    "decision": row.decision,
                    "review_reason": row.review_reason or None,
                    "probabilities": probs[i].tolist(),
                }
            )
        return out


def answer(scored: dict[str, Any], k: int, bundle_id: str) -> dict[str, Any]:
    """A product's reply: its code and category, the ``k`` most probable codes, the per-
    modality codes, the routing decision and the bundle that answered."""
    probs = np.asarray(scored["probabilities"])
    best = np.argsort(-probs, kind="stable")[:k]
    code = scored["prdtypecode"]
    image_code = scored["image_prdtypecode"]
    return {
        "prdtypecode": code,
        "category": CATEGORY_NAMES[code],
        "confidence": scored["confidence"],
        "top": [
            {
                "prdtypecode": CLASS_CODES[i],
                "category": CATEGORY_NAMES[CLASS_CODES[i]],
                "probability": float(probs[i]),
            }
            for i in best
        ],  # fmt: skip
        "text_prdtypecode": scored["text_prdtypecode"],
        "text_category": CATEGORY_NAMES[scored["text_prdtypecode"]],
        "image_prdtypecode": image_code,
        "image_category": CATEGORY_NAMES[image_code] if image_code is not None else None,
        "image_status": scored["image_status"],
        "decision": scored["decision"],
        "review_reason": scored["review_reason"],
        "bundle_id": bundle_id,
    }


def _info(bundle: Any, serving: ServingParams) -> dict[str, Any]:
    """What ``GET /info`` tells: the bundle, its models and scores, the classes, the limits."""
    report = TrainingReport.from_dict(bundle.manifest["metrics"])
    models = [
        {"name": e.name, "kind": e.kind, "modality": get_kind(e.kind).modality.value,
         "temperature": e.temperature, "blend_weight": e.weight}
        for e in [*bundle.fusion.text_models, *bundle.fusion.image_models]
    ]  # fmt: skip
    return {
        "bundle_id": bundle.bundle_id,
        "models": models,
        "metrics": {
            "stack_weighted_f1_internal_test": report.stack.final_internal_test.weighted_f1,
            "target_precision": report.routing.target_precision,
            "expected_coverage": report.routing.expected.coverage,
            "expected_precision": report.routing.expected.precision,
        },
        "classes": [{"prdtypecode": c, "category": CATEGORY_NAMES[c]} for c in CLASS_CODES],
        "limits": {
            "max_products": serving.max_products,
            "max_body_bytes": serving.max_body_bytes,
            "max_text_chars": MAX_TEXT_CHARS,
            "max_image_bytes": MAX_IMAGE_BYTES,
        },
    }
