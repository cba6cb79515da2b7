"""`lookalike audit RUN`: compare the class priors with the subject's photos before training.

A prior set full of beards teaches a clean-shaven subject a beard. For each subject this flags
broken, blank and near-duplicate priors, measures attribute shares of priors vs photos with
zero-shot CLIP probes (:mod:`lookalike.prior.probes`), proposes a refined class prompt, and writes
``audit/`` (contact sheets, report.json, report.html). With ``audit.apply=true`` the refined prompt
becomes ``subject.class_prompt``, so ``lookalike priors RUN`` regenerates the priors with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike import config as cfg
from lookalike.errors import LookalikeError
from lookalike.metrics.features import ClipEmbedder, open_clip
from lookalike.prior import probes
from lookalike.prior.audit_report import contact_sheet, write_report
from lookalike.prior.checks import ImageSet, open_set
from lookalike.run import Run, Stopped, atomic_dir, read_jsonl
from lookalike.toyworld import is_toy_clip

VERB = "audit"
MANIFEST = "manifest.jsonl"
HUB_CLIP = "openai/clip-vit-large-patch14"


@dataclass
class SubjectAudit:
    subject: cfg.SubjectConfig
    priors: ImageSet
    photos: ImageSet
    findings: list[probes.Finding]
    refined_template: str  # the class prompt template with the subject's attributes appended

    @property
    def refined_prompt(self) -> str:
        return self.subject.model_copy(update={"class_prompt": self.refined_template}).resolved_class_prompt()

    @property
    def changes_prompt(self) -> bool:
        return self.refined_template != self.subject.class_prompt


def clip_source(run: Run) -> str:
    chosen = run.config.audit.clip_model
    if chosen == "auto":
        return "toy" if run.config.model.source == "toy" else HUB_CLIP
    return chosen


def _listed_files(folder: Path, what: str, fix: str) -> list[str]:
    files = [row["file"] for row in read_jsonl(folder / MANIFEST) if "file" in row]
    if not files:
        raise LookalikeError(f"no {what} listed in {folder / MANIFEST}: run `{fix}` first")
    return files


def open_sets(run: Run, subject: cfg.SubjectConfig) -> tuple[ImageSet, ImageSet]:
    """The subject's current priors and prepared photos, opened and checked."""
    audit = run.config.audit
    priors_dir, photos_dir = run.priors_dir(subject.name), run.instance_dir(subject.name)
    prior_files = _listed_files(priors_dir, "class-prior images", f"lookalike priors {run.root}")
    photo_files = _listed_files(photos_dir, "prepared photos", f"lookalike prepare {run.root}")
    priors = open_set(priors_dir, prior_files, audit.blank_std, audit.duplicate_distance, f"{subject.name} priors")
    photos = open_set(photos_dir, photo_files, audit.blank_std, audit.duplicate_distance, f"{subject.name} photos")
    for images, what in ((priors, "class-prior images"), (photos, "prepared photos")):
        if not images.usable():
            raise LookalikeError(f"none of the {what} in {images.folder} can be used (all broken or blank): make them again")
    return priors, photos


def audit_subject(run: Run, subject: cfg.SubjectConfig, clip: ClipEmbedder, sets: tuple[ImageSet, ImageSet]) -> SubjectAudit:
    priors, photos = sets
    attributes = probes.load_attributes(subject.kind, run.config.audit.attributes_file, toy=is_toy_clip(clip_source(run)))
    prior_feats = clip.embed_images([priors.images[f] for f in priors.usable()])
    photo_feats = clip.embed_images([photos.images[f] for f in photos.usable()])
    option_feats = probes.option_features(clip, attributes, subject.class_noun)
    prior_choices = probes.probe_choices(prior_feats, option_feats)
    photo_choices = probes.probe_choices(photo_feats, option_feats)
    findings = [
        probes.compare(a, prior_choices[a.name], photo_choices[a.name], run.config.audit.threshold) for a in attributes
    ]
    return SubjectAudit(subject, priors, photos, findings, probes.refine_prompt(subject.class_prompt, findings))


