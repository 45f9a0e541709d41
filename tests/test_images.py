"""Tests for rakuten_ray.images: every kind of file a catalogue folder can hold."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import png_header_only
from PIL import Image, ImageFile

from rakuten_ray.images import MAX_PIXELS, LoadedImage, load_image
from rakuten_ray.layout import ImageStatus

# Any warning (PIL's DecompressionBombWarning above all) fails the test.
pytestmark = pytest.mark.filterwarnings("error")

RED = (220, 20, 20)


def pixel(loaded: LoadedImage, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    assert loaded.image is not None
    return loaded.image.getpixel(xy)


def assert_ok(loaded: LoadedImage, size: tuple[int, int]) -> Image.Image:
    assert loaded.status == ImageStatus.OK == "ok"
    assert loaded.image is not None
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == size
    return loaded.image


def assert_ok_loaded(path: Path, size: tuple[int, int], **kwargs: int) -> LoadedImage:
    loaded = load_image(path, **kwargs)
    assert_ok(loaded, size)
    return loaded


def opened(path: Path) -> tuple[str, int]:
    """Mode and frame count of the file as stored."""
    with Image.open(path) as image:
        return image.mode, getattr(image, "n_frames", 1)


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), actual


def assert_failed(loaded: LoadedImage, status: ImageStatus) -> None:
    assert loaded.status == status
    assert loaded.image is None


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "image_1_product_2.jpg"
    Image.new("RGB", (32, 24), RED).save(path, quality=95)
    return path


@pytest.fixture
def noisy_jpeg(tmp_path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "noise.jpg"
    Image.fromarray(noise).save(path, quality=90)
    return path


def test_ok_jpeg(jpeg: Path) -> None:
    image = assert_ok(load_image(jpeg), (32, 24))
    assert_close(image.getpixel((5, 5)), RED)


def test_accepts_str_path_and_returns_loaded_detached_image(jpeg: Path) -> None:
    loaded = load_image(str(jpeg))
    assert_ok(loaded, (32, 24))
    jpeg.unlink()  # the pixels must not depend on the file any more
    assert loaded.image is not None
    assert loaded.image.tobytes()[:3] == bytes(pixel(loaded))


def test_missing_file(tmp_path: Path) -> None:
    assert_failed(load_image(tmp_path / "absent.jpg"), ImageStatus.MISSING)


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_failed(load_image(path), ImageStatus.UNREADABLE)


def test_truncated_jpeg(noisy_jpeg: Path) -> None:
    data = noisy_jpeg.read_bytes()
    noisy_jpeg.write_bytes(data[: len(data) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    assert_failed(load_image(noisy_jpeg), ImageStatus.UNREADABLE)


def test_corrupt_png_data(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.png"
    path.write_bytes(png_header_only(10, 10).replace(zlib.compress(b""), b"not zlib at all"))
    assert_failed(load_image(path), ImageStatus.UNREADABLE)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("ceci n'est pas une image\n")
    assert_failed(load_image(path), ImageStatus.UNREADABLE)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert_failed(load_image(folder), ImageStatus.UNREADABLE)


def test_symlinks(tmp_path: Path, jpeg: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("pas une image")
    to_text, to_jpeg, dangling = (tmp_path / name for name in ("t.jpg", "j.jpg", "d.jpg"))
    to_text.symlink_to(text)
    to_jpeg.symlink_to(jpeg)
    dangling.symlink_to(tmp_path / "gone.jpg")
    assert_failed(load_image(to_text), ImageStatus.UNREADABLE)
    assert_ok(load_image(to_jpeg), (32, 24))
    assert_failed(load_image(dangling), ImageStatus.MISSING)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    assert opened(path) == ("CMYK", 1)
    assert_close(pixel(assert_ok_loaded(path, (16, 16))), (255, 0, 0))


def test_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (8, 4), 77).save(path)
    assert pixel(assert_ok_loaded(path, (8, 4))) == (77, 77, 77)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    image.putpixel((1, 0), 1)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    loaded = assert_ok_loaded(path, (2, 1))
    assert pixel(loaded, (0, 0)) == (255, 255, 255)
    assert pixel(loaded, (1, 0)) == RED


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque", "half"),
    [
        ("RGBA", (0, 0, 0, 0), (*RED, 255), (0, 0, 0, 128)),
        ("LA", (0, 0), (90, 255), (0, 128)),
    ],
)
def test_alpha_is_composited_on_white(
    tmp_path: Path, mode: str, transparent: tuple, opaque: tuple, half: tuple
) -> None:
    image = Image.new(mode, (3, 1))
    for x, value in enumerate((transparent, opaque, half)):
        image.putpixel((x, 0), value)
    path = tmp_path / f"{mode}.png"
    image.save(path)
    loaded = assert_ok_loaded(path, (3, 1))
    assert pixel(loaded, (0, 0)) == (255, 255, 255)
    expected_opaque = RED if mode == "RGBA" else (90, 90, 90)
    assert pixel(loaded, (1, 0)) == expected_opaque
    assert_close(pixel(loaded, (2, 0)), (127, 127, 127), tolerance=2)


def test_sixteen_bit_png_keeps_its_gradient(tmp_path: Path) -> None:
    levels = np.arange(256, dtype=np.uint16)
    gradient = np.tile(levels * 257, (4, 1))
    path = tmp_path / "sixteen.png"
    Image.fromarray(gradient).save(path)
    assert opened(path) == ("I;16", 1)
    out = np.asarray(assert_ok_loaded(path, (256, 4)).image)
    assert not (out == 255).all()
    np.testing.assert_array_equal(out[0, :, 0], levels)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 32768, 65535]], dtype=np.int32), [0, 128, 255]),  # 16-bit data as I
        (np.array([[0, 100, 255]], dtype=np.int32), [0, 100, 255]),
        (np.array([[-10, 0, 10]], dtype=np.int32), [0, 128, 255]),  # no known scale: stretch
        (np.array([[0.0, 0.5, 200.0]], dtype=np.float32), [0, 0, 200]),
        (np.array([[5.0, 5.0, 5.0]], dtype=np.float32), [5, 5, 5]),
        (np.array([[-1.0, -1.0, -1.0]], dtype=np.float32), [0, 0, 0]),
    ],
)
def test_high_depth_tiff(tmp_path: Path, values: np.ndarray, expected: list[int]) -> None:
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    out = np.asarray(assert_ok_loaded(path, (3, 1)).image)
    np.testing.assert_array_equal(out[0, :, 1], expected)


def test_bilevel(tmp_path: Path) -> None:
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    path = tmp_path / "bilevel.png"
    image.save(path)
    loaded = assert_ok_loaded(path, (2, 1))
    assert (pixel(loaded, (0, 0)), pixel(loaded, (1, 0))) == ((0, 0, 0), (255, 255, 255))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp", ".gif"])
def test_one_pixel_in_each_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"dot{suffix}"
    Image.new("RGB", (1, 1), RED).save(path)
    assert_close(pixel(assert_ok_loaded(path, (1, 1))), RED, tolerance=20)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animation_gives_first_frame(tmp_path: Path, suffix: str) -> None:
    colours = [RED, (20, 200, 20), (20, 20, 200)]
    frames = [Image.new("RGB", (8, 8), colour) for colour in colours]
    path = tmp_path / f"animated{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert opened(path)[1] == 3
    assert_close(pixel(assert_ok_loaded(path, (8, 8)), (4, 4)), RED, tolerance=20)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), RED)
    image.paste((20, 20, 200), (0, 0, 10, 20))  # blue band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = assert_ok_loaded(path, (20, 40))
    assert_close(pixel(loaded, (10, 2)), (20, 20, 200), tolerance=20)  # left edge is now on top
    assert_close(pixel(loaded, (10, 37)), RED, tolerance=20)


def test_small_max_pixels_refuses_from_header(jpeg: Path) -> None:
    assert_failed(load_image(jpeg, max_pixels=32 * 24 - 1), ImageStatus.TOO_LARGE)
    assert_ok(load_image(jpeg, max_pixels=32 * 24), (32, 24))


@pytest.mark.parametrize(
    "side",
    [
        8_000,  # 64 Mpx: over MAX_PIXELS, under Pillow's warning limit
        10_000,  # 100 Mpx: Pillow warns while opening
        20_000,  # 400 Mpx: Pillow raises DecompressionBombError while opening
    ],
)
def test_decompression_bomb(tmp_path: Path, side: int) -> None:
    assert side * side > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_image(path)
    assert caught == []
    assert_failed(loaded, ImageStatus.TOO_LARGE)
    assert limit_before == Image.MAX_IMAGE_PIXELS
