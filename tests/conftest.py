"""Shared fixtures: the real Rakuten sample (when present), a local Ray instance, the tiny
catalogue, its tiny production models and the bundle trained from them. Plain helpers live
in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import production_shaped_config, sample_dir
from object_store import ObjectStore, running_object_store
from tiny_models import TinyProductionModels


@pytest.fixture(scope="session")
def rakuten_sample() -> Path:
    """Path of the real sample; the test is skipped when it is absent."""
    found = sample_dir()
    if found is None:
        pytest.skip("real Rakuten sample not found (set RAKUTEN_SAMPLE_DIR)")
    return found


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """A real S3-protocol server on loopback, reached through the standard ``AWS_*``
    variables; remote bundles are cached in a folder of the session."""
    with running_object_store(tmp_path_factory.mktemp("cache")) as store:
        yield store


@pytest.fixture(scope="session")
def ray_local(object_store: ObjectStore):
    """A local Ray instance for the whole session (2 CPUs, as on the CI machine).

    Started after the object store, so that its workers inherit the variables that reach it.

    Always a new instance (``address="local"``): never a cluster that ``ray start`` or a
    ``RAY_ADDRESS`` left on the machine, whose CPUs the session does not control.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic catalogue: 400 labelled rows and 60 test rows, with their images."""
    from rakuten_ray.synthetic import generate_catalogue

    root = tmp_path_factory.mktemp("tiny_catalogue")
    generate_catalogue(root, rows=400, test_rows=60, seed=3, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_production_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_catalogue: Path
) -> TinyProductionModels:
    """Tiny CamemBERT, XLM-R, ConvNeXt and Swin, their tokenizers trained on the catalogue."""
    from rakuten_ray.catalog import CatalogueDir

    rows = CatalogueDir(tiny_catalogue).labelled()
    texts = [*rows["designation"], *rows["description"]]
    return TinyProductionModels.build(tmp_path_factory.mktemp("tiny_models"), texts)


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_catalogue: Path,
    tiny_production_models: TinyProductionModels,
    ray_local,
) -> Path:
    """The whole training protocol of the production-shaped config on the tiny catalogue:
    five base models (two of them on 2 Ray Train workers), fusion, refit, the bundle.
    Every scoring, fault and hostile-input test scores with this one bundle."""
    from rakuten_ray.training.protocol import run_training

    root = tmp_path_factory.mktemp("tiny_run")
    config = production_shaped_config(tiny_production_models)
    run_training(config, tiny_catalogue, root / "run", log=lambda _: None)
    return root / "run"
