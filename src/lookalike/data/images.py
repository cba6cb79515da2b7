"""Open one photo as a clean RGB image, or say in one line why it cannot be used.

Also the two measurements prepare needs per photo: sharpness (variance of the Laplacian) and a
64-bit perceptual hash (DCT pHash) with its Hamming distance.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.errors import LookalikeError

MIN_SIDE = 64  # below this a photo carries too little of the subject to learn from

# Formats phones produce that this Pillow cannot decode, with what to do about them.
_UNREADABLE_HINTS = {
    ".heic": "HEIC photo, which Pillow cannot read (export it as JPEG from your photo app)",
    ".heif": "HEIF photo, which Pillow cannot read (export it as JPEG from your photo app)",
    ".avif": "AVIF photo, which this Pillow cannot read (export it as JPEG or PNG)",
}
_WHITE = (255, 255, 255)


class UnusableImage(LookalikeError):
    """A file that cannot be used as a photo; ``reason`` is one line saying why and what to do."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


def open_image(path: Path | str, min_side: int = MIN_SIDE) -> Image.Image:
    """The photo at ``path`` as an upright RGB image; raises UnusableImage with the reason."""
    path = Path(path)
    _check_is_file(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated or corrupt data fails here and not later
            upright = ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        reason = _UNREADABLE_HINTS.get(path.suffix.lower(), "not an image (convert it to JPEG or PNG)")
        raise UnusableImage(path, reason) from None
    except Image.DecompressionBombError:
        raise UnusableImage(path, "too many pixels to open safely (resize it below 90 megapixels)") from None
    except (OSError, SyntaxError, ValueError, zlib.error) as err:
        raise UnusableImage(path, _decode_failure(err)) from None
    width, height = upright.size
    if min(width, height) < min_side:
        raise UnusableImage(path, f"too small ({width}x{height} px; use photos at least {min_side} px on each side)")
    try:
        return to_rgb(upright)
    except ValueError as err:
        raise UnusableImage(path, f"unsupported pixel format {upright.mode} ({err}; re-save it as JPEG or PNG)") from None


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise UnusableImage(path, "is a folder, not a photo (photos in sub-folders are not read)")
    if not path.is_file():
        raise UnusableImage(path, "not a regular file")
    if path.stat().st_size == 0:
        raise UnusableImage(path, "empty file, 0 bytes (copy the photo again)")


def _decode_failure(err: Exception) -> str:
    if "truncated" in str(err).lower():
        return "truncated file (re-export it from your photo app)"
    return "corrupt image data (re-export it from your photo app)"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("LA", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Integer (16/32-bit) or float greyscale to 0-255: Pillow's own convert clips instead of scaling."""
    values = pixels.astype(np.float64)
    if pixels.dtype.kind == "f":
        peak = 1.0 if np.nanmax(values, initial=0.0) <= 1.0 else 255.0
    else:
        peak = 255.0 if values.max(initial=0) <= 255 else 65535.0
    return np.clip(np.nan_to_num(values / peak) * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- measurements


def sharpness(img: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image (0-255 scale); low means blurred."""
    grey = np.asarray(img.convert("L"), dtype=np.float64)
    laplacian = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    )
    return float(laplacian.var())


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    basis = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


_DCT32 = _dct_matrix(32)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash: signs of the 8x8 lowest DCT frequencies of a 32x32 grey thumbnail.

    Robust to resizing, re-encoding and small colour changes; distinct photos differ in ~32 bits.
    """
    thumb = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ thumb @ _DCT32.T)[:8, :8].ravel()
    # The DC term is the mean brightness; leave it out of the median so the bits describe structure.
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()
