"""The three training stages of the toy model and its export. Each stage resumes from its folder.

Every step draws its batch from ``np.random.default_rng([stage, step])`` and its noise from a torch
generator seeded the same way, so a resumed stage repeats exactly what an unbroken one would do.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.toyworld import models
from lookalike.toyworld.world import caption, flipped

CAPTION_DROPOUT = 0.1  # empty captions teach the unconditional branch of classifier-free guidance


def to_clip_pixels(batch: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(models.CLIP_MEAN)[:, None, None], torch.tensor(models.CLIP_STD)[:, None, None]
    return (x - mean) / std


def to_vae_pixels(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class Stage:
    """Checkpointing and logging around one stage's step loop."""

    def __init__(self, folder: Path, name: str, modules: dict, steps: int, every_s: float, log: Callable):
        self.folder, self.name, self.modules, self.steps, self.every_s, self.log = folder, name, modules, steps, every_s, log
        folder.mkdir(parents=True, exist_ok=True)
        self.ckpt = folder / "checkpoint.pt"
        self.step = 0
        if self.ckpt.is_file():
            state = torch.load(self.ckpt, weights_only=False)
            for key, module in modules.items():
                module.load_state_dict(state[key])
            self.step = state["step"]
            log(f"{name}: resumed at step {self.step}")

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def run(self, step_fn: Callable[[int], float], on_checkpoint: Callable[[], None] | None = None) -> None:
        last_save, t0, losses = time.time(), time.time(), []
        start = self.step
        while self.step < self.steps:
            losses.append(step_fn(self.step))
            self.step += 1
            if self.step % 25 == 0:
                rate = (time.time() - t0) / (self.step - start)
                self.log(f"{self.name} step {self.step}/{self.steps} loss {np.mean(losses):.4f} {rate:.2f}s/step")
                losses = []
            if time.time() - last_save > self.every_s or self.step == self.steps:
                self.save()
                if on_checkpoint:
                    on_checkpoint()
                last_save = time.time()

    def save(self) -> None:
        _save(self.ckpt, {"step": self.step, **{k: m.state_dict() for k, m in self.modules.items()}})
        self.log(f"{self.name}: checkpoint at step {self.step}")


def warmup_cosine(step: int, steps: int, warmup: int = 50) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to a tenth."""
    return min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * np.cos(np.pi * min(step / steps, 1.0)))


def clip_texts(scenes: list[dict], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """A caption per scene and a hard negative: the same phrasing with one attribute changed."""
    positives, negatives = [], []
    for scene in scenes:
        other, key = flipped(scene, rng)
        seed = int(rng.integers(1 << 31))
        positives.append(caption(scene, np.random.default_rng(seed), must_mention=(key,)))
        negatives.append(caption(other, np.random.default_rng(seed), must_mention=(key,)))
    return positives, negatives


def train_clip(folder, images, scenes, tokenizer, steps, every_s, log, batch=64):
    torch.manual_seed(1)
    clip = models.clip_model(tokenizer)
    opt = torch.optim.AdamW(clip.parameters(), lr=5e-4, weight_decay=0.1)
    stage = Stage(folder, "clip", {"model": clip, "opt": opt}, steps, every_s, log)

    def step(i: int) -> float:
        rng = np.random.default_rng([1, i])
        idx = rng.choice(len(images), batch, replace=False)
        pos, neg = clip_texts([scenes[j] for j in idx], rng)
        tokens = tokenizer(pos + neg, padding="longest", return_tensors="pt")
        for group in opt.param_groups:
            group["lr"] = 5e-4 * warmup_cosine(i, steps)
        out = clip(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=to_clip_pixels(images[idx]))
        per_image = out.logits_per_image  # (batch, 2*batch): own caption vs others and hard negatives
        target = torch.arange(batch)
        loss = (F.cross_entropy(per_image, target) + F.cross_entropy(per_image[:, :batch].T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    if not stage.done:
        clip.train()
        stage.run(step)
    return clip.eval()


def train_vae(folder, images, steps, every_s, log, batch=16):
    torch.manual_seed(2)
    vae = models.vae_model()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    stage = Stage(folder, "vae", {"model": vae, "opt": opt}, steps, every_s, log)

    def step(i: int) -> float:
        rng = np.random.default_rng([2, i])
        x = to_vae_pixels(images[rng.choice(len(images), batch, replace=False)])
        gen = torch.Generator().manual_seed(i)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        for group in opt.param_groups:
            group["lr"] = 1e-3 * warmup_cosine(i, steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    if not stage.done:
        vae.train()
        stage.run(step)
    return vae.eval()


@torch.no_grad()
def encode_pool(folder: Path, vae, images: np.ndarray, log) -> torch.Tensor:
    """Latent means of every training image, scaled to unit variance (SD's scaling_factor)."""
    path = folder / "latents.pt"
    if path.is_file():
        state = torch.load(path)
        vae.register_to_config(scaling_factor=state["scaling_factor"])
        return state["latents"]
    means = [vae.encode(to_vae_pixels(images[i : i + 256])).latent_dist.mean for i in range(0, len(images), 256)]
    latents = torch.cat(means)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    _save(path, {"latents": latents * scaling, "scaling_factor": scaling})
    log(f"encoded {len(latents)} latents; scaling_factor {scaling:.4f}")
    return latents * scaling


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int) -> None:
    decay = min(0.995, (1 + step) / (10 + step))  # short builds: average the last ~200 steps
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_unet(folder, latents, scenes, tokenizer, clip, vae, steps, every_s, log, batch=32):
    from lookalike.toyworld.export import export_pipeline

    torch.manual_seed(3)
    unet, scheduler = models.unet_model(), models.noise_scheduler()
    ema = copy.deepcopy(unet).requires_grad_(False)
    text_encoder = models.text_encoder_from(clip).requires_grad_(False).eval()
    opt = torch.optim.AdamW(unet.parameters(), lr=8e-4, weight_decay=0.01)
    stage = Stage(folder, "unet", {"model": unet, "ema": ema, "opt": opt}, steps, every_s, log)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)

    def step(i: int) -> float:
        rng = np.random.default_rng([3, i])
        idx = rng.choice(len(latents), batch, replace=False)
        texts = ["" if rng.random() < CAPTION_DROPOUT else caption(scenes[j], rng) for j in idx]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            context = text_encoder(ids)[0]
        gen = torch.Generator().manual_seed(i)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=context).sample
        weight = torch.clamp(snr[t], max=5.0) / snr[t]  # min-SNR-5: no timestep dominates the loss
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        for group in opt.param_groups:
            group["lr"] = 8e-4 * min(1.0, (i + 1) / 200)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, i)
        return loss.item()

    def export() -> None:
        export_pipeline(folder.parent / "export", ema, vae, text_encoder, tokenizer, clip, stage.step)
        log(f"exported pipeline at unet step {stage.step}")

    if not stage.done:
        unet.train()
        stage.run(step, on_checkpoint=export)
    return ema
