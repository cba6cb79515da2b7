"""`lookalike audit RUN`: compare the class priors with the subject's photos before training.

A prior set full of beards teaches a clean-shaven subject a beard. For each subject this flags
broken, blank and near-duplicate priors, measures attribute shares of priors vs photos with
zero-shot CLIP probes (:mod:`lookalike.prior.probes`), proposes a refined class prompt, and writes
``audit/`` (contact sheets, report.json, report.html). With ``audit.apply=true`` the refined prompt
becomes ``subject.class_prompt``, so ``lookalike priors RUN`` regenerates the priors with it; the
next audit then says, attribute by attribute, whether the new priors moved towards the photos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike import config as cfg
from lookalike.errors import LookalikeError
from lookalike.metrics.features import ClipEmbedder, open_clip
from lookalike.metrics.scores import clip_i, div_feat
from lookalike.prior import probes
from lookalike.prior.audit_report import contact_sheet, not_followed_hint, variety_line, write_report
from lookalike.prior.checks import ImageSet, open_set
from lookalike.run import Run, Stopped, atomic_dir, read_jsonl
from lookalike.toyworld import is_toy_clip

VERB = "audit"
MANIFEST = "manifest.jsonl"
HUB_CLIP = "openai/clip-vit-large-patch14"
# New priors whose feature spread fell by more than this share since the last audit's are reported as
# narrowed. On the toy model the refined prompt's priors fell 46% (0.576 -> 0.310), the world's own men
# made clean-shaven with glasses 16% (0.704 -> 0.590); only the first cost prompt following (docs/QUALITY.md).
NARROWING = 0.25


@dataclass
class SubjectAudit:
    subject: cfg.SubjectConfig
    priors: ImageSet
    photos: ImageSet
    findings: list[probes.Finding]
    refined_template: str  # the class prompt template with the subject's attributes appended
    spread: float | None = None  # DIV-feat among the priors: mean pairwise CLIP feature distance
    likeness: float | None = None  # CLIP-I of the priors against the photos: how much they look like the subject

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
    spread = div_feat(prior_feats) if len(prior_feats) > 1 else None
    return SubjectAudit(subject, priors, photos, findings, probes.refine_prompt(subject.class_prompt, findings),
                        spread=spread, likeness=clip_i(prior_feats, photo_feats))


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
        "prior_spread": None if result.spread is None else round(result.spread, 4),
        "prior_likeness": None if result.likeness is None else round(result.likeness, 4),
        "attributes": [f.to_json() for f in result.findings],
        "flags": [vars(flag) for flag in result.priors.flags],
        "photo_flags": [vars(flag) for flag in result.photos.flags],
        "sheets": {"priors": f"priors-{name}.png", "photos": f"photos-{name}.png"},
    }


def _moves(previous: dict[str, Any], findings: list[probes.Finding]) -> list[tuple[probes.Finding, str, str]]:
    """(finding, line, verdict) per attribute that differed in either audit; see :func:`since_previous`."""
    before = {a["attribute"]: a for a in previous.get("attributes", [])}
    share = lambda counts, i: counts[i] / max(sum(counts), 1)  # noqa: E731
    moves = []
    for f in findings:
        old, option = before.get(f.attribute), f.subject_option
        if old is None or option is None or option not in old["options"] or not (old["differs"] or f.differs):
            continue
        was, now = share(old["prior_counts"], old["options"].index(option)), share(f.prior_counts, f.options.index(option))
        verdict = "closer to the photos" if now > was + 0.05 else "further from them" if now < was - 0.05 else "no better"
        k = f.subject_counts[f.options.index(option)]
        line = f'{f.attribute}: "{option}" in {was:.0%} -> {now:.0%} of priors ({k} of {sum(f.subject_counts)} photos): {verdict}'
        moves.append((f, line, verdict))
    return moves


def since_previous(previous: dict[str, Any], findings: list[probes.Finding]) -> list[str]:
    """How the subject's own option moved between the previous audit's priors and these, per attribute.

    After the priors were regenerated from a refined prompt this says whether the base model
    followed it: a prompt naming "clean-shaven" helps only if fewer of the new priors show a beard.
    Attributes that differed in neither audit are left out; moves within 5 points count as none.
    """
    return [line for _, line, _ in _moves(previous, findings)]


def not_followed(previous: dict[str, Any], findings: list[probes.Finding]) -> list[str]:
    """Attributes that still differ from the photos and did not move towards them since ``previous``:
    where the base model ignored the prompt, so regenerating again will not fix the priors."""
    return [f.attribute for f, _, verdict in _moves(previous, findings) if f.differs and verdict != "closer to the photos"]


def narrowed(previous: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """A line when the new priors vary much less than the previous ones (their CLIP feature spread
    fell by more than :data:`NARROWING`): a class prompt naming many of the subject's attributes
    describes the subject, not its class, and the prior loss then preserves little of the class.
    On the toy model such priors cost prompt following (docs/QUALITY.md). None otherwise, and when
    either audit has no spread (one prior, or a report from before it was recorded)."""
    was, now = previous.get("prior_spread"), entry.get("prior_spread")
    if not was or now is None or now >= was * (1 - NARROWING):
        return None
    like = ""
    if previous.get("prior_likeness") is not None and entry.get("prior_likeness") is not None:
        like = f", likeness to the photos {previous['prior_likeness']:.2f} -> {entry['prior_likeness']:.2f}"
    return (f"the new priors vary less: feature spread {was:.2f} -> {now:.2f} ({now / was - 1:+.0%}){like}; "
            "a class prompt that names many of the subject's attributes describes the subject rather than its class, "
            "and training on such priors can cost prompt following: name fewer attributes, or bring class images")


def _previous_report(run: Run) -> dict[str, dict[str, Any]]:
    """The last audit's subjects by name, or nothing when there is none (or it cannot be read)."""
    try:
        report = json.loads((run.root / "audit" / "report.json").read_text(encoding="utf-8"))
        return {s["name"]: s for s in report["subjects"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _with_history(entry: dict[str, Any], previous: dict[str, Any] | None, result: SubjectAudit) -> dict[str, Any]:
    """Add ``since``: the comparison with the audit of the priors made from other prompts before these.

    That is the previous audit when the priors changed since; when they did not (an audit run
    again), the previous audit's own comparison is carried forward, so it is not lost.
    """
    if previous is None:
        return entry
    if previous.get("prior_prompts") != entry["prior_prompts"]:
        earlier = {"prior_prompts": previous.get("prior_prompts", []), "attributes": previous.get("attributes", []),
                   "prior_spread": previous.get("prior_spread"), "prior_likeness": previous.get("prior_likeness")}
    elif "since" in previous:
        earlier = previous["since"]
    else:
        return entry
    entry["since"] = {**earlier, "lines": since_previous(earlier, result.findings),
                      "not_followed": not_followed(earlier, result.findings), "narrowed": narrowed(earlier, entry)}
    return entry


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


def audit_run(run: Run, apply: bool | None = None) -> str:
    """Audit every subject's priors; ``apply`` (default ``audit.apply``) writes the refined prompts into the config."""
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
    applying = run.config.audit.apply if apply is None else apply
    previous = _previous_report(run)
    report = {
        "clip_model": clip_source(run),
        "threshold": run.config.audit.threshold,
        "subjects": [_with_history(_subject_json(r, applying and r.changes_prompt), previous.get(r.subject.name), r)
                     for r in results],
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
        if variety_line(s):
            out.append(f"  {variety_line(s)}")
        if "since" in s:
            out.append(f"  since the priors of {' / '.join(repr(p) for p in s['since']['prior_prompts'])}:")
            out += [f"    {line}" for line in s["since"]["lines"]] or ["    no attribute differed in either audit"]
            if s["since"].get("not_followed"):
                out.append(f"  {not_followed_hint(s['since']['not_followed'])}")
            if s["since"].get("narrowed"):
                out.append(f"  {s['since']['narrowed']}")
        if s["refined_class_prompt"] != s["class_prompt"]:
            out.append(f"  refined class prompt: {s['refined_class_prompt']}")
    if changed:
        out.append(f"class prompt updated for {', '.join(changed)}: run `lookalike priors {run.root}` to regenerate the priors")
    elif any(s["refined_class_prompt"] != s["class_prompt"] for s in report["subjects"]):
        out.append(f"to use the refined prompt: lookalike audit {run.root} audit.apply=true, then lookalike priors {run.root}")
    out.append(f"report: {run.root / 'audit' / 'report.html'}")
    return "\n".join(out)
