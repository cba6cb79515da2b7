"""export: original-layout single files, kohya / diffusers LoRA files, the model card and the verb."""

from __future__ import annotations

import json
import re
import shutil
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lookalike.cli import main
from lookalike.errors import LookalikeError
from lookalike.models.export import export_run
from lookalike.models.export_lora import read_lora_file, to_kohya
from lookalike.models.export_sd import original_state_dict, write_single_file
from lookalike.run import Run

FAMILIES = ("sd1", "sd2", "sdxl")
PROMPT = "a photo of ohwx dog"

# The original layout's names, written from the CompVis / Stability module structure (openaimodel.py
# UNetModel, ldm's Encoder/Decoder, HF CLIP, OpenCLIP's TextTransformer), not from our mapping.
RESBLOCK = r"(in_layers\.[02]|emb_layers\.1|out_layers\.[03]|skip_connection)"
TRANSFORMER = r"(norm|proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2|norm[123]))"
UNET_NAME = re.compile(
    rf"model\.diffusion_model\.(time_embed\.[02]|label_emb\.0\.[02]|input_blocks\.0\.0|out\.[02]"
    rf"|(input_blocks\.\d+\.0|middle_block\.[02]|output_blocks\.\d+\.0)\.{RESBLOCK}|input_blocks\.\d+\.0\.op"
    rf"|output_blocks\.\d+\.[12]\.conv|(input_blocks\.\d+\.1|middle_block\.1|output_blocks\.\d+\.1)\.{TRANSFORMER})"
    rf"\.(weight|bias)"
)
VAE_RESNET = r"block(\.\d+|_[12])\.(norm[12]|conv[12]|nin_shortcut)"
VAE_NAME = re.compile(
    rf"first_stage_model\.(quant_conv|post_quant_conv|(encoder|decoder)\.(conv_in|conv_out|norm_out)"
    rf"|encoder\.down\.\d+\.({VAE_RESNET}|downsample\.conv)|decoder\.up\.\d+\.({VAE_RESNET}|upsample\.conv)"
    rf"|(encoder|decoder)\.mid\.({VAE_RESNET}|attn_1\.(norm|q|k|v|proj_out)))\.(weight|bias)"
)
CLIP_NAME = r"text_model\.(embeddings\.(token_embedding\.weight|position_embedding\.weight|position_ids)|final_layer_norm\.(weight|bias)|encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|layer_norm[12]|mlp\.fc[12])\.(weight|bias))"
OPEN_CLIP_NAME = r"(token_embedding\.weight|positional_embedding|text_projection|ln_final\.(weight|bias)|transformer\.resblocks\.\d+\.(attn\.(in_proj_weight|in_proj_bias|out_proj\.(weight|bias))|(ln_[12]|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)))"
TEXT_NAME = {
    "sd1": re.compile(rf"cond_stage_model\.transformer\.{CLIP_NAME}"),
    "sd2": re.compile(rf"cond_stage_model\.model\.{OPEN_CLIP_NAME}"),
    "sdxl": re.compile(rf"conditioner\.embedders\.0\.transformer\.{CLIP_NAME}|conditioner\.embedders\.1\.model\.{OPEN_CLIP_NAME}"),
}


def _pipeline_class(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _components(family: str) -> list[str]:
    return ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])


