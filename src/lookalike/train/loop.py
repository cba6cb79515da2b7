"""`lookalike train`: one DreamBooth trainer for SD1, SD2 and SDXL, full fine-tune, LoRA or the identifier's embedding, on accelerate.

Read top to bottom: :meth:`Trainer.setup` checks the options, reads the data, builds the models,
optimizer and caches, and resumes from the latest checkpoint; :meth:`Trainer.train` runs the
steps; :meth:`Trainer.save_checkpoint` and :meth:`Trainer.save_model` write the results. Under
``accelerate launch`` / ``torchrun`` every process runs this same code and only the main one
writes files.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lookalike.data.dataset import draw_batch, load_training_set, step_generator
from lookalike.errors import LookalikeError
from lookalike.models import embedding, lora
from lookalike.run import Run, atomic_dir, atomic_write_bytes, stop_summary
from lookalike.train import checkpoint as ckpt
from lookalike.train import encode
from lookalike.train.loss import min_snr_weights, offset_noise, paired_prior_loss, prediction_target, snr
from lookalike.train.preview import render_previews
from lookalike.train.steering import deferred_ctrl_c

VERB = "train"
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def train_run(run: Run) -> str:
    trainer = Trainer(run)
    trainer.setup()
    return trainer.train()


class Trainer:
    def __init__(self, run: Run):
        self.run = run
        self.cfg = run.config.train
        self.resolution = run.config.prepare.resolution
        self.step = 0
        self.interrupted = False  # set by Ctrl-C; honoured at the end of the current step

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        self._check_options()
        self.data = load_training_set(self.run)  # before any model loads: missing photos fail fast
        self._setup_accelerator()
        self._setup_models()
        self._setup_optimizer()
        self._setup_caches()
        self._resume()

    def _check_options(self) -> None:
        cuda = torch.cuda.is_available()
        if self.cfg.mixed_precision == "fp16" and not cuda:
            raise LookalikeError("train.mixed_precision=fp16 needs a CUDA GPU; on CPU use bf16 or no")
        if self.cfg.use_8bit_adam:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise LookalikeError("train.use_8bit_adam needs bitsandbytes: pip install bitsandbytes (or set it false)") from None
            if not cuda:
                raise LookalikeError("train.use_8bit_adam needs a CUDA GPU; set train.use_8bit_adam=false on CPU")

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import ProjectConfiguration

        # accelerate keeps its settings process-wide and refuses a second precision; a later run in
        # the same process (a notebook, the demo, the tests) may want another one.
        AcceleratorState._reset_state()
        project = ProjectConfiguration(project_dir=str(self.run.root), logging_dir=str(self.run.logs_dir))
        self.accelerator = Accelerator(
            mixed_precision=self.cfg.mixed_precision,
            log_with="tensorboard",
            project_config=project,
            cpu=not torch.cuda.is_available(),
        )
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        if self.is_main:
            self.accelerator.init_trackers(VERB)

    def _setup_models(self) -> None:
        from lookalike.models.load import load_components

        cfg = self.cfg
        parts = self.parts = load_components(self.run.config.model)
        parts.vae.requires_grad_(False)
        for encoder in parts.text_encoders:
            encoder.requires_grad_(False)
        self.trained_encoders = list(parts.text_encoders) if cfg.train_text_encoder else []
        torch.manual_seed(cfg.seed)  # the initial LoRA A matrices
        if cfg.method == "embedding":
            parts.unet.requires_grad_(False)
            self.trained_encoders = list(parts.text_encoders)  # only their identifier rows learn
            token_ids = embedding.token_ids_per_tokenizer(parts.tokenizers, self.run.config.subjects)
            for encoder, ids in zip(self.trained_encoders, token_ids):
                embedding.train_only_rows(encoder, ids)
        elif cfg.method == "lora":
            lora.add_lora(parts.unet, lora.UNET_TARGETS, cfg.lora_rank, cfg.lora_alpha)
            for encoder in self.trained_encoders:
                lora.add_lora(encoder, lora.TEXT_ENCODER_TARGETS, cfg.lora_rank, cfg.lora_alpha)
        else:
            for module in [parts.unet, *self.trained_encoders]:
                module.requires_grad_(True)
        if cfg.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
            for encoder in self.trained_encoders:
                encoder.gradient_checkpointing_enable()
        self._place_models()

    def _place_models(self) -> None:
        """Move everything to the device. With LoRA or an embedding on a GPU, frozen weights go to half precision (memory);
        trained weights stay float32 so the optimizer's small updates are not rounded away."""
        parts = self.parts
        half = HALF.get(self.cfg.mixed_precision)
        frozen = half if half and self.cfg.method != "full" and self.device.type == "cuda" else torch.float32
        vae_dtype = torch.float32 if parts.vae.config.get("force_upcast") else frozen
        _move(parts.vae, self.device, vae_dtype).eval()
        for encoder in parts.text_encoders:
            _move(encoder, self.device, torch.float32 if encoder in self.trained_encoders else frozen)
        _move(parts.unet, self.device, frozen)
        for module in [parts.unet, *self.trained_encoders]:
            for param in module.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
            module.train()

    def _setup_optimizer(self) -> None:
        from diffusers.optimization import get_scheduler

        cfg = self.cfg
        if cfg.method == "embedding":
            # No weight decay: AdamW would shrink every row of the table, not only the identifier's.
            groups = [{"params": _trainable(e), "lr": cfg.learning_rate, "weight_decay": 0.0} for e in self.trained_encoders]
        else:
            groups = [{"params": _trainable(self.parts.unet), "lr": cfg.learning_rate}]
            for encoder in self.trained_encoders:
                groups.append({"params": _trainable(encoder), "lr": cfg.text_encoder_learning_rate or cfg.learning_rate})
        if cfg.use_8bit_adam:
            import bitsandbytes

            optimizer = bitsandbytes.optim.AdamW8bit(groups, weight_decay=cfg.adam_weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, weight_decay=cfg.adam_weight_decay)
        # Not passed to accelerator.prepare: a prepared scheduler steps once per process per step.
        # diffusers' plain "constant" ignores warmup steps; its warmup variant honours them.
        schedule = "constant_with_warmup" if cfg.lr_scheduler == "constant" and cfg.lr_warmup_steps else cfg.lr_scheduler
        self.lr_scheduler = get_scheduler(
            schedule, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.max_steps
        )
        if cfg.method == "embedding":  # a frozen UNet gets mixed precision but no gradient sync (DDP refuses it)
            self.unet = self.accelerator.prepare_model(self.parts.unet, evaluation_mode=True)
            *self.encoders_in_training, self.optimizer = self.accelerator.prepare(*self.trained_encoders, optimizer)
        else:
            self.unet, *self.encoders_in_training, self.optimizer = self.accelerator.prepare(
                self.parts.unet, *self.trained_encoders, optimizer
            )

    def _setup_caches(self) -> None:
        """Encode every image (and its mirror) and every prompt once, when their encoders are frozen."""
        self.latent_cache = self.prompt_cache = None
        if not self.cfg.cache_latents:
            return
        examples = self.data.all_examples()
        self.latent_cache = encode.LatentCache(self.parts.vae, examples, self.resolution, show=self.is_main)
        if not self.trained_encoders:
            prompts = {e.prompt for e in examples}
            self.prompt_cache = encode.PromptCache(prompts, self.parts.tokenizers, self.parts.text_encoders, self.device)

    def _resume(self) -> None:
        latest = ckpt.latest_checkpoint(self.run.checkpoints_dir)
        if latest is None:
            return
        info = ckpt.read_info(latest)
        made_with = (info["method"], info["family"], info["train"]["train_text_encoder"])
        if made_with != (self.cfg.method, self.parts.family, self.cfg.train_text_encoder):
            raise LookalikeError(
                f"{latest} was trained with method={made_with[0]}, train_text_encoder={made_with[2]} on a "
                f"{made_with[1]} model; use those settings, or a new run folder to start over"
            )
        if self.cfg.method == "embedding":
            embedding.load_rows(latest, self.trained_encoders)
        elif self.cfg.method == "lora":
            lora.load_lora_into(latest, self.parts.unet, self.trained_encoders)
        else:
            names = ["unet", *lora.TEXT_ENCODER_NAMES[: len(self.trained_encoders)]]
            ckpt.load_full_weights(latest, dict(zip(names, [self.parts.unet, *self.trained_encoders])))
        state = ckpt.read_training_state(latest)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.step = state["step"]
        rng = state["rng"]
        torch.set_rng_state(rng[min(self.accelerator.process_index, len(rng) - 1)])

    # ------------------------------------------------------------------ training

    def train(self) -> str:
        try:
            return self._train()
        finally:
            self.accelerator.end_training()  # closes the TensorBoard writer and the process group

    def _train(self) -> str:
        if self.step >= self.cfg.max_steps:
            self.save_model()
            return f"already trained to step {self.step} (train.max_steps={self.cfg.max_steps}); model in {self.run.model_dir}"
        self._emit("start", step=self.step, max_steps=self.cfg.max_steps, method=self.cfg.method,
                   family=self.parts.family, photos=len(self.data.instances))
        bar = tqdm(total=self.cfg.max_steps, initial=self.step, desc="train", disable=not self.is_main)
        try:
            with deferred_ctrl_c(self._interrupt):
                stopped = self._run_steps(bar)
        except Exception as err:
            self._emit("error", step=self.step, message=str(err))
            raise
        finally:
            bar.close()
        if stopped:
            self.save_checkpoint()
            what = f"at step {self.step} of {self.cfg.max_steps} (checkpoint saved)"
            summary = self.run.stopped(VERB, what, step=self.step) if self.is_main else stop_summary(what)
            if self.interrupted:
                raise KeyboardInterrupt
            return summary
        if not (self.run.checkpoints_dir / ckpt.checkpoint_name(self.step)).is_dir():
            self.save_checkpoint()
        self.save_model()
        self._emit("done", step=self.step)
        return f"trained to step {self.step} ({self.cfg.method}); model in {self.run.model_dir}"

    def _run_steps(self, bar: tqdm) -> bool:
        """Train until max_steps (False) or a stop request (True)."""
        last_log, last_time = self.step, time.perf_counter()
        while self.step < self.cfg.max_steps:
            loss = self._optimizer_step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.step % self.cfg.log_every == 0:
                now = time.perf_counter()
                self._log(loss, (self.step - last_log) / (now - last_time))
                last_log, last_time = self.step, now
            if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                self.preview()
            if self.step % self.cfg.checkpoint_every == 0 and self.step < self.cfg.max_steps:
                self.save_checkpoint()
            if self._stop_requested():
                return True
        return False

    def _optimizer_step(self) -> float:
        accumulation = self.cfg.gradient_accumulation_steps
        losses = []
        for micro in range(accumulation):
            with contextlib.ExitStack() as stack:
                if micro < accumulation - 1:  # gradients are only averaged across processes on the last one
                    for model in [self.unet, *self.encoders_in_training]:
                        stack.enter_context(self.accelerator.no_sync(model))
                loss = self._micro_step_loss(self.step * accumulation + micro)
                losses.append(self._checked(loss))
                self.accelerator.backward(loss / accumulation)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.accelerator.clip_grad_norm_(params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sum(losses) / len(losses)

    def _checked(self, loss: torch.Tensor) -> float:
        """The loss averaged over processes; a NaN/inf on any process stops every process."""
        value = float(self.accelerator.reduce(loss.detach().clone(), reduction="mean"))
        if not math.isfinite(value):
            raise LookalikeError(
                f"the loss became {value} at step {self.step + 1}: training diverged. Lower "
                f"train.learning_rate (now {self.cfg.learning_rate:g}) or set train.mixed_precision=no; "
                "the last good checkpoint is kept and training resumes from it"
            )
        return value

    def _micro_step_loss(self, micro_step: int) -> torch.Tensor:
        """The paired prior-preservation loss of one micro-batch: photos and their priors in one forward."""
        cfg, parts = self.cfg, self.parts
        generator = step_generator(cfg.seed, micro_step, self.accelerator.process_index)
        instances, priors = draw_batch(
            self.data, cfg.seed, micro_step, self.accelerator.process_index,
            self.accelerator.num_processes, cfg.batch_size, generator,
        )
        examples = instances + priors
        flips = torch.rand(len(examples), generator=generator) < 0.5 if cfg.random_flip else torch.zeros(len(examples), dtype=torch.bool)
        latents = self._latents(examples, flips, generator)
        noise = torch.randn(latents.shape, generator=generator).to(self.device, latents.dtype)
        noise = offset_noise(noise, cfg.noise_offset, generator)
        scheduler = parts.noise_scheduler
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(examples),), generator=generator).to(self.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        hidden, pooled = self._prompt_embeddings([e.prompt for e in examples])
        added = None
        if parts.family == "sdxl":
            added = {"text_embeds": pooled, "time_ids": encode.time_ids(examples, self.resolution).to(self.device, pooled.dtype)}
        prediction = self.unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
        alphas = scheduler.alphas_cumprod
        target = prediction_target(parts.prediction_type, alphas, latents, noise, timesteps)
        weights = None
        if cfg.min_snr_gamma:
            weights = min_snr_weights(snr(alphas, timesteps), cfg.min_snr_gamma, parts.prediction_type)
        total, _, _ = paired_prior_loss(prediction, target, len(instances), cfg.prior_loss_weight, weights)
        return total

    def _latents(self, examples: list, flips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.latent_cache is not None:
            mean, std = self.latent_cache.lookup(examples, flips)
        else:
            with torch.no_grad():
                pixels = encode.load_batch_pixels(examples, flips, self.resolution)
                mean, std = encode.latent_distribution(self.parts.vae, pixels)
        latents = encode.sample_latents(mean, std, generator, self.parts.vae.config.scaling_factor)
        return latents.float()

    def _prompt_embeddings(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.prompt_cache is not None:
            return self.prompt_cache.lookup(prompts)
        encoders = self.encoders_in_training or self.parts.text_encoders
        grad = torch.enable_grad() if self.encoders_in_training else torch.no_grad()
        with grad:
            return encode.encode_prompts(prompts, self.parts.tokenizers, encoders, self.device)

    # ------------------------------------------------------------------ steering and logging

    def _interrupt(self) -> None:
        self.interrupted = True

    def _stop_requested(self) -> bool:
        wanted = self.interrupted or (self.is_main and self.run.stop_requested())
        if self.accelerator.num_processes > 1:  # every process must stop at the same step
            flag = torch.tensor([float(wanted)], device=self.device)
            wanted = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        return wanted

    def _emit(self, event: str, **fields: Any) -> None:
        if self.is_main:
            self.run.emit(VERB, event, **fields)

    def _log(self, loss: float, steps_per_second: float) -> None:
        lr = self.lr_scheduler.get_last_lr()[0]
        self.accelerator.log({"loss": loss, "lr": lr}, step=self.step)
        self._emit("step", step=self.step, loss=round(loss, 6), it_s=round(steps_per_second, 3), lr=lr)

    # ------------------------------------------------------------------ writing results

    def preview(self) -> None:
        """Render the preview prompts with the current weights into previews/step-000100_<i>.png."""
        if self.is_main:
            phrase = self.run.config.subjects[0].subject_phrase
            prompts = [p.format(subject=phrase) for p in self.cfg.preview_prompts]
            images = render_previews(self.parts.pipeline, prompts, self.resolution, self.cfg.preview_steps, self.cfg.seed)
            for i, (prompt, png) in enumerate(zip(prompts, images)):
                path = self.run.previews_dir / f"{ckpt.checkpoint_name(self.step)}_{i}.png"
                atomic_write_bytes(path, png)
                self._emit("preview", step=self.step, path=str(path.relative_to(self.run.root)), prompt=prompt)
        self.accelerator.wait_for_everyone()

    def save_checkpoint(self) -> None:
        rng = self.accelerator.gather(torch.get_rng_state().to(self.device)[None]).cpu()
        state = {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "step": self.step,
            "rng": list(rng),
        }
        if self.is_main:
            folder = self.run.checkpoints_dir / ckpt.checkpoint_name(self.step)
            with atomic_dir(folder) as tmp:
                self._write_model_files(tmp)
                ckpt.write_training_state(tmp, state)
            ckpt.prune_checkpoints(self.run.checkpoints_dir, self.cfg.keep_checkpoints)
            self._emit("checkpoint", step=self.step, path=str(folder.relative_to(self.run.root)))
        self.accelerator.wait_for_everyone()

    def save_model(self) -> None:
        if self.is_main:
            with atomic_dir(self.run.model_dir) as tmp:
                self._write_model_files(tmp)
        self.accelerator.wait_for_everyone()

    def _write_model_files(self, folder: Path) -> None:
        ckpt.write_model_files(folder, self.run.config, self.parts, self.trained_encoders, self.step)


def _move(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # Models are loaded in float32; casting only when needed avoids diffusers' warning about upcast modules.
    return module.to(device) if dtype == torch.float32 else module.to(device, dtype=dtype)


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
