"""Safe image loading, shared by training and scoring.

One bad file must never stop a job: :func:`load_image` turns every failure into a status
instead of an exception, and always hands back a fully decoded 8-bit RGB image when it can.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from rakuten_ray.layout import ImageStatus
from rakuten_ray.storage import Location, is_remote, read_bytes

#: Largest image decoded, in pixels. Catalogue photos are at most a few megapixels; a file
#: whose header claims more is a decompression bomb (a tiny file that would expand into
#: gigabytes of memory), so it is refused from its header before any pixel is decoded.
MAX_PIXELS = 40_000_000

#: Background that transparent pixels are composited on; product photos are shot on white.
_BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class LoadedImage:
    """An image and how loading it went; ``image`` is ``None`` unless ``status`` is ``ok``."""

    image: Image.Image | None
    status: ImageStatus


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float image to 8-bit gray.

    Pillow's own conversion clips these modes at 255, which turns most 16-bit photos white.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    if image.mode in _SIXTEEN_BIT_MODES or (low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:
        # No known full scale: stretch the observed range so the content stays visible.
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on white."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _high_depth_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate as the EXIF orientation tag says; a malformed tag leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _decode(source: Path | BinaryIO, max_pixels: int) -> LoadedImage:
    with Image.open(source) as image:
        # The header is parsed but no pixel decoded yet: refuse bombs before they expand.
        if image.width * image.height > max_pixels:
            return LoadedImage(None, ImageStatus.TOO_LARGE)
        # Decodes the first frame only, so animated GIF and WebP files give their first frame.
        image.load()
        return LoadedImage(_to_rgb(_apply_orientation(image)), ImageStatus.OK)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Load one image as a decoded RGB picture, never raising for a bad file.

    Args:
        path: image file; a symbolic link is followed.
        max_pixels: largest ``width * height`` accepted, checked from the header. Pillow's own
            limit (``Image.MAX_IMAGE_PIXELS``) still applies on top and also gives ``too_large``.

    Returns:
        ``ok`` with an RGB image whose file is closed and whose EXIF orientation is applied;
        ``missing`` when nothing is at ``path`` (a dangling link included); ``too_large`` when
        the header claims more than ``max_pixels``; ``unreadable`` for anything else: a folder,
        an empty, truncated or corrupt file, or a format Pillow cannot decode.
    """
    path = Path(path)
    if not path.exists():
        return LoadedImage(None, ImageStatus.MISSING)
    if not path.is_file():
        return LoadedImage(None, ImageStatus.UNREADABLE)
    return _safely_decoded(path, max_pixels)


def load_image_at(location: Location, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """:func:`load_image` for a local path or an object-storage URI (read whole, then
    decoded like an upload); an object that is not there is ``missing``."""
    if not is_remote(location):
        return load_image(location, max_pixels)
    return load_image_bytes(read_bytes(location), max_pixels)


def load_image_bytes(data: bytes | None, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """:func:`load_image` for an image's bytes (an upload): ``missing`` for ``None``,
    ``unreadable`` for empty or corrupt bytes, ``too_large`` for a bomb."""
    if data is None:
        return LoadedImage(None, ImageStatus.MISSING)
    return _safely_decoded(io.BytesIO(data), max_pixels)


def _safely_decoded(source: Path | BinaryIO, max_pixels: int) -> LoadedImage:
    try:
        # Pillow warns about large images from inside open() and, for some formats, load();
        # the size is judged here instead, so the warning is silenced for this call only.
        # catch_warnings is process-wide before Python 3.14: concurrent threads can at worst
        # see the warning silenced or let one through, never get an exception from it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode(source, max_pixels)
    except Image.DecompressionBombError:
        return LoadedImage(None, ImageStatus.TOO_LARGE)
    except FileNotFoundError:
        # Deleted between the existence check and the open.
        return LoadedImage(None, ImageStatus.MISSING)
    except Exception:
        # Decoders for corrupt data raise OSError, ValueError, SyntaxError, struct.error,
        # EOFError, MemoryError and more; none of them may stop a whole job.
        return LoadedImage(None, ImageStatus.UNREADABLE)
