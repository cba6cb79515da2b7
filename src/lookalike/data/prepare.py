"""`lookalike prepare`: a folder of photos -> square, oriented, de-duplicated training images.

For each subject, every file in ``subject.photos`` is read in sorted order (the originals are only
read, never written). Unusable files are skipped with one line saying why; exact and near duplicates
(perceptual hash) are dropped, keeping the copy with the most pixels; each remaining photo is
cropped square (face-centred for people, else centred), resized to ``prepare.resolution`` and
written as PNG to ``run.instance_dir(subject)`` with ``manifest.jsonl``; a caption file beside a
photo (``photo.txt``) becomes that photo's training prompt (:func:`read_caption`). The prepared set is
derived data: a re-run replaces it whole, and a failed or stopped run leaves the old one in place
(a STOP file is checked before each photo; see :mod:`lookalike.run`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from lookalike import config as cfg
from lookalike.data import faces
from lookalike.data.images import UnusableImage, hamming, open_image, phash, sharpness
from lookalike.errors import LookalikeError
from lookalike.run import Run, Stopped, atomic_dir

VERB = "prepare"
MANIFEST = "manifest.jsonl"
CAPTION_SUFFIX = ".txt"  # photo.jpg + photo.txt: that photo's own training prompt
WARN = "warning:"  # prefix of the notes that say a photo may train badly


class _StopRequested(Exception):
    """Unwinds the half-built prepared sets (their temporary folders are dropped) on a STOP file."""


@dataclass
class Candidate:
    """A readable photo, measured for de-duplication before anything is written."""

    path: Path
    width: int
    height: int
    phash: int
    sha256: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class SubjectReport:
    name: str
    folder: Path
    resolution: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        crops = [row["crop"] for row in self.rows]
        head = (
            f"{self.name}: prepared {len(self.rows)} photos at {self.resolution} px into {self.folder} "
            f"(crops: {crops.count('face')} face, {crops.count('center')} centre; "
            f"{len(self.skipped)} skipped, {len(self.dropped)} duplicates dropped"
        )
        captioned = sum("caption" in row for row in self.rows)
        head += f"; {captioned} with captions)" if captioned else ")"
        return "\n".join([head, *(f"  {line}" for line in self.skipped + self.dropped + self.notes)])


@dataclass
class PrepareReport:
    subjects: list[SubjectReport]

    def __str__(self) -> str:
        return "\n".join(str(s) for s in self.subjects)


def prepare_run(run: Run) -> PrepareReport | Stopped:
    """Prepare every subject's photos; all prepared sets are replaced together or not at all."""
    folders = [photos_folder(run, subject, i) for i, subject in enumerate(run.config.subjects)]
    reports = []
    try:
        with contextlib.ExitStack() as swaps:
            for subject, folder in zip(run.config.subjects, folders):
                staging = swaps.enter_context(atomic_dir(run.instance_dir(subject.name)))
                report = SubjectReport(subject.name, run.instance_dir(subject.name), run.config.prepare.resolution)
                prepare_subject(run, subject, folder, staging, report)
                reports.append(report)
    except _StopRequested:
        return run.stopped(VERB, "before replacing the prepared photos (the previous set is unchanged)")
    for report in reports:
        run.emit(VERB, "done", subject=report.name, kept=len(report.rows), skipped=len(report.skipped),
                 dropped=len(report.dropped), notes=len(report.notes))
    return PrepareReport(reports)


def photos_folder(run: Run, subject: cfg.SubjectConfig, index: int) -> Path:
    key = "subject.photos" if index == 0 else f"subjects.{index}.photos"
    if not subject.photos:
        raise LookalikeError(f"subject {subject.name!r} has no photos folder: set {key}=DIR")
    folder = Path(subject.photos).expanduser()
    if not folder.is_dir():
        raise LookalikeError(f"photos folder {folder} of subject {subject.name!r} not found: set {key}=DIR to the folder holding the photos")
    # The prepared set replaces its folder whole: reading from inside it would delete the originals.
    prepared = run.instance_dir(subject.name).resolve()
    if folder.resolve() == prepared or prepared in folder.resolve().parents:
        raise LookalikeError(f"{key}={folder} is the prepared set itself: point it at your original photos")
    return folder


