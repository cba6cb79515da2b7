"""Opening photos of every kind, the reasons for unusable ones, sharpness, hashes and face crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from lookalike.data import faces
from lookalike.data.images import UnusableImage, hamming, open_image, phash, sharpness, to_rgb

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


# ---------------------------------------------------------------- unusable files, one reason each


def _corrupt_png_body() -> bytes:
    raw = bytearray(_png_bytes(_astronaut().resize((128, 128))))
    start = raw.index(b"IDAT") + 4
    raw[start + 20 : start + 2000] = bytes(1980)  # zero out the compressed stream, keep the file length
    return bytes(raw)


BROKEN = {
    "empty.jpg": (b"", "empty file"),
    "notes.jpg": (b"these are my holiday notes, not a photo\n" * 20, "not an image"),
    "cut.jpg": (_jpeg_bytes(_astronaut())[:6000], "truncated file"),
    "damaged.png": (_corrupt_png_body(), "corrupt image data"),
    "zero.webp": (b"", "empty file"),
    "tiny.png": (_png_bytes(Image.new("RGB", (10, 10), RED)), "too small (10x10 px"),
    "IMG_0001.HEIC": (b"\x00\x00\x00\x18ftypheic" + bytes(200), "HEIC photo"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_unusable_file_gets_one_line_reason(tmp_path, name):
    content, reason = BROKEN[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnusableImage) as err:
        open_image(path)
    assert err.value.reason.startswith(reason)
    assert "\n" not in str(err.value) and "(" in err.value.reason  # says what to do
    assert path.read_bytes() == content  # never touched


def test_folder_named_like_an_image_is_unusable(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(UnusableImage, match="is a folder"):
        open_image(tmp_path / "x.png")


def test_min_side_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 80), RED).save(path)
    assert open_image(path).size == (100, 80)
    with pytest.raises(UnusableImage, match=r"100x80 px; use photos at least 90 px"):
        open_image(path, min_side=90)


# ---------------------------------------------------------------- odd but valid images


def test_exif_orientation_is_applied_to_pixels(tmp_path):
    stored = Image.new("RGB", (120, 80), BLUE)
    stored.paste(RED, (0, 0, 60, 80))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    img = open_image(path)
    assert img.size == (80, 120)
    top, bottom = np.asarray(img)[10, 40], np.asarray(img)[110, 40]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (80, 80), (0, 255, 255, 0)).save(path, quality=95)  # pure red in ink
    assert Image.open(path).mode == "CMYK"
    img = open_image(path)
    r, g, b = np.asarray(img)[40, 40]
    assert img.mode == "RGB" and r > 230 and g < 30 and b < 30


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "scan.png"
    ramp = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (80, 1))
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(open_image(path))
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, -1].tolist() == [255, 255, 255]
    assert 120 <= pixels[0, 64, 0] <= 135  # mid-grey stays mid-grey (Pillow's convert would give 255)


def test_float_tiff_is_scaled(tmp_path):
    path = tmp_path / "render.tif"
    Image.fromarray(np.full((70, 70), 0.5, np.float32)).save(path)
    assert np.asarray(open_image(path))[5, 5].tolist() == [128, 128, 128]


def test_palette_png_transparency_becomes_white(tmp_path):
    path = tmp_path / "sticker.png"
    pal = Image.new("P", (80, 80), 0)
    pal.putpalette([0, 0, 0] + list(RED) + [0] * 762)
    pal.paste(1, (0, 0, 40, 80))
    pal.save(path, transparency=0)
    pixels = np.asarray(open_image(path))
    assert pixels[10, 10].tolist() == list(RED)
    assert pixels[10, 70].tolist() == [255, 255, 255]  # transparent black -> white, not black


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_composited_on_white(tmp_path, mode):
    img = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (0, 0, 40, 80))
    path = tmp_path / f"cutout-{mode}.png"
    img.convert(mode).save(path)
    pixels = np.asarray(open_image(path))
    assert pixels[10, 10].tolist() == [0, 0, 0]
    assert pixels[10, 70].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt,suffix", [("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tif"), ("BMP", "bmp")])
def test_other_formats_open(tmp_path, fmt, suffix):
    path = tmp_path / f"photo.{suffix}"
    _astronaut().resize((96, 96)).save(path, format=fmt)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (96, 96)
    assert hamming(phash(img), phash(_astronaut())) <= 8


def test_unsupported_mode_is_a_value_error():
    with pytest.raises(ValueError):
        to_rgb(Image.new("La", (4, 4)))


# ---------------------------------------------------------------- measurements


def test_sharpness_drops_with_blur():
    photo = _astronaut()
    blurred = photo.filter(ImageFilter.GaussianBlur(4))
    assert sharpness(photo) > 10 * sharpness(blurred)
    assert sharpness(Image.new("RGB", (64, 64), RED)) == 0.0


def test_phash_matches_resized_recompressed_copy_and_separates_photos():
    photo = _astronaut()
    copy = Image.open(io.BytesIO(_jpeg_bytes(photo.resize((200, 200)), quality=60))).convert("RGB")
    assert hamming(phash(photo), phash(copy)) <= 6
    others = [Image.fromarray(a) for a in (data.coffee(), data.chelsea(), data.rocket())]
    assert all(hamming(phash(photo), phash(o)) > 16 for o in others)
    assert 0 <= phash(photo) < 2**64


def test_hamming():
    assert hamming(0b1011, 0b0001) == 2 and hamming(5, 5) == 0 and hamming(0, 2**64 - 1) == 64


# ---------------------------------------------------------------- faces


def test_astronaut_face_is_found_and_centred_in_the_crop():
    photo = _astronaut()
    face = faces.largest_face(photo)
    assert face is not None and face.score > 0.7
    cx, cy = face.centre
    assert 190 < cx < 260 and 80 < cy < 160  # Eileen Collins' face in the 512x512 photo
    box = faces.face_crop(face, *photo.size)
    assert box.left <= cx <= box.left + box.side and box.top <= cy <= box.top + box.side
    assert abs(box.left + box.side / 2 - cx) < 2  # horizontally centred; vertically clamped at the top
    assert 0.35 <= face.height / box.side <= 0.45


def test_face_is_found_in_a_large_photo():
    big = _astronaut().resize((2000, 2000))
    face = faces.largest_face(big)
    assert face is not None and 740 < face.centre[0] < 1020


def test_no_face_in_coffee():
    assert faces.largest_face(Image.fromarray(data.coffee())) is None


def test_face_crop_stays_inside_the_image_and_respects_min_side():
    face = faces.Face(x=5, y=940, width=40, height=50, score=0.9)  # near the bottom-left corner
    box = faces.face_crop(face, 1000, 1000)
    assert (box.left, box.side) == (0, 125) and box.top + box.side == 1000
    assert faces.face_crop(face, 1000, 1000, min_side=512).side == 512
    assert faces.face_crop(face, 300, 1000, min_side=512).side == 300


def test_centre_crop():
    assert faces.centre_crop(600, 400) == faces.CropBox(100, 0, 400)
    assert faces.centre_crop(400, 601) == faces.CropBox(0, 100, 400)

