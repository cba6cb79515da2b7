"""`lookalike export RUN`: the trained model as files other tools load, plus a model card.

Formats (``export.format``):

    single-file     RUN/export/<run>.safetensors            original layout, for A1111 / ComfyUI / kohya
    lora-kohya      RUN/export/<run>-lora.safetensors       kohya / A1111 LoRA keys (LoRA runs)
    lora-diffusers  RUN/export/lora-diffusers/pytorch_lora_weights.safetensors
    diffusers       RUN/export/diffusers/                   a pipeline folder (save_pretrained)
    embedding       RUN/export/embeddings/<identifier>.safetensors  A1111 / ComfyUI textual inversion (embedding runs)

A LoRA run exported as single-file or diffusers gets its LoRA fused into the base model. Every
export rewrites RUN/export/README.md, listing all files exported there so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from lookalike.errors import LookalikeError
from lookalike.run import Run, atomic_dir

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
LORA_FORMATS = ("lora-kohya", "lora-diffusers")


def output_paths(run: Run, out_dir: Path) -> dict[str, Path]:
    """Where each format lands inside the export folder."""
    stem = run.root.resolve().name
    return {
        "single-file": out_dir / f"{stem}.safetensors",
        "lora-kohya": out_dir / f"{stem}-lora.safetensors",
        "lora-diffusers": out_dir / "lora-diffusers" / "pytorch_lora_weights.safetensors",
        "diffusers": out_dir / "diffusers",
        "embedding": out_dir / "embeddings",
    }


def resolve_format(requested: str, method: str) -> str:
    if requested == "auto":
        return {"lora": "lora-kohya", "embedding": "embedding"}.get(method, "single-file")
    if requested == "embedding" and method != "embedding":
        raise LookalikeError(
            f"export.format=embedding needs a textual-inversion run (train.method=embedding), but this run's "
            f"train.method is {method}: use export.format=auto"
        )
    if requested in LORA_FORMATS and method != "lora":
        raise LookalikeError(
            f"export.format={requested} needs a LoRA run, but this run's train.method is {method}: use "
            + ("export.format=embedding, " if method == "embedding" else "") + "export.format=single-file or export.format=diffusers"
        )
    return requested


def _trained_pipeline(run: Run, checkpoint: str | None, dtype: torch.dtype = torch.float32) -> tuple[Any, str]:
    from lookalike.models.load import detect_family
    from lookalike.models.trained import open_trained

    pipeline, _ = open_trained(run, checkpoint, dtype)
    return pipeline, detect_family(pipeline)


def _export_single_file(run: Run, folder: Path, info: dict, dest: Path, dtype: torch.dtype, checkpoint: str | None) -> str:
    from lookalike.models.export_sd import write_single_file
    from lookalike.models.modelcard import training_metadata

    pipeline, family = _trained_pipeline(run, checkpoint)
    metadata = {**_modelspec(run, family), **training_metadata(info, family)}
    count = write_single_file(pipeline, family, dest, dtype, metadata)
    return f"{count} tensors"


def _export_diffusers(run: Run, folder: Path, info: dict, dest: Path, dtype: torch.dtype, checkpoint: str | None) -> str:
    # A full fine-tune loads straight in ``dtype`` (casting a loaded pipeline makes diffusers warn);
    # a LoRA is fused in float32 first, so its small updates are not rounded before they are added.
    pipeline, _ = _trained_pipeline(run, checkpoint, dtype if info["method"] == "full" else torch.float32)
    if pipeline.dtype != dtype:
        pipeline.to(dtype=dtype)
    with atomic_dir(dest) as tmp:
        pipeline.save_pretrained(tmp, safe_serialization=True)
    return "pipeline folder"


def _export_lora(run: Run, folder: Path, info: dict, dest: Path, dtype: torch.dtype, kohya: bool) -> str:
    """The trained LoRA file as it is (diffusers layout) or renamed to kohya keys, in ``dtype``."""
    from lookalike.models import export_lora
    from lookalike.models.export_sd import save_safetensors_atomic
    from lookalike.models.lora import WEIGHT_NAME
    from lookalike.models.modelcard import training_metadata

    family = info["family"]
    weights, header = export_lora.read_lora_file(folder / WEIGHT_NAME)
    layers = len(weights) // 2  # one down and one up matrix per adapted layer
    if kohya:
        weights = export_lora.to_kohya(weights, header, family)
        header = {**export_lora.kohya_metadata(family, weights), **_modelspec(run, family, lora=True)}
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    save_safetensors_atomic(weights, dest, {**header, **training_metadata(info, family)})
    return f"{layers} adapted layers"


def _export_lora_kohya(run: Run, folder: Path, info: dict, dest: Path, dtype: torch.dtype, checkpoint: str | None) -> str:
    return _export_lora(run, folder, info, dest, dtype, kohya=True)


def _export_lora_diffusers(run: Run, folder: Path, info: dict, dest: Path, dtype: torch.dtype, checkpoint: str | None) -> str:
    return _export_lora(run, folder, info, dest, dtype, kohya=False)


def _export_embedding(run: Run, folder: Path, info: dict, dest: Path, dtype: torch.dtype, checkpoint: str | None) -> str:
    """One A1111 / ComfyUI embedding file per identifier, named after it (the file name is the word to write).

    SD1/SD2 files hold ``emb_params`` (one row); SDXL files hold ``clip_l`` and ``clip_g``, the
    rows of its two text encoders, the layout both tools read.
    """
    from lookalike.models.embedding import read_rows
    from lookalike.models.export_sd import save_safetensors_atomic
    from lookalike.models.modelcard import training_metadata

    saved = read_rows(folder)
    keys = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"} if info["family"] == "sdxl" else {"text_encoder": "emb_params"}
    names = list(dict.fromkeys(s["identifier"] for s in info["subjects"]))  # rows: one per identifier, in the subjects' order
    if len(names) != len(saved["text_encoder"][0]):
        raise LookalikeError(f"{folder} holds {len(saved['text_encoder'][0])} identifier rows for identifiers {names}: train again")
    dest.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        tensors = {key: saved[encoder][1][i : i + 1].to(dtype).contiguous() for encoder, key in keys.items()}
        save_safetensors_atomic(tensors, dest / f"{name}.safetensors", training_metadata(info, info["family"]))
    return f"{len(names)} embedding file(s): {', '.join(f'{n}.safetensors' for n in names)}"


def _modelspec(run: Run, family: str, lora: bool = False) -> dict[str, str]:
    """Stability's model-spec header fields, which A1111 and ComfyUI show in their model lists."""
    architecture = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-768-v", "sdxl": "stable-diffusion-xl-v1-base"}
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture[family] + ("/lora" if lora else ""),
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "https://github.com/Stability-AI/stablediffusion",
        "modelspec.title": run.root.resolve().name,
    }


