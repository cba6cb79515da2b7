"""Training speed and memory: steps/s and peak RSS, latent/prompt caching on vs. off, tiny and mid models.

    python bench/bench_train.py                    # all rows; writes the table into docs/PERFORMANCE.md
    python bench/bench_train.py --steps 10 --sizes tiny

Each row runs in its own process (peak RSS is per process). "off" is the per-step path the usual
reference scripts take: every step loads the images, runs the VAE encoder and the text encoder;
"on" encodes every image, its mirror and every prompt once before the first step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- bench_train: begin -->", "<!-- bench_train: end -->"
RESOLUTION = {"tiny": 64, "mid": 128}
PHOTOS, PRIORS = 6, 12


def _write_images(folder: Path, count: int, size: int, seed: int, row: dict) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
        lines.append(json.dumps({"file": f"{i:03d}.png", **row}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def measure(size: str, cache: bool, steps: int, workdir: Path) -> dict:
    """One row, in this process: set up a run on a fresh random model, time ``steps`` steps after 2 warm-up ones."""
    import torch

    from lookalike.models.tiny import save_tiny
    from lookalike.run import Run
    from lookalike.train.loop import Trainer

    torch.manual_seed(0)
    res = RESOLUTION[size]
    model = save_tiny("sd1", workdir / f"model-{size}", size=size, resolution=res)
    run = Run.open(workdir / "run", overrides=[
        f"model.source={model}", f"prepare.resolution={res}", f"priors.num_images={PRIORS}",
        f"train.cache_latents={str(cache).lower()}", "train.method=full", f"train.max_steps={steps + 2}",
        "train.checkpoint_every=100000", "subject.name=s",
    ])
    _write_images(run.instance_dir("s"), PHOTOS, res, 0, {"source": "bench", "crop": "center"})
    _write_images(run.priors_dir("s"), PRIORS, res, 1, {"prompt": "a photo of a person"})
    started = time.perf_counter()
    trainer = Trainer(run)
    trainer.setup()
    setup_s = time.perf_counter() - started
    for _ in range(2):
        trainer._optimizer_step()
    started = time.perf_counter()
    for _ in range(steps):
        trainer._optimizer_step()
    elapsed = time.perf_counter() - started
    return {"size": size, "resolution": res, "cache": cache, "steps": steps, "setup_s": round(setup_s, 2),
            "steps_per_s": round(steps / elapsed, 3), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def run_row(size: str, cache: bool, steps: int, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--one", size, str(cache), "--steps", str(steps)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| model | px | caching | steps/s | speed-up | setup s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r["size"] == row["size"] and not r["cache"])
        ratio = row["steps_per_s"] / base["steps_per_s"]
        lines.append(
            f"| {row['size']} | {row['resolution']} | {'on' if row['cache'] else 'off'} | {row['steps_per_s']} | "
            f"{ratio:.2f}× | {row['setup_s']} | {row['peak_rss_mib']} |"
        )
    return "\n".join(lines)


def write_doc(rows: list[dict], steps: int, threads: int | None) -> None:
    import torch

    load = os.getloadavg()[0]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{threads or 'default'} torch threads per process, load average {load:.1f} when it finished"
    )
    body = (
        f"{BEGIN}\n## train: caching on vs. off\n\n`python bench/bench_train.py` on {datetime.date.today()}, {machine}. "
        f"SD1-shaped models from `lookalike.models.tiny.SIZES`, full UNet fine-tune, batch 1 photo + 1 prior, "
        f"{PHOTOS} photos and {PRIORS} priors, {steps} timed steps after 2 warm-up steps, one process per row.\n\n"
        f"{table(rows)}\n{END}\n"
    )
    text = DOC.read_text() if DOC.is_file() else "# Performance\n\nMeasured figures; each section says how to reproduce it.\n\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", re.S)
    text = pattern.sub(body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per row")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(RESOLUTION))
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS per row (1 is steadier on a shared machine)")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "CACHE"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(args.one[0], args.one[1] == "True", args.steps, Path(tmp))))
        return
    rows = []
    for size in args.sizes:
        for cache in (False, True):
            rows.append(run_row(size, cache, args.steps, args.threads))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    write_doc(rows, args.steps, args.threads)
    print(f"written to {DOC}")


if __name__ == "__main__":
    main()
