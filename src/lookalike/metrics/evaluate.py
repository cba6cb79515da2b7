"""`lookalike eval RUN`: the paper's metrics for every checkpoint, plots, and a recommended checkpoint.

For the base model (step 0, ``eval.include_base``), every checkpoint in ``checkpoints/`` and the
final ``model/``, each subject is rendered on the eval prompt set (:mod:`lookalike.metrics.prompt_set`)
with the same seeds, and scored (:mod:`lookalike.metrics.sample_scores`). Writes ``eval/``::

    samples/<model>/<subject>/NN-K.png   prompt NN, sample K (class-K.png: the PRES prompt)
    cache/<model>.json                  that model's scores and the key of what made them
    report.json, index.html             every model's metrics, plots, the recommendation

A model whose weights, photos and eval settings are unchanged is not rendered again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from lookalike import config as cfg
from lookalike.errors import LookalikeError
from lookalike.metrics import prompt_set, recommend, report, sample_scores
from lookalike.run import Run, atomic_dir, atomic_write_text, read_jsonl

VERB = "eval"
CACHE_VERSION = 1
# Files whose change means a model's samples change; optimizer state (training_state.pt) is not one.
MODEL_SUFFIXES = {".safetensors", ".json", ".bin", ".ckpt", ".txt"}


@dataclass(frozen=True)
class Target:
    """One model to evaluate: the base model (folder None), a checkpoint, or the final model."""

    name: str
    step: int
    folder: Path | None


@dataclass(frozen=True)
class Job:
    subject: str
    file: str  # relative to the model's samples folder
    prompt: str
    seed: int


def eval_dir(run: Run) -> Path:
    return run.root / "eval"


def list_targets(run: Run) -> tuple[list[Target], list[str]]:
    """The models to evaluate in step order, and notes about what was left out."""
    from lookalike.train.checkpoint import INFO_NAME, list_checkpoints, read_info

    checkpoints = list_checkpoints(run.checkpoints_dir)
    targets = [Target(folder.name, step, folder) for step, folder in checkpoints]
    notes = []
    if (run.model_dir / INFO_NAME).is_file():
        step = int(read_info(run.model_dir)["step"])
        if step in {s for s, _ in checkpoints}:
            notes.append(f"model/ holds the same step as checkpoint step-{step:06d}; it is evaluated once, as the checkpoint")
        else:
            targets.append(Target("model", step, run.model_dir))
    if not targets:
        raise LookalikeError(f"nothing to evaluate: {run.root} has no checkpoints and no trained model; run `lookalike train {run.root}` first")
    if run.config.eval.include_base:
        targets.insert(0, Target(recommend.BASE, 0, None))
    return targets, notes


def subject_photos(run: Run, subject: cfg.SubjectConfig) -> list[Image.Image]:
    folder = run.instance_dir(subject.name)
    files = [row["file"] for row in read_jsonl(folder / "manifest.jsonl") if "file" in row]
    if not files:
        raise LookalikeError(f"no prepared photos of {subject.name!r} in {folder}: run `lookalike prepare {run.root}` first")
    return [Image.open(folder / file).convert("RGB") for file in files]


def _files_fingerprint(location: Path) -> list[Any]:
    """Name, size and modification time of the files that decide a model's output (cheap, no hashing)."""
    if location.is_file():
        stat = location.stat()
        return [[location.name, stat.st_size, stat.st_mtime_ns]]
    files = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES)
    return [[str(p.relative_to(location)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _model_fingerprint(run: Run, target: Target) -> list[Any]:
    if target.folder is not None:
        return _files_fingerprint(target.folder)
    from lookalike.models.sources import resolve_source

    source = resolve_source(run.config.model)
    return [source.location, source.revision] if source.kind == "hub" else _files_fingerprint(Path(source.location))


def _photos_fingerprint(run: Run) -> list[Any]:
    return [_files_fingerprint(run.instance_dir(s.name)) for s in run.config.subjects]


def _settings(run: Run, prompts: dict[str, tuple[list[prompt_set.EvalPrompt], prompt_set.EvalPrompt]]) -> dict[str, Any]:
    """Everything besides the model's weights that decides the samples and their scores."""
    from lookalike.sample.modelref import default_device, resolve_dtype

    ecfg = run.config.eval
    device = default_device()
    return {
        "eval": ecfg.model_dump(exclude={"include_base", "clip_t_tolerance", "batch_size"}),
        "resolution": ecfg.resolution or run.config.prepare.resolution,
        "clip_model": sample_scores.clip_source(run.config),
        "dino_model": sample_scores.dino_source(run.config),
        "device": device,
        "dtype": str(resolve_dtype(ecfg.dtype, device)),
        "base_model": run.config.model.source,
        "subjects": [s.model_dump(include={"name", "identifier", "class_noun", "kind"}) for s in run.config.subjects],
        "prompts": {name: [p.prompt for p in ps] + [c.prompt] for name, (ps, c) in prompts.items()},
    }


def cache_key(run: Run, target: Target, settings: dict[str, Any]) -> str:
    blob = {"version": CACHE_VERSION, "model": _model_fingerprint(run, target), "photos": _photos_fingerprint(run), **settings}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _cache_path(run: Run, target: Target) -> Path:
    return eval_dir(run) / "cache" / f"{target.name}.json"


def read_cache(run: Run, target: Target, key: str) -> dict[str, Any] | None:
    """The cached scores of ``target`` if they were made with ``key`` and their samples are still there."""
    try:
        cached = json.loads(_cache_path(run, target).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if cached.get("key") != key:
        return None
    files = [f for row in cached["rows"] for p in row["prompts"] for f in p["files"]]
    return cached if all((eval_dir(run) / f).is_file() for f in files) else None


def plan_jobs(prompts: dict[str, tuple[list[prompt_set.EvalPrompt], prompt_set.EvalPrompt]], ecfg: cfg.EvalConfig) -> list[Job]:
    """Every image one model renders; sample k of every prompt uses seed + k, for every model alike."""
    jobs = []
    for subject, (subject_prompts, class_prompt) in prompts.items():
        named = [(f"{i:02d}", p) for i, p in enumerate(subject_prompts)] + [("class", class_prompt)]
        for stem, prompt in named:
            jobs += [Job(subject, f"{subject}/{stem}-{k}.png", prompt.prompt, ecfg.seed + k) for k in range(ecfg.samples_per_prompt)]
    return jobs


def open_target(run: Run, target: Target) -> Any:
    """The target's pipeline on the device, with the eval sampler, its own progress bar off."""
    from lookalike.models.load import load_pipeline
    from lookalike.models.trained import open_trained
    from lookalike.sample.modelref import default_device, resolve_dtype
    from lookalike.sample.schedulers import make_scheduler

    device = default_device()
    dtype = resolve_dtype(run.config.eval.dtype, device)
    if target.folder is None:
        pipeline, _ = load_pipeline(run.config.model, dtype)
    else:
        pipeline, _ = open_trained(run, checkpoint=target.folder, dtype=dtype)
    pipeline.to(device)
    pipeline.scheduler = make_scheduler(run.config.eval.scheduler, pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def render(run: Run, pipeline: Any, jobs: list[Job], bar: tqdm) -> list[Image.Image] | None:
    """Every job's image, each from its own seeded generator (so batching does not change it); None on STOP."""
    ecfg = run.config.eval
    size = ecfg.resolution or run.config.prepare.resolution
    images: list[Image.Image] = []
    for start in range(0, len(jobs), ecfg.batch_size):
        if run.stop_requested():
            return None
        chunk = jobs[start : start + ecfg.batch_size]
        images += pipeline(
            prompt=[job.prompt for job in chunk],
            negative_prompt=[ecfg.negative_prompt] * len(chunk),
            num_inference_steps=ecfg.steps,
            guidance_scale=ecfg.guidance_scale,
            width=size,
            height=size,
            generator=[torch.Generator("cpu").manual_seed(job.seed) for job in chunk],
        ).images
        bar.update(len(chunk))
        run.emit(VERB, "progress", done=bar.n, total=bar.total)
    return images


class Scoring:
    """The extractors and the subjects' photo features, loaded on first use: a fully cached re-run loads none."""

    def __init__(self, run: Run):
        self.run = run
        self.extractors: sample_scores.Extractors | None = None
        self.references: dict[str, sample_scores.SubjectReferences] = {}

    def load(self) -> sample_scores.Extractors:
        if self.extractors is None:
            self.extractors = sample_scores.open_extractors(self.run.config)
            for subject in self.run.config.subjects:
                photos = subject_photos(self.run, subject)
                self.references[subject.name] = sample_scores.subject_references(self.extractors, subject, photos)
        return self.extractors


def score_target(scoring: Scoring, target: Target, prompts: dict, jobs: list[Job], images: list[Image.Image]) -> list[dict[str, Any]]:
    ex = scoring.load()
    by_file = {job.file: image for job, image in zip(jobs, images)}
    rows = []
    for subject, (subject_prompts, _) in prompts.items():
        files = [job.file for job in jobs if job.subject == subject]
        class_files = [f for f in files if "/class-" in f]
        prompt_files = [f for f in files if "/class-" not in f]
        row = sample_scores.score_subject(
            ex, scoring.references[subject], subject_prompts, [by_file[f] for f in prompt_files], [by_file[f] for f in class_files]
        )
        per_prompt = len(prompt_files) // len(subject_prompts)
        for i, prompt_row in enumerate(row["prompts"]):
            prompt_row["files"] = [f"samples/{target.name}/{f}" for f in prompt_files[i * per_prompt : (i + 1) * per_prompt]]
        row["class_files"] = [f"samples/{target.name}/{f}" for f in class_files]
        rows.append({"target": target.name, "step": target.step, **row})
    return rows


def evaluate_target(run: Run, scoring: Scoring, target: Target, prompts: dict, jobs: list[Job], bar: tqdm) -> list[dict[str, Any]] | None:
    """Render and score one model; write its samples. None when a STOP file interrupted it."""
    pipeline = open_target(run, target)
    images = render(run, pipeline, jobs, bar)
    del pipeline  # free the model before the extractors run
    if images is None:
        return None
    with atomic_dir(eval_dir(run) / "samples" / target.name) as out:
        for job, image in zip(jobs, images):
            (out / job.file).parent.mkdir(parents=True, exist_ok=True)
            image.save(out / job.file)
    return score_target(scoring, target, prompts, jobs, images)


def _resolve_prompts(run: Run) -> dict[str, tuple[list[prompt_set.EvalPrompt], prompt_set.EvalPrompt]]:
    ecfg = run.config.eval
    return {s.name: (prompt_set.subject_prompts(s, ecfg), prompt_set.class_prompt(s, ecfg)) for s in run.config.subjects}


def build_report(
    run: Run, targets: list[Target], results: dict[str, dict[str, Any]], notes: list[str], settings: dict[str, Any], stopped: bool
) -> dict[str, Any]:
    rows = [row for t in targets if t.name in results for row in results[t.name]["rows"]]
    for t in targets:
        notes += [n for n in results.get(t.name, {}).get("notes", []) if n not in notes]
    pick = recommend.recommend(
        recommend.summarise(rows), run.config.eval.clip_t_tolerance, {row["likeness_metric"] for row in rows}
    )
    return {
        "version": CACHE_VERSION,
        "run": str(run.root.resolve()),
        "settings": settings | {"clip_t_tolerance": run.config.eval.clip_t_tolerance},
        "notes": notes,
        "stopped": stopped,
        "rows": rows,
        "recommendation": {"rule": pick.rule, "checkpoint": pick.target, "step": pick.step, "reason": pick.reason},
    }


def eval_run(run: Run) -> str:
    """Evaluate every model of the run (reusing cached scores), write report.json and index.html."""
    prompts = _resolve_prompts(run)
    for subject in run.config.subjects:
        subject_photos(run, subject)  # no photos: say so before any model loads
    targets, notes = list_targets(run)
    settings = _settings(run, prompts)
    keys = {t.name: cache_key(run, t, settings) for t in targets}
    results = {t.name: cached for t in targets if (cached := read_cache(run, t, keys[t.name])) is not None}
    jobs = plan_jobs(prompts, run.config.eval)
    todo = [t for t in targets if t.name not in results]
    run.emit(VERB, "start", models=[t.name for t in targets], cached=sorted(results), images=len(todo) * len(jobs))
    scoring, stopped = Scoring(run), False
    if todo:
        scoring.load()  # a CLIP that cannot load fails here, before any model renders
    with tqdm(total=len(todo) * len(jobs), desc="eval", unit="img") as bar:
        for target in targets:
            if target.name in results:
                run.emit(VERB, "cached", model=target.name, step=target.step)
                continue
            rows = evaluate_target(run, scoring, target, prompts, jobs, bar)
            if rows is None:
                stopped = True
                break
            results[target.name] = {"key": keys[target.name], "rows": rows, "notes": list(scoring.extractors.notes)}
            atomic_write_text(_cache_path(run, target), json.dumps(results[target.name], indent=1) + "\n")
            run.emit(VERB, "scored", model=target.name, step=target.step)
    result = build_report(run, targets, results, notes, settings, stopped)
    report.write_report(eval_dir(run), result)
    if stopped:
        what = f"after {len(results)} of {len(targets)} models (their scores are in {eval_dir(run) / 'index.html'})"
        return run.stopped(VERB, what, report=str(eval_dir(run) / "report.json"), evaluated=len(results))
    run.emit(VERB, "done", report=str(eval_dir(run) / "report.json"), recommended=result["recommendation"]["checkpoint"])
    return report.summary_text(result, eval_dir(run), reused=len(targets) - len(todo), total=len(targets))
