"""train.method=embedding (textual inversion): only the identifier's rows learn; everything else stays the base model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lookalike.errors import LookalikeError
from lookalike.models.embedding import WEIGHT_NAME, identifier_token_ids
from lookalike.models.export import export_run, resolve_format
from lookalike.models.trained import open_trained
from lookalike.run import Run
from lookalike.train.loop import train_run
from test_resume import _assert_identical, _weights
from trainrun import make_train_run, sample_latents

EMBEDDING = ["train.method=embedding", "train.with_prior_preservation=false", "train.learning_rate=5e-2",
             "subjects.0.identifier=httr"]  # one token of the tiny models' tokenizer (zq0x splits into four)
PROMPT = "a photo of httr person"


def _encoders(pipe):
    return [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_only_the_identifier_rows_change_and_other_prompts_render_as_the_base(tmp_path, tiny_models, family):
    from diffusers import DiffusionPipeline

    run = make_train_run(tmp_path / "run", tiny_models[family], *EMBEDDING)
    assert "trained to step 2 (embedding)" in train_run(run)
    assert sorted(p.name for p in run.model_dir.iterdir()) == ["identifier_embeddings.safetensors", "lookalike.json"]
    assert json.loads((run.model_dir / "lookalike.json").read_text())["method"] == "embedding"

    base = DiffusionPipeline.from_pretrained(tiny_models[family])
    trained, info = open_trained(run)
    assert info["method"] == "embedding"
    assert all(torch.equal(a, b) for a, b in zip(base.unet.parameters(), trained.unet.parameters()))
    with safe_open(run.model_dir / WEIGHT_NAME, "pt") as f:
        assert sorted(f.keys()) == (["text_encoder", "text_encoder_2"] if family == "sdxl" else ["text_encoder"])
    for tokenizer, before, after in zip([base.tokenizer, getattr(base, "tokenizer_2", None)], _encoders(base), _encoders(trained)):
        ids = identifier_token_ids(tokenizer, ["httr"])
        old, new = before.get_input_embeddings().weight, after.get_input_embeddings().weight
        moved = (old != new).any(dim=1).nonzero().flatten().tolist()
        assert moved == ids  # the identifier's row moved, and nothing else
        rest = [i for i in range(old.shape[0]) if i not in ids]
        assert torch.equal(old[rest], new[rest])
        others = lambda m: [p for p in m.parameters() if p is not m.get_input_embeddings().weight]  # noqa: E731
        assert all(torch.equal(a, b) for a, b in zip(others(before), others(after)))

    assert not torch.allclose(sample_latents(base, PROMPT), sample_latents(trained, PROMPT), atol=1e-5)
    plain = "a photo of a person"
    assert torch.equal(sample_latents(base, plain), sample_latents(trained, plain))

    assert "embedding file(s): httr.safetensors" in export_run(run)  # auto: the A1111 / ComfyUI layout
    keys = {"sd1": {"emb_params": "text_encoder"}, "sdxl": {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}}[family]
    exported = load_file(run.root / "export" / "embeddings" / "httr.safetensors")
    assert exported.keys() == keys.keys()
    for key, encoder in keys.items():
        row = getattr(trained, encoder).get_input_embeddings().weight[identifier_token_ids(base.tokenizer, ["httr"])]
        assert exported[key].shape == row.shape and exported[key].dtype == torch.float16
        assert torch.allclose(exported[key].float(), row, atol=1e-3)
    assert "`embeddings/`" in (run.root / "export" / "README.md").read_text()

    loaded = DiffusionPipeline.from_pretrained(tiny_models[family])  # as diffusers users load the file
    encoders = [("clip_l", loaded.text_encoder, loaded.tokenizer), ("clip_g", getattr(loaded, "text_encoder_2", None), getattr(loaded, "tokenizer_2", None))]
    if family == "sd1":
        loaded.load_textual_inversion(str(run.root / "export" / "embeddings" / "httr.safetensors"), token="httr")
    for key, encoder, tokenizer in encoders if family == "sdxl" else []:
        loaded.load_textual_inversion(exported[key].float(), token="httr", text_encoder=encoder, tokenizer=tokenizer)
    assert torch.allclose(sample_latents(loaded, PROMPT), sample_latents(trained, PROMPT), atol=1e-3)


def test_an_interrupted_embedding_run_resumes_bit_identical(tmp_path, tiny_models):
    settings = [*EMBEDDING, "train.max_steps=3", "train.lr_warmup_steps=2"]
    whole = make_train_run(tmp_path / "whole", tiny_models["sd1"], *settings)
    train_run(whole)
    split = make_train_run(tmp_path / "split", tiny_models["sd1"], *settings)
    split.stop_path.touch()
    assert train_run(split).startswith("stopped at step 1 of 3")
    assert "trained to step 3" in train_run(split)
    _assert_identical(_weights(whole.model_dir, [WEIGHT_NAME]), _weights(split.model_dir, [WEIGHT_NAME]))


@pytest.mark.parametrize(
    "overrides, message",
    [(["train.method=embedding"], "set train.with_prior_preservation=false"),
     ([*EMBEDDING, "train.train_text_encoder=true"], "set train.train_text_encoder=false")],
)
def test_settings_an_embedding_cannot_use_are_refused_with_the_fix(tmp_path, overrides, message):
    with pytest.raises(LookalikeError, match=message):
        Run.open(tmp_path / "run", overrides=overrides)
    assert not (tmp_path / "run" / "config.toml").exists()


def test_an_identifier_that_is_not_one_token_of_its_own_is_refused():
    from transformers import AutoTokenizer

    from lookalike.toyworld import pipeline_dir

    toy = AutoTokenizer.from_pretrained(pipeline_dir() / "tokenizer")
    assert identifier_token_ids(toy, ["ohwx", "ohwx"]) == [toy.convert_tokens_to_ids("ohwx</w>")]
    with pytest.raises(LookalikeError, match="learns the identifier's own token, but 'qqqzzz' splits into q \\+ q .*: pick a single-token"):
        identifier_token_ids(toy, ["qqqzzz"])  # q and z are pieces of other words


def test_a_split_identifier_stops_training_before_anything_is_written(tmp_path, tiny_models):
    run = make_train_run(tmp_path / "run", tiny_models["sd1"], *EMBEDDING, "subjects.0.identifier=zq0x")
    with pytest.raises(LookalikeError, match="'zq0x' splits into z \\+ q"):
        train_run(run)
    assert not run.model_dir.exists() and not run.checkpoints_dir.exists()


def test_formats_that_do_not_fit_the_training_method_are_refused():
    assert resolve_format("single-file", "embedding") == "single-file"  # the rows fused into the text encoder
    with pytest.raises(LookalikeError, match="train.method is embedding: use export.format=embedding, export.format=single-file"):
        resolve_format("lora-kohya", "embedding")
    with pytest.raises(LookalikeError, match="needs a textual-inversion run .* train.method is lora"):
        resolve_format("embedding", "lora")
