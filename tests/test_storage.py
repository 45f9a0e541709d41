"""Scoring where catalogues live: inputs, images, bundle and output in object storage (a real
S3-protocol server on loopback, :mod:`object_store`), reached through the standard ``AWS_*``
variables. Both engines give the same bytes as from local files; unusable locations are
refused before any work, naming the URI."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_same_predictions, read_predictions
from object_store import ObjectStore

from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main
from rakuten_ray.synthetic import Y_TEST_FILE

#: Rows scored in each run: enough for every image status, few enough to be quick.
ROWS = 24


@pytest.fixture(scope="module")
def catalogue_in_store(
    object_store: ObjectStore, tiny_run: Path, tiny_catalogue: Path, tmp_path_factory
) -> dict[str, str]:
    """The bundle, an input of :data:`ROWS` test rows and the test images, in a bucket."""
    bucket = object_store.bucket("catalogue")
    source = tmp_path_factory.mktemp("input") / "X_part.csv"
    pd.read_csv(tiny_catalogue / "X_test_update.csv", index_col=0).head(ROWS).to_csv(source)
    return {
        "bundle": object_store.upload(tiny_run / "bundle", f"{bucket}/runs/r1/bundle"),
        "input": object_store.upload(source, f"{bucket}/input/X_part.csv"),
        "images": object_store.upload(
            tiny_catalogue / "images" / "image_test", f"{bucket}/images/image_test"
        ),
        "local_input": str(source),
    }


def _score(bundle: str, source: str, images: str, out: str, engine: str) -> int:
    return main([
        "score", "--bundle", bundle, "--input", source, "--images", images, "--out", out,
        "--engine", engine,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def scored_locally(
    catalogue_in_store: dict[str, str], tiny_run: Path, tiny_catalogue: Path, tmp_path_factory
) -> Path:
    """The same rows scored from local files with the local engine: the reference output."""
    out = tmp_path_factory.mktemp("reference") / "out"
    images = tiny_catalogue / "images" / "image_test"
    bundle = str(tiny_run / "bundle")
    assert _score(bundle, catalogue_in_store["local_input"], str(images), str(out), "local") == 0
    return out


@pytest.mark.slow
def test_both_engines_score_from_and_to_object_storage(
    catalogue_in_store: dict[str, str], scored_locally: Path, object_store: ObjectStore,
    ray_local, tiny_run: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """Every input from the store, the output published there: the same bytes as the same
    rows scored from local files, and the bundle copied once into the node's cache (which
    other tests' bundles may share)."""
    store = catalogue_in_store
    for engine in ("local", "ray"):
        out = f"s3://catalogue/scores/{engine}"
        assert _score(store["bundle"], store["input"], store["images"], out, engine) == 0
        keys = object_store.keys(out)
        assert {"submission.csv", "summary.json", "run.json"} <= set(keys)
        assert not any(key.startswith("staging") for key in keys)
        assert_same_predictions(scored_locally, object_store.download(out, tmp_path / engine))
    from rakuten_ray.layout import BundleLayout
    from rakuten_ray.storage import cache_dir

    manifest = (tiny_run / "bundle" / BundleLayout.MANIFEST).read_bytes()
    copies = [
        p for p in cache_dir("bundles").iterdir()
        if not p.name.startswith(".") and (p / BundleLayout.MANIFEST).read_bytes() == manifest
    ]  # fmt: skip
    assert len(copies) == 1


