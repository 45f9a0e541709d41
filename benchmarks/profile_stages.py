"""Where a scoring stage's time goes: ``cProfile`` and ``torch.profiler`` on one batch.

Each stage is built as the in-process engine builds it, called once to warm up, then
profiled on one batch of real rows (real texts, real test images): ``cProfile`` for the Python
side (text cleaning, tokenisation, TF-IDF, image decoding and transforms, the forward passes),
``torch.profiler`` for the operators inside the forward passes.

    .venv/bin/python benchmarks/profile_stages.py [--bundle B] [--batch 256] [--threads N]

Prints the breakdowns and writes ``benchmarks/results/profile_stages.json``
(``profile_stages_threads<N>.json`` with ``--threads N``).
"""

from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from common import (
    base_parser,
    ensure_bundle,
    format_table,
    load_line,
    machine,
    real_catalogue,
    write_results,
)

from rakuten_ray.bundle import open_bundle
from rakuten_ray.catalog import image_path, read_products
from rakuten_ray.images import load_image
from rakuten_ray.layout import IMAGE_PROBS
from rakuten_ray.scoring.rows import normalise_batch
from rakuten_ray.scoring.stages import (
    FusionStage,
    ImagePrepStage,
    ImageStage,
    TextStage,
    limit_threads,
)


@dataclass(frozen=True)
class Part:
    """A part of a stage's work: the profiled functions whose cumulative time it is.

    ``functions`` are ``(path suffix, function name)`` patterns. A pattern may match several
    functions (every ``forward`` of a model file): the outermost, with the largest cumulative
    time, counts. A part's time is the sum over its patterns, so list functions that never
    call each other.
    """

    label: str
    functions: tuple[tuple[str, str], ...]


# The forward passes, on either runtime (torch's module call also wraps torchvision's
# transforms, so the runtime's own call is what is matched).
_FORWARD = (("models/runtime.py", "__call__"),)
_BLEND = Part("temperature + blend", (("fusion/fitting.py", "calibrated_blend"),))
TEXT_PARTS = (
    Part("normalise rows", (("scoring/rows.py", "normalise_batch"),)),
    Part("TF-IDF + LinearSVC (its cleaning included)", (("models/tfidf_svm.py", "scores"),)),
    Part("MiniLM (cleaning, tokenising, forward)", (("models/transformer.py", "scores"),)),
    Part("  text cleaning, both models", (("rakuten_ray/text.py", "clean_text"),)),
    Part(
        "  tokenisation (tokenizer call + padding)",
        (
            ("transformers/tokenization_utils_base.py", "__call__"),
            ("transformers/tokenization_utils_base.py", "pad"),
        ),
    ),
    Part("  model forward", _FORWARD),
    _BLEND,
)
IMAGE_PREP_PARTS = (
    Part(
        "decode, resize and crop: waiting on the stage's threads",
        (("concurrent/futures/_base.py", "result_iterator"),),
    ),
)
IMAGE_PARTS = (
    Part("stack the crops", (("scoring/stages.py", "stacked"),)),
    Part("to float and normalise, per batch", (("models/vision.py", "normalise"),)),
    Part("model forward (both EfficientNets)", _FORWARD),
    _BLEND,
)
FUSION_PARTS = (Part("meta-models (predict_proba)", (("fusion/stacking.py", "predict_proba"),)),)


def cumulative(stats: pstats.Stats, part: Part) -> float:
    """Seconds spent in ``part``'s functions and everything they called."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return sum(
        max(
            (
                row[3]
                for (path, _, name), row in table.items()
                if name == wanted and path.replace("\\", "/").endswith(suffix)
            ),
            default=0.0,
        )
        for suffix, wanted in part.functions
    )


def top_functions(stats: pstats.Stats, count: int = 12) -> list[dict[str, Any]]:
    """The ``count`` functions with the largest cumulative time, outside the profiler's own."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(table.items(), key=lambda item: item[1][3], reverse=True)
    return [
        {"function": f"{Path(path).name}:{line}({name})", "calls": row[1],
         "cumulative_s": round(row[3], 4), "own_s": round(row[2], 4)}
        for (path, line, name), row in rows[:count]
    ]  # fmt: skip


