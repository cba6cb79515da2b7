"""Reproducible PNGs: every image carries what made it, twice.

* ``parameters``: AUTOMATIC1111's text format, which A1111, ComfyUI, InvokeAI and image sites read::

      a photo of ohwx man, highly detailed
      Negative prompt: blurry
      Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 3, Size: 512x512, Model hash: 1a2b3c4d5e, Model: me

* ``lookalike``: JSON with everything needed to re-render the image bit-exactly (the run, the
  checkpoint, the whole batch it was rendered in; see :class:`ImageParams`).

The model hash is A1111's: the first 10 hex digits of the SHA-256 of the weights file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from lookalike import __version__
from lookalike.errors import LookalikeError
from lookalike.sample.schedulers import A1111_NAMES

A1111_KEY = "parameters"
JSON_KEY = "lookalike"
FORMAT = 1  # bump when ImageParams changes shape


@dataclass
class ImageParams:
    """Everything that decides an image's pixels, and where it came from."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    scheduler: str  # our sampler name: dpm++, ddim, euler, euler_a, pndm
    width: int
    height: int
    model_name: str
    model_hash: str | None  # 10 hex digits of the base or fully fine-tuned weights
    lora_hash: str | None  # 10 hex digits of the LoRA file, for LoRA runs
    base_model: str  # model.source
    family: str
    method: str  # full | lora | base
    run: str  # absolute path of the run folder
    checkpoint: str | None  # None: the final model; 'base'; or a checkpoint name
    dtype: str
    device: str
    # Batched rendering differs from single rendering in the last float bits, so an exact re-render
    # renders the same batch again: [prompt, negative prompt, seed] per image, and this image's index.
    batch: list[list[Any]] = field(default_factory=list)
    batch_index: int = 0
    group: str = ""  # style name or prompt-N
    score: float | None = None
    scorer: str | None = None
    version: str = __version__
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=True, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ImageParams":
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise LookalikeError(f"image parameters are format {data.get('format')}; this lookalike reads format {FORMAT}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _quote(value: str) -> str:
    """A1111's quoting: values with commas, colons or newlines become JSON strings."""
    return json.dumps(value) if any(c in value for c in ",:\n\"") else value


def a1111_text(p: ImageParams) -> str:
    pairs = [
        ("Steps", p.steps),
        ("Sampler", A1111_NAMES[p.scheduler]),
        ("CFG scale", f"{p.guidance_scale:g}"),
        ("Seed", p.seed),
        ("Size", f"{p.width}x{p.height}"),
        ("Model hash", p.model_hash),
        ("Model", p.model_name),
        ("Lora hashes", p.lora_hash and f"{p.model_name}-lora: {p.lora_hash}"),
        ("Version", f"lookalike {p.version}"),
    ]
    line = ", ".join(f"{k}: {_quote(str(v))}" for k, v in pairs if v is not None)
    negative = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    return f"{p.prompt}{negative}\n{line}"


PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict[str, str]:
    """A1111 ``parameters`` text -> {"Prompt", "Negative prompt", "Steps", "Sampler", ...} as strings."""
    *head, last = text.strip().split("\n")
    pairs = PARAM.findall(last)
    if len(pairs) < 3:  # no settings line: the whole text is the prompt
        head, pairs = [*head, last], []
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in head:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line.removeprefix("Negative prompt:").strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    out = {"Prompt": "\n".join(prompt_lines), "Negative prompt": "\n".join(negative_lines)}
    for key, value in pairs:
        out[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    return out


def png_bytes(image: Image.Image, params: ImageParams) -> bytes:
    """The image as PNG bytes with both text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, a1111_text(params))
    info.add_text(JSON_KEY, params.to_json())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_text_chunks(path: Path) -> dict[str, str]:
    try:
        with Image.open(path) as image:
            image.load()
            return dict(getattr(image, "text", {}))
    except FileNotFoundError:
        raise LookalikeError(f"{path} not found") from None
    except (OSError, SyntaxError):
        raise LookalikeError(f"{path} is not an image lookalike can read") from None


def read_params(path: Path) -> ImageParams:
    """The re-render parameters a lookalike PNG carries."""
    text = read_text_chunks(Path(path)).get(JSON_KEY)
    if text is None:
        raise LookalikeError(f"{path} carries no lookalike parameters; --from needs a PNG written by `lookalike generate`")
    try:
        return ImageParams.from_json(text)
    except (json.JSONDecodeError, TypeError):
        raise LookalikeError(f"{path}: its lookalike parameters are damaged; it cannot be re-rendered") from None


_hash_cache: dict[tuple, str] = {}  # weights files are big: hash each version once per process


def weights_hash(files: list[Path]) -> str | None:
    """First 10 hex of the SHA-256 of the files' bytes in order (one file: exactly A1111's hash)."""
    if not files:
        return None
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        for path in files:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
        _hash_cache[key] = digest.hexdigest()[:10]
    return _hash_cache[key]
