"""The three training stages of the toy model and its export. Each stage resumes from its folder.

Every step draws its batch from ``np.random.default_rng([stage, step])`` and its noise from a torch
generator seeded the same way, so a resumed stage repeats exactly what an unbroken one would do.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.toyworld import models
from lookalike.toyworld.render import render
from lookalike.toyworld.world import ATTRIBUTE_VALUES, CLASSES, CONTEXTS, STYLES, caption, flipped, sample_scene, visible_attributes

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


def other_class(scene: dict, rng: np.random.Generator, cls: str | None = None) -> dict:
    """A scene of another class (``cls``, or any) in the same context, style and layout: the hard negative for 'class'."""
    while True:
        other = sample_scene(int(rng.integers(1 << 30)))
        if other["class"] != scene["class"] and other["class"] == (cls or other["class"]):
            return {**other, **{k: scene[k] for k in ("context", "style", "scale", "dx", "dy")}}


def clip_texts(scenes: list[dict], rng: np.random.Generator, negatives: int = NEGATIVES) -> tuple[list[str], list[str]]:
    """A caption per scene and ``negatives`` hard negatives per scene (scene-major): the same phrasing
    with one attribute, the context, the style or the class changed. Zero-shot probes contrast
    exactly such captions, and in-batch negatives alone seldom differ in a beard or a pair of glasses."""
    positives, hard = [], []
    for scene in scenes:
        flips = [(other_class(scene, rng), "class") if rng.random() < 0.15 else flipped(scene, rng) for _ in range(negatives)]
        keys = tuple({key for _, key in flips} - {"class"})
        seed = int(rng.integers(1 << 31))
        positives.append(caption(scene, np.random.default_rng(seed), must_mention=keys))
        hard += [caption(other, np.random.default_rng(seed), must_mention=keys) for other, _ in flips]
    return positives, hard


def clip_loss(per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss. ``per_image`` is (batch, batch + extra): each image against its own
    caption (column i), the other captions and any extra (hard negative) captions; each caption
    (the first ``batch`` columns) against the batch's images."""
    batch = per_image.shape[0]
    target = torch.arange(batch)
    return (F.cross_entropy(per_image, target) + F.cross_entropy(per_image[:, :batch].T, target)) / 2


def contrastive_update(opt: torch.optim.Optimizer, per_image: torch.Tensor) -> float:
    """One optimizer step on :func:`clip_loss`."""
    loss = clip_loss(per_image)
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


# Attributes the first stage leaves weak (a beard is a few pixels of the hair colour below a
# mouth): the judge stage probes them three times as often as the rest.
WEAK = {"beard", "glasses", "hair colour", "hair style", "skin", "ears", "collar"}


def value_captions(scene: dict, rng: np.random.Generator) -> tuple[str, list[str], int]:
    """One of the scene's keys (a visible attribute, mostly a weak one; or the class, context or
    style), one caption per value of it, phrased alike, and the index of the true value.
    The captions a zero-shot probe compares, written in the world's own caption styles."""
    keys = visible_attributes(scene) + ["class", "context", "style"]
    weights = np.array([3.0 if k in WEAK else 1.0 for k in keys])
    key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
    if key == "class":  # the same context and style with each class's own subject
        scenes = [scene if c == scene["class"] else other_class(scene, rng, c) for c in CLASSES]
        seed = int(rng.integers(1 << 31))
        return key, [caption(s, np.random.default_rng(seed)) for s in scenes], CLASSES.index(scene["class"])
    values = {"context": list(CONTEXTS), "style": list(STYLES)}.get(key) or list(ATTRIBUTE_VALUES[scene["class"]][key])
    seed = int(rng.integers(1 << 31))
    texts = [caption({**scene, key: v}, np.random.default_rng(seed), must_mention=(key,)) for v in values]
    return key, texts, values.index(scene[key])


def _head(key: str) -> str:
    """A label key ("person/hair colour") as a module name ("person:hair_colour")."""
    return key.replace("/", ":").replace(" ", "_")


def label_heads(hidden: int) -> torch.nn.ModuleDict:
    """A linear head per key the world labels (class, context, style, each class's attributes),
    over the image tower's pooled output: the judge's training aid, not part of the export."""
    sizes = {"class": len(CLASSES), "context": len(CONTEXTS), "style": len(STYLES)}
    sizes |= {f"{cls}/{attr}": len(values) for cls, table in ATTRIBUTE_VALUES.items() for attr, values in table.items()}
    return torch.nn.ModuleDict({_head(key): torch.nn.Linear(hidden, n) for key, n in sizes.items()})


