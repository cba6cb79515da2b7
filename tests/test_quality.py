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


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The four conditions on an untrained export, with tiny settings: (results, runs folder, model)."""
    tmp_path = tmp_path_factory.mktemp("quality")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(quality, "LEAKAGE_IMAGES", 2)
        model = untrained_toy_export(tmp_path / "build-export")
        return quality.experiment(tmp_path / "runs", SMALL, model=model, echo=lambda _: None), tmp_path, model


def test_experiment_measures_every_condition_and_writes_the_table(experiment):
    results, tmp_path, model = experiment
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
    assert "rendered" not in table


def test_rendered_priors_add_three_conditions_trained_on_the_worlds_own_men(experiment, monkeypatch):
    results, tmp_path, model = experiment
    monkeypatch.setattr(quality, "LEAKAGE_IMAGES", 2)
    trained = {c: (tmp_path / "runs" / c / "checkpoints").stat().st_mtime_ns for c in quality.CONDITIONS}
    more = quality.experiment(tmp_path / "runs", SMALL, model=model, echo=lambda _: None, rendered_priors=True)
    assert set(more["conditions"]) == set(quality.CONDITIONS + quality.RENDERED)
    assert trained == {c: (tmp_path / "runs" / c / "checkpoints").stat().st_mtime_ns for c in quality.CONDITIONS}  # reused
    assert more["conditions"]["refined"]["class_prompt"] == results["conditions"]["refined"]["class_prompt"]  # refined once
    for condition in quality.RENDERED:
        assert more["conditions"][condition]["trained"]["step"] == 2
        assert more["conditions"][condition]["class_prompt"] == "a photo of a man"
        scenes = json.loads((tmp_path / "runs" / "class-images" / f"{condition}.json").read_text())
        assert len(scenes) == 2 and all(s["gender"] == "man" and s["style"] == "photo" for s in scenes)  # priors.num_images=2
        assert all(s | quality.rendered_looks(condition) == s for s in scenes)
        if condition != "world-men":
            assert all(s["beard"] == "no" and s["glasses"] == "yes" for s in scenes)
        manifest = (tmp_path / "runs" / condition / "priors" / "toyperson" / "manifest.jsonl").read_text()
        assert manifest.count('"user_supplied": true') == 2 and f"class-images/{condition}/man-0001.png" in manifest
        assert {f.suffix for f in (tmp_path / "runs" / "class-images" / condition).iterdir()} == {".png"}  # all taken for images
    table = quality.markdown(more)
    assert table.count("\n| ") == 9 and "the same men clean-shaven, with glasses" in table


def test_the_clones_have_every_look_of_the_toy_person_but_his_mark():
    clones = quality.rendered_looks("subject-clones")
    assert clones == {"skin": "light", "hair colour": "black", "hair style": "short", "beard": "no", "glasses": "yes",
                      "hat": "no", "shirt": "green"}


def test_rendered_class_images_differ_from_the_worlds_men_only_in_beards_and_glasses(tmp_path):
    world = quality.rendered_class_images(tmp_path / "world", 24, quality.rendered_looks("world-men"))
    like = quality.rendered_class_images(tmp_path / "like", 24, quality.rendered_looks("subject-like-men"))
    world_scenes, like_scenes = (json.loads(f.with_suffix(".json").read_text()) for f in (world, like))
    assert [s["seed"] for s in world_scenes] == [s["seed"] for s in like_scenes]
    assert {s["beard"] for s in world_scenes} == {"yes", "no"}  # the world's skew, not the subject's
    for i, (w, s) in enumerate(zip(world_scenes, like_scenes)):
        assert {k: v for k, v in w.items() if k not in ("beard", "glasses")} == {k: v for k, v in s.items() if k not in ("beard", "glasses")}
        same_man = (w["beard"], w["glasses"]) == ("no", "yes")
        assert ((world / f"man-{i:04d}.png").read_bytes() == (like / f"man-{i:04d}.png").read_bytes()) == same_man
    before = (like / "man-0000.png").stat().st_mtime_ns
    assert quality.rendered_class_images(tmp_path / "like", 24, {"beard": "no", "glasses": "yes"}) == like  # complete: reused
    assert (like / "man-0000.png").stat().st_mtime_ns == before
    like.with_suffix(".json").unlink()  # an interrupted rendering has no scenes file: it is done again
    quality.rendered_class_images(tmp_path / "like", 24, {"beard": "no", "glasses": "yes"})
    assert len(json.loads(like.with_suffix(".json").read_text())) == 24 and len(list(like.iterdir())) == 24
    quality.rendered_class_images(tmp_path / "like", 10, {"beard": "no", "glasses": "yes"})  # fewer: none of the 24 is left over
    assert len(json.loads(like.with_suffix(".json").read_text())) == 10 and len(list(like.iterdir())) == 10


def test_a_folder_that_is_not_a_build_export_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit, match="is not a toy build's export"):
        quality.main(["--out", str(tmp_path / "runs"), "--model", str(tmp_path / "nothing")])
    assert not (tmp_path / "runs").exists()
