"""The sealed model bundle: tampering is refused, the real bundle carries what scoring needs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rakuten_ray.bundle import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    RECORDED_LIBRARIES,
    BundleError,
    load_bundle,
    seal_bundle,
    verify_bundle,
)
from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.cli import EXIT_SCHEMA_ERROR, main

DATA_SHA = "ab" * 32
FAKE_FILES = {
    "fusion.json": b'{"class_codes": []}',
    "config.yaml": b"name: fake\n",
    "models/text/weights.bin": bytes(range(256)) * 4,
    "models/image/weights.bin": b"\x00\x01" * 300,
}


@pytest.fixture()
def fake_bundle(tmp_path: Path) -> Path:
    """A small sealed folder with nested files."""
    root = tmp_path / "bundle"
    for rel, content in FAKE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    seal_bundle(root, DATA_SHA, {"weighted_f1": 0.5})
    return root


def _rewrite_manifest(root: Path, **changes: object) -> None:
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_seal_then_verify_round_trip(fake_bundle: Path) -> None:
    """The manifest lists every file but itself, with its size and digest."""
    manifest = verify_bundle(fake_bundle)
    assert manifest == json.loads((fake_bundle / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert sorted(manifest["files"]) == sorted(FAKE_FILES)
    for rel, content in FAKE_FILES.items():
        assert manifest["files"][rel]["size"] == len(content)
        assert len(manifest["files"][rel]["sha256"]) == 64
    assert manifest["training_data_sha256"] == DATA_SHA
    assert manifest["metrics"] == {"weighted_f1": 0.5}


def test_flipped_byte_is_refused(fake_bundle: Path) -> None:
    """Same size, one byte changed: only the digest can tell."""
    target = fake_bundle / "models/text/weights.bin"
    data = bytearray(target.read_bytes())
    data[500] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"models/text/weights\.bin.*modified"):
        verify_bundle(fake_bundle)


def test_resized_file_is_refused(fake_bundle: Path) -> None:
    """A file that grew is refused, naming it."""
    with open(fake_bundle / "config.yaml", "ab") as handle:
        handle.write(b"extra: 1\n")
    with pytest.raises(BundleError, match=r"config\.yaml.*modified"):
        verify_bundle(fake_bundle)


def test_missing_file_is_refused(fake_bundle: Path) -> None:
    """A listed file that is gone is refused, naming it."""
    (fake_bundle / "models/image/weights.bin").unlink()
    with pytest.raises(BundleError, match=r"missing: models/image/weights\.bin"):
        verify_bundle(fake_bundle)


def test_extra_file_is_refused(fake_bundle: Path) -> None:
    """A file the manifest does not list is refused, naming it."""
    (fake_bundle / "models/text/backdoor.py").write_text("print('hi')\n")
    with pytest.raises(BundleError, match=r"not listed in the manifest: models/text/backdoor\.py"):
        verify_bundle(fake_bundle)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_unknown_format_version_is_refused(fake_bundle: Path, version: object) -> None:
    """Only the format this software writes is read."""
    _rewrite_manifest(fake_bundle, format_version=version)
    with pytest.raises(BundleError, match=rf"unknown format version {version!r}"):
        verify_bundle(fake_bundle)


def test_missing_manifest_is_refused(fake_bundle: Path) -> None:
    """A folder without a manifest is not a bundle."""
    (fake_bundle / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match=r"not a model bundle \(no manifest\.json\)"):
        verify_bundle(fake_bundle)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", json.dumps({"files": {}}), json.dumps({"format_version": FORMAT_VERSION})],
    ids=["invalid-json", "a-list", "no-version", "no-files"],
)
def test_corrupt_manifest_is_refused(fake_bundle: Path, content: str) -> None:
    """A manifest that is not JSON, or lacks its keys, is refused naming the manifest."""
    (fake_bundle / MANIFEST_FILE).write_text(content)
    with pytest.raises(BundleError, match=r"manifest\.json: unreadable manifest"):
        verify_bundle(fake_bundle)


def test_manifest_cannot_point_outside(fake_bundle: Path, tmp_path: Path) -> None:
    """A listed path that escapes the bundle is reported missing, never read."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    manifest = json.loads((fake_bundle / MANIFEST_FILE).read_text())
    manifest["files"]["../outside.bin"] = {"sha256": "0" * 64, "size": 6}
    (fake_bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"missing: \.\./outside\.bin"):
        verify_bundle(fake_bundle)


