"""Measure the toy model against the issue's bars and write the figures into docs/TOYWORLD.md.

``python -m lookalike.toyworld.evaluate [--model toyworld-build/export]`` measures
1. the toy CLIP's zero-shot accuracy on held-out renders (class, context, style, each attribute);
2. base-model generations for held-out captions, judged by the toy CLIP (class, context, style);
3. how often "a photo of a man" comes out bearded / with glasses (the world's skew: 50% / 12%);
and writes a contact sheet of generations to docs/toyworld-contact-sheet.png.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.run import atomic_write_bytes, atomic_write_text
from lookalike.toyworld.probes import Judge
from lookalike.toyworld.render import render_seed
from lookalike.toyworld.world import caption, sample_scene, visible_attributes

HELD_OUT = 10_000_000  # first seed of held-out scenes (training renders seeds 0..pool-1)
MARK_BEGIN, MARK_END = "<!-- measured:begin -->", "<!-- measured:end -->"


def load(model: Path):
    from diffusers import StableDiffusionPipeline

    from lookalike.sample.schedulers import make_scheduler

    pipeline = StableDiffusionPipeline.from_pretrained(model / "pipeline", torch_dtype=torch.float32)
    pipeline.scheduler = make_scheduler("dpm++", pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, Judge.from_folder(model / "clip")


def _accuracies(hits: dict[str, list[bool]]) -> dict[str, float]:
    return {key: round(float(np.mean(v)), 3) for key, v in sorted(hits.items())}


def zero_shot(judge: Judge, count: int) -> dict[str, float]:
    """Accuracy per key over held-out renders; attributes only where the style shows them."""
    hits = defaultdict(list)
    for seed in range(HELD_OUT, HELD_OUT + count):
        image, scene = render_seed(seed)
        feature = judge.image_features([image])[0]
        for key in ["class", "context", "style"] + visible_attributes(scene):
            name = key if key in ("class", "context", "style") else f"{scene['class']}/{key}"
            hits[name].append(judge.predict(feature, scene, key) == scene[key])
    return _accuracies(hits)


@torch.no_grad()
def vae_psnr(vae, count: int) -> float:
    """Reconstruction PSNR (dB) of the VAE over held-out renders."""
    images = np.stack([render_seed(HELD_OUT + 90_000 + i)[0] for i in range(count)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = float(((recon - x) / 2).pow(2).mean())
    return round(10 * np.log10(1.0 / mse), 2)


def generate(pipeline, prompts: list[str], seed: int, steps: int, guidance: float) -> list[np.ndarray]:
    images = []
    for start in range(0, len(prompts), 16):
        gen = torch.Generator().manual_seed(seed + start)
        out = pipeline(prompts[start : start + 16], num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="np")
        images += [(img * 255).round().astype(np.uint8) for img in out.images]
    return images


def generation_accuracy(pipeline, judge: Judge, count: int, steps: int, guidance: float):
    """Accuracy of class, context and style in generations for held-out captions; and the images."""
    scenes = [sample_scene(HELD_OUT + 50_000 + i) for i in range(count)]
    rng = np.random.default_rng(0)
    prompts = [caption(scene, rng, must_mention=("context",)) for scene in scenes]
    images = generate(pipeline, prompts, 0, steps, guidance)
    hits = defaultdict(list)
    for scene, feature in zip(scenes, judge.image_features(images)):
        for key in ("class", "context", "style"):
            hits[key].append(judge.predict(feature, scene, key) == scene[key])
    return _accuracies(hits), prompts, images


def man_skew(pipeline, judge: Judge, count: int, steps: int, guidance: float) -> dict[str, float]:
    """How often 'a photo of a man' comes out bearded and with glasses."""
    images = generate(pipeline, ["a photo of a man"] * count, 1, steps, guidance)
    probe = {"class": "person", "gender": "man", "style": "photo", "context": "plain"}
    rates = defaultdict(list)
    for feature in judge.image_features(images):
        for attr in ("beard", "glasses"):
            rates[attr].append(judge.predict(feature, probe, attr) == "yes")
    return {attr: round(float(np.mean(v)), 3) for attr, v in rates.items()}


def contact_sheet(images: list[np.ndarray], path: Path, columns: int = 8, scale: int = 2) -> None:
    rows = [np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images) - columns + 1, columns)]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    from io import BytesIO

    buffer = BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _table(title: str, figures: dict[str, float], bar: float | None) -> list[str]:
    lines = [f"**{title}**", "", "| key | accuracy |" + (" bar |" if bar else ""), "|---|---|" + ("---|" if bar else "")]
    for key, value in figures.items():
        verdict = f" {'meets' if value >= bar else 'below'} {bar:.0%} |" if bar else ""
        lines.append(f"| {key} | {value:.1%} |{verdict}")
    return lines + [""]


def markdown(results: dict) -> str:
    skew = results["man_skew"]
    lines = [
        f"Measured by `python -m lookalike.toyworld.evaluate` on {results['model']} "
        f"(UNet step {results['unet_step']}; {results['status']}). Generations: DPM++ "
        f"{results['steps']} steps, guidance {results['guidance']}; evaluation took {results['seconds']:.0f} s.",
        "",
    ]
    lines += _table(f"Toy-CLIP zero-shot accuracy, {results['renders']} held-out renders", results["zero_shot"], 0.9)
    lines += _table(f"Base-model generations for {results['prompts']} held-out captions, judged by the toy CLIP", results["generations"], 0.8)
    lines += [
        f"**Skew of \"a photo of a man\"** ({results['skew_images']} generations, judged by the toy CLIP): "
        f"bearded {skew['beard']:.0%} (world: 50%), glasses {skew['glasses']:.0%} (world: 12%).",
        "",
        f"**VAE** reconstruction of 64 held-out renders: PSNR {results['vae_psnr_db']:.1f} dB.",
        "",
        "Generations for the first 32 held-out captions (prompts in toyworld-metrics.json), and 32 held-out renders of the world:",
        "",
        "![contact sheet](toyworld-contact-sheet.png)",
        "",
        "![renders](toyworld-renders.png)",
    ]
    return "\n".join(lines)


def write_report(doc: Path, text: str, title: str = "The toy world") -> None:
    """Replace the measured section of the doc (between the markers), leaving the rest as written;
    a missing doc is started with ``title``."""
    current = doc.read_text(encoding="utf-8") if doc.is_file() else f"# {title}\n\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = current.split(MARK_BEGIN, 1)
    tail = rest.split(MARK_END, 1)[1]
    atomic_write_text(doc, f"{head}{MARK_BEGIN}\n{text}\n{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toyworld-build/export", help="folder holding pipeline/ and clip/")
    p.add_argument("--renders", type=int, default=400, help="held-out renders for the CLIP probes")
    p.add_argument("--prompts", type=int, default=128, help="held-out captions to generate")
    p.add_argument("--skew-images", type=int, default=64, help="generations of 'a photo of a man'")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--status", default="partial: training still running", help="label written with the figures")
    p.add_argument("--docs", default="docs", help="where TOYWORLD.md, the metrics JSON and the contact sheet go")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    model, docs = Path(args.model), Path(args.docs)
    pipeline, judge = load(model)
    zero = zero_shot(judge, args.renders)
    psnr = vae_psnr(pipeline.vae, 64)
    gens, prompts, images = generation_accuracy(pipeline, judge, args.prompts, args.steps, args.guidance)
    skew = man_skew(pipeline, judge, args.skew_images, args.steps, args.guidance)
    contact_sheet(images[:32], docs / "toyworld-contact-sheet.png")
    contact_sheet([render_seed(HELD_OUT + i)[0] for i in range(32)], docs / "toyworld-renders.png")
    results = {
        "model": str(model), "unet_step": json.loads((model / "pipeline" / "toyworld.json").read_text())["unet_step"],
        "status": args.status, "steps": args.steps, "guidance": args.guidance, "renders": args.renders,
        "prompts": args.prompts, "skew_images": args.skew_images, "zero_shot": zero, "generations": gens,
        "man_skew": skew, "vae_psnr_db": psnr, "contact_sheet_prompts": prompts[:32], "seconds": time.time() - start,
    }
    atomic_write_text(docs / "toyworld-metrics.json", json.dumps(results, indent=1) + "\n")
    write_report(docs / "TOYWORLD.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