def profile_call(stage: Any, batch: pd.DataFrame, parts: tuple[Part, ...]) -> dict[str, Any]:
    """Profile one call of ``stage`` on ``batch``: wall time, the parts and the top functions."""
    stage(batch)  # warm-up: lazy initialisation must not count
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(stage, batch)
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    breakdown = {part.label: round(cumulative(stats, part), 4) for part in parts}
    return {"wall_s": round(wall, 4), "parts_s": breakdown, "top": top_functions(stats)}


def torch_ops(stage: Any, batch: pd.DataFrame, count: int = 8) -> list[dict[str, Any]]:
    """The ``count`` torch operators with the most own CPU time in one call of ``stage``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stage(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "calls": e.count, "own_ms": round(e.self_cpu_time_total / 1000, 2)}
        for e in events[:count]
    ]


def per_image_costs(
    prep: ImagePrepStage, stage: ImageStage, batch: pd.DataFrame
) -> dict[str, float]:
    """CPU milliseconds per image, on this thread alone, of decoding and of one eval transform
    (resize, crop, normalise).

    CPU time of this thread, not wall time: other jobs on the machine barely change it.
    """
    paths = [
        image_path(prep.image_dir, int(imageid), int(productid))
        for imageid, productid in zip(batch["imageid"], batch["productid"], strict=True)
    ]
    started = time.thread_time()
    images = [loaded.image for loaded in map(load_image, paths) if loaded.image is not None]
    decoded = time.thread_time()
    stage.models[0].preprocess(images)
    transformed = time.thread_time()
    return {
        "decode_ms_per_image": round(1000 * (decoded - started) / len(paths), 3),
        "transform_ms_per_image": round(1000 * (transformed - decoded) / max(len(images), 1), 3),
    }


def one_batch(sample: Path, workdir: Path, rows: int) -> pd.DataFrame:
    """``rows`` real products (real texts, real test images), normalised as a run does."""
    frame = read_products(real_catalogue(sample, workdir, rows)).reset_index(names="index")
    return normalise_batch(frame.assign(row=range(len(frame))))


def print_profile(name: str, result: dict[str, Any]) -> None:
    total = result["wall_s"]
    rows = [[label, s, 100 * s / total] for label, s in result["parts_s"].items()]
    print(f"\n{name} stage, one batch: {total:.3f} s under cProfile")
    print(format_table(["part", "seconds", "% of stage"], rows))
    if "torch_ops" in result:
        ops = [[op["op"], op["calls"], op["own_ms"]] for op in result["torch_ops"]]
        print(format_table(["torch op (own CPU time)", "calls", "ms"], ops))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="rows in the profiled batch")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    bundle = str(ensure_bundle(args.bundle))
    image_dir = args.sample / "images" / "image_test"
    if args.threads:
        limit_threads(args.threads)
    batch = one_batch(args.sample, args.workdir, args.batch)
    payload: dict[str, Any] = {
        "bundle": bundle,
        "batch_rows": args.batch,
        "machine_before": machine(),
    }
    pools = open_bundle(bundle).scoring()
    text = TextStage(bundle, pools.text)
    prep = ImagePrepStage(bundle, str(image_dir), pools.image_prep)
    image = ImageStage(bundle, pools.image)
    prepared = prep(batch)
    results = {
        "text": profile_call(text, batch, TEXT_PARTS),
        "image_prep": profile_call(prep, batch, IMAGE_PREP_PARTS),
        "image": profile_call(image, prepared, IMAGE_PARTS),
    }
    results["text"]["torch_ops"] = torch_ops(text, batch)
    results["image"]["torch_ops"] = torch_ops(image, prepared)
    results["image"]["one_thread"] = per_image_costs(prep, image, batch)
    fused = pd.concat([text(batch), image(prepared)[["image_status", *IMAGE_PROBS]]], axis=1)
    results["fusion"] = profile_call(FusionStage(bundle, pools.fusion), fused, FUSION_PARTS)
    payload.update(stages=results, machine_after=machine())
    for name, result in results.items():
        print_profile(name, result)
    costs = results["image"]["one_thread"]
    print(f"\nCPU per image on one thread: decode {costs['decode_ms_per_image']:.2f} ms, "
          f"one eval transform {costs['transform_ms_per_image']:.2f} ms")  # fmt: skip
    print(load_line(payload))
    suffix = f"_threads{args.threads}" if args.threads else ""
    write_results(f"profile_stages{suffix}", payload)


if __name__ == "__main__":
    main()
