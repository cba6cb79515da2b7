"""`lookalike demo` replays the whole story on one run folder (small numbers here, to stay fast)."""

from __future__ import annotations

import json

import torch

from lookalike.cli import main
from lookalike.sample.pngmeta import read_params

SMALL = [
    "priors.num_images=4", "priors.batch_size=4", "priors.steps=2",
    "train.max_steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=1",
    "generate.styles=['pencil-drawing']", "generate.seeds_per_prompt=2", "generate.keep=1", "generate.steps=2",
    "eval.max_prompts=2", "eval.samples_per_prompt=2", "eval.steps=2", "eval.include_base=false",
]


def test_demo_runs_every_step_and_says_where_to_look(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert main(["demo", str(run_dir), *SMALL]) == 0
    out = capsys.readouterr().out
    for verb in ("prepare", "identifier", "priors", "audit", "train", "generate", "eval", "export"):
        assert f"lookalike {verb} {run_dir}" in out
    assert (run_dir / "audit" / "report.html").is_file()
    assert (run_dir / "model" / "pytorch_lora_weights.safetensors").is_file()
    assert list(run_dir.glob("samples/*/index.html"))
    manifests = list(run_dir.glob("samples/*/manifest.jsonl"))
    rows = [json.loads(line) for line in manifests[0].read_text().splitlines()]
    kept = [read_params(manifests[0].parent / row["file"]) for row in rows if row["kept"]]
    assert kept and all(p.scorer.startswith("CLIP-I likeness (toy)") for p in kept)  # best-of-N by likeness, not colours
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["rows"] and all(row["subject"] == "toyperson" for row in report["rows"])
    assert list((run_dir / "export").glob("*.safetensors"))
    assert "identifiers checked on toy" in out  # the shipped toy model (model.source=toy)
    assert "Where to look" in out


def test_the_demo_run_again_refines_the_class_prompt_no_further(tmp_path, capsys, monkeypatch):
    """Run again on its folder, the story resumes: the audit refines the class prompt no further, so
    the priors and the model trained on them stay as they were. Here every audit would refine more
    (as the real one did, adding "short hair" after the refined priors lost it)."""
    from safetensors.torch import load_file

    from lookalike.demo import open_demo_run, refined_before
    from lookalike.prior import probes

    monkeypatch.setattr(probes, "refine_prompt", lambda prompt, findings: prompt + ", hat")
    run_dir = tmp_path / "demo"
    assert main(["demo", str(run_dir), *SMALL]) == 0
    run = open_demo_run(run_dir)
    assert refined_before(run) and run.subject().class_prompt == "a photo of a {class_noun}, hat"  # refined once
    priors = (run_dir / "priors" / "toyperson" / "manifest.jsonl").read_text()
    assert '"prompt": "a photo of a man, hat"' in priors
    lora = run_dir / "model" / "pytorch_lora_weights.safetensors"
    model = load_file(lora)
    capsys.readouterr()
    assert main(["demo", str(run_dir), *SMALL]) == 0
    assert "class prompt updated" not in capsys.readouterr().out
    assert open_demo_run(run_dir).subject().class_prompt == "a photo of a {class_noun}, hat"
    assert (run_dir / "priors" / "toyperson" / "manifest.jsonl").read_text() == priors
    again = load_file(lora)  # saved again from the last checkpoint, not retrained
    assert again.keys() == model.keys() and all(torch.equal(again[k], model[k]) for k in model)


def test_an_audit_that_changed_no_prompt_does_not_count_as_refined(tmp_path):
    from lookalike.demo import open_demo_run, refined_before

    run = open_demo_run(tmp_path / "demo")
    assert not refined_before(run)  # no events yet
    run.emit("audit", "done", changed=[])
    run.emit("priors", "done", changed=["toyperson"])  # another verb's event
    assert not refined_before(run)
    run.emit("audit", "done", changed=["toyperson"])
    assert refined_before(run)


def test_demo_refuses_a_bad_override_before_doing_anything(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "train.max_steps=zero"]) == 2
    assert "train.max_steps" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_a_demo_folder_opened_again_keeps_its_refined_class_prompt(tmp_path):
    from lookalike.demo import open_demo_run

    run = open_demo_run(tmp_path / "demo")
    assert run.subject().class_prompt == "a photo of a {class_noun}"  # the preset's naive prompt
    run.subject().class_prompt = "a photo of a {class_noun}, glasses"  # as `audit.apply` writes it
    run.save_config()
    again = open_demo_run(tmp_path / "demo", ["train.max_steps=7"])
    assert again.subject().class_prompt == "a photo of a {class_noun}, glasses"
    assert again.config.train.max_steps == 7 and again.config.train.lora_rank == 16  # overrides, and the preset's values
    assert open_demo_run(tmp_path / "other").subject().class_prompt == "a photo of a {class_noun}"
