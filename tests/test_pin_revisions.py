"""``rakuten-ray pin-revisions`` writes each hub model's current commit into a config, asking
a hub simulated on 127.0.0.1 through the real ``huggingface_hub`` client; ``train`` and
``score`` refuse hub models without a commit unless given ``--allow-unpinned``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import production_shaped_config
from simulated_hub import SimulatedHub, serve_hub
from tiny_models import TinyProductionModels

from rakuten_ray.bundle import FusionState, seal_bundle
from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, build_parser, main
from rakuten_ray.config import load_config
from rakuten_ray.revisions import unpinned

REPO_ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = REPO_ROOT / "configs/production.yaml"
CAMEMBERT = "almanach/camembert-large"
#: The hub repository of the timm weights of production's convnext_base.
CONVNEXT = "timm/convnext_base.fb_in22k_ft_in1k_384"
MAIN_COMMITS = {CAMEMBERT: "0123456789abcdef0123456789abcdef01234567", CONVNEXT: "f" * 40}
#: A commit of digits only: YAML would read it as a number unless it is quoted.
TAG_COMMIT = "1234567890" * 4
#: production.yaml's hub models that are not pinned, and the warning naming them on load.
UNPINNED_KEYS = ("text_models[camembert_large]", "image_models[convnext_base]")
UNPINNED_WARNING = "ignore::rakuten_ray.config.UnpinnedModelWarning"


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedHub]:
    """The simulated hub, as the endpoint of every ``HfApi`` made while the test runs."""
    from huggingface_hub import constants

    repositories = {
        CAMEMBERT: {"main": MAIN_COMMITS[CAMEMBERT], "v1": TAG_COMMIT},
        CONVNEXT: {"main": MAIN_COMMITS[CONVNEXT]},
    }
    with serve_hub(repositories) as simulated:
        # What HF_ENDPOINT and HF_HUB_OFFLINE set when the client is imported.
        monkeypatch.setattr(constants, "ENDPOINT", simulated.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield simulated


def _model_requests(hub: SimulatedHub) -> list[str]:
    return [path for path in hub.requests if path.startswith("/api/models/")]


def _revisions(path: Path) -> dict[str, str | None]:
    config = load_config(path, warn_unpinned=False)
    return {spec.name: getattr(spec, "revision", None) for spec in config.models()}


def test_production_is_pinned_line_by_line(
    hub: SimulatedHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two unpinned models get their default branch's commit; every other line of the
    file, comments included, stays as written; the pinned models are not even asked for."""
    source = tmp_path / "production.yaml"
    shutil.copy(PRODUCTION, source)
    out = tmp_path / "pinned.yaml"
    assert main(["pin-revisions", "--config", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(key in printed for key in UNPINNED_KEYS) and str(out) in printed
    before = _revisions(PRODUCTION)
    expected = {
        **before, "camembert_large": MAIN_COMMITS[CAMEMBERT],
        "convnext_base": MAIN_COMMITS[CONVNEXT],
    }  # fmt: skip
    assert _revisions(out) == expected
    assert unpinned(load_config(out)) == []
    old_lines, new_lines = source.read_text().splitlines(), out.read_text().splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    pinned_lines = [f"    revision: {MAIN_COMMITS[repo]}" for repo in (CAMEMBERT, CONVNEXT)]
    assert changed == [("    revision: null", line) for line in pinned_lines]
    assert source.read_text() == PRODUCTION.read_text()
    assert _model_requests(hub) == [f"/api/models/{CAMEMBERT}", f"/api/models/{CONVNEXT}"]


HANDWRITTEN = """\
# Written by hand.
name: handwritten
text_models:
  - name: camembert
    kind: hf_text
    model: almanach/camembert-large   # no revision key
    max_length: 64
  - {name: tagged, kind: hf_text, model: almanach/camembert-large, revision: v1}
  - {name: flow, kind: hf_text, model: almanach/camembert-large}
"""
HANDWRITTEN_PINNED = f"""\
# Written by hand.
name: handwritten
text_models:
  - name: camembert
    kind: hf_text
    model: almanach/camembert-large   # no revision key
    revision: {MAIN_COMMITS[CAMEMBERT]}
    max_length: 64
  - {{name: tagged, kind: hf_text, model: almanach/camembert-large, revision: "{TAG_COMMIT}"}}
  - {{name: flow, kind: hf_text, model: almanach/camembert-large, revision: \
{MAIN_COMMITS[CAMEMBERT]}}}
"""


def test_branches_and_missing_keys_are_pinned_in_place(hub: SimulatedHub, tmp_path: Path) -> None:
    """A revision that names a tag becomes that tag's commit; an entry without a revision key
    gets one, in block and flow style alike; the file is rewritten where it is."""
    path = tmp_path / "handwritten.yaml"
    path.write_text(HANDWRITTEN)
    assert main(["pin-revisions", "--config", str(path)]) == 0
    assert path.read_text() == HANDWRITTEN_PINNED
    assert f"/api/models/{CAMEMBERT}/revision/v1" in _model_requests(hub)
    assert _revisions(path)["tagged"] == TAG_COMMIT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handwritten.yaml"]


def test_a_model_the_hub_does_not_know_is_named(
    hub: SimulatedHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(HANDWRITTEN.replace("revision: v1", "revision: v9"))
    assert main(["pin-revisions", "--config", str(path)]) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert "text_models[tagged]" in err and "revision 'v9'" in err and "Revision Not Found" in err
    assert path.read_text() == HANDWRITTEN.replace("revision: v1", "revision: v9")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_names_the_model_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    path = tmp_path / "config.yaml"
    path.write_text(HANDWRITTEN)
    assert main(["pin-revisions", "--config", str(path)]) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert "text_models[camembert]" in err and CAMEMBERT in err and "where the hub" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    assert path.read_text() == HANDWRITTEN


def test_offline_pinning_fails_naming_the_model(tmp_path: Path) -> None:
    """``HF_HUB_OFFLINE=1``, as a machine without the hub runs: exit 2, the first model to pin
    named, the config untouched."""
    config = tmp_path / "production.yaml"
    shutil.copy(PRODUCTION, config)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "rakuten_ray.cli", "pin-revisions", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_SCHEMA_ERROR, done.stderr
    assert f"{UNPINNED_KEYS[0]}: cannot ask the hub" in done.stderr
    assert "offline mode is enabled" in done.stderr and CAMEMBERT in done.stderr
    assert config.read_text() == PRODUCTION.read_text()


def _train_argv(config: Path, tmp_path: Path) -> list[str]:
    return [
        "--config", str(config), "--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "run")
    ]  # fmt: skip


def _assert_refused(err: str, origin: Path) -> None:
    assert f"{origin}: hub models are not pinned to a commit" in err
    assert all(key in err for key in UNPINNED_KEYS)
    assert "xlm_roberta" not in err and "swin_base" not in err
    assert "rakuten-ray pin-revisions" in err and "--allow-unpinned" in err


@pytest.mark.filterwarnings(UNPINNED_WARNING)
def test_train_refuses_unpinned_hub_models_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before the data is read; with ``--allow-unpinned`` the same command goes on to
    the data, and stops there (there is none) instead."""
    argv = ["train", *_train_argv(PRODUCTION, tmp_path)]
    assert main(argv) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    _assert_refused(err, PRODUCTION)
    assert f"pin-revisions --config {PRODUCTION}" in err
    assert not (tmp_path / "run").exists()
    assert main([*argv, "--allow-unpinned"]) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert "no_data" in err and "not pinned" not in err


def test_a_pinned_production_config_trains(
    hub: SimulatedHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = tmp_path / "pinned.yaml"
    assert main(["pin-revisions", "--config", str(PRODUCTION), "--out", str(pinned)]) == 0
    assert main(["train", *_train_argv(pinned, tmp_path)]) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    assert "no_data" in err and "not pinned" not in err


def test_configs_without_hub_models_pass(tmp_path: Path) -> None:
    """The demo's packaged backbones need no hub, nor does production pointed at local models
    as the tests' tiny run points it."""
    assert unpinned(load_config(REPO_ROOT / "configs/demo.yaml")) == []
    local = TinyProductionModels(
        camembert=tmp_path / "camembert", xlm_roberta=tmp_path / "xlm_roberta",
        convnext=tmp_path / "convnext.safetensors", swin=tmp_path / "swin.safetensors",
    )  # fmt: skip
    assert unpinned(production_shaped_config(local)) == []


def _unpinned_bundle(root: Path) -> Path:
    """A sealed bundle whose config is production's, as trained without pins (no models:
    the refusal comes before any model loads)."""
    root.mkdir()
    shutil.copy(PRODUCTION, root / "config.yaml")
    fusion = FusionState(list(CLASS_CODES), [], [], "meta/with_image", "meta/text_only")
    (root / "fusion.json").write_text(fusion.to_json())
    seal_bundle(root, "0" * 64, {})
    return root


def _score_argv(bundle: Path, tmp_path: Path) -> list[str]:
    products = tmp_path / "x.csv"
    products.write_text(",designation,description,productid,imageid\n0,Chaise,Bois,123,456\n")
    return [
        "--bundle", str(bundle), "--input", str(products), "--images", str(tmp_path),
        "--out", str(tmp_path / "scored"), "--engine", "local",
    ]  # fmt: skip


def test_score_refuses_a_bundle_trained_from_unpinned_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _unpinned_bundle(tmp_path / "bundle")
    assert main(["score", *_score_argv(bundle, tmp_path)]) == EXIT_SCHEMA_ERROR
    err = capsys.readouterr().err
    _assert_refused(err, bundle.resolve() / "config.yaml")
    assert "retrain" in err
    assert not (tmp_path / "scored").exists()


@pytest.mark.parametrize("job", ["train", "score"])
def test_job_entrypoints_refuse_alike(job: str, tmp_path: Path) -> None:
    """``jobs/train.py`` and ``jobs/score.py`` (``ray job submit``) refuse as the commands do,
    and take ``--allow-unpinned`` as they do."""
    if job == "train":
        argv, origin = _train_argv(PRODUCTION, tmp_path), PRODUCTION
    else:
        bundle = _unpinned_bundle(tmp_path / "bundle")
        argv, origin = _score_argv(bundle, tmp_path), bundle.resolve() / "config.yaml"
    script = [sys.executable, str(REPO_ROOT / "jobs" / f"{job}.py"), *argv]
    refused = subprocess.run(script, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == EXIT_SCHEMA_ERROR, refused.stderr
    _assert_refused(refused.stderr, origin)
    assert build_parser().parse_args([job, *argv, "--allow-unpinned"]).allow_unpinned
