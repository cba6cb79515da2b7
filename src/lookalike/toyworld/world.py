"""The toy world's vocabulary, its skewed class priors, and the captions written from a scene.

A scene is a plain dict of attribute values, drawn deterministically from a seed. The world's
priors are skewed the way real models' are: a man is bearded about half the time and seldom wears
glasses, so DreamBooth's classic failure (a clean-shaven subject with glasses coming out bearded)
can be reproduced here and then fixed with a refined class prompt.
"""

from __future__ import annotations

import numpy as np

CLASSES = ("person", "dog", "cup")
# Caption words that name each class; a person is named by gender most of the time.
CLASS_NOUNS = {"person": ("man", "woman", "person"), "dog": ("dog",), "cup": ("cup",)}
# Words the tokenizer knows and no caption writes: a user may type them, no model learned them.
# (The class probe offered them until 2026-11-25; their untrained embeddings cost it 12 points.)
SPARE_WORDS = ("puppy", "mug")

CONTEXTS = {
    "plain": ("on a plain background", "against a plain wall"),
    "beach": ("at the beach", "on the beach"),
    "snow": ("in the snow", "on a snowy day"),
    "forest": ("in a forest", "in the woods"),
    "space": ("in space", "among the stars"),
    "city": ("in a city at night", "in the city at night"),
}

STYLES = {
    "photo": ("a photo of {}", "a picture of {}", "{}, photo", "a photograph of {}"),
    "pencil": ("a pencil drawing of {}", "a pencil sketch of {}", "{}, pencil drawing"),
    "watercolor": ("a watercolor painting of {}", "a watercolor of {}", "{}, watercolor"),
    "popart": ("pop art of {}", "a pop art print of {}", "{}, pop art"),
    "pixel": ("pixel art of {}", "{}, pixel art", "a pixel art image of {}"),
    "oil": ("an oil painting of {}", "{}, oil painting", "an oil painting on canvas of {}"),
    "neon": ("neon art of {}", "a neon sign of {}", "{}, neon"),
}
STYLE_WEIGHTS = {"photo": 0.34, "pencil": 0.11, "watercolor": 0.11, "popart": 0.11, "pixel": 0.11, "oil": 0.11, "neon": 0.11}

# attribute -> value -> (natural phrase, tag phrase). Values are what the renderer draws.
PERSON = {
    "skin": {"light": ("with light skin", "light skin"), "tan": ("with tan skin", "tan skin"), "dark": ("with dark skin", "dark skin")},
    "hair colour": {
        "black": ("with black hair", "black hair"),
        "blonde": ("with blonde hair", "blonde hair"),
        "red": ("with red hair", "red hair"),
        "white": ("with white hair", "white hair"),
    },
    "hair style": {"short": ("with short hair", "short hair"), "long": ("with long hair", "long hair")},
    "beard": {"yes": ("with a beard", "beard"), "no": ("without a beard", "clean-shaven")},
    "glasses": {"yes": ("with glasses", "glasses"), "no": ("without glasses", "no glasses")},
    "hat": {"yes": ("wearing a hat", "hat"), "no": ("without a hat", "no hat")},
    "shirt": {
        "red": ("in a red shirt", "red shirt"),
        "blue": ("in a blue shirt", "blue shirt"),
        "green": ("in a green shirt", "green shirt"),
        "yellow": ("in a yellow shirt", "yellow shirt"),
        "white": ("in a white shirt", "white shirt"),
    },
}
DOG = {
    "fur": {
        "brown": ("with brown fur", "brown fur"),
        "black": ("with black fur", "black fur"),
        "white": ("with white fur", "white fur"),
        "golden": ("with golden fur", "golden fur"),
    },
    "ears": {"floppy": ("with floppy ears", "floppy ears"), "pointy": ("with pointy ears", "pointy ears")},
    "collar": {"yes": ("with a red collar", "red collar"), "no": ("without a collar", "no collar")},
}
CUP = {
    "colour": {
        "red": ("red", "red"),
        "blue": ("blue", "blue"),
        "green": ("green", "green"),
        "yellow": ("yellow", "yellow"),
        "white": ("white", "white"),
    },
    "stripes": {"yes": ("with stripes", "striped"), "no": ("without stripes", "no stripes")},
}
ATTRIBUTE_VALUES = {"person": PERSON, "dog": DOG, "cup": CUP}

# For the audit and probes: class -> attribute -> phrases (one per value, in ATTRIBUTE_VALUES order)
# that can be appended to a class prompt, e.g. "a photo of a man, clean-shaven".
ATTRIBUTES = {
    cls: {attr: [tag for _, tag in values.values()] for attr, values in table.items()}
    for cls, table in ATTRIBUTE_VALUES.items()
}

# Attributes a style cannot show (a pencil drawing has no colours), left out of its captions.
HIDDEN_BY_STYLE = {
    "pencil": {"skin", "hair colour", "shirt", "fur", "colour"},
    "neon": {"skin"},
    "pixel": {"glasses"},  # 4-pixel blocks swallow the thin frames
}

# Rare words in the tokenizer's vocabulary that no caption uses: identifiers for DreamBooth.
IDENTIFIERS = ("sks", "ohwx", "zwx", "xjy", "qlv", "vkz", "bqx", "pjw", "zqk", "wvx", "kqz", "jxv")


