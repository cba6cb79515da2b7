"""`lookalike demo`: the whole story on the bundled toy model, on a CPU, in a few minutes.

prepare the toy person's six photos -> check the identifier -> priors from the naive class prompt
"a photo of a man" -> the audit flags the beard / glasses skew and refines the prompt -> priors
regenerated with it -> the audit again, saying whether the new priors moved towards the photos -> train (LoRA, prior preservation) -> a style gallery -> an eval report ->
export. Every step is the ordinary verb on an ordinary run folder, so the demo doubles as a
worked example: each step prints the command that would run it by hand.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from lookalike.run import Run, Stopped

DEMO_PRESET = "toy-demo"
DEMO_SUBJECT = "toyperson"
EVAL_PROMPTS = Path(__file__).parent / "toyworld" / "assets" / "eval-prompts.toml"


def _steps() -> list[tuple[str, str, Callable[[Run], object]]]:
    from lookalike.data.prepare import prepare_run
    from lookalike.identifier import check_run
    from lookalike.metrics.evaluate import eval_run
    from lookalike.models.export import export_run
    from lookalike.prior.audit import audit_run
    from lookalike.prior.generate import generate_priors
    from lookalike.sample.generate import generate_run
    from lookalike.train.loop import train_run

    return [
        ("prepare", "prepare the subject's photos", prepare_run),
        ("identifier", "check the identifier token", check_run),
        ("priors", "class priors from the naive prompt", generate_priors),
        ("audit", "audit the priors against the photos", audit_and_refine_once),
        ("priors", "priors again, from the refined prompt", generate_priors),
        ("audit", "audit the new priors, report only: did the refined prompt take?", _audit_again),
        ("train", "train (LoRA + prior preservation)", train_run),
        ("generate", "the subject in many styles", generate_run),
        ("eval", "score every checkpoint", eval_run),
        ("export", "files for other SD tools", export_run),
    ]


def refined_before(run: Run) -> bool:
    """Whether an audit already wrote a refined class prompt into this run (its ``done`` events list
    the subjects it changed)."""
    from lookalike.run import read_jsonl

    return any(row.get("verb") == "audit" and row.get("event") == "done" and row.get("changed")
               for row in read_jsonl(run.events_path))


def audit_and_refine_once(run: Run) -> str:
    """The story's audit: it refines the class prompt (``audit.apply``) the first time only.

    Run again on its folder, the demo audits the priors it made from the refined prompt, report
    only: refining again would name more attributes ("short hair"), make a third set of priors and
    leave the model trained on the second."""
    from lookalike.prior.audit import audit_run

    return audit_run(run, apply=False if refined_before(run) else None)


def _audit_again(run: Run) -> str:
    """Report only: the priors were just made from the refined prompt, and training uses them as they are."""
    from lookalike.prior.audit import audit_run

    return audit_run(run, apply=False)


def export_overrides(export: Path) -> list[str]:
    """Overrides that point a run at a toy export folder (``pipeline/`` and ``clip/``) instead of the shipped model."""
    clip = export / "clip"
    return [f"model.source={export / 'pipeline'}", f"audit.clip_model={clip}", f"eval.clip_model={clip}"]


def open_demo_run(folder: Path | str, overrides: list[str] = ()) -> Run:
    """The demo's run folder: the toy-demo preset, the bundled subject's photos, your overrides.

    A folder the demo made before keeps its own config.toml (the preset's values, and the class
    prompt the audit refined), so running the demo again resumes the story instead of going back to
    the naive prompt and making both prior sets again."""
    from lookalike.toyworld import subject_dir

    base = [f"subject.photos={subject_dir(DEMO_SUBJECT)}", f"eval.prompts_file={EVAL_PROMPTS}"]
    made_before = (Path(folder) / "config.toml").is_file()
    return Run.open(folder, preset=None if made_before else DEMO_PRESET, overrides=[*base, *overrides])


def demo_run(run: Run, echo: Callable[[str], None] = print) -> str:
    """Replay the story on ``run`` (made by :func:`open_demo_run`); returns where to look."""
    started = time.perf_counter()
    for verb, title, step in _steps():
        echo(f"\n== {title}: lookalike {verb} {run.root}")
        t0 = time.perf_counter()
        summary = step(run)
        if summary:
            echo(str(summary))
        echo(f"   ({time.perf_counter() - t0:.0f} s)")
        if isinstance(summary, Stopped):  # a STOP file ends the story here, not just this step
            return f"demo stopped at `lookalike {verb} {run.root}`; run the demo again to continue"
    minutes = (time.perf_counter() - started) / 60
    root = run.root
    return "\n".join([
        f"\ndemo finished in {minutes:.1f} min. Where to look:",
        f"  audit report    {root / 'audit' / 'report.html'}",
        f"  style gallery   {root / 'samples'}/*/index.html",
        f"  eval report     {root / 'eval' / 'index.html'}",
        f"  exported files  {root / 'export'}",
        f"  the whole run   {root / 'config.toml'} (re-run any verb above by hand)",
    ])
