"""`lookalike train` on tiny SD1 / SD2 / SDXL models: what it writes, that the result loads and differs from the base."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lookalike.cli import main
from lookalike.errors import LookalikeError
from lookalike.models.trained import open_trained
from lookalike.run import read_jsonl
from lookalike.train.loop import Trainer, train_run
from trainrun import make_train_run, sample_latents


def _pipeline_class(family):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


@pytest.mark.parametrize(
    "family, method, text_encoder",
    [("sd1", "full", True), ("sd2", "lora", True), ("sdxl", "lora", True),
     # the other halves of the family × method matrix: same code paths, outside the default suite's budget
     pytest.param("sd1", "lora", False, marks=pytest.mark.slow),
     pytest.param("sd2", "full", False, marks=pytest.mark.slow),
     pytest.param("sdxl", "full", False, marks=pytest.mark.slow)],
)
def test_trains_and_the_model_loads_and_differs(tmp_path, tiny_models, family, method, text_encoder):
    run = make_train_run(tmp_path / "run", tiny_models[family], f"train.method={method}",
                         f"train.train_text_encoder={str(text_encoder).lower()}", "train.min_snr_gamma=5",
                         "train.preview_every=2", "train.preview_steps=1")
    summary = train_run(run)
    assert "trained to step 2" in summary
    assert (run.previews_dir / "step-000002_0.png").is_file()
    info = json.loads((run.model_dir / "lookalike.json").read_text())
    assert (info["method"], info["family"], info["step"]) == (method, family, 2)
    assert info["subjects"][0]["instance_prompt"] == "a photo of zq0x person"
    assert (run.checkpoints_dir / "step-000002" / "training_state.pt").is_file()

    cls = _pipeline_class(family)
    base = cls.from_pretrained(tiny_models[family])
    if method == "full":
        trained = cls.from_pretrained(run.model_dir)
        changed = lambda name: not all(  # noqa: E731
            torch.equal(a, b) for a, b in zip(getattr(base, name).parameters(), getattr(trained, name).parameters())
        )
        assert changed("unet") and changed("text_encoder") == text_encoder
        assert type(trained.scheduler) is type(base.scheduler)  # previews sample with their own scheduler
    else:
        with safe_open(run.model_dir / "pytorch_lora_weights.safetensors", "pt") as f:
            prefixes = {key.split(".")[0] for key in f.keys()}
        expected = {"unet"} | ({"text_encoder", "text_encoder_2"} if family == "sdxl" else {"text_encoder"})
        assert prefixes == (expected if text_encoder else {"unet"})
        trained = cls.from_pretrained(tiny_models[family])
        trained.load_lora_weights(run.model_dir)
    before, after = sample_latents(base), sample_latents(trained)
    assert not torch.allclose(before, after, atol=1e-5)
    opened, opened_info = open_trained(run)
    assert opened_info == info
    assert torch.allclose(sample_latents(opened), after, atol=1e-4)


def test_cached_and_per_step_paths_give_the_same_loss(tmp_path, tiny_models):
    losses = []
    for cache in ("true", "false"):
        run = make_train_run(tmp_path / cache, tiny_models["sdxl"], f"train.cache_latents={cache}",
                             "train.random_flip=false", "train.noise_offset=0.1")
        trainer = Trainer(run)
        trainer.setup()
        assert (trainer.latent_cache is not None) == (cache == "true")
        with torch.no_grad():
            losses.append(trainer._micro_step_loss(0).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_several_subjects_each_with_their_own_prompts(tmp_path, tiny_models):
    run = make_train_run(tmp_path / "run", tiny_models["sd1"], "subjects.1.class_noun=dog",
                         subjects=("cat", "dog"))
    trainer = Trainer(run)
    trainer.setup()
    prompts = {(e.subject, e.prompt) for e in trainer.data.instances}
    assert prompts == {("cat", "a photo of zq0x person"), ("dog", "a photo of zq1x dog")}
    assert {e.prompt for e in trainer.data.priors["dog"]} == {"a photo of a dog"}
    assert trainer.prompt_cache is not None and len(trainer.prompt_cache.entries) == 4


def test_missing_photos_and_priors_say_which_verb_to_run(tmp_path, tiny_models):
    run = make_train_run(tmp_path / "run", tiny_models["sd1"])
    (run.priors_dir("cat") / "photo_2.png").unlink()
    with pytest.raises(LookalikeError, match=r"2 of 3 class-prior images.*lookalike priors"):
        train_run(run)
    (run.instance_dir("cat") / "manifest.jsonl").unlink()
    with pytest.raises(LookalikeError, match=r"no prepared photos.*lookalike prepare"):
        train_run(run)
    assert not run.checkpoints_dir.exists() and not run.model_dir.exists()


def test_cpu_refuses_fp16_and_8bit_adam_with_the_fix(tmp_path, tiny_models, capsys):
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without a CUDA GPU")
    run = make_train_run(tmp_path / "run", tiny_models["sd1"])
    assert main(["train", str(run.root), "train.mixed_precision=fp16"]) == 2
    assert "use bf16 or no" in capsys.readouterr().err
    assert main(["train", str(run.root), "train.mixed_precision=no", "train.use_8bit_adam=true"]) == 2
    assert "use_8bit_adam" in capsys.readouterr().err
    assert not run.checkpoints_dir.exists()


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_models):
    run = make_train_run(tmp_path / "run", tiny_models["sd1"], "train.learning_rate=1e30",
                         "train.max_steps=6", "train.checkpoint_every=1", "train.max_grad_norm=1e30")
    with pytest.raises(LookalikeError, match=r"loss became (nan|inf) at step (\d).*learning_rate") as err:
        train_run(run)
    bad_step = int(err.value.args[0].split(" at step ")[1].split(":")[0])
    kept = sorted(p.name for p in run.checkpoints_dir.iterdir() if not p.name.startswith("."))
    assert kept and kept[-1] == f"step-{bad_step - 1:06d}"
    assert not run.model_dir.exists()
    assert read_jsonl(run.events_path)[-1]["event"] == "error"


def test_cli_from_toml_and_from_flags_with_previews_and_logs(tmp_path, tiny_models, capsys):
    run = make_train_run(tmp_path / "run", tiny_models["sd1"])
    toml = tmp_path / "run.toml"
    toml.write_text((run.root / "config.toml").read_text().replace("max_steps = 2", "max_steps = 1"))
    assert main(["train", str(run.root), "--config", str(toml)]) == 0
    assert json.loads((run.model_dir / "lookalike.json").read_text())["step"] == 1
    flags = ["train.max_steps=2", "train.preview_every=2", "train.preview_steps=2", "train.keep_checkpoints=1",
             "train.preview_prompts=['{subject} on a beach', 'a {subject}']"]
    assert main(["train", str(run.root), *flags]) == 0
    assert open_trained(run, checkpoint=2)[1]["step"] == 2
    with pytest.raises(LookalikeError, match="no trained model"):
        open_trained(run, checkpoint=1)  # pruned: keep_checkpoints=1
    assert sorted(p.name for p in run.previews_dir.iterdir()) == ["step-000002_0.png", "step-000002_1.png"]
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["step-000002"]
    events = [e["event"] for e in read_jsonl(run.events_path)]
    assert events.count("start") == 2 and events.count("done") == 2 and "preview" in events and "step" in events
    assert list((run.logs_dir / "train").glob("events.out.tfevents.*"))
    assert main(["train", str(run.root), "train.method=full", "train.max_steps=4"]) == 2
    assert "trained with method=lora" in capsys.readouterr().err
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["step-000002"]


def test_each_pass_shows_every_photo_once_and_priors_match_their_subject(tmp_path, tiny_models):
    from lookalike.data.dataset import draw_batch, load_training_set, step_generator

    run = make_train_run(tmp_path / "run", tiny_models["sd1"], subjects=("cat", "dog"))
    data = load_training_set(run)
    drawn = []
    for micro in range(3):  # 6 photos, batch 1 on each of 2 processes: 3 micro-steps = one pass
        for rank in (0, 1):
            instances, priors = draw_batch(data, 0, micro, rank, 2, 1, step_generator(0, micro, rank))
            assert [p.subject for p in priors] == [e.subject for e in instances]
            drawn += instances
    assert sorted(e.path for e in drawn) == sorted(e.path for e in data.instances)
    again, _ = draw_batch(data, 0, 2, 1, 2, 1, step_generator(0, 2, 1))
    assert again == [drawn[-1]]  # a step's data depends on its number alone


def test_sdxl_time_ids_come_from_each_images_manifest_row(tmp_path, tiny_models):
    from lookalike.data.dataset import load_training_set
    from lookalike.run import read_jsonl
    from lookalike.train.encode import time_ids
    from trainrun import write_manifest

    run = make_train_run(tmp_path / "run", tiny_models["sdxl"])
    folder = run.instance_dir("cat")
    rows = read_jsonl(folder / "manifest.jsonl")
    rows[1]["original_size"], rows[1]["crop_top_left"], rows[1]["crop_size"] = [300, 200], [50, 0], 200
    del rows[2]["original_size"], rows[2]["crop_top_left"]
    write_manifest(folder, rows)
    data = load_training_set(run)
    got = time_ids(data.instances + data.priors["cat"][:1], 64).tolist()
    # Row 1's 200 px crop at (50, 0) becomes 64 px: its corner is measured after the same scaling (×0.32).
    assert got == [[80, 96, 4, 8, 64, 64], [300, 200, 16, 0, 64, 64], [64, 64, 0, 0, 64, 64], [64, 64, 0, 0, 64, 64]]


def test_priors_of_an_older_class_prompt_are_refused(tmp_path, tiny_models):
    from lookalike.data.dataset import load_training_set

    run = make_train_run(tmp_path / "run", tiny_models["sd1"])
    run.config.subjects[0].class_prompt = "a photo of a {class_noun}, clean-shaven, glasses"  # as audit.apply does
    with pytest.raises(LookalikeError, match="class prompt is now 'a photo of a person, clean-shaven, glasses'"):
        load_training_set(run)


def test_bf16_without_priors_after_a_full_precision_run_in_the_same_process(tmp_path, tiny_models):
    train_run(make_train_run(tmp_path / "fp32", tiny_models["sd1"], "train.max_steps=1"))
    run = make_train_run(tmp_path / "bf16", tiny_models["sd1"], "train.max_steps=1", "train.mixed_precision=bf16",
                         "train.with_prior_preservation=false")
    for png in run.priors_dir("cat").glob("*.png"):
        png.unlink()  # without prior preservation no priors are read
    assert "trained to step 1" in train_run(run)
    with safe_open(run.model_dir / "pytorch_lora_weights.safetensors", "pt") as f:
        tensors = [f.get_tensor(k) for k in f.keys()]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors)
    assert any(t.abs().sum() > 0 for t in tensors)
