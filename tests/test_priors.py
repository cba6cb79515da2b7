"""Class priors on the tiny SD1 / SD2 / SDXL models: generation, resume, stale settings, user images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_photos
from PIL import Image

from lookalike.cli import main
from lookalike.prior.generate import SETTING_KEYS, generate_priors, image_name
from lookalike.run import Run, append_jsonl, read_jsonl

FAST = ["priors.steps=2", "priors.batch_size=2", "prepare.resolution=64"]


def open_run(root, model, *overrides):
    return Run.open(root, overrides=[f"model.source={model}", *FAST, *overrides])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


class StopAfter(Run):
    """A run that asks itself to stop (with the real STOP file) after ``count`` images."""

    def __init__(self, root, config, count):
        super().__init__(root, config)
        self.count, self.seen = count, 0

    def emit(self, verb, event, **fields):
        super().emit(verb, event, **fields)
        if event == "image":
            self.seen += 1
            if self.seen == self.count:
                self.stop_path.touch()


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_priors_for_each_family(tmp_path, tiny_models, capsys, family):
    root = tmp_path / "run"
    args = ["priors", str(root), f"model.source={tiny_models[family]}", *FAST, "priors.num_images=3",
            "priors.negative_prompt=blurry", "subject.class_noun=dog"]
    assert main(args) == 0
    assert "3 of 3 priors (0 kept, 3 generated" in capsys.readouterr().out
    folder = root / "priors" / "subject"
    rows = read_jsonl(folder / "manifest.jsonl")
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"file", "seed", *SETTING_KEYS}
    for row in rows:
        assert row["prompt"] == "a photo of a dog" and row["negative_prompt"] == "blurry"
        assert (row["steps"], row["guidance_scale"], row["scheduler"], row["resolution"]) == (2, 7.5, "dpm++", 64)
        assert row["model"] == str(tiny_models[family])
        with Image.open(folder / row["file"]) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    assert len({pixels(folder / r["file"]).tobytes() for r in rows}) == 3
    events = read_jsonl(root / "events.jsonl")
    assert [e["index"] for e in events if e["event"] == "image"] == [0, 1, 2]
    assert events[-1]["event"] == "done"


def test_stop_then_resume_matches_one_uninterrupted_batch(tmp_path, tiny_models):
    model = tiny_models["sd1"]
    whole = open_run(tmp_path / "whole", model, "priors.num_images=4", "priors.batch_size=4")
    generate_priors(whole)
    config = open_run(tmp_path / "split", model, "priors.num_images=4", "priors.batch_size=1").config
    split = StopAfter(tmp_path / "split", config, count=2)
    summary = generate_priors(split)
    assert summary.startswith("stopped with subject: 2 of 4 priors") and not split.stop_requested()
    assert summary.endswith("run the same command again to continue") and "\n" not in summary
    folder = split.priors_dir("subject")
    assert [r["seed"] for r in read_jsonl(folder / "manifest.jsonl")] == [0, 1]
    first_two = {name: (folder / name).read_bytes() for name in ("000000.png", "000001.png")}

    assert "4 of 4 priors (2 kept, 2 generated" in generate_priors(Run.open(tmp_path / "split"))
    rows = read_jsonl(folder / "manifest.jsonl")
    assert sorted(r["seed"] for r in rows) == [0, 1, 2, 3] and len(rows) == 4
    assert all((folder / name).read_bytes() == data for name, data in first_two.items())
    for seed in range(4):
        # Image i is the same whatever the batch size and the interruption, up to float rounding:
        # batched CPU kernels sum in another order (~2e-6), which flips a rare pixel by one level.
        diff = np.abs(pixels(folder / image_name(seed)) - pixels(whole.priors_dir("subject") / image_name(seed)))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.002
        other = np.abs(pixels(folder / image_name(seed)) - pixels(folder / image_name((seed + 1) % 4)))
        assert other.mean() > 5
    assert "0 generated" in generate_priors(Run.open(tmp_path / "split"))


def _fake_priors(run, seeds, **changes):
    """Prior images and rows as generation writes them (real PNGs; no model needed)."""
    from lookalike.prior.generate import prior_settings

    folder = run.priors_dir("subject")
    make_photos(folder, count=len(seeds), size=64)
    settings = {**prior_settings(run, run.subject()), **changes}
    for i, seed in enumerate(seeds):
        (folder / f"photo_{i}.png").rename(folder / image_name(seed))
        append_jsonl(folder / "manifest.jsonl", {"file": image_name(seed), "seed": seed, **settings})
    return folder


@pytest.mark.parametrize("key", SETTING_KEYS)
def test_any_changed_setting_sets_images_aside(tmp_path, tiny_models, key):
    from lookalike.prior.generate import (
        generated_stale_reason,
        prior_settings,
        set_aside_stale,
    )

    run = open_run(tmp_path / "run", tiny_models["sd1"], "priors.num_images=3")
    old_value = {"steps": 50, "guidance_scale": 3.0, "resolution": 32}.get(key, "something else")
    folder = _fake_priors(run, [0, 1], **{key: old_value})
    _fake_priors(run, [2])  # one with the current settings
    settings = prior_settings(run, run.subject())
    current, reasons = set_aside_stale(folder, generated_stale_reason(settings, {0, 1, 2}))
    assert [r["seed"] for r in current] == [2]
    assert reasons == {f"{key} changed ({old_value!r} -> {settings[key]!r})": 2}
    assert sorted(p.name for p in (folder / "stale").glob("*.png")) == ["000000.png", "000001.png"]
    stale_rows = read_jsonl(folder / "stale" / "manifest.jsonl")
    assert {r["stale_reason"] for r in stale_rows} == set(reasons)
    assert [r["file"] for r in read_jsonl(folder / "manifest.jsonl")] == ["000002.png"]


def test_changed_prompt_regenerates_and_tells_the_user(tmp_path, tiny_models):
    run = open_run(tmp_path / "run", tiny_models["sd1"], "priors.num_images=2", "priors.seed=5")
    folder = _fake_priors(run, [5, 6, 7], prompt="a photo of a man with a beard")
    (folder / "stale").mkdir()
    (folder / "stale" / image_name(5)).write_bytes(b"an earlier stale image")  # never overwritten
    summary = generate_priors(run)
    assert "2 of 2 priors (0 kept, 2 generated" in summary
    assert "moved 3 outdated image(s)" in summary and "prompt changed ('a photo of a man with a beard'" in summary
    assert (folder / "stale" / image_name(5)).read_bytes() == b"an earlier stale image"
    assert len(list((folder / "stale").glob("*.png"))) == 4
    assert [r["seed"] for r in read_jsonl(folder / "manifest.jsonl")] == [5, 6]
    assert any(e["event"] == "stale" and e["count"] == 3 for e in read_jsonl(run.events_path))


def test_fewer_images_wanted_sets_the_extra_seeds_aside(tmp_path, tiny_models):
    run = open_run(tmp_path / "run", tiny_models["sd1"], "priors.num_images=2")
    folder = _fake_priors(run, [0, 1, 2, 3])
    summary = generate_priors(run)
    assert "2 of 2 priors (2 kept, 0 generated)" in summary and "seed outside" in summary
    assert sorted(p.name for p in (folder / "stale").glob("*.png")) == ["000002.png", "000003.png"]


def test_user_supplied_class_images(tmp_path, tiny_models):
    photos = tmp_path / "class_photos"
    make_photos(photos, count=3, size=96)
    Image.new("RGBA", (80, 120), (255, 0, 0, 0)).save(photos / "transparent.png")
    (photos / "broken.jpg").write_bytes(b"not really a jpeg")
    run = open_run(tmp_path / "run", tmp_path / "no-model-needed", f"subject.class_images={photos}")
    folder = _fake_priors(run, [0])  # generated earlier, before the user chose their own images
    summary = generate_priors(run)
    assert "4 user-supplied class images" in summary and "skipped broken.jpg" in summary
    assert "generated, and subject.class_images is now set: 1" in summary
    rows = read_jsonl(folder / "manifest.jsonl")
    assert len(rows) == 4 and all(r["user_supplied"] and r["prompt"] == "a photo of a person" for r in rows)
    for row in rows:
        with Image.open(folder / row["file"]) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    white = next(r for r in rows if r["source"].endswith("transparent.png"))
    assert pixels(folder / white["file"]).min() == 255  # transparency composited on white
    before = {r["file"]: (folder / r["file"]).stat().st_mtime_ns for r in rows}
    generate_priors(run)  # nothing new: nothing rewritten
    assert {r["file"]: (folder / r["file"]).stat().st_mtime_ns for r in read_jsonl(folder / "manifest.jsonl")} == before


def test_bad_class_images_folder_is_one_line_and_keeps_priors(tmp_path, tiny_models, capsys):
    run = open_run(tmp_path / "run", tiny_models["sd1"])
    folder = _fake_priors(run, [0])
    manifest = (folder / "manifest.jsonl").read_text()
    code = main(["priors", str(run.root), f"subject.class_images={tmp_path / 'missing'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0
    assert "subjects.0.class_images" in err and "is not a folder" in err
    assert (folder / "manifest.jsonl").read_text() == manifest


def test_no_prior_preservation_means_nothing_to_do(tmp_path):
    run = Run.open(tmp_path / "run", overrides=["train.with_prior_preservation=false", "model.source=/nowhere"])
    assert "with_prior_preservation is off" in generate_priors(run)
    assert not (run.root / "priors").exists()


def test_a_stop_file_left_before_the_start_stops_at_once_and_is_removed(tmp_path, capsys):
    root = tmp_path / "run"
    root.mkdir()
    (root / "STOP").touch()
    # model.source names no model: a run told to stop loads none
    assert main(["priors", str(root), f"model.source={tmp_path / 'no-model'}", *FAST, "priors.num_images=3"]) == 0
    assert capsys.readouterr().out.strip().startswith("stopped before the priors of subject; run the same command again")
    assert not (root / "STOP").exists() and not (root / "priors" / "subject").exists()
    assert read_jsonl(root / "events.jsonl")[-1]["event"] == "stopped"