def _subject_json(result: SubjectAudit, applied: bool) -> dict[str, Any]:
    name = result.subject.name
    prompts = sorted({row.get("prompt", "") for row in read_jsonl(result.priors.folder / MANIFEST)})
    return {
        "name": name,
        "class_prompt": result.subject.resolved_class_prompt(),
        "prior_prompts": prompts,
        "refined_class_prompt": result.refined_prompt,
        "applied": applied,
        "priors": len(result.priors.files),
        "photos": len(result.photos.files),
        "priors_path": f"../priors/{name}",
        "lines": [f.line() for f in result.findings if f.differs],
        "attributes": [f.to_json() for f in result.findings],
        "flags": [vars(flag) for flag in result.priors.flags],
        "photo_flags": [vars(flag) for flag in result.photos.flags],
        "sheets": {"priors": f"priors-{name}.png", "photos": f"photos-{name}.png"},
    }


def apply_refined_prompts(run: Run, results: list[SubjectAudit]) -> list[str]:
    """Write refined class prompts into the run's config; names of the subjects changed."""
    changed = []
    for result in results:
        if result.changes_prompt:
            run.subject(result.subject.name).class_prompt = result.refined_template
            changed.append(result.subject.name)
    if changed:
        run.save_config()
    return changed


def audit_run(run: Run) -> str:
    run.emit(VERB, "start")
    sets = {s.name: open_sets(run, s) for s in run.config.subjects}
    clip = open_clip(clip_source(run), batch_size=run.config.audit.batch_size)
    results = []
    for subject in run.config.subjects:
        if run.stop_requested():  # the report covers every subject: a stop writes none
            return _stopped(run, len(results))
        results.append(audit_subject(run, subject, clip, sets[subject.name]))
        run.emit(VERB, "subject", name=subject.name, differs=sum(f.differs for f in results[-1].findings))
    if run.stop_requested():
        return _stopped(run, len(results))
    applying = run.config.audit.apply
    report = {
        "clip_model": clip_source(run),
        "threshold": run.config.audit.threshold,
        "subjects": [_subject_json(r, applying and r.changes_prompt) for r in results],
    }
    with atomic_dir(run.root / "audit") as folder:
        sheets = {}
        for result, entry in zip(results, report["subjects"]):
            sheets[entry["sheets"]["priors"]] = contact_sheet(result.priors)
            sheets[entry["sheets"]["photos"]] = contact_sheet(result.photos)
        write_report(folder, report, sheets)
    changed = apply_refined_prompts(run, results) if applying else []
    run.emit(VERB, "done", changed=changed)
    return summary(run, report, changed)


def _stopped(run: Run, audited: int) -> Stopped:
    what = f"after {audited} of {len(run.config.subjects)} subjects (the previous audit report is unchanged)"
    return run.stopped(VERB, what, audited=audited)


def summary(run: Run, report: dict[str, Any], changed: list[str]) -> str:
    out = []
    for s in report["subjects"]:
        counts = {p: sum(f["problem"] == p for f in s["flags"]) for p in ("broken", "blank", "near-duplicate")}
        out.append(f"{s['name']}: {s['priors']} priors vs {s['photos']} photos ({s['class_prompt']})")
        out += [f"  {line}" for line in s["lines"]] or ["  priors and photos agree on every probed attribute"]
        out.append("  flagged priors: " + ", ".join(f"{n} {p}" for p, n in counts.items()))
        if s["refined_class_prompt"] != s["class_prompt"]:
            out.append(f"  refined class prompt: {s['refined_class_prompt']}")
    if changed:
        out.append(f"class prompt updated for {', '.join(changed)}: run `lookalike priors {run.root}` to regenerate the priors")
    elif any(s["refined_class_prompt"] != s["class_prompt"] for s in report["subjects"]):
        out.append(f"to use the refined prompt: lookalike audit {run.root} audit.apply=true, then lookalike priors {run.root}")
    out.append(f"report: {run.root / 'audit' / 'report.html'}")
    return "\n".join(out)
