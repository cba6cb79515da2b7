"""The learning experiment's plumbing (python -m lookalike.toyworld.quality), on an untrained build export.

Whether training really teaches the toy model its subject is tests/test_learning.py's question
(slow); these tests check that the experiment runs every condition through the ordinary verbs
and reports every figure, and that a wrong --model is refused before anything is written.
"""

from __future__ import annotations

import json

import pytest
from conftest import untrained_toy_export

from lookalike.toyworld import quality
from lookalike.toyworld.world import caption_words

SMALL = [
    "priors.num_images=2", "priors.batch_size=2", "priors.steps=2", "train.max_steps=2",
    "eval.max_prompts=1", "eval.samples_per_prompt=2", "eval.steps=2",
]


def test_experiment_measures_every_condition_and_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "LEAKAGE_IMAGES", 2)
    model = untrained_toy_export(tmp_path / "build-export")
    results = quality.experiment(tmp_path / "runs", SMALL, model=model, echo=lambda _: None)
    assert set(results["conditions"]) == set(quality.CONDITIONS)
    for condition in results["conditions"].values():
        assert condition["base"]["step"] == 0 and condition["trained"]["step"] == 2
        for row in (condition["base"], condition["trained"]):
            assert all(-1 <= row[k] <= 1 for k in ("likeness", "clip_t", "pres"))
            assert row["leakage"]["images"] == 2 and 0 <= row["leakage"]["beard"] <= 1
            assert set(row["leakage"]["paired"]) == {"beard", "no_glasses"}
            assert all(v in (0, 0.5, 1) for v in row["leakage"]["paired"].values())  # a share of 2 images
    assert set(results["paired_check"]) == {"as is", "beard", "no_glasses"}
    assert set(results["photos"]["through_vae"]) == {"beard", "no_glasses"}
    assert results["conditions"]["naive"]["class_prompt"] == "a photo of a man"
    refined = results["conditions"]["refined"]["class_prompt"]  # probed with the toy words, whatever it found
    assert set(refined.replace(",", " ").replace("-", " - ").split()) <= caption_words()
    assert json.loads((tmp_path / "runs" / "quality.json").read_text()) == results
    assert not (tmp_path / "runs" / "no-prior" / "priors").exists() or not any((tmp_path / "runs" / "no-prior" / "priors").rglob("*.png"))
    embedding = results["conditions"]["embedding"]  # only the identifier's row learns: "a photo of a man" is untouched
    assert embedding["trained"]["pres"] == pytest.approx(embedding["base"]["pres"], abs=1e-6)
    assert not any((tmp_path / "runs" / "embedding").glob("priors/**/*.png"))
    table = quality.markdown(results)
    assert table.count("\n| ") == 6 and "textual inversion" in table and str(model) in table


def test_a_folder_that_is_not_a_build_export_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit, match="is not a toy build's export"):
        quality.main(["--out", str(tmp_path / "runs"), "--model", str(tmp_path / "nothing")])
    assert not (tmp_path / "runs").exists()
