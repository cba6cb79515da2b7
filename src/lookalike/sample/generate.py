"""`lookalike generate`: the subject in every style and prompt, best-of-N, reproducible PNGs, a gallery.

Each call writes a new folder ``samples/<id>/``: the kept PNGs (each carrying its parameters, see
:mod:`lookalike.sample.pngmeta`), ``manifest.jsonl`` (every candidate with its score, kept or not),
``index.html`` and contact sheets. ``generate --from IMAGE`` re-renders one image exactly.

Each image has its own seeded generator, so a seed makes the same picture in any batch (up to the
last float bits); an exact re-render renders the image's recorded batch again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lookalike.config import GenerateConfig
from lookalike.errors import LookalikeError
from lookalike.run import Run, atomic_dir, atomic_write_bytes, atomic_write_text, read_jsonl
from lookalike.sample import gallery
from lookalike.sample.modelref import ModelRef, default_device, open_model, resolve_dtype
from lookalike.sample.pngmeta import ImageParams, png_bytes, read_params
from lookalike.sample.schedulers import make_scheduler
from lookalike.sample.scoring import BestOfN, get_scorer
from lookalike.sample.styles import PromptSpec, build_prompts

VERB = "generate"


@dataclass(frozen=True)
class Candidate:
    spec: PromptSpec
    seed: int


def render_batch(pipeline, batch: list[list], params: ImageParams) -> list[Image.Image]:
    """Render [prompt, negative prompt, seed] rows in one pass, each from its own CPU generator."""
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for _, _, seed in batch]
    return pipeline(
        prompt=[row[0] for row in batch],
        negative_prompt=[row[1] for row in batch],
        num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale,
        width=params.width,
        height=params.height,
        generator=generators,
    ).images


def _template(run: Run, model: ModelRef, checkpoint: str | None, dtype: torch.dtype, device: str) -> ImageParams:
    """The parameters every image of this generate run shares; prompt, seed and batch are filled per image."""
    gen = run.config.generate
    size = run.config.prepare.resolution
    return ImageParams(
        prompt="", negative_prompt="", seed=0, steps=gen.steps, guidance_scale=gen.guidance_scale,
        scheduler=gen.scheduler, width=gen.width or size, height=gen.height or size,
        model_name=model.name, model_hash=model.model_hash, lora_hash=model.lora_hash,
        base_model=model.base_model, family=model.family, method=model.method,
        run=str(run.root.resolve()), checkpoint=checkpoint, dtype=str(dtype).removeprefix("torch."), device=device,
    )


def reference_photos(run: Run, subject: str) -> list[Image.Image]:
    """The prepared photos of ``subject`` (those its manifest lists), for best-of-N."""
    folder = run.instance_dir(subject)
    photos = []
    for row in read_jsonl(folder / "manifest.jsonl"):
        try:
            photos.append(Image.open(folder / row["file"]).convert("RGB"))
        except (OSError, KeyError):
            raise LookalikeError(f"{folder}/manifest.jsonl lists a photo that cannot be read: run `lookalike prepare {run.root}` again") from None
    return photos


def _best_of_n(run: Run, subject: str) -> BestOfN:
    """The scorer and reference photos when fewer are kept than rendered; checked before any model loads."""
    gen = run.config.generate
    if gen.keep is None or gen.keep >= gen.seeds_per_prompt:
        return BestOfN(None)
    scorer = get_scorer(gen.scorer, run)
    refs = reference_photos(run, subject)
    if not refs:
        raise LookalikeError(
            f"best-of-N compares with the prepared photos of {subject!r}, and there are none: "
            f"run `lookalike prepare {run.root}` first, or set generate.keep={gen.seeds_per_prompt} to keep every candidate"
        )
    return BestOfN(scorer, refs, gen.keep)


def _new_folder(run: Run, prefix: str = "") -> Path:
    stamp = prefix + time.strftime("%Y%m%d-%H%M%S")
    out, n = run.root / "samples" / stamp, 1
    while out.exists():
        n += 1
        out = run.root / "samples" / f"{stamp}-{n}"
    return out


def _candidates(specs: list[PromptSpec], gen: GenerateConfig) -> list[Candidate]:
    return [Candidate(spec, gen.seed + i) for spec in specs for i in range(gen.seeds_per_prompt)]


def _finish_prompt(out: Path, done: list[tuple[ImageParams, Image.Image]], best: BestOfN) -> list[dict]:
    """Score one prompt's candidates, write the kept PNGs; manifest rows for all candidates."""
    kept, scores = best.pick([image for _, image in done])
    rows = []
    for i, (params, image) in enumerate(done):
        params = replace(params, score=scores[i], scorer=best.scorer_name)
        rank = kept.index(i) + 1 if i in kept else None
        file = f"{params.group}-{rank}-s{params.seed}.png" if rank else None
        if file:
            atomic_write_bytes(out / file, png_bytes(image, params))
        rows.append({"file": file, "group": params.group, "prompt": params.prompt, "negative_prompt": params.negative_prompt,
                     "seed": params.seed, "score": scores[i], "rank": rank, "kept": rank is not None})
    return rows