EXPORTERS: dict[str, Callable[..., str]] = {
    "single-file": _export_single_file,
    "diffusers": _export_diffusers,
    "lora-kohya": _export_lora_kohya,
    "lora-diffusers": _export_lora_diffusers,
    "embedding": _export_embedding,
}


def export_run(run: Run) -> str:
    """Export the run's trained model (or ``export.checkpoint``) in ``export.format``; write the card."""
    from lookalike.models.modelcard import write_card
    from lookalike.models.trained import trained_folder
    from lookalike.train.checkpoint import read_info

    cfg = run.config.export
    folder = trained_folder(run, cfg.checkpoint)
    info = read_info(folder)
    fmt = resolve_format(cfg.format, info["method"])
    out_dir = Path(cfg.output).expanduser() if cfg.output else run.root / "export"
    if out_dir.exists() and not out_dir.is_dir():
        raise LookalikeError(f"export.output {out_dir} exists and is not a folder: choose another export.output")
    paths = output_paths(run, out_dir)
    run.emit("export", "start", format=fmt, source=str(folder), dtype=cfg.dtype)
    detail = EXPORTERS[fmt](run, folder, info, paths[fmt], DTYPES[cfg.dtype], cfg.checkpoint)
    exported = {name: path for name, path in paths.items() if path.exists()}
    card = write_card(run, info, info["family"], exported, out_dir)
    run.emit("export", "done", format=fmt, path=str(paths[fmt]), card=str(card))
    return f"exported {fmt} ({cfg.dtype}, {detail}) to {paths[fmt]}\nmodel card: {card}"
