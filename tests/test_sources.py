"""Model sources: diffusers folders, single original-layout files, hub ids offline, pickle refusal, toy."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

import lookalike.toyworld
from lookalike.config import ModelConfig
from lookalike.errors import LookalikeError
from lookalike.models.load import load_components, load_pipeline, load_tokenizers
from lookalike.models.sources import family_from_keys, resolve_source

EXPECTED = {"sd1": ("epsilon", 1), "sd2": ("v_prediction", 1), "sdxl": ("epsilon", 2)}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_diffusers_folder_family_is_detected(tiny_models, family):
    parts = load_components(ModelConfig(source=str(tiny_models[family])))
    prediction, encoders = EXPECTED[family]
    assert parts.family == family
    assert parts.prediction_type == prediction
    assert len(parts.text_encoders) == len(parts.tokenizers) == encoders
    assert len(load_tokenizers(ModelConfig(source=str(tiny_models[family])))) == encoders
    assert getattr(parts.pipeline, "safety_checker", None) is None


def test_family_mismatch_is_an_error(tiny_models):
    with pytest.raises(LookalikeError, match="model.family is 'sdxl' but .* looks like sd1: set model.family=sd1"):
        load_pipeline(ModelConfig(source=str(tiny_models["sd1"]), family="sdxl"))


@pytest.fixture(scope="module")
def single_files(tiny_models, tmp_path_factory):
    """Each tiny model written as one original-layout .safetensors file (the export module's writer)."""
    from lookalike.models.export_sd import write_single_file

    root = tmp_path_factory.mktemp("single-files")
    files = {}
    for family, folder in tiny_models.items():
        pipeline, _ = load_pipeline(ModelConfig(source=str(folder)))
        files[family] = root / f"{family}.safetensors"
        write_single_file(pipeline, family, files[family], torch.float32, {})
    return files


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_single_file_loads_with_a_config_folder(tiny_models, single_files, family):
    model = ModelConfig(source=str(single_files[family]), config=str(tiny_models[family]))
    parts = load_components(model)
    reference = load_components(ModelConfig(source=str(tiny_models[family])))
    assert parts.family == family
    assert parts.prediction_type == EXPECTED[family][0]
    for name, tensor in reference.unet.state_dict().items():
        assert torch.equal(parts.unet.state_dict()[name], tensor), name
    assert torch.equal(
        parts.text_encoders[-1].get_input_embeddings().weight, reference.text_encoders[-1].get_input_embeddings().weight
    )
    assert len(load_tokenizers(model)) == EXPECTED[family][1]


def test_single_file_offline_without_config_says_to_set_model_config(single_files):
    with pytest.raises(LookalikeError, match="set model.config=<a local diffusers folder"):
        load_pipeline(ModelConfig(source=str(single_files["sd2"])))
    with pytest.raises(LookalikeError, match="set model.config="):
        load_tokenizers(ModelConfig(source=str(single_files["sdxl"])))


def test_single_file_family_mismatch(tiny_models, single_files):
    model = ModelConfig(source=str(single_files["sdxl"]), family="sd1", config=str(tiny_models["sd1"]))
    with pytest.raises(LookalikeError, match="looks like sdxl: set model.family=sdxl"):
        load_pipeline(model)


def _keys_file(path, *keys):
    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


def test_family_from_original_key_names(tmp_path):
    assert family_from_keys(["conditioner.embedders.0.transformer.x", "conditioner.embedders.1.model.ln_final.weight"]) == "sdxl"
    assert family_from_keys(["cond_stage_model.model.token_embedding.weight", "model.diffusion_model.out.0.bias"]) == "sd2"
    assert family_from_keys(["cond_stage_model.transformer.text_model.final_layer_norm.weight"]) == "sd1"
    assert family_from_keys(["model.diffusion_model.out.0.bias"]) is None
    unet_only = _keys_file(tmp_path / "unet_only.safetensors", "model.diffusion_model.out.0.bias")
    with pytest.raises(LookalikeError, match="set model.family=sd1, sd2 or sdxl"):
        load_pipeline(ModelConfig(source=str(unet_only)))


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_files_are_refused_by_default(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {"cond_stage_model.model.token_embedding.weight": torch.zeros(2)}}, path)
    before = _digest(path)
    with pytest.raises(LookalikeError, match="pickle.*can run any code.*model.allow_pickle=true"):
        load_pipeline(ModelConfig(source=str(path)))
    with pytest.raises(LookalikeError, match="pickle"):
        load_tokenizers(ModelConfig(source=str(path)))
    assert _digest(path) == before


def test_allowed_pickle_is_read_for_its_family(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"cond_stage_model.model.token_embedding.weight": torch.zeros(2)}}, path)
    # Past the refusal: the keys say SD2, whose standard configs are not reachable offline.
    with pytest.raises(LookalikeError, match="stabilityai/stable-diffusion-2-1 could not be found.*model.config="):
        load_pipeline(ModelConfig(source=str(path), allow_pickle=True))


def test_hub_id_offline_gives_one_line_with_the_fix():
    with pytest.raises(LookalikeError, match="could not be found locally or downloaded.*pass model.source=") as err:
        load_pipeline(ModelConfig(source="someone/no-such-model", revision="main"))
    assert "\n" not in str(err.value)
    assert resolve_source(ModelConfig(source="someone/no-such-model", revision="v1")).revision == "v1"


def test_bad_paths(tmp_path):
    with pytest.raises(LookalikeError, match="no such file or folder"):
        load_pipeline(ModelConfig(source=str(tmp_path / "missing.safetensors")))
    with pytest.raises(LookalikeError, match="no model_index.json"):
        load_pipeline(ModelConfig(source=str(tmp_path)))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\0" * 16)
    with pytest.raises(LookalikeError, match="unsupported file type '.onnx'"):
        load_pipeline(ModelConfig(source=str(onnx)))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"this is not a safetensors file")
    with pytest.raises(LookalikeError, match="not a readable .safetensors file"):
        load_pipeline(ModelConfig(source=str(broken)))


def test_toy_source(monkeypatch, tmp_path, tiny_models):
    monkeypatch.setattr(lookalike.toyworld, "ASSETS", tmp_path)  # an install without the weights
    with pytest.raises(LookalikeError, match="toy model's weights are missing from this install"):
        load_pipeline(ModelConfig(source="toy"))
    monkeypatch.setattr(lookalike.toyworld, "pipeline_dir", lambda: tiny_models["sd1"])
    assert load_pipeline(ModelConfig(source="toy"))[1] == "sd1"