def prepare_subject(run: Run, subject: cfg.SubjectConfig, folder: Path, staging: Path, report: SubjectReport) -> None:
    """Write the prepared PNGs and manifest of one subject into ``staging``."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() != CAPTION_SUFFIX)
    run.emit(VERB, "start", subject=subject.name, folder=str(folder.resolve()), files=len(entries))
    candidates = []
    for path in _progress(entries, f"reading {subject.name}"):
        candidate = _read(run, subject.name, path, report)
        if candidate is not None:
            candidates.append(candidate)
    keepers = deduplicate(candidates, run.config.prepare.dedupe_distance, report)
    for line in report.dropped:
        run.emit(VERB, "dropped", subject=subject.name, note=line)
    if not keepers:
        raise LookalikeError(
            f"no usable photo of {subject.name!r} in {folder} ({len(entries)} files, {len(report.skipped)} unusable): "
            "add JPEG or PNG photos of the subject"
        )
    mode = crop_mode(subject, run.config.prepare)
    for index, candidate in enumerate(_progress(keepers, f"cropping {subject.name}")):
        _check_stop(run)
        image, row = prepare_photo(candidate, mode, run.config.prepare)
        caption = read_caption(candidate.path)
        if caption is not None:
            row["caption"] = caption
        row["file"] = f"{index:03d}.png"
        image.save(staging / row["file"], format="PNG")
        report.rows.append(row)
        report.notes.extend(f"{candidate.path.name}: {note}" for note in row["notes"])
    (staging / MANIFEST).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in report.rows), encoding="utf-8")


def read_caption(photo: Path) -> str | None:
    """The caption written beside ``photo`` as ``<name>.txt`` (kohya's convention), if there is one.

    Stored as written (whitespace collapsed); :func:`lookalike.data.dataset.caption_prompt` turns
    it into the photo's training prompt, so a later change of identifier still applies to it.
    """
    path = photo.with_suffix(CAPTION_SUFFIX)
    if not path.is_file():
        return None
    try:
        text = " ".join(path.read_text(encoding="utf-8").split())
    except UnicodeDecodeError:
        raise LookalikeError(f"caption {path} is not UTF-8 text: save it as plain UTF-8") from None
    if not text:
        raise LookalikeError(f"caption {path} is empty: write the photo's context in it (e.g. 'at the beach'), or delete it")
    return text


def _progress(items: list, desc: str):
    return tqdm(items, desc=desc, unit="photo", leave=False)


def _check_stop(run: Run) -> None:
    if run.stop_requested():
        raise _StopRequested


def _read(run: Run, subject: str, path: Path, report: SubjectReport) -> Candidate | None:
    _check_stop(run)
    try:
        image = open_image(path)
    except UnusableImage as err:
        report.skipped.append(f"skipped {path.name}: {err.reason}")
        run.emit(VERB, "skipped", subject=subject, file=path.name, reason=err.reason)
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Candidate(path, image.width, image.height, phash(image), digest)


def deduplicate(candidates: list[Candidate], max_distance: int, report: SubjectReport) -> list[Candidate]:
    """Drop photos within ``max_distance`` hash bits of a kept one; of two copies keep the larger."""
    keepers: list[Candidate] = []
    for candidate in candidates:
        match = min(keepers, key=lambda k: hamming(k.phash, candidate.phash), default=None)
        if match is None or hamming(match.phash, candidate.phash) > max_distance:
            keepers.append(candidate)
            continue
        kept, dropped = (candidate, match) if candidate.pixels > match.pixels else (match, candidate)
        if kept is candidate:
            keepers[keepers.index(match)] = candidate
        report.dropped.append(f"dropped {dropped.path.name}: {_duplicate_kind(dropped, kept)} of {kept.path.name}")
    return keepers


def _duplicate_kind(a: Candidate, b: Candidate) -> str:
    if a.sha256 == b.sha256:
        return "exact copy"
    return f"near duplicate (hash distance {hamming(a.phash, b.phash)} of 64)"


def crop_mode(subject: cfg.SubjectConfig, prepare: cfg.PrepareConfig) -> str:
    if prepare.crop == "auto":
        return "face" if subject.kind == "person" else "center"
    return prepare.crop


def prepare_photo(candidate: Candidate, mode: str, prepare: cfg.PrepareConfig) -> tuple[Image.Image, dict[str, Any]]:
    """Crop and resize one photo; the manifest row records where the crop came from."""
    image = open_image(candidate.path)
    notes: list[str] = []
    face = faces.largest_face(image) if mode == "face" else None
    if face is not None:
        box, crop = faces.face_crop(face, image.width, image.height, min_side=prepare.resolution), "face"
    else:
        box, crop = faces.centre_crop(image.width, image.height), "center"
        if mode == "face":
            notes.append("no face found; centre crop")
    if box.side < prepare.resolution:
        notes.append(f"{WARN} only {box.side} px across, upscaled to {prepare.resolution} px (may look soft)")
    out = image.crop(box.as_pil_box()).resize((prepare.resolution, prepare.resolution), Image.Resampling.LANCZOS)
    sharp = sharpness(out)
    if sharp < prepare.blur_threshold:
        notes.append(f"{WARN} looks blurred (sharpness {sharp:.1f} < prepare.blur_threshold={prepare.blur_threshold:g})")
    row = {
        "source": str(candidate.path.resolve()),
        "sha256": candidate.sha256,
        "crop": crop,
        "original_size": [image.height, image.width],
        "crop_top_left": [box.top, box.left],
        "crop_size": box.side,
        "resolution": prepare.resolution,
        "sharpness": round(sharp, 2),
        "phash": f"{candidate.phash:016x}",
        "notes": notes,
    }
    if face is not None:
        row["face"] = [round(v, 1) for v in (face.x, face.y, face.width, face.height)] + [round(face.score, 3)]
    return out, row
