"""Config: presets parse, overrides apply, bad input names the key and leaves the run folder intact."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lookalike import config as cfg
from lookalike.cli import main
from lookalike.errors import LookalikeError
from lookalike.run import Run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", cfg.preset_names())
def test_every_preset_parses(name):
    config = cfg.build(cfg.load_preset(name))
    assert isinstance(config, cfg.RunConfig)


def test_presets_exist():
    assert {"person-lora", "person-full", "object-lora", "low-memory"} <= set(cfg.preset_names())


def test_overrides_parse_types_and_subject_shortcut():
    config = cfg.build({}, ["train.learning_rate=2e-6", "train.gradient_checkpointing=true",
                            "subject.identifier=zwx", "subjects.1.name=dog", "subjects.1.class_noun=dog",
                            "train.preview_prompts=['{subject} at the beach']"])
    assert config.train.learning_rate == 2e-6
    assert config.train.gradient_checkpointing is True
    assert config.subjects[0].identifier == "zwx"
    assert [s.name for s in config.subjects] == ["subject", "dog"]
    assert config.train.preview_prompts == ["{subject} at the beach"]


def test_prompts_expand_subject_and_class():
    s = cfg.SubjectConfig(identifier="ohwx", class_noun="man")
    assert s.resolved_instance_prompt() == "a photo of ohwx man"
    assert s.resolved_class_prompt() == "a photo of a man"


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=1", "train.lr"),
        ("train.learning_rate=-1", "train.learning_rate"),
        ("train.method=qlora", "train.method"),
        ("subject.class_prompt=", "subjects.0.class_prompt"),
        ("subject.identifier=two words", "subjects.0.identifier"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(LookalikeError) as err:
        cfg.build({}, [override])
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_prior_preservation_off_allows_empty_class_prompt():
    config = cfg.build({}, ["train.with_prior_preservation=false", "subject.class_prompt="])
    assert config.subjects[0].class_prompt == ""


def test_run_saves_resolved_config_and_reuses_it(tmp_path):
    Run.open(tmp_path / "r", preset="person-lora", overrides=["train.max_steps=7"])
    again = Run.open(tmp_path / "r")
    assert again.config.train.max_steps == 7
    assert again.config.subjects[0].kind == "person"


def test_invalid_override_leaves_saved_config_intact(tmp_path, capsys):
    run_dir = tmp_path / "r"
    Run.open(run_dir, overrides=["train.max_steps=7"])
    before = (run_dir / "config.toml").read_bytes()
    assert main(["train", str(run_dir), "train.max_steps=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.max_steps" in err
    assert (run_dir / "config.toml").read_bytes() == before


def test_unknown_preset_and_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "r"), "--preset", "nope"]) == 2
    assert "person-lora" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "r"), "--config", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_config_verb_lists_keys(capsys):
    assert main(["config", "--help-keys"]) == 0
    out = capsys.readouterr().out
    assert "train.learning_rate" in out and "subject.identifier" in out


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).splitlines()
    assert blocks[0].startswith("# 1.") and blocks[2].startswith("# 2.")
    test_command = blocks[3].strip()
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()


def test_verb_that_refuses_its_input_keeps_saved_config(tmp_path, photos, capsys):
    run_dir = tmp_path / "r"
    assert main(["prepare", str(run_dir), f"subject.photos={photos}", "prepare.resolution=64"]) == 0
    assert main(["prepare", str(run_dir), f"subject.photos={tmp_path / 'missing'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert Run.open(run_dir, save=False).config.subjects[0].photos == str(photos)
