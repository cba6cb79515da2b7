"""`lookalike train` under torchrun with two CPU processes (gloo): ranks agree, only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lookalike.run import read_jsonl
from trainrun import make_train_run

# Each rank trains through the library, then dumps its own trainable weights for the test to compare.
RANK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from safetensors.torch import save_file
    from lookalike.run import Run
    from lookalike.train.loop import Trainer

    trainer = Trainer(Run.open(sys.argv[1]))
    trainer.setup()
    trainer.train()
    weights = {n: p.detach().contiguous() for n, p in trainer.parts.unet.named_parameters() if p.requires_grad}
    rank = trainer.accelerator.process_index
    save_file(weights, Path(sys.argv[2]) / f"rank{rank}.safetensors", metadata={"main": str(trainer.is_main)})
""")


def test_two_processes_end_identical_and_only_rank0_writes(tmp_path, tiny_models):
    run = make_train_run(tmp_path / "run", tiny_models["sd1"], "train.method=full", "train.max_steps=2")
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    torchrun = str(Path(sys.executable).parent / "torchrun")  # installed with torch, beside this python
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([torchrun, "--nproc_per_node", "2", str(script), str(run.root), str(dumps)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [load_file(dumps / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    mains = [safe_open(dumps / f"rank{r}.safetensors", "pt").metadata()["main"] for r in (0, 1)]
    assert mains == ["True", "False"]

    events = [e["event"] for e in read_jsonl(run.events_path)]
    assert events == ["start", "step", "step", "checkpoint", "done"]  # once each: rank 1 wrote none
    assert len(list((run.logs_dir / "train").glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["step-000002"]
    trained = load_file(run.model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(trained[k], ranks[0][k]) for k in ranks[0])