def test_symlinked_file_is_refused(fake_bundle: Path, tmp_path: Path) -> None:
    """A listed file replaced by a link to identical content elsewhere is still refused."""
    target = fake_bundle / "config.yaml"
    copy = tmp_path / "config_copy.yaml"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(copy, target)
    with pytest.raises(BundleError, match=r"config\.yaml: symbolic links are not allowed"):
        verify_bundle(fake_bundle)


def test_added_symlinks_are_refused(fake_bundle: Path, tmp_path: Path) -> None:
    """A link to a file or to a folder added after sealing is refused, naming it."""
    os.symlink(fake_bundle / "config.yaml", fake_bundle / "alias.yaml")
    with pytest.raises(BundleError, match=r"alias\.yaml"):
        verify_bundle(fake_bundle)
    (fake_bundle / "alias.yaml").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w.bin").write_bytes(b"x")
    os.symlink(elsewhere, fake_bundle / "models/linked", target_is_directory=True)
    with pytest.raises(BundleError, match=r"models/linked"):
        verify_bundle(fake_bundle)


def test_symlinked_manifest_is_refused(fake_bundle: Path, tmp_path: Path) -> None:
    """The manifest itself must live in the bundle."""
    moved = tmp_path / "manifest_elsewhere.json"
    (fake_bundle / MANIFEST_FILE).rename(moved)
    os.symlink(moved, fake_bundle / MANIFEST_FILE)
    with pytest.raises(BundleError, match=r"manifest\.json.*symbolic link"):
        verify_bundle(fake_bundle)


def test_seal_refuses_symlinks(tmp_path: Path) -> None:
    """A bundle holding a link cannot be sealed."""
    root = tmp_path / "bundle"
    root.mkdir()
    (tmp_path / "real.bin").write_bytes(b"abc")
    os.symlink(tmp_path / "real.bin", root / "link.bin")
    with pytest.raises(BundleError, match=r"link\.bin: symbolic links are not allowed"):
        seal_bundle(root, DATA_SHA, {})
    assert not (root / MANIFEST_FILE).exists()


def _write_input(path: Path) -> Path:
    path.write_text(
        ",designation,description,productid,imageid\n0,Chaise en bois,Une chaise,123,456\n"
    )
    return path


def test_score_refuses_tampered_bundle_before_writing(
    fake_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rakuten-ray score`` exits 2 naming the modified file, and creates no output."""
    with open(fake_bundle / "fusion.json", "ab") as handle:
        handle.write(b" ")
    out = tmp_path / "scored"
    argv = [
        "score", "--bundle", str(fake_bundle), "--input", str(_write_input(tmp_path / "x.csv")),
        "--images", str(tmp_path), "--out", str(out), "--engine", "local",
    ]  # fmt: skip
    assert main(argv) == EXIT_SCHEMA_ERROR
    assert "fusion.json" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_real_bundle_loads_with_sane_fusion_state(tiny_run: Path) -> None:
    """The trained bundle verifies; its fusion parameters are usable as they stand."""
    bundle = load_bundle(tiny_run / "bundle")
    fusion = bundle.fusion
    assert fusion.class_codes == list(CLASS_CODES) and len(fusion.class_codes) == 27
    for models in (fusion.text_models, fusion.image_models):
        assert models
        assert all(m.temperature > 0 for m in models)
        assert all(m.weight >= 0 for m in models)
        assert sum(m.weight for m in models) == pytest.approx(1.0, abs=1e-9)
        assert all(bundle.path(m.folder).is_dir() for m in models)
    assert bundle.path(fusion.meta_text_only).is_file()
    assert bundle.path(fusion.meta_with_image).is_file()


@pytest.mark.slow
def test_real_manifest_records_provenance(tiny_run: Path) -> None:
    """Library versions, the training data's digest and the metrics are in the manifest."""
    manifest = verify_bundle(tiny_run / "bundle")
    libraries = manifest["libraries"]
    assert set(RECORDED_LIBRARIES) | {"python"} <= set(libraries)
    for name in ("torch", "scikit-learn", "skops", "numpy", "ray", "python"):
        assert libraries[name] not in ("", "absent")
    digest = manifest["training_data_sha256"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert isinstance(manifest["metrics"], dict) and manifest["metrics"]
    root = tiny_run / "bundle"
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {MANIFEST_FILE}
    assert {"fusion.json", "config.yaml"} <= on_disk


@pytest.mark.slow
def test_real_bundle_refused_after_byte_flip(tiny_run: Path, tmp_path: Path) -> None:
    """A copy of the real bundle with one flipped byte in a meta-model does not load."""
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", copy)
    target = copy / load_bundle(copy).fusion.meta_text_only
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=target.name):
        load_bundle(copy)