def label_loss(heads: torch.nn.ModuleDict, pooled: torch.Tensor, scenes: list[dict]) -> torch.Tensor:
    """Cross-entropy of every head on the images whose scenes show its key."""
    rows: dict[str, tuple[list[int], list[int]]] = {}
    for k, scene in enumerate(scenes):
        labels = {"class": CLASSES.index(scene["class"]), "context": list(CONTEXTS).index(scene["context"]), "style": list(STYLES).index(scene["style"])}
        table = ATTRIBUTE_VALUES[scene["class"]]
        labels |= {f"{scene['class']}/{a}": list(table[a]).index(scene[a]) for a in visible_attributes(scene)}
        for key, label in labels.items():
            rows.setdefault(key, ([], []))[0].append(k)
            rows[key][1].append(label)
    # Summed, not averaged: each head learns at the pace it would alone.
    losses = [F.cross_entropy(heads[_head(key)](pooled[idx]), torch.tensor(labels)) for key, (idx, labels) in rows.items()]
    return torch.stack(losses).sum()


# The person attributes the world skews on purpose; the judge sees their values evened out.
SKEWED = ("hair style", "beard", "glasses", "hat")
# The judge's scenes come fresh from the world, from this seed on: the training pool renders seeds
# 0..pool-1 and the evaluation's held-out scenes start at 10,000,000.
STREAM = 100_000_000


def evened_out(person: dict, rng: np.random.Generator) -> dict:
    """The person with gender and each skewed attribute drawn half and half (a woman never bearded).

    The world is skewed on purpose (glasses on 12% of people, beards on half the men), and a judge
    trained on it learns that skew: it answered "no glasses" nearly always, at 87% accuracy, and
    missed the subject's glasses."""
    out = {**person, "gender": _choice(rng, ("man", "woman"))}
    out |= {attr: _choice(rng, list(ATTRIBUTE_VALUES["person"][attr])) for attr in SKEWED}
    if out["gender"] == "woman":
        out["beard"] = "no"
    return out


