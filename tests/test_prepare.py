"""`lookalike prepare` end to end on real photos and a broken corpus, through the library and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from lookalike import cli
from lookalike.errors import LookalikeError
from lookalike.run import Run, read_jsonl

RES = 96


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _photo(name: str, side: int = 160) -> Image.Image:
    arr = getattr(data, name)()
    img = Image.fromarray(arr)
    return img.resize((side, round(side * img.height / img.width)), Image.Resampling.LANCZOS)


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Three distinct photos, a re-encoded smaller copy, an exact copy, a blurred and a small one, broken files."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _save(_photo("astronaut", 200), folder / "a_astronaut.png")
    _save(_photo("coffee"), folder / "b_coffee.jpg", quality=92)
    _save(_photo("rocket"), folder / "c_rocket.webp")
    _save(_photo("astronaut", 120), folder / "d_astronaut_small.jpg", quality=60)
    (folder / "e_coffee_copy.jpg").write_bytes((folder / "b_coffee.jpg").read_bytes())
    _save(_photo("chelsea").filter(ImageFilter.GaussianBlur(6)), folder / "f_blurred_cat.png")
    _save(_photo("colorwheel", 70), folder / "g_small_wheel.png")
    (folder / "photo_3.jpg").write_bytes(io.BytesIO(_jpeg(_photo("camera", 300))).read()[:3000])
    (folder / "readme.jpg").write_text("not a photo")
    (folder / "empty.png").write_bytes(b"")
    (folder / "x.png").mkdir()
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    return folder


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _checksums(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()
    }


def _open(tmp_path: Path, folder: Path, *extra: str) -> Run:
    return Run.open(tmp_path / "run", overrides=[f"subject.photos={folder}", f"prepare.resolution={RES}", *extra])


def _prepare(run: Run):
    from lookalike.data.prepare import prepare_run

    return prepare_run(run)


def test_prepare_writes_clean_set_and_explains_every_file(tmp_path, photo_folder):
    before = _checksums(photo_folder)
    run = _open(tmp_path, photo_folder)
    report = str(_prepare(run))
    out = run.instance_dir("subject")
    rows = read_jsonl(out / "manifest.jsonl")

    assert [Path(r["source"]).name for r in rows] == ["a_astronaut.png", "b_coffee.jpg", "c_rocket.webp", "f_blurred_cat.png", "g_small_wheel.png"]
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "002.png", "003.png", "004.png", "manifest.jsonl"]
    for row in rows:
        img = Image.open(out / row["file"])
        assert img.size == (RES, RES) and img.mode == "RGB"
        assert row["crop"] == "center" and row["resolution"] == RES
        h, w = row["original_size"]
        top, left = row["crop_top_left"]
        assert row["crop_size"] == min(h, w) and 0 <= top <= h - row["crop_size"] and 0 <= left <= w - row["crop_size"]
        assert len(row["phash"]) == 16 and row["sharpness"] >= 0
    assert rows[1]["original_size"] == [107, 160] and rows[1]["crop_top_left"] == [0, 26]

    for line in [
        "skipped photo_3.jpg: truncated file (re-export it from your photo app)",
        "skipped readme.jpg: not an image",
        "skipped empty.png: empty file",
        "skipped x.png: is a folder",
        "dropped d_astronaut_small.jpg: near duplicate (hash distance",
        "dropped e_coffee_copy.jpg: exact copy of b_coffee.jpg",
        "f_blurred_cat.png: warning: looks blurred",
        "g_small_wheel.png: warning: only 70 px across, upscaled to 96 px",
    ]:
        assert line in report, line
    assert "DS_Store" not in report
    assert "5 photos" in report and "4 skipped" in report and "2 duplicates dropped" in report
    assert rows[3]["sharpness"] < run.config.prepare.blur_threshold < rows[0]["sharpness"]
    assert _checksums(photo_folder) == before  # originals untouched, not even rewritten in place

    events = [e["event"] for e in read_jsonl(run.events_path)]
    assert events[0] == "start" and events[-1] == "done" and events.count("skipped") == 4


def test_duplicates_keep_the_larger_copy_whatever_the_order(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _save(_photo("astronaut", 110), folder / "a_small.jpg", quality=70)
    _save(_photo("astronaut", 220), folder / "b_large.png")
    _save(_photo("coffee"), folder / "c.png")
    run = _open(tmp_path, folder)
    report = str(_prepare(run))
    rows = read_jsonl(run.instance_dir("subject") / "manifest.jsonl")
    assert [Path(r["source"]).name for r in rows] == ["b_large.png", "c.png"]
    assert "dropped a_small.jpg: near duplicate" in report and "of b_large.png" in report


def test_person_gets_face_crop_and_falls_back_to_centre_with_a_note(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _save(Image.fromarray(data.astronaut()), folder / "astronaut.jpg", quality=95)
    _save(Image.fromarray(data.coffee()), folder / "coffee.jpg", quality=95)
    run = _open(tmp_path, folder, "subject.kind=person", "prepare.resolution=64")
    report = str(_prepare(run))
    face_row, coffee_row = read_jsonl(run.instance_dir("subject") / "manifest.jsonl")

    assert face_row["crop"] == "face" and face_row["notes"] == []
    x, y, w, h, score = face_row["face"]
    cx, cy = x + w / 2, y + h / 2
    top, left = face_row["crop_top_left"]
    side = face_row["crop_size"]
    assert left <= cx <= left + side and top <= cy <= top + side and side < 512
    assert abs(left + side / 2 - cx) < 2  # centred across; the top edge clamps it vertically
    assert coffee_row["crop"] == "center" and coffee_row["notes"] == ["no face found; centre crop"]
    assert "coffee.jpg: no face found; centre crop" in report and "crops: 1 face, 1 centre" in report


def test_rerun_replaces_the_prepared_set(tmp_path, photo_folder):
    run = _open(tmp_path, photo_folder)
    _prepare(run)
    stray = run.instance_dir("subject") / "stray.png"
    stray.write_bytes(b"left over")
    second = tmp_path / "second"
    second.mkdir()
    _save(_photo("chelsea"), second / "cat.png")
    run = _open(tmp_path, second)
    _prepare(run)
    out = run.instance_dir("subject")
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "manifest.jsonl"]
    assert [Path(r["source"]).name for r in read_jsonl(out / "manifest.jsonl")] == ["cat.png"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_no_usable_photo_fails_and_keeps_previous_set(tmp_path, photo_folder):
    run = _open(tmp_path, photo_folder)
    _prepare(run)
    previous = _snapshot(run.instance_dir("subject"))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("nope")
    (junk / "b.png").write_bytes(b"")
    with pytest.raises(LookalikeError, match=r"no usable photo of 'subject' .* \(2 files, 2 unusable\)"):
        _prepare(_open(tmp_path, junk))
    assert _snapshot(run.instance_dir("subject")) == previous


def test_stop_file_stops_and_keeps_previous_set(tmp_path, photo_folder):
    run = _open(tmp_path, photo_folder)
    _prepare(run)
    previous = _snapshot(run.instance_dir("subject"))
    run.stop_path.write_text("")
    summary = _prepare(run)
    assert summary == "stopped before replacing the prepared photos (the previous set is unchanged); run the same command again to continue"
    assert _snapshot(run.instance_dir("subject")) == previous and not run.stop_path.exists()
    assert read_jsonl(run.events_path)[-1]["event"] == "stopped"
    assert not [p for p in run.instance_dir("subject").parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_second_subject_failing_leaves_both_sets_as_they_were(tmp_path, photo_folder):
    cats = tmp_path / "cats"
    cats.mkdir()
    _save(_photo("chelsea"), cats / "cat.png")
    two = ["subjects.1.name=cat", f"subjects.1.photos={cats}"]
    run = _open(tmp_path, photo_folder, *two)
    report = _prepare(run)
    assert [len(s.rows) for s in report.subjects] == [5, 1]
    previous = _snapshot(run.instance_dir("subject")), _snapshot(run.instance_dir("cat"))
    (cats / "cat.png").unlink()
    (cats / "notes.jpg").write_text("x")
    with pytest.raises(LookalikeError, match="no usable photo of 'cat'"):
        _prepare(run)
    assert (_snapshot(run.instance_dir("subject")), _snapshot(run.instance_dir("cat"))) == previous


def test_photos_folder_unset_names_the_key(tmp_path):
    run = Run.open(tmp_path / "run")
    with pytest.raises(LookalikeError, match=r"set subject\.photos=DIR"):
        _prepare(run)
    run = Run.open(tmp_path / "run2", overrides=[f"subject.photos={tmp_path}", "subjects.1.name=b"])
    with pytest.raises(LookalikeError, match=r"set subjects\.1\.photos=DIR"):
        _prepare(run)


def test_refuses_to_read_from_the_prepared_set_itself(tmp_path, photo_folder):
    run = _open(tmp_path, photo_folder)
    _prepare(run)
    prepared = run.instance_dir("subject")
    previous = _snapshot(prepared)
    with pytest.raises(LookalikeError, match="is the prepared set itself"):
        _prepare(_open(tmp_path, prepared))
    assert _snapshot(prepared) == previous


# ---------------------------------------------------------------- the CLI


def test_cli_prepare_end_to_end_then_missing_folder(tmp_path, photo_folder, capsys):
    run_dir = tmp_path / "runs" / "me"
    assert cli.main(["prepare", str(run_dir), f"subject.photos={photo_folder}", f"prepare.resolution={RES}"]) == 0
    out = capsys.readouterr().out
    assert "prepared 5 photos" in out and "skipped photo_3.jpg: truncated file" in out
    prepared = run_dir / "instance" / "subject"
    assert len(read_jsonl(prepared / "manifest.jsonl")) == 5
    previous = _snapshot(prepared)

    assert cli.main(["prepare", str(run_dir), f"subject.photos={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "nope" in err and "not found" in err and "subject.photos=DIR" in err
    assert _snapshot(prepared) == previous
    manifest = [json.loads(line) for line in (prepared / "manifest.jsonl").read_text().splitlines()]
    assert all(np.asarray(Image.open(prepared / r["file"])).shape == (RES, RES, 3) for r in manifest)


def _captioned_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "captioned"
    folder.mkdir()
    _save(_photo("astronaut"), folder / "a.png")
    (folder / "a.txt").write_text("at the beach\n", encoding="utf-8")
    _save(_photo("coffee"), folder / "b.jpg")
    (folder / "b.txt").write_text("  OHWX person,   smiling ", encoding="utf-8")
    _save(_photo("rocket"), folder / "c.png")  # no caption: the instance prompt
    return folder


def test_captions_beside_photos_become_their_training_prompts(tmp_path):
    from lookalike.data.dataset import load_training_set

    folder = _captioned_folder(tmp_path)
    run = _open(tmp_path, folder, "train.with_prior_preservation=false")
    report = _prepare(run)
    assert "prepared 3 photos" in str(report) and "0 skipped" in str(report)  # .txt files are captions, not photos
    assert str(report).endswith("; 2 with captions)")
    rows = read_jsonl(run.instance_dir("subject") / "manifest.jsonl")
    assert [r.get("caption") for r in rows] == ["at the beach", "OHWX person, smiling", None]
    prompts = [e.prompt for e in load_training_set(run).instances]
    assert prompts == ["a photo of ohwx person at the beach", "OHWX person, smiling", "a photo of ohwx person"]
    # the caption is kept as written, so a new identifier reaches the photos captioned with a context
    renamed = _open(tmp_path, folder, "train.with_prior_preservation=false", "subject.identifier=zwx")
    assert [e.prompt for e in load_training_set(renamed).instances][0] == "a photo of zwx person at the beach"


def test_an_empty_caption_fails_and_keeps_the_previous_set(tmp_path, photo_folder):
    run = _open(tmp_path, photo_folder)
    _prepare(run)
    previous = _snapshot(run.instance_dir("subject"))
    folder = _captioned_folder(tmp_path)
    (folder / "c.txt").write_text(" \n", encoding="utf-8")
    with pytest.raises(LookalikeError, match=r"caption .*c\.txt is empty: write the photo's context"):
        _prepare(_open(tmp_path, folder))
    (folder / "c.txt").write_bytes("à la plage".encode("latin-1"))
    with pytest.raises(LookalikeError, match=r"caption .*c\.txt is not UTF-8 text"):
        _prepare(_open(tmp_path, folder))
    assert _snapshot(run.instance_dir("subject")) == previous
