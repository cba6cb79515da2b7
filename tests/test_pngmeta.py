"""PNG parameters: the A1111 text chunk and the JSON chunk, written and parsed back; weight hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.sample.pngmeta import (
    ImageParams,
    a1111_text,
    parse_a1111,
    png_bytes,
    read_params,
    read_text_chunks,
    weights_hash,
)


def make_params(**changes) -> ImageParams:
    fields = dict(
        prompt="a watercolor painting of ohwx man, highly detailed",
        negative_prompt="photo, blurry",
        seed=123,
        steps=25,
        guidance_scale=7.5,
        scheduler="dpm++",
        width=64,
        height=48,
        model_name="me",
        model_hash="0123456789",
        lora_hash=None,
        base_model="/models/sd15",
        family="sd1",
        method="full",
        run="/runs/me",
        checkpoint=None,
        dtype="float32",
        device="cpu",
        batch=[["a watercolor painting of ohwx man, highly detailed", "photo, blurry", 123]],
        batch_index=0,
        group="watercolor",
        score=0.5,
        scorer="pixel-histogram similarity (stand-in)",
    )
    fields.update(changes)
    return ImageParams(**fields)


def test_a1111_text_has_the_fields_a1111_writes():
    text = a1111_text(make_params())
    lines = text.split("\n")
    assert lines[0] == "a watercolor painting of ohwx man, highly detailed"
    assert lines[1] == "Negative prompt: photo, blurry"
    assert lines[2].startswith("Steps: 25, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 123, Size: 64x48, ")
    assert "Model hash: 0123456789, Model: me" in lines[2]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"negative_prompt": ""},
        {"prompt": "line one: with a colon\nline two, with a comma", "negative_prompt": "a\nb"},
        {"scheduler": "euler_a", "guidance_scale": 3.25, "lora_hash": "abcdefabcd"},
        {"model_hash": None, "model_name": "odd, name: with \"quotes\""},
    ],
)
def test_a1111_text_parses_back(changes):
    params = make_params(**changes)
    parsed = parse_a1111(a1111_text(params))
    assert parsed["Prompt"] == params.prompt
    assert parsed["Negative prompt"] == params.negative_prompt
    assert parsed["Steps"] == str(params.steps)
    assert parsed["Seed"] == str(params.seed)
    assert parsed["Size"] == f"{params.width}x{params.height}"
    assert float(parsed["CFG scale"]) == params.guidance_scale
    assert parsed["Model"] == params.model_name
    assert parsed.get("Model hash") == params.model_hash
    if params.lora_hash:
        assert params.lora_hash in parsed["Lora hashes"]


def test_parse_a1111_reads_text_written_by_a1111():
    text = (
        "masterpiece, portrait of a woman\n"
        "Negative prompt: lowres, bad anatomy\n"
        'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: 6ce0161689, '
        'Model: v1-5-pruned-emaonly, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.6.0'
    )
    parsed = parse_a1111(text)
    assert parsed["Prompt"] == "masterpiece, portrait of a woman"
    assert parsed["Sampler"] == "DPM++ 2M Karras"
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert parsed["Version"] == "v1.6.0"


def test_png_carries_both_chunks_and_reads_back(tmp_path):
    params = make_params(prompt="ohwx man in Zürich, 東京 at night", batch=[["ohwx man in Zürich, 東京 at night", "", 5]])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(image, params))
    assert read_params(path) == params
    chunks = read_text_chunks(path)
    assert parse_a1111(chunks["parameters"])["Prompt"] == params.prompt
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))


def test_read_params_refuses_plain_damaged_and_missing_files(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(LookalikeError, match="no lookalike parameters"):
        read_params(plain)
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("lookalike", '{"format": 1, "prompt": ')
    damaged = tmp_path / "damaged.png"
    Image.new("RGB", (8, 8)).save(damaged, pnginfo=info)
    with pytest.raises(LookalikeError, match="damaged"):
        read_params(damaged)
    with pytest.raises(LookalikeError, match="not found"):
        read_params(tmp_path / "nope.png")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(LookalikeError, match="not an image"):
        read_params(text_file)


def test_weights_hash_is_a1111s_sha256_prefix_and_follows_the_file(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x01" * 1000)
    assert weights_hash([weights]) == hashlib.sha256(b"\x01" * 1000).hexdigest()[:10]
    other = tmp_path / "more.safetensors"
    other.write_bytes(b"\x02" * 10)
    assert weights_hash([weights, other]) == hashlib.sha256(b"\x01" * 1000 + b"\x02" * 10).hexdigest()[:10]
    weights.write_bytes(b"\x03" * 999)  # changed weights: a new hash, not the cached one
    assert weights_hash([weights]) == hashlib.sha256(b"\x03" * 999).hexdigest()[:10]
    assert weights_hash([]) is None
