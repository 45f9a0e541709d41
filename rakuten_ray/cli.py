"""The ``rakuten-ray`` command line.

Schema problems in the inputs are reported before any work starts, with exit status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rakuten_ray import storage
from rakuten_ray.bundle import BundleError
from rakuten_ray.catalog import SchemaError
from rakuten_ray.config import ConfigError, load_config
from rakuten_ray.lifecycle import ResumeError
from rakuten_ray.revisions import PIN_COMMAND, HubLookupError, pin_revisions, require_pinned
from rakuten_ray.storage import StorageError, join

EXIT_SCHEMA_ERROR = 2
#: The page a report or an audit opens with: published last.
REPORT_PAGE = "index.html"
#: A training run's figures: published last.
METRICS_FILE = "metrics.json"

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from rakuten_ray.synthetic import generate_catalogue

    summary = generate_catalogue(args.out, rows=args.rows, test_rows=args.test_rows, seed=args.seed)
    print(
        f"wrote {summary.train_rows} training and {summary.test_rows} test rows to {summary.root} "
        f"in {summary.elapsed_s:.1f}s ({summary.missing_images} without image, "
        f"{summary.unreadable_images} unreadable)"
    )
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rakuten_ray.inspection import describe_catalogue

    print(describe_catalogue(Path(args.data)))
    return 0


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to mix a new run with old outputs unless asked to replace them."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SchemaError(f"{out}: output folder is not empty (use --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _cmd_train(args: argparse.Namespace) -> int:
    config = load_config(storage.fetched(args.config, "config"), args.set)
    if not args.allow_unpinned:
        remedy = (
            f"pin them with `{PIN_COMMAND} --config {args.config}`, or pass --allow-unpinned "
            f"to train from whatever the hub serves today"
        )
        require_pinned(config, str(args.config), remedy)
    # The training stack (Ray, torch) takes seconds to import: not for a refused config.
    from rakuten_ray.layout import RunLayout
    from rakuten_ray.ray_session import ensure_ray
    from rakuten_ray.training.data import load_training_data
    from rakuten_ray.training.protocol import run_training
    from rakuten_ray.training.report import format_summary, summary_rows
    from rakuten_ray.training.resume import check_resumable, training_record

    # Schema errors, and a run that cannot be resumed, surface before any folder or
    # cluster work.
    if args.resume and args.overwrite:
        raise SchemaError("--resume continues the run in --out; --overwrite replaces it")
    # An object-storage run folder is built here (kept for --resume) and published when the
    # run is done. The data is checked whole first, then an object-storage raw layout is
    # copied to this node, or a Parquet catalogue's images written to its cache.
    out = storage.work_folder(args.out, "runs", args.overwrite, keep=args.resume)
    data = load_training_data(args.data)
    if args.resume:
        check_resumable(RunLayout(out), training_record(config, data))
    else:
        _prepare_out_dir(out, args.overwrite)
    ensure_ray(args.address)
    report = run_training(config, data, out, resume=args.resume)
    print(format_summary(summary_rows(report)))
    storage.publish(out, args.out, last=(METRICS_FILE,))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from rakuten_ray.scoring.run import ROWS_PER_SHARD, run_scoring

    shard_rows = ROWS_PER_SHARD if args.rows_per_shard is None else args.rows_per_shard
    if shard_rows < 1:
        raise SchemaError(f"--rows-per-shard must be at least 1, not {shard_rows}")
    summary = run_scoring(
        args.bundle, args.input, args.images, args.out, engine=args.engine,
        overwrite=args.overwrite, resume=args.resume, overrides=tuple(args.set),
        address=args.address, rows_per_shard=shard_rows,
        allow_missing_images=args.allow_missing_images, refuse_unpinned=not args.allow_unpinned,
        previous=args.previous,
    )  # fmt: skip
    carried = f", {summary.rows_carried_over} carried over" if args.previous else ""
    print(
        f"scored {summary.rows} rows ({summary.rows_scored_now} in this run{carried}) with the "
        f"{summary.engine} engine in {summary.seconds:.1f}s "
        f"({summary.rows_per_second:.1f} rows/s); image status: {summary.image_status_counts}"
    )
    predictions, submission = join(args.out, "predictions"), join(args.out, "submission.csv")
    print(f"predictions: {predictions}  submission: {submission}")
    return 0


def _cmd_pin_revisions(args: argparse.Namespace) -> int:
    pins = pin_revisions(args.config, args.out)
    for pin in pins:
        requested = pin.requested or "default branch"
        print(f"{pin.key}: {pin.repository} ({requested}) pinned to {pin.commit}")
    target = args.config if args.out is None else args.out
    print(f"wrote {target} ({len(pins)} revisions pinned now)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rakuten_ray.evaluation import evaluate_predictions

    out = storage.work_folder(args.out, "reports", overwrite=True, keep=False)
    metrics = evaluate_predictions(
        storage.fetched(args.predictions, "scoring output"),
        storage.fetched(args.labels, "labels file"), out,
        None if args.run is None else storage.fetched(args.run, "training run"),
    )  # fmt: skip
    final = metrics["final"]
    print(
        f"weighted F1 {final['weighted_f1']:.4f}, accuracy {final['accuracy']:.4f}, "
        f"log loss {final['log_loss']:.4f}, ECE {final['ece']:.4f} on {int(final['rows'])} rows"
    )
    storage.publish(out, args.out, last=(REPORT_PAGE,))
    print(f"report: {join(args.out, REPORT_PAGE)}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from rakuten_ray.audit import run_audit

    out = storage.work_folder(args.out, "audits", args.overwrite, keep=False)
    summary = run_audit(
        storage.fetched(args.predictions, "scoring output"),
        storage.fetched(args.labels, "labels file"), out, image_dir=args.images,
        products_csv=None if args.input is None else storage.fetched(args.input, "X file"),
        page_rows=args.top, overwrite=args.overwrite,
    )  # fmt: skip
    storage.publish(out, args.out, last=(REPORT_PAGE,))
    print(
        f"audited {summary.rows} products: {summary.agreement_rate:.1%} agree with the model, "
        f"{summary.suspects} suspects, {summary.expected_errors:.0f} expected wrong codes"
    )
    suspects, page = join(args.out, "suspects.parquet"), join(args.out, REPORT_PAGE)
    print(f"suspects: {suspects}  page: {page}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from rakuten_ray.serving.app import run_service

    overrides = list(args.set)
    if args.replicas is not None:
        overrides.append(f"serving.replicas={args.replicas}")
    run_service(
        args.bundle, args.host, args.port, args.address, tuple(overrides), args.drain_seconds
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rakuten_ray.demo import run_demo

    run_demo(args.workdir, args.rows, args.test_rows, args.seed, tuple(args.set))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job step."""
    parser = argparse.ArgumentParser(
        prog="rakuten-ray", description="Multimodal product classifier for the Rakuten catalogue."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo_data = commands.add_parser("demo-data", help="write a synthetic catalogue (raw layout)")
    demo_data.add_argument("--out", required=True, type=Path, help="output folder")
    demo_data.add_argument("--rows", type=int, default=6000, help="labelled training rows")
    demo_data.add_argument("--test-rows", type=int, default=1000, help="test rows")
    demo_data.add_argument("--seed", type=int, default=0)
    demo_data.set_defaults(handler=_cmd_demo_data)

    inspect = commands.add_parser("inspect", help="check a catalogue folder and summarise it")
    inspect.add_argument("--data", required=True, type=Path, help="folder in the raw layout")
    inspect.set_defaults(handler=_cmd_inspect)

    train = commands.add_parser("train", help="run the whole training protocol")
    train.add_argument("--config", required=True, help="YAML run config")
    train.add_argument(
        "--data", required=True,
        help="labelled catalogue: a raw-layout folder, or a .parquet file or folder of them "
        "(path or URI)",
    )  # fmt: skip
    train.add_argument("--out", required=True, help="run folder (bundle goes inside)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. text_models.e5_small.train.epochs=1",
    )  # fmt: skip
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run in --out (same config and data)",
    )  # fmt: skip
    train.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    train.add_argument(
        "--allow-unpinned", action="store_true",
        help="train hub models that the config does not pin to a commit",
    )  # fmt: skip
    train.set_defaults(handler=_cmd_train)

    score = commands.add_parser("score", help="score a catalogue with a model bundle")
    # Locations stay strings: pathlib would fold the "//" of an s3:// URI.
    score.add_argument("--bundle", required=True, help="sealed model bundle (path or URI)")
    score.add_argument("--input", required=True, help="CSV/Parquet file or folder (path or URI)")
    score.add_argument(
        "--images",
        help="folder of product images (path or URI); not needed for a Parquet input with an "
        "image (bytes) or image_uri column",
    )
    score.add_argument("--out", required=True, help="output folder (path or URI)")
    score.add_argument("--engine", choices=["ray", "local"], default="ray")
    score.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    score.add_argument("--resume", action="store_true", help="finish an interrupted run")
    score.add_argument(
        "--allow-missing-images", action="store_true",
        help="score even if most rows find no image in --images (from their text)",
    )  # fmt: skip
    score.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scoring key, e.g. scoring.image.pool_size=2",
    )  # fmt: skip
    score.add_argument(
        "--previous", default=None,
        help="an earlier output folder: carry over its rows of unchanged content and bundle",
    )  # fmt: skip
    score.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    score.add_argument(
        "--allow-unpinned", action="store_true",
        help="score a bundle trained from hub models not pinned to a commit",
    )  # fmt: skip
    score.add_argument("--rows-per-shard", type=int, default=None, help=argparse.SUPPRESS)
    score.set_defaults(handler=_cmd_score)

    pin = commands.add_parser(
        "pin-revisions", help="pin each hub model of a config to its current commit"
    )
    pin.add_argument("--config", required=True, type=Path, help="YAML run config")
    pin.add_argument("--out", type=Path, help="write the pinned config here (default: in place)")
    pin.set_defaults(handler=_cmd_pin_revisions)

    evaluate = commands.add_parser("evaluate", help="metrics and a report for predictions")
    evaluate.add_argument("--predictions", required=True, help="scoring output")
    evaluate.add_argument("--labels", required=True, help="Y file with prdtypecode")
    evaluate.add_argument("--out", required=True, help="report folder")
    evaluate.add_argument("--run", help="training run, for calibration diagrams")
    evaluate.set_defaults(handler=_cmd_evaluate)

    serve = commands.add_parser("serve", help="answer one product at a time over HTTP")
    serve.add_argument("--bundle", required=True, help="sealed model bundle (path or URI)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--replicas", type=int, default=None, help="replicas of the model")
    serve.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    serve.add_argument(
        "--drain-seconds", type=float, default=5.0,
        help="on SIGTERM, seconds /readyz answers 503 before the service stops (default 5)",
    )  # fmt: skip
    serve.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a serving key, e.g. serving.micro_batch_size=null",
    )  # fmt: skip
    serve.set_defaults(handler=_cmd_serve)

    audit = commands.add_parser(
        "audit", help="find products whose current category the model disputes"
    )
    audit.add_argument("--predictions", required=True, help="scoring output")
    audit.add_argument("--labels", required=True, help="Y file of current codes")
    audit.add_argument("--out", required=True, help="audit folder")
    audit.add_argument("--images", help="image folder, for the page's thumbnails")
    audit.add_argument("--input", help="X file, for the page's product titles")
    audit.add_argument("--top", type=int, default=200, help="suspects shown on the page")
    audit.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    audit.set_defaults(handler=_cmd_audit)

    demo = commands.add_parser("demo", help="run the main job on the embedded default")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo_run"),
        help="working folder (each demo replaces what an earlier one wrote there)",
    )
    # Sized so that the whole demo trains and scores in minutes on 2 CPU cores.
    demo.add_argument("--rows", type=int, default=2000, help="labelled demo rows")
    demo.add_argument("--test-rows", type=int, default=500, help="demo rows to score")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a key of configs/demo.yaml, e.g. text_models.e5_small.train.epochs=1",
    )  # fmt: skip
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (SchemaError, ConfigError, BundleError, ResumeError, StorageError) as exc:
        print(f"rakuten-ray: input error: {exc}", file=sys.stderr)
        return EXIT_SCHEMA_ERROR
    except HubLookupError as exc:
        print(f"rakuten-ray: hub error: {exc}", file=sys.stderr)
        return EXIT_SCHEMA_ERROR


if __name__ == "__main__":
    sys.exit(main())