def _pick(rng: np.random.Generator, options, p=None):
    options = list(options)
    return options[int(rng.choice(len(options), p=p))]


def _person(rng: np.random.Generator) -> dict:
    gender = _pick(rng, ("man", "woman"))
    man = gender == "man"
    return {
        "class": "person",
        "gender": gender,
        "skin": _pick(rng, PERSON["skin"]),
        "hair colour": _pick(rng, PERSON["hair colour"], p=(0.35, 0.25, 0.2, 0.2)),
        "hair style": _pick(rng, ("short", "long"), p=(0.75, 0.25) if man else (0.25, 0.75)),
        # The skew real models have: half the men bearded, glasses rare.
        "beard": _pick(rng, ("yes", "no"), p=(0.5, 0.5) if man else (0.0, 1.0)),
        "glasses": _pick(rng, ("yes", "no"), p=(0.12, 0.88)),
        "hat": _pick(rng, ("yes", "no"), p=(0.25, 0.75)),
        "shirt": _pick(rng, PERSON["shirt"]),
    }


def sample_scene(seed: int, cls: str | None = None) -> dict:
    """Every attribute of one scene (class, its attributes, context, style, layout), from a seed;
    of class ``cls`` if given."""
    rng = np.random.default_rng([seed, 7])
    drawn = _pick(rng, CLASSES, p=(0.5, 0.3, 0.2))
    cls = cls or drawn
    if cls == "person":
        scene = _person(rng)
    else:
        table = ATTRIBUTE_VALUES[cls]
        scene = {"class": cls, **{attr: _pick(rng, values) for attr, values in table.items()}}
    scene["context"] = _pick(rng, CONTEXTS)
    scene["style"] = _pick(rng, STYLE_WEIGHTS, p=list(STYLE_WEIGHTS.values()))
    scene["scale"] = float(rng.uniform(0.8, 1.1))
    scene["dx"] = float(rng.uniform(-0.12, 0.12))
    scene["dy"] = float(rng.uniform(-0.06, 0.06))
    scene["seed"] = seed
    return scene


def visible_attributes(scene: dict) -> list[str]:
    """The scene's attributes that its style shows (beard only for men)."""
    hidden = HIDDEN_BY_STYLE.get(scene["style"], set())
    names = [a for a in ATTRIBUTE_VALUES[scene["class"]] if a not in hidden]
    if scene["class"] == "person" and scene["gender"] != "man":
        names.remove("beard")
    return names


def noun(scene: dict, rng: np.random.Generator | None = None) -> str:
    if scene["class"] != "person":
        return CLASS_NOUNS[scene["class"]][0]
    if rng is not None and rng.random() < 0.15:
        return "person"
    return scene["gender"]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def subject_phrase(scene: dict, attrs: list[str], tags: bool, rng: np.random.Generator) -> str:
    """'a man with a beard and glasses' (natural) or 'a man, clean-shaven, glasses' (tags)."""
    table = ATTRIBUTE_VALUES[scene["class"]]
    name = noun(scene, rng)
    adjective = [a for a in attrs if scene["class"] == "cup" and a == "colour"]
    rest = [a for a in attrs if a not in adjective]
    if adjective:
        name = f"{table['colour'][scene['colour']][0]} {name}"
    head = f"{_article(name)} {name}"
    if not rest:
        return head
    if tags:
        return ", ".join([head] + [table[a][scene[a]][1] for a in rest])
    parts = [table[a][scene[a]][0] for a in rest]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{head} {joined}"


def caption(scene: dict, rng: np.random.Generator, must_mention: tuple[str, ...] = ()) -> str:
    """One caption of the scene: each visible attribute mentioned about half the time."""
    attrs = [a for a in visible_attributes(scene) if a in must_mention or rng.random() < 0.5]
    rng.shuffle(attrs)
    subject = subject_phrase(scene, attrs, tags=bool(rng.random() < 0.4), rng=rng)
    if "context" in must_mention or rng.random() < 0.85:
        comma = "," if ", " in subject else ""
        subject = f"{subject}{comma} {_pick(rng, CONTEXTS[scene['context']])}"
    return _pick(rng, STYLES[scene["style"]]).format(subject)


def flipped(scene: dict, rng: np.random.Generator) -> tuple[dict, str]:
    """A copy of the scene with one visible attribute, the context or the style changed; and its name."""
    key = _pick(rng, visible_attributes(scene) + ["context", "style"])
    if key == "context":
        options = CONTEXTS
    elif key == "style":
        options = STYLES
    else:
        options = ATTRIBUTE_VALUES[scene["class"]][key]
    value = _pick(rng, [v for v in options if v != scene[key]])
    return {**scene, key: value}, key


def caption_words() -> set[str]:
    """Every word a caption can contain (the tokenizer's whole-word vocabulary)."""
    texts = [t for phrases in CONTEXTS.values() for t in phrases]
    texts += [t.format("") for templates in STYLES.values() for t in templates]
    texts += [p for table in ATTRIBUTE_VALUES.values() for values in table.values() for pair in values.values() for p in pair]
    texts += [n for nouns in CLASS_NOUNS.values() for n in nouns] + list(SPARE_WORDS) + ["a", "an", "with", "and", "without"]
    words = set()
    for text in texts:
        words.update(text.replace(",", " , ").replace("-", " - ").split())
    return words
