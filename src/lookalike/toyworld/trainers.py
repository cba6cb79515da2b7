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
from lookalike.toyworld.world import caption, flipped, sample_scene

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


NEGATIVES = 4  # hard-negative captions per image; each changes one thing the image shows


def other_class(scene: dict, rng: np.random.Generator) -> dict:
    """A scene of another class in the same context, style and layout: the hard negative for 'class'."""
    while True:
        other = sample_scene(int(rng.integers(1 << 30)))
        if other["class"] != scene["class"]:
            return {**other, **{k: scene[k] for k in ("context", "style", "scale", "dx", "dy")}}


def clip_texts(
    scenes: list[dict], rng: np.random.Generator, negatives: int = NEGATIVES, attributes_only: bool = False
) -> tuple[list[str], list[str]]:
    """A caption per scene and ``negatives`` hard negatives per scene (scene-major): the same phrasing
    with one attribute, the context, the style or the class changed (``attributes_only``: always an
    attribute). Zero-shot probes contrast exactly such captions, and in-batch negatives alone seldom
    differ in a beard or a pair of glasses."""
    positives, hard = [], []
    for scene in scenes:
        if attributes_only:
            flips = [flipped(scene, rng, attributes_only=True) for _ in range(negatives)]
        else:
            flips = [(other_class(scene, rng), "class") if rng.random() < 0.15 else flipped(scene, rng) for _ in range(negatives)]
        keys = tuple({key for _, key in flips} - {"class"})
        seed = int(rng.integers(1 << 31))
        positives.append(caption(scene, np.random.default_rng(seed), must_mention=keys))
        hard += [caption(other, np.random.default_rng(seed), must_mention=keys) for other, _ in flips]
    return positives, hard


def contrastive_update(opt: torch.optim.Optimizer, per_image: torch.Tensor) -> float:
    """One optimizer step on CLIP's symmetric loss. ``per_image`` is (batch, batch * (1 + negatives)):
    each image against its own caption (column i), the other captions and every hard negative;
    each caption (the first ``batch`` columns) against the batch's images."""
    batch = per_image.shape[0]
    target = torch.arange(batch)
    loss = (F.cross_entropy(per_image, target) + F.cross_entropy(per_image[:, :batch].T, target)) / 2
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def train_clip(folder, images, scenes, tokenizer, steps, every_s, log, batch=64):
    torch.manual_seed(1)
    clip = models.clip_model(tokenizer)
    opt = torch.optim.AdamW(clip.parameters(), lr=7e-4, weight_decay=0.1)
    stage = Stage(folder, "clip", {"model": clip, "opt": opt}, steps, every_s, log)

    def step(i: int) -> float:
        rng = np.random.default_rng([1, i])
        idx = rng.choice(len(images), batch, replace=False)
        pos, neg = clip_texts([scenes[j] for j in idx], rng)
        tokens = tokenizer(pos + neg, padding="longest", return_tensors="pt")
        for group in opt.param_groups:
            group["lr"] = 7e-4 * warmup_cosine(i, steps)
        out = clip(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=to_clip_pixels(images[idx]))
        return contrastive_update(opt, out.logits_per_image)

    if not stage.done:
        clip.train()
        stage.run(step)
    return clip.eval()


def _features(output) -> torch.Tensor:
    return F.normalize(getattr(output, "pooler_output", output), dim=-1)


def tune_clip_vision(folder, clip, images, scenes, tokenizer, steps, every_s, log, batch=64):
    """CLIP's second stage: the text tower stays locked, the image tower (and its projection) goes on learning.

    The UNet is conditioned on the text tower, so it must not move once the UNet trains; the image
    tower only serves the probes and metrics, and fine-grained attributes (a beard, glasses) need
    more steps than the text side does. Runs beside the UNet stage; starts from the first stage's CLIP.
    Half of each batch is people, and every hard negative changes an attribute: the first stage
    leaves class, context and style well learnt and the people's details (a beard) barely.
    """
    torch.manual_seed(4)
    clip = copy.deepcopy(clip)
    clip.text_model.requires_grad_(False).eval()
    clip.text_projection.requires_grad_(False)
    trainable = [p for p in clip.parameters() if p.requires_grad]  # vision tower, its projection, logit scale
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.1)
    stage = Stage(folder, "clip-vision", {"model": clip, "opt": opt}, steps, every_s, log)
    people = np.array([i for i, scene in enumerate(scenes) if scene["class"] == "person"])

    def step(i: int) -> float:
        rng = np.random.default_rng([4, i])
        idx = np.unique(np.concatenate([rng.choice(len(images), batch // 2, replace=False), rng.choice(people, batch // 2, replace=False)]))
        rng.shuffle(idx)
        idx = np.concatenate([idx, rng.choice(np.setdiff1d(np.arange(len(images)), idx), batch - len(idx), replace=False)])
        pos, neg = clip_texts([scenes[j] for j in idx], rng, attributes_only=True)
        tokens = tokenizer(pos + neg, padding="longest", return_tensors="pt")
        for group in opt.param_groups:
            group["lr"] = 1e-3 * warmup_cosine(i, steps)
        with torch.no_grad():
            text = _features(clip.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask))
        image = _features(clip.get_image_features(pixel_values=to_clip_pixels(images[idx])))
        return contrastive_update(opt, clip.logit_scale.exp() * image @ text.T)

    if not stage.done:
        clip.vision_model.train()
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
