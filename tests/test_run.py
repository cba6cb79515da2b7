"""Run folder primitives: atomic writes and folders survive failures; events are JSON lines."""

from __future__ import annotations

import json

import pytest

from lookalike.run import Run, atomic_dir, atomic_write_text, read_jsonl


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (final / "a.txt").read_text() == "old"
    with atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary leftovers


def test_atomic_write_text_leaves_no_temp(tmp_path):
    atomic_write_text(tmp_path / "x" / "f.txt", "hello")
    assert (tmp_path / "x" / "f.txt").read_text() == "hello"
    assert len(list((tmp_path / "x").iterdir())) == 1


def test_events_and_stop_file(tmp_path):
    run = Run.open(tmp_path / "r")
    run.emit("train", "step", step=3, loss=0.5)
    with open(run.events_path, "a") as f:
        f.write('{"cut short')  # a kill mid-line must not hide the other events
    rows = read_jsonl(run.events_path)
    assert rows[0]["event"] == "step" and rows[0]["step"] == 3 and json.dumps(rows[0])
    assert not run.stop_requested()
    run.stop_path.touch()
    assert run.stop_requested()
    run.clear_stop()
    assert not run.stop_requested()
