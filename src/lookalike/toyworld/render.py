"""Draw a toy-world scene: a context background, one subject, then the style transform.

Shapes are bold and few so a tiny model can learn them in CPU-hours. Everything is drawn at twice
the output size and downsampled, which anti-aliases the edges. Same seed, same pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lookalike.toyworld.styles import apply_style
from lookalike.toyworld.world import sample_scene

SIZE = 64
S = 2 * SIZE  # drawing canvas

SKIN = {"light": (246, 214, 186), "tan": (198, 142, 96), "dark": (105, 66, 40)}
HAIR = {"black": (28, 24, 22), "blonde": (240, 205, 80), "red": (200, 60, 20), "white": (235, 235, 235)}
SHIRT = {"red": (210, 30, 30), "blue": (30, 70, 210), "green": (30, 160, 50), "yellow": (245, 210, 30), "white": (245, 245, 245)}
FUR = {"brown": (130, 80, 40), "black": (30, 30, 30), "white": (240, 240, 235), "golden": (225, 170, 70)}
CUP_COLOUR = SHIRT
HAT = (110, 40, 130)
# Marks the world never draws, worn only by the shipped subject packs (see subjects.py).
MARKING = (190, 40, 220)
OUTLINE = (20, 20, 20)


def _background(ctx: str, rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (S, S))
    d = ImageDraw.Draw(img)
    if ctx == "plain":
        base = np.array([200, 200, 200]) + rng.integers(-30, 40, 3)
        d.rectangle((0, 0, S, S), fill=tuple(int(v) for v in base))
    elif ctx == "beach":
        d.rectangle((0, 0, S, S * 0.45), fill=(120, 190, 250))
        d.rectangle((0, S * 0.45, S, S * 0.62), fill=(20, 90, 180))
        d.rectangle((0, S * 0.62, S, S), fill=(235, 210, 150))
        x = rng.integers(8, S - 24)
        d.ellipse((x, 8, x + 18, 26), fill=(255, 230, 60))
    elif ctx == "snow":
        d.rectangle((0, 0, S, S), fill=(190, 200, 215))
        d.rectangle((0, S * 0.6, S, S), fill=(250, 250, 255))
        for x, y in rng.integers(0, S, (40, 2)):
            d.ellipse((x, y, x + 3, y + 3), fill=(255, 255, 255))
    elif ctx == "forest":
        d.rectangle((0, 0, S, S), fill=(30, 90, 40))
        for x in rng.integers(0, S, 6):
            d.rectangle((x, 0, x + 8, S), fill=(80, 50, 25))
        d.rectangle((0, S * 0.8, S, S), fill=(60, 130, 40))
    elif ctx == "space":
        d.rectangle((0, 0, S, S), fill=(5, 5, 20))
        for x, y in rng.integers(0, S, (50, 2)):
            d.point((int(x), int(y)), fill=(255, 255, 255))
            d.point((int(x) + 1, int(y)), fill=(255, 255, 255))
        x, y = rng.integers(0, S - 30, 2)
        d.ellipse((x, y, x + 26, y + 26), fill=(180, 90, 200))
    elif ctx == "city":
        d.rectangle((0, 0, S, S), fill=(15, 20, 60))
        x = 0
        while x < S:
            w, h = int(rng.integers(14, 28)), int(rng.integers(40, 100))
            d.rectangle((x, S - h, x + w, S), fill=(25, 25, 35))
            for wx in range(x + 3, x + w - 3, 6):
                for wy in range(S - h + 4, S, 8):
                    if rng.random() < 0.5:
                        d.rectangle((wx, wy, wx + 2, wy + 3), fill=(255, 220, 90))
            x += w + 2
    return img


def _star(x: float, y: float, r: float) -> list[tuple[float, float]]:
    """A five-pointed star centred on (x, y), points at radius r."""
    angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False)
    return [(x + r * np.cos(a) * (1 if n % 2 else 0.45), y + r * np.sin(a) * (1 if n % 2 else 0.45)) for n, a in enumerate(angles)]


def _person(d: ImageDraw.ImageDraw, sc: dict, cx: float, cy: float, k: float) -> None:
    skin, hair = SKIN[sc["skin"]], HAIR[sc["hair colour"]]
    hr = 20 * k  # head radius
    hy = cy - 10 * k  # head centre
    # Shirt: shoulders to the bottom edge.
    d.rounded_rectangle((cx - 34 * k, hy + hr + 2 * k, cx + 34 * k, S + 20), 14 * k, fill=SHIRT[sc["shirt"]], outline=OUTLINE, width=2)
    d.rectangle((cx - 7 * k, hy + hr - 6 * k, cx + 7 * k, hy + hr + 6 * k), fill=skin)  # neck
    if sc.get("marking"):  # a star on the chest
        d.polygon(_star(cx + 16 * k, hy + hr + 16 * k, 10 * k), fill=MARKING, outline=OUTLINE)
    if sc["hair style"] == "long":
        d.rounded_rectangle((cx - hr - 6 * k, hy - hr * 0.6, cx + hr + 6 * k, hy + hr * 1.5), 8 * k, fill=hair, outline=OUTLINE, width=2)
    d.ellipse((cx - hr, hy - hr, cx + hr, hy + hr), fill=skin, outline=OUTLINE, width=2)
    d.chord((cx - hr - 2 * k, hy - hr - 5 * k, cx + hr + 2 * k, hy + hr * 0.5), 180, 360, fill=hair, outline=OUTLINE, width=2)
    if sc.get("beard") == "yes":
        beard = tuple(int(v * 0.8) for v in hair)
        d.chord((cx - hr, hy - hr * 0.7, cx + hr, hy + hr + 5 * k), 10, 170, fill=beard, outline=OUTLINE, width=2)
    ey = hy + 1 * k
    for ex in (cx - 8 * k, cx + 8 * k):
        d.ellipse((ex - 2.5 * k, ey - 2.5 * k, ex + 2.5 * k, ey + 2.5 * k), fill=OUTLINE)
    mouth = (200, 30, 60) if sc["gender"] == "woman" else (110, 40, 40)
    if sc.get("beard") != "yes":
        d.line((cx - 6 * k, hy + 11 * k, cx + 6 * k, hy + 11 * k), fill=mouth, width=max(2, int(3 * k)))
    if sc["glasses"] == "yes":
        for ex in (cx - 8 * k, cx + 8 * k):
            d.rectangle((ex - 6.5 * k, ey - 5 * k, ex + 6.5 * k, ey + 5 * k), outline=(10, 10, 10), width=max(2, int(3 * k)))
        d.line((cx - 1.5 * k, ey, cx + 1.5 * k, ey), fill=(10, 10, 10), width=3)
    if sc["hat"] == "yes":
        d.rectangle((cx - hr - 8 * k, hy - hr * 0.55, cx + hr + 8 * k, hy - hr * 0.3), fill=HAT, outline=OUTLINE, width=2)
        d.rectangle((cx - hr * 0.75, hy - hr - 14 * k, cx + hr * 0.75, hy - hr * 0.45), fill=HAT, outline=OUTLINE, width=2)


def _dog(d: ImageDraw.ImageDraw, sc: dict, cx: float, cy: float, k: float) -> None:
    fur = FUR[sc["fur"]]
    by = cy + 14 * k
    for lx in (-24, -12, 12, 24):  # legs
        d.rectangle((cx + (lx - 3) * k, by, cx + (lx + 3) * k, by + 26 * k), fill=fur, outline=OUTLINE, width=2)
    d.line((cx - 30 * k, by - 6 * k, cx - 44 * k, by - 22 * k), fill=fur, width=int(6 * k))  # tail
    d.ellipse((cx - 34 * k, by - 16 * k, cx + 34 * k, by + 14 * k), fill=fur, outline=OUTLINE, width=2)  # body
    if sc.get("marking"):
        d.polygon(_star(cx, by - 1 * k, 9 * k), fill=MARKING)
    hx, hy, hr = cx + 28 * k, by - 24 * k, 15 * k
    if sc["ears"] == "pointy":
        for ex in (hx - 10 * k, hx + 6 * k):
            d.polygon([(ex - 5 * k, hy - 8 * k), (ex + 5 * k, hy - 8 * k), (ex, hy - 26 * k)], fill=fur, outline=OUTLINE)
    d.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=fur, outline=OUTLINE, width=2)
    d.ellipse((hx + 8 * k, hy - 1 * k, hx + 22 * k, hy + 9 * k), fill=fur, outline=OUTLINE, width=2)  # snout
    d.ellipse((hx + 18 * k, hy, hx + 23 * k, hy + 5 * k), fill=OUTLINE)  # nose
    if sc.get("marking"):
        d.ellipse((hx - 11 * k, hy - 11 * k, hx + 1 * k, hy + 3 * k), fill=MARKING)
    for ex in (hx - 5 * k, hx + 5 * k):
        d.ellipse((ex - 2 * k, hy - 5 * k, ex + 2 * k, hy - 1 * k), fill=OUTLINE)
    if sc["ears"] == "floppy":
        for ex in (hx - 14 * k, hx + 10 * k):
            d.ellipse((ex - 4 * k, hy - 10 * k, ex + 6 * k, hy + 14 * k), fill=tuple(int(v * 0.7) for v in fur), outline=OUTLINE, width=2)
    if sc["collar"] == "yes":
        d.line((hx - 12 * k, hy + 12 * k, hx + 6 * k, hy + 16 * k), fill=(230, 20, 20), width=max(3, int(6 * k)))


def _cup(d: ImageDraw.ImageDraw, sc: dict, cx: float, cy: float, k: float) -> None:
    colour = CUP_COLOUR[sc["colour"]]
    top, bottom, half = cy - 26 * k, cy + 30 * k, 24 * k
    d.ellipse((cx - 44 * k, bottom - 6 * k, cx + 44 * k, bottom + 10 * k), fill=(235, 235, 235), outline=OUTLINE, width=2)  # saucer
    d.ellipse((cx + half - 10 * k, cy - 16 * k, cx + half + 18 * k, cy + 16 * k), outline=colour, width=max(4, int(7 * k)))  # handle
    d.polygon([(cx - half, top), (cx + half, top), (cx + half * 0.8, bottom), (cx - half * 0.8, bottom)], fill=colour, outline=OUTLINE)
    if sc["stripes"] == "yes":
        stripe = (30, 30, 30) if sc["colour"] in ("white", "yellow") else (250, 250, 250)
        for y in (top + 14 * k, top + 28 * k, top + 42 * k):
            d.line((cx - half * 0.92, y, cx + half * 0.92, y), fill=stripe, width=max(3, int(5 * k)))
    d.ellipse((cx - half, top - 5 * k, cx + half, top + 5 * k), fill=tuple(int(v * 0.6) for v in colour), outline=OUTLINE, width=2)


DRAW = {"person": _person, "dog": _dog, "cup": _cup}


def draw_scene(scene: dict) -> Image.Image:
    """The unstyled scene at SIZE×SIZE."""
    rng = np.random.default_rng([scene["seed"], 11])
    img = _background(scene["context"], rng)
    k = scene["scale"]
    cx, cy = S * (0.5 + scene["dx"]), S * (0.55 + scene["dy"])
    DRAW[scene["class"]](ImageDraw.Draw(img), scene, cx, cy, k)
    return img.resize((SIZE, SIZE), Image.LANCZOS)


def render(scene: dict) -> np.ndarray:
    """The styled scene as a (SIZE, SIZE, 3) uint8 array."""
    rng = np.random.default_rng([scene["seed"], 13])
    return apply_style(np.asarray(draw_scene(scene)), scene["style"], rng)


def render_seed(seed: int) -> tuple[np.ndarray, dict]:
    scene = sample_scene(seed)
    return render(scene), scene
