"""Interrupted and resumed training ends bit-identical to an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch
from safetensors.torch import load_file

from lookalike.cli import main
from lookalike.run import read_jsonl
from lookalike.train.loop import train_run
from trainrun import make_train_run

LORA = ["train.method=lora", "train.train_text_encoder=true", "train.gradient_accumulation_steps=2",
        "train.noise_offset=0.05", "train.min_snr_gamma=5", "train.lr_warmup_steps=2", "train.max_steps=3"]
FULL = ["train.method=full", "train.train_text_encoder=true", "train.max_steps=3", "train.lr_scheduler=cosine",
        "train.learning_rate=1e-4"]


def _weights(folder, files):
    return {f"{name}:{k}": v for name in files for k, v in load_file(folder / name).items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys() and a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:2]}"


def _interrupt_after_first_step(run):
    """Press Ctrl-C (a real SIGINT to this process) once the run has logged its first step."""

    def watch():
        deadline = time.time() + 300
        while time.time() < deadline:
            if any(e["event"] == "step" for e in read_jsonl(run.events_path)):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_lora_ctrl_c_then_resume_is_bit_identical(tmp_path, tiny_models):
    whole = make_train_run(tmp_path / "whole", tiny_models["sd1"], *LORA)
    assert main(["train", str(whole.root)]) == 0

    split = make_train_run(tmp_path / "split", tiny_models["sd1"], *LORA)
    watcher = _interrupt_after_first_step(split)
    assert main(["train", str(split.root)]) == 130
    watcher.join()
    stopped = [e for e in read_jsonl(split.events_path) if e["event"] == "stopped"]
    assert stopped and 1 <= stopped[0]["step"] < 3
    assert (split.checkpoints_dir / f"step-{stopped[0]['step']:06d}").is_dir()
    assert not split.model_dir.exists()
    assert main(["train", str(split.root)]) == 0

    files = ["pytorch_lora_weights.safetensors"]
    _assert_identical(_weights(whole.model_dir, files), _weights(split.model_dir, files))


def test_full_stop_file_then_resume_is_bit_identical(tmp_path, tiny_models):
    whole = make_train_run(tmp_path / "whole", tiny_models["sd2"], *FULL)
    train_run(whole)

    split = make_train_run(tmp_path / "split", tiny_models["sd2"], *FULL)
    split.stop_path.touch()
    assert train_run(split) == "stopped at step 1 of 3 (checkpoint saved); run the same command again to continue"
    assert not split.stop_path.exists()
    assert [p.name for p in split.checkpoints_dir.iterdir()] == ["step-000001"]
    assert "trained to step 3" in train_run(split)

    files = ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]
    _assert_identical(_weights(whole.model_dir, files), _weights(split.model_dir, files))
    # the uninterrupted run's weights really moved: the comparison is not between two copies of the base
    base = _weights(tiny_models["sd2"], files)
    assert any(not torch.equal(base[k], v) for k, v in _weights(whole.model_dir, files).items())


def test_a_half_written_checkpoint_is_never_the_latest(tmp_path):
    from lookalike.train.checkpoint import latest_checkpoint, prune_checkpoints

    folder = tmp_path / "checkpoints"
    for name in ("step-000002", "step-000010", ".step-000012.x1y2.tmp", "step-notes"):
        (folder / name).mkdir(parents=True)
    assert latest_checkpoint(folder).name == "step-000010"  # not the temporary folder of a killed write
    prune_checkpoints(folder, keep=1)
    assert sorted(p.name for p in folder.iterdir()) == [".step-000012.x1y2.tmp", "step-000010", "step-notes"]
    assert latest_checkpoint(tmp_path / "none") is None
