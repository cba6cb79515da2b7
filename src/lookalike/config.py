"""One TOML file describes a run. Every field is declared once: type, default, one line of help.

Validation happens here, before any model loads; each error names the key and the fix.
CLI flags are dotted overrides (``train.learning_rate=2e-6``); ``subject.X`` is short for
``subjects.0.X``.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lookalike.errors import LookalikeError

PRESETS_DIR = Path(__file__).parent / "presets"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    source: str = Field(
        "toy",
        description="Base model: 'toy' (bundled), a hub id, a local diffusers folder or a single "
        "original-layout .safetensors file.",
    )
    family: Literal["auto", "sd1", "sd2", "sdxl"] = Field(
        "auto", description="Model family; 'auto' reads it from the model's configs."
    )
    config: str | None = Field(
        None,
        description="For a single-file source: a diffusers folder or hub id holding the matching "
        "configs (else the family's standard configs are used).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a hub source.")
    allow_pickle: bool = Field(
        False,
        description="Allow .ckpt/.bin/.pt sources. Pickle files can run arbitrary code when loaded; "
        "only enable for files you trust.",
    )


class SubjectConfig(Section):
    name: str = Field("subject", description="Short name of the subject; names its folders in the run.")
    photos: str | None = Field(None, description="Folder of the subject's photos (never modified).")
    identifier: str = Field("ohwx", description="Rare token bound to the subject; check it with `lookalike identifier`.")
    class_noun: str = Field("person", description="What the subject is: 'man', 'woman', 'dog', 'cup', ...")
    kind: Literal["person", "pet", "object"] = Field(
        "object", description="person: face-aware crops and face metrics; pet/object: centre crops."
    )
    instance_prompt: str = Field(
        "a photo of {subject}", description="Training prompt for the photos; {subject} becomes 'identifier class_noun'."
    )
    class_prompt: str = Field(
        "a photo of a {class_noun}", description="Prompt for the class-prior images; {class_noun} is filled in."
    )
    class_images: str | None = Field(
        None, description="Folder of your own class images to use as priors instead of generating them."
    )

    @property
    def subject_phrase(self) -> str:
        return f"{self.identifier} {self.class_noun}"

    def resolved_instance_prompt(self) -> str:
        return self.instance_prompt.format(subject=self.subject_phrase, class_noun=self.class_noun)

    def resolved_class_prompt(self) -> str:
        return self.class_prompt.format(class_noun=self.class_noun, subject=self.class_noun)


class PrepareConfig(Section):
    resolution: int = Field(512, ge=8, description="Side of the square training images, in pixels.")
    crop: Literal["auto", "center", "face"] = Field(
        "auto", description="auto: face-centred for people, centre otherwise; face falls back to centre with a note."
    )
    dedupe_distance: int = Field(
        6, ge=0, le=64, description="Perceptual-hash distance (of 64 bits) at or under which two photos are near duplicates."
    )
    blur_threshold: float = Field(
        60.0, ge=0, description="Warn when an image's sharpness (variance of the Laplacian) is below this."
    )


class PriorsConfig(Section):
    num_images: int = Field(200, ge=0, description="Class-prior images per subject (the paper uses ~200).")
    batch_size: int = Field(4, ge=1, description="Images generated per forward pass.")
    steps: int = Field(25, ge=1, description="Sampling steps of the scheduler.")
    guidance_scale: float = Field(7.5, ge=0, description="Classifier-free guidance scale.")
    negative_prompt: str = Field("", description="Negative prompt for prior images.")
    scheduler: Literal["dpm++", "ddim", "euler", "euler_a", "pndm"] = Field(
        "dpm++", description="Sampler: dpm++ (DPM-Solver++ multistep), ddim, euler, euler_a or pndm."
    )
    seed: int = Field(0, description="Seed of the first prior image; image i uses seed + i.")
    resolution: int | None = Field(None, ge=8, description="Prior image size; defaults to prepare.resolution.")


class TrainConfig(Section):
    method: Literal["full", "lora", "embedding"] = Field(
        "lora",
        description="full: fine-tune the UNet weights; lora: train low-rank adapters; embedding: learn only the "
        "identifier's token embedding (textual inversion; prompts without the identifier render as the base model does).",
    )
    train_text_encoder: bool = Field(False, description="Also train the text encoder(s) (full weights or LoRA, as method).")
    lora_rank: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha; defaults to the rank.")
    max_steps: int = Field(800, ge=1, description="Optimizer steps to train (DreamBooth: ~100-200 per photo).")
    batch_size: int = Field(1, ge=1, description="Subject images per step (each paired with as many priors).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches summed per optimizer step.")
    learning_rate: float = Field(1e-4, gt=0, description="UNet learning rate (full: ~2e-6, LoRA: ~1e-4; embedding: the embedding's, ~1e-3).")
    text_encoder_learning_rate: float | None = Field(None, gt=0, description="Text-encoder LR; defaults to learning_rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("constant", description="Learning-rate schedule after warmup.")
    lr_warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    adam_weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    use_8bit_adam: bool = Field(False, description="8-bit AdamW from bitsandbytes (needs a CUDA GPU).")
    with_prior_preservation: bool = Field(True, description="Add the class-prior loss (needs priors).")
    prior_loss_weight: float = Field(1.0, ge=0, description="λ in loss = instance + λ·prior.")
    min_snr_gamma: float | None = Field(None, gt=0, description="Min-SNR loss weighting γ (5 is typical); off when unset.")
    noise_offset: float = Field(0.0, ge=0, description="Noise offset (0.05-0.1 helps very dark/bright images).")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="Mixed precision for the forward pass.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory in the UNet (and text encoder).")
    cache_latents: bool = Field(True, description="Encode images and prompts once when VAE and text encoder are frozen.")
    random_flip: bool = Field(True, description="Flip images horizontally at random, drawn every step.")
    seed: int = Field(0, description="Seed for noise, timesteps, flips and LoRA init.")
    checkpoint_every: int = Field(200, ge=1, description="Save a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(3, ge=1, description="Keep the last K checkpoints.")
    preview_every: int = Field(0, ge=0, description="Render preview images every N steps (0: off).")
    preview_prompts: list[str] = Field(
        default_factory=lambda: ["{subject}"], description="Preview prompts; {subject} expands to the first subject."
    )
    preview_steps: int = Field(20, ge=1, description="Sampling steps for previews.")
    log_every: int = Field(10, ge=1, description="Log loss to TensorBoard and events every N steps.")


class AuditConfig(Section):
    clip_model: str = Field(
        "auto",
        description="CLIP for the attribute probes: 'auto' (the toy CLIP for the toy model, else "
        "openai/clip-vit-large-patch14), 'toy', a local CLIPModel folder or a hub id.",
    )
    attributes_file: str | None = Field(
        None, description="TOML of extra attribute probes, merged over the bundled ones (see docs/METRICS.md)."
    )
    threshold: float = Field(
        0.25, gt=0, le=1, description="Report an attribute when an option's share differs by more than this (0-1)."
    )
    apply: bool = Field(
        False, description="Write the refined class prompt into subject.class_prompt, so `lookalike priors` regenerates."
    )
    duplicate_distance: int = Field(
        4, ge=0, le=64, description="Flag priors whose perceptual hashes differ in at most this many of 64 bits."
    )
    blank_std: float = Field(4.0, ge=0, description="Flag priors whose grey-level standard deviation (0-255) is below this.")
    batch_size: int = Field(16, ge=1, description="Images per CLIP forward pass.")


class GenerateConfig(Section):
    styles: str | list[str] = Field(
        "all", description="Styles of the style pack to render: a list of names, 'all', or [] for none."
    )
    prompts: list[str] = Field(default_factory=list, description="Extra prompts to render; {subject} becomes 'identifier class_noun'.")
    subject: str | None = Field(None, description="Name of the subject {subject} stands for; defaults to the first.")
    seeds_per_prompt: int = Field(4, ge=1, description="Candidates rendered per prompt (the N of best-of-N).")
    keep: int | None = Field(2, ge=1, description="Keep the k best candidates per prompt by likeness; all when unset.")
    scorer: str = Field("histogram", description="Likeness scorer for best-of-N (see docs/GENERATE.md for the names).")
    seed: int = Field(0, description="Seed of each prompt's first candidate; candidate i uses seed + i.")
    scheduler: Literal["dpm++", "ddim", "euler", "euler_a", "pndm"] = Field(
        "dpm++", description="Sampler: dpm++ (DPM-Solver++ multistep), ddim, euler, euler_a or pndm."
    )
    steps: int = Field(30, ge=1, description="Sampling steps of the scheduler.")
    guidance_scale: float = Field(7.5, ge=0, description="Classifier-free guidance scale.")
    width: int | None = Field(None, ge=8, multiple_of=8, description="Image width; defaults to prepare.resolution.")
    height: int | None = Field(None, ge=8, multiple_of=8, description="Image height; defaults to prepare.resolution.")
    batch_size: int = Field(4, ge=1, description="Images rendered per forward pass.")
    boosters: list[str] = Field(
        default_factory=lambda: ["highly detailed", "award-winning"],
        description="Quality phrases appended to every prompt.",
    )
    negative_prompt: str = Field(
        "blurry, lowres, deformed, disfigured, watermark, text", description="Negative prompt for every image (a style's own is added)."
    )
    style_file: str | None = Field(None, description="Your own style-pack TOML (format: docs/GENERATE.md).")
    style_file_mode: Literal["merge", "replace"] = Field(
        "merge", description="merge: your styles over the bundled pack; replace: only yours."
    )
    checkpoint: str | None = Field(
        None, description="Render from a checkpoint (e.g. step-000400), 'base' for the untrained base model, or the final model when unset."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights' precision: auto is float16 on a GPU, float32 on the CPU."
    )


class EvalConfig(Section):
    clip_model: str = Field(
        "auto",
        description="CLIP for CLIP-I / CLIP-T: 'auto' (the toy CLIP for the toy model, else "
        "openai/clip-vit-large-patch14), 'toy', a local CLIPModel folder or a hub id.",
    )
    dino_model: str = Field(
        "auto",
        description="DINO ViT for DINO / PRES / DIV: 'auto' (none for the toy model, else facebook/dino-vits16), "
        "a local ViTModel folder, a hub id, or 'none' (DINO skipped with a note; PRES and DIV use CLIP features).",
    )
    prompts_file: str | None = Field(None, description="TOML of your own eval prompts (format: docs/METRICS.md).")
    prompts_mode: Literal["merge", "replace"] = Field(
        "merge", description="merge: your prompts added to the bundled set; replace: only yours."
    )
    max_prompts: int | None = Field(None, ge=1, description="Use only the first N prompts of the set (a quick look); all when unset.")
    class_prompt: str = Field("a photo of a {class_noun}", description="Plain class prompt whose samples PRES compares with the subject.")
    samples_per_prompt: int = Field(4, ge=1, description="Images per prompt (DIV needs at least 2).")
    seed: int = Field(0, description="Seed of every prompt's first image; image i uses seed + i, the same for every checkpoint.")
    steps: int = Field(30, ge=1, description="Sampling steps of the scheduler.")
    guidance_scale: float = Field(7.5, ge=0, description="Classifier-free guidance scale.")
    scheduler: Literal["dpm++", "ddim", "euler", "euler_a", "pndm"] = Field(
        "dpm++", description="Sampler: dpm++ (DPM-Solver++ multistep), ddim, euler, euler_a or pndm."
    )
    negative_prompt: str = Field("", description="Negative prompt for every eval image.")
    resolution: int | None = Field(None, ge=8, multiple_of=8, description="Eval image size; defaults to prepare.resolution.")
    batch_size: int = Field(4, ge=1, description="Images rendered per forward pass.")
    include_base: bool = Field(True, description="Also evaluate the untrained base model, as step 0 (before vs after).")
    clip_t_tolerance: float = Field(
        0.02, ge=0, description="Recommend only checkpoints whose CLIP-T is at most this far below the base model's."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights' precision: auto is float16 on a GPU, float32 on the CPU."
    )


class ExportConfig(Section):
    format: Literal["auto", "single-file", "lora-kohya", "lora-diffusers", "diffusers", "embedding"] = Field(
        "auto",
        description="auto: lora-kohya for a LoRA run, embedding for an embedding run, single-file for a full "
        "fine-tune; single-file: one original-layout .safetensors (A1111/ComfyUI; a LoRA or embedding is fused in); "
        "lora-kohya / lora-diffusers: the LoRA alone; diffusers: a pipeline folder; embedding: A1111/ComfyUI "
        "textual-inversion files named after the identifier.",
    )
    dtype: Literal["fp16", "fp32"] = Field("fp16", description="Precision of the exported weights.")
    output: str | None = Field(None, description="Folder for the exported files and model card; defaults to RUN/export.")
    checkpoint: str | None = Field(None, description="Export this checkpoint (e.g. step-000400) instead of the final model.")


class RunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    subjects: list[SubjectConfig] = Field(default_factory=lambda: [SubjectConfig()], min_length=1)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    priors: PriorsConfig = Field(default_factory=PriorsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> "RunConfig":
        if self.train.method == "embedding":
            if self.train.train_text_encoder:
                raise ValueError("train.method=embedding learns only the identifier's embedding: set train.train_text_encoder=false")
            if self.train.with_prior_preservation:
                raise ValueError(
                    "train.method=embedding leaves the model's weights as they are, so prior images cannot change "
                    "anything: set train.with_prior_preservation=false"
                )
        names = [s.name for s in self.subjects]
        if len(set(names)) != len(names):
            raise ValueError("subjects: each subject needs its own `name`")
        for i, s in enumerate(self.subjects):
            if self.train.with_prior_preservation and not s.class_prompt.strip():
                raise ValueError(
                    f"subjects.{i}.class_prompt is empty but train.with_prior_preservation is on: "
                    "set a class prompt (e.g. 'a photo of a {class_noun}') or train.with_prior_preservation=false"
                )
            if not s.identifier.strip() or " " in s.identifier.strip():
                raise ValueError(f"subjects.{i}.identifier must be one word, e.g. 'ohwx'")
        return self


# ---------------------------------------------------------------- loading and overrides


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (see `lookalike config --help-keys` for the valid ones)"
        lines.append(f"{key}: {msg}" if key else msg)
    return "invalid config: " + "; ".join(lines)


def validate(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise LookalikeError(_format_errors(err)) from None


def parse_value(text: str) -> Any:
    """A flag value in TOML syntax (numbers, booleans, lists); anything else is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise LookalikeError(f"override {assignment!r} must look like key=value, e.g. train.learning_rate=2e-6")
    parts = key.strip().split(".")
    if parts[0] == "subject":
        parts = ["subjects", "0", *parts[1:]]
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit():
                raise LookalikeError(f"override {key}: {'.'.join(parts[:i])} is a list; use an index, e.g. subjects.0.name")
            index = int(part)
            while len(node) <= index:
                node.append({})
            node = node[index]
        else:
            node = node.setdefault(part, [] if part == "subjects" else {})
            if not isinstance(node, (dict, list)):
                raise LookalikeError(f"override {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
    node[parts[-1]] = parse_value(value)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookalikeError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise LookalikeError(f"config file {path} is not valid TOML: {err}") from None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name: str) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        raise LookalikeError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return load_toml(path)


def build(base: dict[str, Any] | None = None, overrides: list[str] = ()) -> RunConfig:
    data = copy.deepcopy(base or {})
    for assignment in overrides:
        apply_override(data, assignment)
    return validate(data)


def to_toml(config: RunConfig) -> str:
    return tomli_w.dumps(config.model_dump(exclude_none=True))


def describe_keys() -> str:
    """Every key with its type, default and help, for `lookalike config --help-keys`."""
    rows = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            if name == "subjects":
                walk(SubjectConfig, "subject.")
                continue
            default = field.get_default(call_default_factory=True)
            rows.append(f"{prefix}{name} = {default!r}\n    {field.description or ''}")

    walk(RunConfig, "")
    return "\n".join(rows)
