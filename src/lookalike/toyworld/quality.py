"""Does personalization really learn? Train the toy person four ways on the bundled toy model and measure.

``python -m lookalike.toyworld.quality [--out quality-runs] [--model EXPORT] [--docs docs]`` runs the demo's settings
(the toy-demo preset and the toy person's six photos: clean-shaven, with glasses) as four run folders:

* ``naive``: priors from "a photo of a man" (the world draws men bearded half the time and seldom
  with glasses), prior-preservation loss on;
* ``refined``: the audit's refined class prompt (for the shipped model "a photo of a man, light
  skin, black hair, clean-shaven, glasses, green shirt"),
  priors regenerated from it, prior-preservation loss on (what the demo does);
* ``no-prior``: no priors and no prior-preservation loss;
* ``embedding``: textual inversion, only the identifier's token embedding learns
  (``train.method=embedding``, learning rate 2.5e-4, no priors: they could not change anything).

With ``--rendered-priors``, three more conditions ask what priors could do at best: their class
images are not generated but rendered by the toy world itself, so their attributes are known, not
read by probes. ``world-men``: 100 men as the world draws them, in photo style (half bearded, 12%
with glasses); ``subject-like-men``: the same 100 men made clean-shaven and given glasses, the
priors a perfect audit would ask for; ``subject-clones``: the same 100 men given every one of the
subject's looks but his mark (skin, hair, beard, glasses, hat, shirt), priors that are the
subject in all but name. All keep the class prompt "a photo of a man".

Each is trained and evaluated with the ordinary verbs; the eval report gives likeness (toy CLIP-I
of identifier prompts against the photos), CLIP-T and PRES for the base model and the trained one.
Leakage is measured on top: the share of "a photo of ohwx man" generations that look bearded, or
without glasses, read two ways: against the subject's own renders drawn through the toy VAE
(:mod:`lookalike.toyworld.leakage`, the paired reading the learning test uses) and by the toy
CLIP's zero-shot probes (which misread the VAE's smeared glasses as a beard). The figures go to ``<out>/quality.json`` and, with ``--docs``, into
the measured section of docs/QUALITY.md. ``--model`` measures a build's export folder (holding
``pipeline/`` and ``clip/``) instead of the shipped toy model: how a new build is judged before it ships.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lookalike.errors import LookalikeError
from lookalike.run import Run, atomic_write_text

CONDITIONS = ("naive", "refined", "no-prior", "embedding")
RENDERED = ("world-men", "subject-like-men", "subject-clones")  # opt-in (--rendered-priors): priors the world renders
LEAKAGE_IMAGES = 64  # a share of 64 images: standard error 6 points at most
# Shared by every condition: a checkpoint only at the end, and more eval samples than the demo's.
COMMON = ["train.checkpoint_every=1000000", "eval.samples_per_prompt=8", "eval.include_base=true"]
PER_CONDITION = {
    "naive": ["audit.apply=false", "train.with_prior_preservation=true"],
    "refined": ["audit.apply=true", "train.with_prior_preservation=true"],
    "no-prior": ["train.with_prior_preservation=false"],
    # 1e-3 until the seventh toy build; on it 1e-3 learned the scene into the identifier too (CLIP-T
    # -0.054), 5e-4 gave -0.029 and 2.5e-4 -0.023, each with likeness +0.13 or more (docs/QUALITY.md).
    "embedding": ["train.method=embedding", "train.with_prior_preservation=false", "train.learning_rate=2.5e-4"],
}
for _name in RENDERED:  # subject.class_images is added per experiment folder (rendered_class_images)
    PER_CONDITION[_name] = ["audit.apply=false", "train.with_prior_preservation=true"]
RENDERED_SEEDS = 300_000_000  # scenes no toy build trained on (training 0-19,999, held out from 10,000,000, retext from 200,000,000)


def rendered_looks(condition: str) -> dict:
    """The attributes a rendered condition sets on every man it draws (none: the world's own men)."""
    from lookalike.toyworld.subjects import LOOKS

    return {
        "world-men": {},
        "subject-like-men": {"beard": "no", "glasses": "yes"},
        "subject-clones": {k: v for k, v in LOOKS["toyperson"].items() if k not in ("class", "gender", "marking")},
    }[condition]


def rendered_class_images(folder: Path, count: int, looks: dict) -> Path:
    """``count`` men rendered by the toy world in photo style, as class images (PNG) in ``folder``,
    with their scenes in ``folder.json`` beside it (not inside: every file in a class-images folder is
    taken for an image); ``looks`` overrides their attributes (``{"beard": "no"}``). The same seeds
    whatever the looks, so two sets differ only in what ``looks`` sets. A complete folder is reused."""
    from PIL import Image

    from lookalike.toyworld.render import render
    from lookalike.toyworld.world import sample_scene

    scenes_file = folder.with_suffix(".json")
    if scenes_file.is_file() and len(json.loads(scenes_file.read_text())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("man-*.png"):  # an interrupted rendering, or another count: drawn again
        old.unlink()
    scenes, seed = [], RENDERED_SEEDS
    while len(scenes) < count:
        scene = sample_scene(seed, "person") | {"style": "photo"}
        seed += 1
        if scene["gender"] != "man":
            continue
        scene |= looks
        Image.fromarray(render(scene)).save(folder / f"man-{len(scenes):04d}.png")
        scenes.append(scene)
    atomic_write_text(scenes_file, json.dumps(scenes, indent=1) + "\n")  # written last: marks the folder complete
    return folder


def condition_overrides(out: Path, condition: str, count: int) -> list[str]:
    """The condition's own overrides; a rendered condition's class images are rendered under ``out`` first."""
    if condition not in RENDERED:
        return []
    images = rendered_class_images(out / "class-images" / condition, count, rendered_looks(condition))
    return [f"subject.class_images={images}"]


def run_condition(folder: Path, condition: str, overrides: list[str], echo: Callable[[str], None]) -> Run:
    """Open and train one condition's run folder with the ordinary verbs (each resumes or reuses its work)."""
    from lookalike.data.prepare import prepare_run
    from lookalike.demo import audit_and_refine_once, open_demo_run
    from lookalike.metrics.evaluate import eval_run
    from lookalike.prior.generate import generate_priors
    from lookalike.train.loop import train_run

    run = open_demo_run(folder, [*COMMON, *PER_CONDITION[condition], *overrides])
    steps: list[Callable[[Run], object]] = [prepare_run]
    if "train.with_prior_preservation=false" not in PER_CONDITION[condition]:
        # The second priors step is a no-op unless the audit applied a prompt; run again on a folder, the
        # audit refines nothing more, so a condition trained before keeps the priors it was trained on.
        steps += [generate_priors, audit_and_refine_once, generate_priors]
    steps += [train_run, eval_run]
    for step in steps:
        t0 = time.perf_counter()
        step(run)
        echo(f"[{condition}] {step.__name__}: {time.perf_counter() - t0:.0f} s")
    return run


def bearded_and_without_glasses(judge, images: list[np.ndarray]) -> dict[str, float]:
    """Share of ``images`` the toy CLIP's probes call bearded, and without glasses (as a photo of a man)."""
    probe = {"class": "person", "gender": "man", "style": "photo", "context": "plain"}
    feats = judge.image_features(images)
    share = lambda key, value: round(float(np.mean([judge.predict(f, probe, key) == value for f in feats])), 3)  # noqa: E731
    return {"beard": share("beard", "yes"), "no_glasses": share("glasses", "no")}


@torch.no_grad()
def leakage(pipeline, judge, prompt: str, count: int, steps: int, guidance: float, reader=None) -> dict:
    """Share of ``count`` generations of ``prompt`` judged bearded, and judged without glasses, by
    the zero-shot probes; with ``reader`` (:class:`lookalike.toyworld.leakage.PairedReader`) the
    paired reading against the subject's own renders too, under ``paired``."""
    pipeline.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, count, 16):
        gen = torch.Generator().manual_seed(1000 + start)
        out = pipeline([prompt] * min(16, count - start), num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="np")
        images += [(img * 255).round().astype(np.uint8) for img in out.images]
    paired = {"paired": reader.read(images)} if reader is not None else {}
    return bearded_and_without_glasses(judge, images) | paired | {"images": count}


def model_overrides(model: Path | None) -> list[str]:
    """Overrides that point a run at a build's export folder instead of the shipped toy model."""
    if model is None:
        return []
    if not (model / "pipeline" / "model_index.json").is_file() or not (model / "clip" / "config.json").is_file():
        raise LookalikeError(f"{model} is not a toy build's export: it needs pipeline/ and clip/ (see docs/TOYWORLD.md)")
    from lookalike.demo import export_overrides

    return export_overrides(model)


def open_judge(model: Path | None):
    from lookalike.toyworld import clip_dir
    from lookalike.toyworld.probes import Judge

    return Judge.from_folder(model / "clip" if model is not None else clip_dir())


def report_row(run: Run, trained: bool) -> dict:
    """The eval report's row for the base model, or for the trained model (its last step)."""
    rows = json.loads((run.root / "eval" / "report.json").read_text())["rows"]
    row = max(rows, key=lambda r: r["step"]) if trained else next(r for r in rows if r["step"] == 0)
    m = row["metrics"]
    return {"step": row["step"], "likeness": m["clip_i"], "clip_t": m["clip_t"], "pres": m["pres"], "div_feat": m["div_feat"]}


def instance_leakage(run: Run, pipeline, judge, reader=None) -> dict:
    """Leakage of the run's instance prompt in ``pipeline``'s generations, sampled as eval samples."""
    prompt = run.config.subjects[0].resolved_instance_prompt()
    return leakage(pipeline, judge, prompt, LEAKAGE_IMAGES, run.config.eval.steps, run.config.eval.guidance_scale, reader)


def measure(run: Run, judge, base_leakage: dict, reader) -> dict:
    """The condition's trained model against its base: eval metrics, and leakage of the instance prompt.
    The base model is the same in every condition, so its leakage is measured once, by the caller."""
    from lookalike.models.trained import open_trained

    trained_pipeline, _ = open_trained(run)
    return {
        "class_prompt": run.config.subjects[0].resolved_class_prompt(),
        "base": report_row(run, trained=False) | {"leakage": base_leakage},
        "trained": report_row(run, trained=True) | {"leakage": instance_leakage(run, trained_pipeline, judge, reader)},
    }


def photo_attributes(run: Run, judge, vae) -> dict:
    """The probes on the subject's own photos (they should call them clean-shaven, with glasses), and
    on the same photos passed through the VAE (``through_vae``): what the probes make of the subject
    drawn as well as the toy model can draw him."""
    from lookalike.metrics.evaluate import subject_photos
    from lookalike.toyworld.leakage import vae_round_trip

    photos = [np.asarray(p.convert("RGB")) for p in subject_photos(run, run.config.subjects[0])]
    through_vae = bearded_and_without_glasses(judge, vae_round_trip(vae, photos))
    return bearded_and_without_glasses(judge, photos) | {"through_vae": through_vae, "photos": len(photos)}


def experiment(out: Path, overrides: list[str] = (), model: Path | None = None, echo: Callable[[str], None] = print,
               rendered_priors: bool = False) -> dict:
    """Run (or resume) the four conditions under ``out`` (seven with ``rendered_priors``) and return
    every figure; writes quality.json."""
    started = time.perf_counter()
    pointing = model_overrides(model)  # a wrong --model fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for c in CONDITIONS + (RENDERED if rendered_priors else ()):
        count = runs["naive"].config.priors.num_images if c in RENDERED else 0  # as many as the generated priors
        runs[c] = run_condition(out / c, c, [*pointing, *overrides, *condition_overrides(out, c, count)], echo)
    from lookalike.models.load import load_pipeline

    from lookalike.toyworld.leakage import PairedReader

    judge = open_judge(model)
    base_pipeline, _ = load_pipeline(runs["refined"].config.model, torch.float32)
    reader = PairedReader(judge, base_pipeline.vae)  # the VAE is the base model's in every condition
    base_leakage = instance_leakage(runs["refined"], base_pipeline, judge, reader)
    results = {
        "model": str(model) if model is not None else "toy",
        "settings": {"overrides": [*COMMON, *overrides], "leakage_images": LEAKAGE_IMAGES},
        "photos": photo_attributes(runs["refined"], judge, base_pipeline.vae),
        "paired_check": reader.check(),
        "conditions": {c: measure(run, judge, base_leakage, reader) for c, run in runs.items()},
    }
    del base_pipeline
    results["seconds"] = round(time.perf_counter() - started)
    atomic_write_text(out / "quality.json", json.dumps(results, indent=1) + "\n")
    return results


def share_pair(leak: dict) -> str:
    return f"{leak['beard']:.0%} / {leak['no_glasses']:.0%}"


def markdown(results: dict) -> str:
    c = results["conditions"]
    base = c["refined"]["base"]
    lines = [
        f"Measured by `python -m lookalike.toyworld.quality` on {results['model']} in {results['seconds'] / 60:.1f} min "
        f"(2-core CPU; a folder's conditions trained before are reused, not retrained), settings: the toy-demo preset plus `{' '.join(results['settings']['overrides'])}`.",
        "",
        "| model | likeness (toy CLIP-I) | CLIP-T | PRES | DIV-feat | bearded / without glasses: paired | probes |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, r: dict) -> str:
        leak = r["leakage"]
        return (f"| {name} | {r['likeness']:.3f} | {r['clip_t']:.3f} | {r['pres']:.3f} | {r['div_feat']:.3f} "
                f"| {share_pair(leak['paired'])} | {share_pair(leak)} |")

    lines.append(row("base model", base))
    labels = {"naive": "trained, naive priors", "refined": "trained, refined priors", "no-prior": "trained, no prior loss",
              "embedding": "textual inversion (embedding only)",
              "world-men": "trained, rendered priors: the world's men",
              "subject-like-men": "trained, rendered priors: the same men clean-shaven, with glasses",
              "subject-clones": "trained, rendered priors: the same men with all the subject's looks"}
    lines += [row(labels[name], c[name]["trained"]) for name in CONDITIONS + RENDERED if name in c]
    photos, check = results["photos"], results["paired_check"]
    lines += [
        "",
        f"Bearded / without glasses: share of {results['settings']['leakage_images']} generations of the instance "
        "prompt; the subject is neither. *Paired* (`lookalike.toyworld.leakage`, what the leakage test reads): nearer "
        "the subject with a beard (without glasses) than the subject as he is, both drawn through the toy VAE; on "
        f"held-out renders through the VAE it reads {share_pair(check['as is'])} of the subject as he is, "
        f"{check['beard']['beard']:.0%} of him bearded as bearded and {check['no_glasses']['no_glasses']:.0%} of him "
        "without glasses as without. *Probes*: the toy CLIP's zero-shot probes, which call "
        f"{share_pair(photos)} of the {photos['photos']} photos so, and {share_pair(photos['through_vae'])} of the "
        f"same photos passed through the VAE. Naive class prompt: `{c['naive']['class_prompt']}`; "
        f"refined: `{c['refined']['class_prompt']}`.",
    ]
    if any(name in c for name in RENDERED):
        lines[-1] += (" Rendered priors (`--rendered-priors`): class images drawn by the toy world, not generated, "
                      "so their beards and glasses are known: the same men in photo style, as the world draws them, "
                      "all clean-shaven with glasses, and with all of the subject's looks but his mark; class prompt "
                      "`a photo of a man`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="quality-runs", help="folder for the run folders and quality.json")
    p.add_argument("--model", type=Path, default=None, help="a build's export folder (pipeline/ and clip/); default: the shipped toy model")
    p.add_argument("--docs", default=None, help="write the figures into DOCS/QUALITY.md")
    p.add_argument("--rendered-priors", action="store_true",
                   help="three more conditions whose priors the toy world renders: its men; the same men clean-shaven "
                   "with glasses; the same men with all the subject's looks")
    p.add_argument("overrides", nargs="*", help="config overrides for every condition, e.g. train.max_steps=400")
    args = p.parse_args(argv)
    try:
        results = experiment(Path(args.out), args.overrides, args.model, rendered_priors=args.rendered_priors)
    except LookalikeError as err:
        raise SystemExit(f"error: {err}") from None
    text = markdown(results)
    if args.docs:
        from lookalike.toyworld.evaluate import write_report

        write_report(Path(args.docs) / "QUALITY.md", text, title="Quality")
    print(text)


if __name__ == "__main__":
    main()
