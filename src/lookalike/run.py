"""The run folder: the only state of a run. Paths, the resolved config, atomic writes, events.

Layout of ``runs/<name>/``::

    config.toml                 resolved config (written by every verb, only when valid)
    instance/<subject>/         prepared photos + manifest.jsonl
    priors/<subject>/           class-prior images + manifest.jsonl (+ stale/ for outdated ones)
    checkpoints/step-000200/    resumable training state
    model/                      the trained model (diffusers folder or LoRA weights)
    previews/                   preview images written during training
    logs/                       TensorBoard logs
    events.jsonl                progress events of long verbs, one JSON object per line
    STOP                        create this file to ask a running verb to stop cleanly

Stopping: every long verb (prepare, priors, audit, train, generate, eval) looks for ``STOP``
between units of work (a photo, an image batch, a training step, a subject). When it finds one
it finishes the current unit, keeps everything finished (train saves a checkpoint; prepare and
audit, which replace their output whole, leave the previous one as it was), removes ``STOP``,
writes a ``stopped`` event and returns a one-line ``stopped ...; run the same command again to
continue`` summary (exit status 0). A ``STOP`` already there when a verb starts is treated the
same: the verb stops at its first check, removes it and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lookalike import config as cfg
from lookalike.errors import LookalikeError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    A kill at any moment leaves either the old folder or the new one, never half of one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the rest of the file still counts
    return rows


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()


class Stopped(str):
    """The summary a verb returns when a STOP file stopped it (the demo stops its story on one)."""


def stop_summary(what: str) -> Stopped:
    """``stopped <what>; run the same command again to continue``: every verb's stop line."""
    return Stopped(f"stopped {what}; run the same command again to continue")


class Run:
    """A run folder and its resolved config."""

    def __init__(self, root: Path | str, config: cfg.RunConfig):
        self.root = Path(root)
        self.config = config

    # ---- opening

    @classmethod
    def open(
        cls,
        root: Path | str,
        config_file: Path | str | None = None,
        preset: str | None = None,
        overrides: list[str] = (),
        save: bool = True,
    ) -> "Run":
        """Open (or start) a run: base config + overrides, validated, then (if ``save``) saved.

        The base is, in order: ``config_file``, ``preset``, the run's own config.toml, defaults.
        Nothing is written unless the result is valid.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise LookalikeError(f"run folder {root} exists and is not a folder")
        saved = root / "config.toml"
        if config_file is not None:
            base = cfg.load_toml(Path(config_file))
        elif preset is not None:
            base = cfg.load_preset(preset)
        elif saved.is_file():
            base = cfg.load_toml(saved)
        else:
            base = {}
        run = cls(root, cfg.build(base, list(overrides)))
        if save:
            run.save_config()
        return run

    def save_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "config.toml", cfg.to_toml(self.config))

    # ---- paths

    def subject(self, name: str | None = None) -> cfg.SubjectConfig:
        if name is None:
            return self.config.subjects[0]
        for s in self.config.subjects:
            if s.name == name:
                return s
        raise LookalikeError(f"no subject named {name!r} in {self.root}/config.toml")

    def instance_dir(self, subject: str) -> Path:
        return self.root / "instance" / subject

    def priors_dir(self, subject: str) -> Path:
        return self.root / "priors" / subject

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def previews_dir(self) -> Path:
        return self.root / "previews"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def stop_path(self) -> Path:
        return self.root / "STOP"

    # ---- events and steering

    def emit(self, verb: str, event: str, **fields: Any) -> None:
        """Append a progress event that another process can follow (``tail -f events.jsonl``)."""
        append_jsonl(self.events_path, {"time": round(time.time(), 3), "verb": verb, "event": event, **fields})

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop(self) -> None:
        self.stop_path.unlink(missing_ok=True)

    def stopped(self, verb: str, what: str, **fields: Any) -> Stopped:
        """Honour a STOP request: remove the file, record a ``stopped`` event, return the summary line."""
        self.clear_stop()
        self.emit(verb, "stopped", **fields)
        return stop_summary(what)
