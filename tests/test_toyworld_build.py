"""The toy model's build (a few steps of every stage, then resume) and the shipped model's quality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lookalike.toyworld as toyworld


@pytest.mark.slow
def test_build_runs_every_stage_exports_and_resumes(tmp_path):
    from diffusers import StableDiffusionPipeline

    from lookalike.toyworld.build import main

    out = tmp_path / "build"
    args = ["--out", str(out), "--pool", "100", "--clip-steps", "1", "--vae-steps", "1", "--judge-steps", "1", "--unet-steps", "1", "--threads", "1"]
    main(args)
    export = out / "export"
    assert json.loads((export / "pipeline" / "toyworld.json").read_text()) == {"unet_step": 1}
    assert toyworld.is_toy_clip(export / "clip")  # the audit probes it with the toy captions' words
    weights = list(export.rglob("*.safetensors"))
    assert weights and sum(f.stat().st_size for f in weights) < 40e6
    main(args[:-4] + ["--unet-steps", "2", "--threads", "1"])
    log = (out / "build.log").read_text()
    assert "clip: resumed at step 1" in log and "unet: resumed at step 1" in log and "unet: checkpoint at step 2" in log
    assert "judge: resumed at step 1" in log and "exported the final pipeline (UNet step 2)" in log
    pipeline = StableDiffusionPipeline.from_pretrained(export / "pipeline")
    image = pipeline("a photo of a dog", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)


def test_retext_trains_the_shipped_unet_on_the_judges_text_tower_and_resumes(tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel

    from lookalike.toyworld.build import main
    from lookalike.toyworld.models import text_encoder_from

    out = tmp_path / "retext"
    args = ["--out", str(out), "--only", "retext", "--retext-from", str(toyworld.ASSETS), "--threads", "1"]
    main([*args, "--retext-steps", "1"])
    main([*args, "--retext-steps", "2"])
    log = (out / "build.log").read_text()
    shipped_step = json.loads((toyworld.ASSETS / "pipeline" / "toyworld.json").read_text())["unet_step"]
    assert "retext: resumed at step 1" in log and f"exported pipeline at retext step 2 (UNet step {shipped_step + 2})" in log
    export = out / "export"
    pipeline = StableDiffusionPipeline.from_pretrained(export / "pipeline", dtype=torch.float32)
    judge = text_encoder_from(CLIPModel.from_pretrained(toyworld.clip_dir(), dtype=torch.float32)).state_dict()
    exported = pipeline.text_encoder.state_dict()
    assert exported.keys() == judge.keys()
    for name, weight in judge.items():  # the pipeline now conditions on the judge's words (fp16 on disk)
        assert torch.allclose(exported[name], weight, atol=1e-2), name
    shipped = StableDiffusionPipeline.from_pretrained(toyworld.pipeline_dir(), dtype=torch.float32).unet.state_dict()
    assert any(not torch.equal(shipped[n], w) for n, w in pipeline.unet.state_dict().items())  # and its UNet moved
    image = pipeline("a photo of a man, beard", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)


def test_retext_without_a_source_export_is_one_line_and_writes_nothing(tmp_path):
    from lookalike.toyworld.build import main

    with pytest.raises(SystemExit) as error:
        main(["--out", str(tmp_path / "b"), "--only", "retext", "--retext-from", str(tmp_path)])
    assert "--retext-from FOLDER holding pipeline/ and clip/" in str(error.value)
    assert not (tmp_path / "b").exists()


def test_retext_refuses_to_overwrite_the_export_it_starts_from(tmp_path):
    import shutil

    from lookalike.toyworld.build import main

    export = tmp_path / "b" / "export"
    for part in ("pipeline", "clip"):
        shutil.copytree(toyworld.ASSETS / part, export / part)
    before = (export / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as error:
        main(["--out", str(tmp_path / "b"), "--only", "retext", "--retext-from", str(export)])
    assert "writes its own export" in str(error.value) and "--out" in str(error.value)
    assert (export / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert not (tmp_path / "b" / "retext").exists() and not (tmp_path / "b" / "build.log").exists()


def test_shipped_pipeline_loads_offline_and_generates_quickly():
    import time

    from diffusers import StableDiffusionPipeline

    start = time.time()
    pipeline = StableDiffusionPipeline.from_pretrained(toyworld.pipeline_dir())
    image = pipeline("a photo of a red cup at the beach", num_inference_steps=10, output_type="np").images[0]
    assert image.shape == (64, 64, 3)
    assert time.time() - start < 30


def test_shipped_model_follows_its_captions():
    """A small-sample check that catches a broken re-export (wrong weights, scaling factor, tokenizer)."""
    from lookalike.toyworld.evaluate import generation_accuracy, load

    pipeline, judge = load(toyworld.pipeline_dir().parent)
    torch.manual_seed(0)
    accuracy, _, images = generation_accuracy(pipeline, judge, 16, steps=10, guidance=4.0)
    assert np.std([img.mean() for img in images]) > 5  # not one blank picture
    assert accuracy["class"] >= 0.6 and accuracy["context"] >= 0.5


def test_shipped_clip_names_class_context_and_style_of_held_out_renders():
    """The CLIP that judges everything toy (audit probes, eval metrics) must itself see the world."""
    from lookalike.toyworld.evaluate import load, zero_shot

    _, judge = load(toyworld.pipeline_dir().parent)
    accuracy = zero_shot(judge, 60)
    assert min(accuracy["class"], accuracy["context"], accuracy["style"]) >= 0.8, accuracy