def _choice(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def judge_scenes(step: int, batch: int) -> list[dict]:
    """The judge's scenes for one step, never seen before: half as the world draws them, half people
    with the skewed attributes evened out (:func:`evened_out`).

    From a fixed pool of 20,000 renders (6,700 people, 850 bearded men) the judge learned the
    pool's pictures, not beards: 96% right on the pool's beards, 82% on new scenes."""
    rng = np.random.default_rng([4, step, 1])
    first = STREAM + step * batch
    scenes = [sample_scene(first + k) for k in range(batch // 2)]
    return scenes + [evened_out(sample_scene(first + k, "person"), rng) for k in range(batch // 2, batch)]


def exported_clip(folder: Path):
    """A CLIP exported by a build (or shipped) as float32, to start the judge stage from."""
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(folder, torch_dtype=torch.float32)


def tune_judge(folder, clip, tokenizer, steps, every_s, log, batch=48):
    """CLIP's second stage, the judge: both towers go on learning, on captions that differ in one key.

    The UNet is conditioned on the first stage's text tower, which the pipeline keeps; this copy
    only judges (zero-shot probes, the audit, CLIP-I/CLIP-T), as the DreamBooth paper's metrics use
    another CLIP than Stable Diffusion's text encoder. Each image is scored against one caption per
    value of one of its keys (every hair colour, beard and no beard), mostly the people's details
    that the first stage barely learns, plus CLIP's usual loss over the batch's true captions.
    Contrastive learning alone never finds the beard: while neither tower separates it, neither
    gets a gradient to start (a saddle). So linear heads on the image tower also learn the scenes'
    labels; they are dropped at export, and the probes stay zero-shot. Every step renders new
    scenes (:func:`judge_scenes`), half of them people with the skewed attributes evened out.
    Runs beside the UNet stage.
    """
    torch.manual_seed(4)
    clip = copy.deepcopy(clip)
    heads = label_heads(clip.config.vision_config.hidden_size)
    opt = torch.optim.AdamW(list(clip.parameters()) + list(heads.parameters()), lr=5e-4, weight_decay=0.1)
    stage = Stage(folder, "judge", {"model": clip, "heads": heads, "opt": opt}, steps, every_s, log)

    def step(i: int) -> float:
        rng = np.random.default_rng([4, i])
        scenes = judge_scenes(i, batch)
        images = np.stack([render(scene) for scene in scenes])
        groups = [value_captions(scene, rng) for scene in scenes]
        texts = [t for _, group, _ in groups for t in group]
        tokens = tokenizer(texts, padding="longest", return_tensors="pt")
        for group in opt.param_groups:
            group["lr"] = 5e-4 * warmup_cosine(i, steps)
        text = _features(clip.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask))
        pooled = clip.vision_model(pixel_values=to_clip_pixels(images)).pooler_output
        image = F.normalize(clip.visual_projection(pooled), dim=-1)
        logits = clip.logit_scale.exp() * image @ text.T  # (batch, all captions)
        starts = np.cumsum([0] + [len(g) for _, g, _ in groups])
        truth = torch.tensor([starts[k] + true for k, (_, _, true) in enumerate(groups)])
        # Each image against its own key's captions: the probe it will face.
        probe = torch.stack([F.cross_entropy(logits[k, starts[k] : starts[k + 1]], truth[k] - starts[k]) for k in range(batch)]).mean()
        # CLIP's symmetric loss over the true captions, which keeps the rest of what it knows.
        loss = probe + clip_loss(logits[:, truth]) + label_loss(heads, pooled, scenes)
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


def unet_lr(step: int, steps: int, warmup: int = 200) -> float:
    """Learning-rate multiplier of the UNet: warm-up, constant, then a cosine to a tenth over the last quarter.

    Until the last quarter begins, the rate does not depend on ``steps``: a build stopped there
    resumes with a larger ``--unet-steps`` exactly as an unbroken run would have gone."""
    decay_from = steps - steps // 4
    if step < decay_from:
        return min(1.0, (step + 1) / warmup)
    return 0.55 + 0.45 * np.cos(np.pi * (step - decay_from) / max(1, steps // 4))


def diffusion_loss(unet, scheduler, snr, x0, context, gen) -> torch.Tensor:
    """Epsilon-prediction loss at random timesteps, min-SNR-5 weighted: no timestep dominates."""
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
    pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=context).sample
    weight = torch.clamp(snr[t], max=5.0) / snr[t]
    return (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()


def optimizer_step(opt, model, loss, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


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
        loss = diffusion_loss(unet, scheduler, snr, latents[idx], context, torch.Generator().manual_seed(i))
        optimizer_step(opt, unet, loss, 8e-4 * unet_lr(i, steps))
        ema_update(ema, unet, i)
        return loss.item()

    def export() -> None:
        export_pipeline(folder.parent / "export", ema, vae, text_encoder, tokenizer, clip, stage.step)
        log(f"exported pipeline at unet step {stage.step}")

    if not stage.done:
        unet.train()
        stage.run(step, on_checkpoint=export)
    return ema


RETEXT_LR = 5e-4
RETEXT_MEN = 0.5  # share of each batch drawn as men, the class whose beards and glasses the audit reads


def _man(seed: int) -> dict:
    k = 0
    while (scene := sample_scene(seed * 16 + k, "person"))["gender"] != "man":
        k += 1
    return scene


def retext_scenes(step: int, batch: int) -> list[dict]:
    """One step's scenes, never seen before (seeds from 200,000,000): half men, half as the world draws."""
    rng = np.random.default_rng([31, step])
    first = 200_000_000 + step * batch
    return [_man(first + j) if rng.random() < RETEXT_MEN else sample_scene(first + j) for j in range(batch)]


def retext_unet(folder, pipeline_folder: Path, judge, tokenizer, steps, every_s, log, batch=32):
    """Re-condition an exported UNet on the judge's text tower, on fresh scenes.

    The stage-1 text tower the UNet was trained on gives "beard" and "clean-shaven" almost the same
    hidden states (lowest token cosine 0.96; the judge's: 0.37), so the UNet cannot follow beard
    words (:mod:`lookalike.toyworld.conditioning`). This stage keeps the UNet and the VAE, swaps in
    the judge's text tower (frozen) and goes on training the UNet, encoding each step's new renders
    with the VAE. Its export pairs the UNet with that text encoder."""
    from diffusers import StableDiffusionPipeline

    from lookalike.toyworld.export import export_pipeline

    base = StableDiffusionPipeline.from_pretrained(pipeline_folder, torch_dtype=torch.float32)
    unet, vae = base.unet.float(), base.vae.float().eval()
    base_step = json.loads((pipeline_folder / "toyworld.json").read_text())["unet_step"]
    text_encoder = models.text_encoder_from(judge).float().requires_grad_(False).eval()
    scheduler = models.noise_scheduler()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=RETEXT_LR, weight_decay=0.01)
    stage = Stage(folder, "retext", {"model": unet, "ema": ema, "opt": opt}, steps, every_s, log)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)

    def step(i: int) -> float:
        scenes = retext_scenes(i, batch)
        rng = np.random.default_rng([32, i])
        texts = ["" if rng.random() < CAPTION_DROPOUT else caption(s, rng) for s in scenes]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            x0 = vae.encode(to_vae_pixels(np.stack([render(s) for s in scenes]))).latent_dist.mean * vae.config.scaling_factor
            context = text_encoder(ids)[0]
        loss = diffusion_loss(unet, scheduler, snr, x0, context, torch.Generator().manual_seed(i + 7_000_000))
        optimizer_step(opt, unet, loss, RETEXT_LR * unet_lr(i, steps, warmup=100))
        ema_update(ema, unet, 10_000 + i)  # full decay from the start: the EMA begins at the exported UNet
        return loss.item()

    def export() -> None:
        export_pipeline(folder.parent / "export", ema, vae, text_encoder, tokenizer, judge, base_step + stage.step)
        log(f"exported pipeline at retext step {stage.step} (UNet step {base_step + stage.step})")

    if not stage.done:
        unet.train()
        stage.run(step, on_checkpoint=export)
    return ema