def _render(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return pipe(PROMPT, num_inference_steps=2, generator=generator, output_type="np", height=32, width=32).images[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_round_trip_is_bit_identical(tiny_models, tmp_path, family):
    cls = _pipeline_class(family)
    pipe = cls.from_pretrained(tiny_models[family])
    path = tmp_path / "model.safetensors"
    write_single_file(pipe, family, path, torch.float32, {"lookalike.identifier": "ohwx"})

    back = cls.from_single_file(str(path), config=str(tiny_models[family]), local_files_only=True)
    for name in _components(family):
        mine, theirs = getattr(pipe, name).state_dict(), getattr(back, name).state_dict()
        assert mine.keys() == theirs.keys(), name
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name
    assert np.array_equal(_render(pipe), _render(back))
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["lookalike.identifier"] == "ohwx"


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_names_are_the_original_layout(tiny_models, family):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    pipe = _pipeline_class(family).from_pretrained(tiny_models[family])
    names = original_state_dict(pipe, family)
    wrong = [k for k in names if not (UNET_NAME.fullmatch(k) or VAE_NAME.fullmatch(k) or TEXT_NAME[family].fullmatch(k))]
    assert wrong == []
    # Two levels, one layer each: conv_in + 2 ResBlocks + 1 Downsample in, 2 x (1 + 1) ResBlocks out.
    blocks = Counter(k.split(".")[2] + "." + k.split(".")[3] for k in names if "_blocks." in k)
    assert sorted(b for b in blocks if b.startswith("input")) == [f"input_blocks.{i}" for i in range(4)]
    assert sorted(b for b in blocks if b.startswith("output")) == [f"output_blocks.{i}" for i in range(4)]
    # diffusers' reader of this layout puts every one of our names onto exactly the model's weights.
    unet = convert_ldm_unet_checkpoint(dict(names), dict(pipe.unet.config))
    assert set(unet) == set(pipe.unet.state_dict())
    vae = convert_ldm_vae_checkpoint(dict(names), dict(pipe.vae.config))
    assert set(vae) == set(pipe.vae.state_dict())
    assert names["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as in ldm


def _real_architecture(family: str):
    """The released SD1.5 / SDXL shapes on the meta device (no weights, no download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def clip(hidden, layers, heads, cls=CLIPTextModel):
        return cls(CLIPTextConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, projection_dim=hidden))

    with torch.device("meta"):
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)
        if family == "sd1":
            unet = UNet2DConditionModel(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8)
            return types.SimpleNamespace(unet=unet, vae=vae, text_encoder=clip(768, 12, 12))
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        return types.SimpleNamespace(unet=unet, vae=vae, text_encoder=clip(768, 12, 12),
                                     text_encoder_2=clip(1280, 32, 20, CLIPTextModelWithProjection))


# Tensor counts per top-level name in the released v1-5-pruned-emaonly and sd_xl_base_1.0 files
# (SDXL's also holds conditioner.embedders.1.model.logit_scale, which no SD pipeline uses and
# diffusers does not keep; we do not invent it), plus names and shapes from those files.
RELEASED = {
    "sd1": ({"model": 686, "first_stage_model": 248, "cond_stage_model": 197}, {
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77),
    }),
    "sdxl": ({"model": 1680, "first_stage_model": 248, "conditioner": 586}, {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    }),
}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_real_architectures_get_the_released_files_key_set(family):
    names = original_state_dict(_real_architecture(family), family)
    counts, shapes = RELEASED[family]
    assert Counter(k.split(".")[0] for k in names) == counts
    assert {k: tuple(names[k].shape) for k in shapes} == shapes


# ---------------------------------------------------------------- LoRA


def _make_lora(folder: Path, family: str, out: Path, text_encoders: bool = True) -> Path:
    """Random (non-zero) LoRA adapters on every model part (or the UNet alone), saved as diffusers' save_lora_weights does."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = _pipeline_class(family).from_pretrained(folder)
    torch.manual_seed(3)
    # alpha != rank, different per part, so a lost or misplaced alpha changes the image.
    configs = {"unet": LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
               "text_encoder": LoraConfig(r=2, lora_alpha=3, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])}
    if not text_encoders:
        del configs["text_encoder"]
    elif family == "sdxl":
        configs["text_encoder_2"] = LoraConfig(r=4, lora_alpha=2, target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1"])
    kwargs = {}
    for name, config in configs.items():
        model = getattr(pipe, name)
        inject_adapter_in_model(config, model)
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                torch.nn.init.normal_(param, std=0.3)
        kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        kwargs[f"{name}_lora_adapter_metadata"] = config.to_dict()
    type(pipe).save_lora_weights(out, **kwargs)
    return out / "pytorch_lora_weights.safetensors"


@pytest.mark.parametrize("family", FAMILIES)
def test_kohya_lora_renders_like_the_diffusers_lora(tiny_models, tmp_path, family):
    diffusers_file = _make_lora(tiny_models[family], family, tmp_path)
    weights, header = read_lora_file(diffusers_file)
    kohya = to_kohya(weights, header, family)
    kohya_file = tmp_path / "kohya.safetensors"
    save_file(kohya, str(kohya_file))

    te = "lora_te1_" if family == "sdxl" else "lora_te_"
    assert all(re.fullmatch(r"lora_(unet|te|te1|te2)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)", k) for k in kohya)
    assert f"{te}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya
    assert kohya["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"].item() == 8
    assert kohya[f"{te}text_model_encoder_layers_1_self_attn_out_proj.alpha"].item() == 3
    assert len(kohya) == len(weights) * 3 // 2  # down, up and alpha per adapted layer

    pipe = _pipeline_class(family).from_pretrained(tiny_models[family])
    images = []
    for path in (diffusers_file, kohya_file):
        pipe.load_lora_weights(str(path))
        images.append(_render(pipe))
        pipe.unload_lora_weights()
    images.append(_render(pipe))
    # Same weights, same alphas: the two layouts render identically (tolerance 1e-6 for float sums).
    assert np.abs(images[0] - images[1]).max() <= 1e-6
    assert np.abs(images[0] - images[2]).max() > 0.05  # and the LoRA really changes the image


def test_non_diffusers_lora_keys_are_refused(tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file({"something.else.weight": torch.zeros(2, 2)}, str(path))
    weights, header = read_lora_file(path)
    with pytest.raises(LookalikeError, match="not in diffusers format"):
        to_kohya(weights, header, "sd1")


# ---------------------------------------------------------------- the verb on run folders


def _trained_run(root: Path, base: Path, family: str, method: str, lora_file: Path | None = None) -> Run:
    run = Run.open(root, overrides=[f"model.source={base}", "subject.identifier=ohwx", "subject.class_noun=dog"])
    if method == "full":
        shutil.copytree(base, run.model_dir)
    else:
        run.model_dir.mkdir(parents=True)
        shutil.copyfile(lora_file, run.model_dir / "pytorch_lora_weights.safetensors")
    info = {"method": method, "base_model": str(base), "family": family, "step": 40,
            "subjects": [{"name": "subject", "identifier": "ohwx", "class_noun": "dog", "instance_prompt": PROMPT}],
            "train": {"max_steps": 40, "learning_rate": 1e-4, "lora_rank": 4}}
    (run.model_dir / "lookalike.json").write_text(json.dumps(info))
    samples = run.root / "samples" / "first"
    samples.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 30, 30)).save(samples / "ohwx.png")
    return run


def test_export_full_run_writes_single_file_and_card(tiny_models, tmp_path):
    run = _trained_run(tmp_path / "me", tiny_models["sd1"], "sd1", "full")
    summary = export_run(run)
    path = run.root / "export" / "me.safetensors"
    assert str(path) in summary
    tensors = load_file(str(path))
    assert tensors["model.diffusion_model.out.2.weight"].dtype == torch.float16  # export.dtype defaults to fp16
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["lookalike.identifier"] == "ohwx" and meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert json.loads(meta["lookalike.train"])["max_steps"] == 40
    card = (run.root / "export" / "README.md").read_text()
    assert "`ohwx`" in card and "me.safetensors" in card and "from_single_file" in card
    sample = re.search(r"!\[sample\]\((.+?)\)", card).group(1)
    assert (run.root / "export" / sample).is_file()
    assert [e["event"] for e in map(json.loads, run.events_path.read_text().splitlines()) if e["verb"] == "export"] == ["start", "done"]

    # Asking a full fine-tune for a LoRA is refused, and what was exported stays as it was.
    before = path.read_bytes()
    run.config.export.format = "lora-kohya"
    with pytest.raises(LookalikeError, match="needs a LoRA run"):
        export_run(run)
    assert path.read_bytes() == before and not (run.root / "export" / "me-lora.safetensors").exists()


def test_export_lora_run_in_both_lora_layouts_from_the_cli(tiny_models, tmp_path, capsys):
    lora = _make_lora(tiny_models["sd1"], "sd1", tmp_path / "lora")
    run = _trained_run(tmp_path / "me", tiny_models["sd1"], "sd1", "lora", lora)
    assert main(["export", str(run.root)]) == 0  # auto: a LoRA run exports the kohya layout
    kohya = load_file(str(run.root / "export" / "me-lora.safetensors"))
    assert set(kohya) == set(to_kohya(*read_lora_file(lora), "sd1"))
    assert main(["export", str(run.root), "export.format=lora-diffusers", "export.dtype=fp32"]) == 0
    copied = load_file(str(run.root / "export" / "lora-diffusers" / "pytorch_lora_weights.safetensors"))
    original = load_file(str(lora))
    assert copied.keys() == original.keys() and all(torch.equal(copied[k], original[k]) for k in original)
    card = (run.root / "export" / "README.md").read_text()
    assert "<lora:me-lora:1>" in card and "lora-diffusers/pytorch_lora_weights.safetensors" in card


def test_export_full_run_as_diffusers_folder_renders_like_open_trained(tiny_models, tmp_path):
    from diffusers import DiffusionPipeline

    from lookalike.models.trained import open_trained

    run = _trained_run(tmp_path / "me", tiny_models["sd2"], "sd2", "full")
    assert main(["export", str(run.root), "export.format=diffusers", "export.dtype=fp32"]) == 0
    folder = run.root / "export" / "diffusers"
    assert (folder / "model_index.json").is_file() and (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    exported = DiffusionPipeline.from_pretrained(folder)
    trained, _ = open_trained(run)
    assert type(exported) is type(trained)
    assert np.array_equal(_render(exported), _render(trained))
    assert 'from_pretrained("diffusers")' in (run.root / "export" / "README.md").read_text()


def test_export_lora_run_as_single_file_fuses_the_lora(tiny_models, tmp_path):
    lora = _make_lora(tiny_models["sd1"], "sd1", tmp_path / "lora")
    run = _trained_run(tmp_path / "me", tiny_models["sd1"], "sd1", "lora", lora)
    assert main(["export", str(run.root), "export.format=single-file", "export.dtype=fp32"]) == 0
    path = run.root / "export" / "me.safetensors"
    assert not any("lora" in k for k in load_file(str(path)))  # fused into the weights, no adapter tensors
    single = _pipeline_class("sd1").from_single_file(str(path), config=str(tiny_models["sd1"]), local_files_only=True)
    base = _pipeline_class("sd1").from_pretrained(tiny_models["sd1"])
    plain = _render(base)
    base.load_lora_weights(str(lora))
    with_lora = _render(base)
    # Fusing adds B·A·alpha/r to each weight once instead of at every forward: equal up to float32 rounding.
    assert np.abs(_render(single) - with_lora).max() <= 1e-5  # measured 2.7e-6
    assert np.abs(with_lora - plain).max() > 0.05  # the LoRA really changes the image


@pytest.mark.parametrize("family, text_encoders", [("sd1", False), ("sdxl", True)])
def test_open_trained_fuses_the_lora_quietly(tiny_models, tmp_path, caplog, family, text_encoders):
    from lookalike.models.trained import open_trained

    lora = _make_lora(tiny_models[family], family, tmp_path / "lora", text_encoders=text_encoders)
    run = _trained_run(tmp_path / "me", tiny_models[family], family, "lora", lora)
    reference = _pipeline_class(family).from_pretrained(tiny_models[family])
    with caplog.at_level("WARNING"):
        reference.load_lora_weights(str(lora))
        diffusers_warned = any("No LoRA keys" in r.getMessage() for r in caplog.records)
        caplog.clear()
        opened, _ = open_trained(run)
    assert not [r.getMessage() for r in caplog.records if "LoRA" in r.getMessage()]
    assert diffusers_warned == (not text_encoders)  # the warning open_trained avoids is real
    assert not any("lora" in name for name, _ in opened.unet.named_parameters())  # fused, adapters gone
    assert np.abs(_render(opened) - _render(reference)).max() <= 1e-5


def test_export_without_training_says_what_to_do(tmp_path, capsys):
    assert main(["export", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "lookalike train" in err and "Traceback" not in err