def _render_all(
    run: Run, out: Path, model: ModelRef, template: ImageParams, candidates: list[Candidate], best: BestOfN
) -> tuple[list[dict], bool]:
    """Render every candidate in batches; finish each prompt as its N candidates are done."""
    gen = run.config.generate
    rows, pending, stopped = [], {}, False
    with tqdm(total=len(candidates), desc="generate", unit="img") as bar:
        for start in range(0, len(candidates), gen.batch_size):
            if run.stop_requested():
                stopped = True
                break
            chunk = candidates[start : start + gen.batch_size]
            batch = [[c.spec.prompt, c.spec.negative_prompt, c.seed] for c in chunk]
            images = render_batch(model.pipeline, batch, template)
            for index, (c, image) in enumerate(zip(chunk, images)):
                params = replace(template, prompt=c.spec.prompt, negative_prompt=c.spec.negative_prompt, seed=c.seed,
                                 batch=batch, batch_index=index, group=c.spec.group)
                pending.setdefault(c.spec.group, []).append((params, image))
                if len(pending[c.spec.group]) == gen.seeds_per_prompt:
                    rows += _finish_prompt(out, pending.pop(c.spec.group), best)
            bar.update(len(chunk))
            run.emit(VERB, "progress", done=bar.n, total=len(candidates))
    return rows, stopped


def generate_run(run: Run | None, from_image: str | None = None) -> str:
    """Render the chosen styles and prompts (or, with ``from_image``, re-render that image)."""
    if from_image is not None:
        return rerender(Path(from_image), run)
    if run is None:
        raise LookalikeError("give a run folder: lookalike generate RUN (or --from IMAGE.png)")
    gen = run.config.generate
    subject = run.subject(gen.subject)
    specs = build_prompts(gen, subject.subject_phrase)
    best = _best_of_n(run, subject.name)
    device = default_device()
    dtype = resolve_dtype(gen.dtype, device)
    model = open_model(run, gen.checkpoint, dtype, device)
    model.pipeline.scheduler = make_scheduler(gen.scheduler, model.pipeline.scheduler.config)
    template = _template(run, model, gen.checkpoint, dtype, device)
    candidates = _candidates(specs, gen)
    final = _new_folder(run)
    run.emit(VERB, "start", folder=str(final), prompts=len(specs), images=len(candidates))
    with atomic_dir(final) as out:
        rows, stopped = _render_all(run, out, model, template, candidates, best)
        atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        gallery.write_gallery(out, rows, title=f"{subject.subject_phrase}: {model.name}")
    kept = sum(r["kept"] for r in rows)
    if stopped:
        what = f"after {len(rows)} of {len(candidates)} images (kept {kept} in {final})"
        return run.stopped(VERB, what, folder=str(final), kept=kept)
    run.emit(VERB, "done", folder=str(final), kept=kept)
    per_prompt = min(gen.keep or gen.seeds_per_prompt, gen.seeds_per_prompt)
    return f"{kept} images ({len(specs)} prompts, best {per_prompt} of {gen.seeds_per_prompt}) in {final}\ngallery: {final / 'index.html'}"


def _recorded_run(params: ImageParams, image: Path) -> Run:
    root = Path(params.run)
    if not (root / "config.toml").is_file():
        raise LookalikeError(
            f"{image} was made in run {root}, which is not there any more: pass the run folder, "
            f"lookalike generate RUN --from {image}"
        )
    return Run.open(root, save=False)


def rerender(image: Path, run: Run | None) -> str:
    """Render ``image`` again from the parameters it carries; say whether the pixels are identical."""
    params = read_params(image)
    run = run or _recorded_run(params, image)
    device = default_device()
    model = open_model(run, params.checkpoint, getattr(torch, params.dtype), device)
    model.pipeline.scheduler = make_scheduler(params.scheduler, model.pipeline.scheduler.config)
    result = render_batch(model.pipeline, params.batch, params)[params.batch_index]
    out = _new_folder(run, "rerender-") / image.name
    atomic_write_bytes(out, png_bytes(result, replace(params, model_hash=model.model_hash, lora_hash=model.lora_hash)))
    original = np.asarray(Image.open(image).convert("RGB"))
    same = np.array_equal(original, np.asarray(result.convert("RGB")))
    notes = [n for n, differs in (
        ("the model's weights changed since", (model.model_hash, model.lora_hash) != (params.model_hash, params.lora_hash)),
        (f"it was made on {params.device}, this is {device}", params.device != device),
    ) if differs]
    verdict = "bit-identical to the original" if same else "NOT identical to the original"
    return f"{out}: {verdict}" + (f" ({'; '.join(notes)})" if notes else "")