@pytest.mark.slow
def test_images_carried_by_parquet_rows_score_as_from_the_folder(
    catalogue_in_store: dict[str, str], scored_locally: Path, tiny_catalogue: Path,
    tiny_run: Path, ray_local, tmp_path: Path,
) -> None:  # fmt: skip
    """A Parquet input with each row's image as a URI (local engine) or as bytes (Ray
    engine), without --images: the same output as from the folder; a null gives ``missing``
    and corrupt bytes ``unreadable``, as a missing or corrupt file does."""
    from rakuten_ray.catalog import image_filename

    rows = pd.read_csv(catalogue_in_store["local_input"], index_col=0)
    rows.index.name = "index"
    names = [image_filename(i, p) for i, p in zip(rows["imageid"], rows["productid"], strict=True)]
    folder = tiny_catalogue / "images" / "image_test"
    images = [(folder / n).read_bytes() if (folder / n).is_file() else None for n in names]
    # The first two rows lose their image: no bytes, then bytes that are no image.
    images[:2] = [None, b"not an image"]
    carried = {
        "image_uri": [f"{catalogue_in_store['images']}/{n}" for n in names],
        "image": images,
    }
    expected = read_predictions(scored_locally)
    bundle = str(tiny_run / "bundle")
    for (column, values), engine in zip(carried.items(), ("local", "ray"), strict=True):
        source = tmp_path / f"{column}.parquet"
        rows.assign(**{column: values}).reset_index().to_parquet(source)
        out = tmp_path / f"out-{column}"
        assert main(["score", "--bundle", bundle, "--input", str(source), "--out", str(out),
                     "--engine", engine]) == 0  # fmt: skip
        scored = read_predictions(out)
        changed = 2 if column == "image" else 0
        if changed:
            assert scored["image_status"].tolist()[:2] == ["missing", "unreadable"]
            assert scored["image_prdtypecode"][:2].isna().all()
        pd.testing.assert_frame_equal(
            scored.iloc[changed:], expected.iloc[changed:], check_exact=True, check_dtype=False
        )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unusable_locations_refused_before_any_work(
    object_store: ObjectStore, tiny_catalogue: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A missing bucket or key, missing credentials and an unreachable endpoint: exit 2,
    naming the URI, with nothing written. Every refusal comes before the bundle is read, so
    the bundle named here is never uploaded."""
    import moto.settings

    bucket = object_store.bucket("refusals")
    source = tiny_catalogue / "X_test_update.csv"
    store = {
        "bundle": f"{bucket}/bundle",
        "input": object_store.upload(source, f"{bucket}/X_test_update.csv"),
        "images": object_store.upload(tiny_catalogue / "images" / "image_test", f"{bucket}/images"),
    }
    out = tmp_path / "out"

    def refused(bundle: str, source: str, images: str, target: str) -> str:
        capsys.readouterr()
        assert _score(bundle, source, images, target, "local") == EXIT_SCHEMA_ERROR
        assert not out.exists()
        return capsys.readouterr().err

    missing_key = f"{bucket}/input/absent.csv"
    assert missing_key in refused(store["bundle"], missing_key, store["images"], str(out))
    missing_bucket = "s3://no-such-bucket/X.csv"
    assert missing_bucket in refused(store["bundle"], missing_bucket, store["images"], str(out))
    error = refused(store["bundle"], store["input"], store["images"], "s3://no-such-bucket/out")
    assert "s3://no-such-bucket: bucket does not exist" in error

    with monkeypatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.delenv(name)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        env.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        # The server now answers only signed requests, as a real store does.
        env.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        error = refused(store["bundle"], store["input"], store["images"], str(out))
        assert f"{store['input']}: refused, and no S3 credentials are configured" in error

    with monkeypatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
        error = refused(store["bundle"], store["input"], store["images"], str(out))
        assert f"{store['input']}: storage endpoint unreachable" in error


@pytest.mark.slow
def test_rescoring_evaluation_and_audit_read_and_write_object_storage(
    catalogue_in_store: dict[str, str], scored_locally: Path, object_store: ObjectStore,
    tiny_catalogue: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """A daily rescoring names yesterday's output in the store with ``--previous`` and carries
    every unchanged row over (the same bytes as a full rescore); ``evaluate`` and ``audit``
    read that output, the labels and the images from the store and publish their pages."""
    store = catalogue_in_store
    yesterday, today = "s3://catalogue/daily/1", "s3://catalogue/daily/2"
    assert _score(store["bundle"], store["input"], store["images"], yesterday, "local") == 0
    argv = ["score", "--bundle", store["bundle"], "--input", store["input"], "--images",
            store["images"], "--out", today, "--engine", "local",
            "--previous", yesterday]  # fmt: skip
    assert main(argv) == 0
    rescored = object_store.download(today, tmp_path / "today")
    summary = json.loads((rescored / "summary.json").read_text())
    assert (summary["rows_carried_over"], summary["rows_scored_now"]) == (ROWS, 0)
    assert_same_predictions(scored_locally, rescored)

    index = pd.read_csv(store["local_input"], index_col=0).index
    labels = pd.read_csv(tiny_catalogue / Y_TEST_FILE, index_col=0).loc[index]
    labels.to_csv(tmp_path / "labels.csv")
    remote_labels = object_store.upload(tmp_path / "labels.csv", "s3://catalogue/labels.csv")
    report, audit = "s3://catalogue/report", "s3://catalogue/audit"
    argv = ["evaluate", "--predictions", today, "--labels", remote_labels, "--out", report]
    assert main(argv) == 0
    assert "index.html" in object_store.keys(report)
    argv = ["audit", "--predictions", today, "--labels", remote_labels, "--out", audit,
            "--images", store["images"], "--input", store["input"]]  # fmt: skip
    assert main(argv) == 0
    keys = object_store.keys(audit)
    assert {"index.html", "suspects.parquet"} <= set(keys)
    assert any(key.startswith("thumbs/") for key in keys)  # images read from the store
