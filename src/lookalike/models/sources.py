"""Where a base model comes from: the bundled toy model, a local diffusers folder, a hub id, or a
single original-layout checkpoint file (the kind A1111 / ComfyUI users download).

Every way in ends in a real diffusers pipeline: ``from_pretrained`` for folders and hub ids,
``from_single_file`` for single files. Single files carry weights only; their configs (and
tokenizers) come from ``model.config`` or, failing that, the family's standard hub repo, which
needs the network once. Pickle checkpoints are refused unless the user allows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lookalike.config import ModelConfig
from lookalike.errors import LookalikeError

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)

# The diffusers repos whose configs describe each family's original checkpoints (the same ones
# diffusers itself falls back to).
STANDARD_CONFIGS = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}

# Key prefixes that only one family's original layout has: SDXL's second (OpenCLIP bigG) text
# encoder, SD2's OpenCLIP-H text encoder, SD1's OpenAI CLIP-L text encoder. Checked in this order.
FAMILY_KEY_PREFIXES = (
    ("conditioner.embedders.1.", "sdxl"),
    ("cond_stage_model.model.", "sd2"),
    ("cond_stage_model.transformer.", "sd1"),
)

@dataclass(frozen=True)
class Source:
    """A resolved ``model.source``: what kind of thing it is and where its configs live."""

    kind: Literal["folder", "hub", "single_file"]
    location: str  # folder path, hub id or file path
    revision: str | None = None  # hub sources only
    config: str | None = None  # single files: diffusers folder or hub id holding the configs


def toy_folder() -> Path:
    """The bundled toy model's diffusers folder (a clear error if this install lacks its weights)."""
    from lookalike.toyworld import pipeline_dir

    return Path(pipeline_dir())


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or source.lower().endswith(SINGLE_FILE_SUFFIXES)


def resolve_source(model: ModelConfig) -> Source:
    """Classify ``model.source`` without loading anything; bad paths fail here with the fix."""
    if model.source == "toy":
        return Source("folder", str(toy_folder()))
    path = Path(model.source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise LookalikeError(
                f"model.source {path} is not a diffusers model folder (no model_index.json): "
                "pass the folder that holds model_index.json, or a .safetensors file"
            )
        return Source("folder", str(path))
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise LookalikeError(
                f"model.source {path}: unsupported file type {path.suffix!r}; "
                "pass a .safetensors checkpoint or a diffusers folder"
            )
        return Source("single_file", str(path), config=model.config)
    if _looks_like_path(model.source):
        raise LookalikeError(f"model.source {model.source}: no such file or folder")
    return Source("hub", model.source, revision=model.revision)


# ---------------------------------------------------------------- single files


def family_from_keys(keys: Any) -> str | None:
    """The family an original-layout checkpoint's key names show, or None if they show none."""
    keys = list(keys)
    for prefix, family in FAMILY_KEY_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return family
    return None


def _checkpoint_keys(path: Path) -> list[str]:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except (SafetensorError, OSError) as err:
            raise LookalikeError(f"{path} is not a readable .safetensors file ({err}); re-download it") from None
    # Only reached with model.allow_pickle; weights_only refuses arbitrary objects even then.
    state = torch.load(path, map_location="cpu", weights_only=True)
    return list(state.get("state_dict", state).keys())


def single_file_family(path: Path, model: ModelConfig) -> str:
    """``model.family`` if set (checked against the keys), else the family the keys show."""
    found = family_from_keys(_checkpoint_keys(path))
    if model.family != "auto":
        if found is not None and found != model.family:
            raise LookalikeError(
                f"model.family is {model.family!r} but {path.name} looks like {found}: "
                f"set model.family={found} or model.family=auto"
            )
        return model.family
    if found is None:
        raise LookalikeError(
            f"{path.name} has no Stable Diffusion text-encoder keys to tell its family by: "
            "set model.family=sd1, sd2 or sdxl"
        )
    return found


def refuse_pickle(path: Path, model: ModelConfig) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES and not model.allow_pickle:
        raise LookalikeError(
            f"{path.name} is a pickle file, and loading a pickle can run any code hidden in it: "
            "use a .safetensors version of the model, or set model.allow_pickle=true if you trust the file"
        )


def _config_source(source: Source, family: str) -> str:
    return source.config or STANDARD_CONFIGS[family]


def _config_unavailable(source: Source, config: str) -> LookalikeError:
    return LookalikeError(
        f"the single file {Path(source.location).name} needs diffusers configs, and {config} could not be "
        "found locally or downloaded: set model.config=<a local diffusers folder of the same family>"
    )


def _open_single_file(source: Source, model: ModelConfig, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(source.location)
    refuse_pickle(path, model)
    family = single_file_family(path, model)
    config = _config_source(source, family)
    model_index(config, None, single_file=source)  # fail early, with our message, if configs are missing
    if family == "sdxl":
        loader, extra = StableDiffusionXLPipeline, {}
    else:
        loader, extra = StableDiffusionPipeline, {"safety_checker": None, "requires_safety_checker": False}
    try:
        return loader.from_single_file(str(path), config=config, torch_dtype=dtype, **extra)
    except (ValueError, RuntimeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LookalikeError(
            f"could not load {path.name} as {family} with configs from {config} ({first_line}): "
            "check that model.config is a diffusers folder of the same model family"
        ) from None


# ---------------------------------------------------------------- folders and hub ids


def model_index(location: str, revision: str | None, single_file: Source | None = None) -> dict[str, Any]:
    """The pipeline's model_index.json (folder or hub); the one cheap request that proves it exists."""
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.load_config(location, revision=revision)
    except (OSError, ValueError):  # offline / not found / malformed id (HFValidationError is a ValueError)
        if single_file is not None:
            raise _config_unavailable(single_file, location) from None
        raise LookalikeError(
            f"model {location!r} could not be found locally or downloaded from the Hugging Face Hub "
            "(no network, or no such model): pass model.source=<a local diffusers folder or .safetensors file>"
        ) from None


def _open_diffusers(source: Source, dtype: torch.dtype) -> Any:
    from diffusers import DiffusionPipeline

    index = model_index(source.location, source.revision)
    # The safety checker blacks out whatever it flags: fatal for class priors and previews, and a
    # 1.2 GB download. DreamBooth tooling (diffusers' own scripts included) loads without it.
    extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
    return DiffusionPipeline.from_pretrained(source.location, revision=source.revision, dtype=dtype, **extra)


def open_pipeline(model: ModelConfig, dtype: torch.dtype = torch.float32) -> Any:
    """The base model as a diffusers pipeline, whatever ``model.source`` names."""
    source = resolve_source(model)
    if source.kind == "single_file":
        return _open_single_file(source, model, dtype)
    return _open_diffusers(source, dtype)


def open_tokenizers(model: ModelConfig) -> list[Any]:
    """Only the tokenizer(s) of the base model (two for SDXL), without loading any weights."""
    import transformers

    source = resolve_source(model)
    location, revision = source.location, source.revision
    if source.kind == "single_file":
        path = Path(source.location)
        refuse_pickle(path, model)
        location, revision = _config_source(source, single_file_family(path, model)), None
    index = model_index(location, revision, single_file=source if source.kind == "single_file" else None)
    tokenizers = []
    for name in ("tokenizer", "tokenizer_2"):
        _library, class_name = index.get(name) or (None, None)
        if class_name is not None:
            loader = getattr(transformers, class_name)
            tokenizers.append(loader.from_pretrained(location, subfolder=name, revision=revision))
    if not tokenizers:
        raise LookalikeError(f"model {location} has no tokenizer in its model_index.json; is it a text-to-image model?")
    return tokenizers
