"""Styles as strong, deterministic global transforms of a rendered scene (uint8 HxWx3 in and out).

Each style changes the whole picture in a way a tiny model sees at a glance: a pencil drawing is
grey lines on paper, neon is bright lines on black, pixel art is 4-pixel blocks of few colours.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def _edges(img: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the luminance, 0..1."""
    lum = img.astype(np.float32).mean(axis=2) / 255.0
    gy, gx = np.gradient(lum)
    return np.clip(np.hypot(gx, gy) * 4.0, 0.0, 1.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def photo(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w] / h
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.85 + 0.3 * ((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle))
    vignette = 1.0 - 0.35 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    out = img.astype(np.float32) * (light * vignette)[..., None]
    return _to_uint8(out + rng.normal(0, 5, img.shape))


def pencil(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lum = img.astype(np.float32).mean(axis=2) / 255.0
    shade = 0.75 + 0.25 * lum  # light tone fill, darker where the scene is dark
    hatch = (np.add.outer(np.arange(img.shape[0]), np.arange(img.shape[1])) % 4 == 0) * (lum < 0.35) * 0.15
    grey = (shade - hatch - 0.9 * _edges(img)) * 245 + rng.normal(0, 3, lum.shape)
    paper = np.array([1.0, 0.98, 0.93])
    return _to_uint8(grey[..., None] * paper)


def watercolor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    soft = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.0))).astype(np.float32)
    washed = 0.6 * soft + 0.4 * 250.0  # thin pigment on white paper
    blotch = np.asarray(Image.fromarray(_to_uint8(rng.normal(128, 60, (8, 8)))).resize(img.shape[:2][::-1], Image.BICUBIC))
    washed *= (0.92 + 0.08 * blotch.astype(np.float32) / 255.0)[..., None]
    pooled = washed - 50.0 * _edges(soft.astype(np.uint8))[..., None]  # pigment pools at edges
    return _to_uint8(pooled * np.array([1.0, 0.98, 0.94]))


def popart(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    mean = x.mean(axis=2, keepdims=True)
    sat = np.clip(mean + 2.2 * (x - mean), 0, 255)
    poster = np.where(sat > 110, 255.0, 0.0)
    poster[(poster.sum(axis=2) == 0)] = (30, 30, 220)  # dark areas become flat blue
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    dots = ((yy % 4 == 1) & (xx % 4 == 1))[..., None] * 90.0  # halftone dots
    outline = (_edges(img) > 0.25)[..., None]
    return _to_uint8(np.where(outline, 0.0, poster - dots))


def pixel(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w, _ = img.shape
    small = np.asarray(Image.fromarray(img).resize((w // 4, h // 4), Image.BOX)).astype(np.int32)
    small = (small // 64) * 85  # 4 levels per channel
    return np.asarray(Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.NEAREST)).copy()


def oil(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(Image.fromarray(img).filter(ImageFilter.ModeFilter(5))).astype(np.float32)
    mean = x.mean(axis=2, keepdims=True)
    x = mean + 1.5 * (x - mean)  # rich, saturated paint
    strokes = rng.normal(0, 1, (img.shape[0], img.shape[1] // 6 + 1))
    strokes = np.repeat(strokes, 6, axis=1)[:, : img.shape[1]]  # short horizontal brush strokes
    x = x * (1.0 + 0.08 * strokes)[..., None]
    return _to_uint8(x * np.array([1.05, 0.95, 0.75]) + np.array([10, 5, 0]))  # warm varnish


def neon(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    mean = x.mean(axis=2, keepdims=True)
    hue = np.clip(mean + 3.0 * (x - mean), 0, 255)
    hue = 80 + 175 * hue / np.maximum(hue.max(axis=2, keepdims=True), 1)  # bright, saturated version
    line = np.clip(_edges(img) * 2.0, 0, 1)
    glow = np.asarray(Image.fromarray(_to_uint8(line * 255)).filter(ImageFilter.GaussianBlur(1.5))) / 255.0
    light = np.clip(line + 0.8 * glow, 0, 1)[..., None]
    return _to_uint8(hue * light + 8 * (1 - light) * np.array([0.3, 0.1, 0.6]))


STYLE_FUNCTIONS = {
    "photo": photo,
    "pencil": pencil,
    "watercolor": watercolor,
    "popart": popart,
    "pixel": pixel,
    "oil": oil,
    "neon": neon,
}


def apply_style(img: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    return STYLE_FUNCTIONS[style](img, rng)
