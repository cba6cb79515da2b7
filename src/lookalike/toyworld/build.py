"""Build the toy model from a seed: render the world, train CLIP and the VAE, then the UNet and the judge CLIP; export.

``python -m lookalike.toyworld.build [--out toyworld-build]`` runs every stage in order and
resumes wherever it stopped: each stage checkpoints every few minutes, and every step draws its
batch and noise from (stage, step), so a resumed run sees the same data as an unbroken one.
Progress goes to ``<out>/build.log``; the UNet stage exports a loadable pipeline at each checkpoint,
and the end of the build exports the final one with the judge CLIP. On two cores, run the
independent stages side by side (``--only clip`` with ``--only vae``, then ``--only unet`` with
``--only judge``, one thread each), then the plain command once more to export.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from lookalike.toyworld import ASSETS, models, trainers
from lookalike.toyworld.export import export_pipeline, ship
from lookalike.toyworld.render import render_seed
from lookalike.toyworld.tokenizer import build_tokenizer


class Log:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} cpu={time.process_time():.0f}s {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def render_pool(out: Path, count: int, log: Log) -> tuple[np.ndarray, list[dict]]:
    """The training images (seeds 0..count-1) and their scenes, cached in ``out/data``."""
    images_path, scenes_path = out / "data" / "images.npy", out / "data" / "scenes.jsonl"
    if images_path.is_file() and scenes_path.is_file():
        scenes = [json.loads(line) for line in scenes_path.read_text().splitlines()]
        if len(scenes) == count:
            return np.load(images_path), scenes
    images_path.parent.mkdir(parents=True, exist_ok=True)
    images = np.zeros((count, models.IMAGE_SIZE, models.IMAGE_SIZE, 3), np.uint8)
    scenes = []
    for seed in range(count):
        images[seed], scene = render_seed(seed)
        scenes.append(scene)
    np.save(images_path.with_suffix(".tmp.npy"), images)
    os.replace(images_path.with_suffix(".tmp.npy"), images_path)
    scenes_path.write_text("".join(json.dumps(s) + "\n" for s in scenes))
    log(f"rendered {count} training scenes")
    return images, scenes


def retext(args: argparse.Namespace) -> None:
    """The retext stage alone: an export's UNet and VAE, its judge's text tower; exports to <out>/export."""
    source = args.retext_from
    if source is None or not (source / "pipeline" / "model_index.json").is_file() or not (source / "clip" / "config.json").is_file():
        raise SystemExit("error: --only retext needs --retext-from FOLDER holding pipeline/ and clip/ (a build's export, or the package's assets)")
    out = Path(args.out)
    if source.resolve() == (out / "export").resolve():
        raise SystemExit(f"error: --retext-from {source} is where this stage writes its own export; give it another --out (e.g. retext-build)")
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "build.log")
    judge = trainers.exported_clip(source / "clip")
    trainers.retext_unet(out / "retext", source / "pipeline", judge, build_tokenizer(), args.retext_steps, args.checkpoint_minutes * 60, log)
    log("retext stage finished")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="toyworld-build", help="build folder (resumes from what it holds)")
    p.add_argument("--pool", type=int, default=20000, help="number of rendered training scenes")
    p.add_argument("--clip-steps", type=int, default=1600)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--unet-steps", type=int, default=14500, help="the last quarter lowers the learning rate")
    p.add_argument("--checkpoint-minutes", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--judge-steps", type=int, default=7000, help="steps of the judge: a copy of CLIP tuned on captions that differ in one attribute")
    p.add_argument(
        "--judge-from", type=Path, default=None,
        help="start the judge from this exported CLIP folder (e.g. a shipped judge) instead of the stage-1 CLIP",
    )
    p.add_argument(
        "--only", choices=("clip", "vae", "unet", "judge", "retext"),
        help="train just this stage (and what it needs) and stop: run clip beside vae, then unet beside judge; "
        "retext (with --retext-from) re-conditions an exported UNet on its judge's text tower",
    )
    p.add_argument(
        "--retext-from", type=Path, default=None,
        help="an export folder (pipeline/ and clip/, e.g. the package's assets) whose UNet the retext stage goes on training",
    )
    p.add_argument("--retext-steps", type=int, default=3000, help="steps of the retext stage; the last quarter lowers the learning rate")
    p.add_argument("--ship", action="store_true", help="copy the latest export into the package and stop")
    args = p.parse_args(argv)
    if args.ship:
        step = ship(Path(args.out) / "export", ASSETS)
        print(f"shipped the toy model (UNet step {step}) to {ASSETS}")
        return
    if args.judge_from is not None and not (args.judge_from / "config.json").is_file():
        raise SystemExit(f"error: {args.judge_from} holds no exported CLIP (config.json); point --judge-from at an export's clip/ folder")
    if args.only == "retext":
        return retext(args)
    from_export = args.only == "judge" and args.judge_from is not None  # needs neither the pool nor stage 1
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "build.log")
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    images, scenes = (None, None) if from_export else render_pool(out, args.pool, log)
    every = args.checkpoint_minutes * 60
    clip = vae = None
    if args.only in (None, "clip", "unet", "judge") and not from_export:
        clip = trainers.train_clip(out / "clip", images, scenes, tokenizer, args.clip_steps, every, log)
    if args.only in (None, "vae", "unet"):
        vae = trainers.train_vae(out / "vae", images, args.vae_steps, every, log)
    if args.only in (None, "unet"):
        latents = trainers.encode_pool(out / "vae", vae, images, log)
        unet = trainers.train_unet(out / "unet", latents, scenes, tokenizer, clip, vae, args.unet_steps, every, log)
    if args.only in (None, "judge"):
        start = clip if args.judge_from is None else trainers.exported_clip(args.judge_from)
        judge = trainers.tune_judge(out / "judge", start, tokenizer, args.judge_steps, every, log)
    if args.only:
        log(f"{args.only} stage finished")
        return
    export_pipeline(out / "export", unet, vae, models.text_encoder_from(clip), tokenizer, judge, args.unet_steps)
    log(f"exported the final pipeline (UNet step {args.unet_steps}) and the judge CLIP")
    log("build finished")


if __name__ == "__main__":
    main()
