"""Textual inversion: learn only the identifier's token embedding, leave every model weight as it is.

``train.method=embedding`` trains the input-embedding rows of the subjects' identifier tokens
(``ohwx``) in every text encoder and nothing else, so prompts without the identifier render
exactly as the base model renders them. The rows are saved as ``identifier_embeddings.safetensors``:
one tensor per text encoder (``text_encoder``, ``text_encoder_2``), one row per identifier token,
with the tokens and their ids in the metadata. Opening the model writes the rows back into the
base model's text encoders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lookalike.errors import LookalikeError
from lookalike.models.lora import TEXT_ENCODER_NAMES as ENCODER_NAMES

WEIGHT_NAME = "identifier_embeddings.safetensors"


def identifier_token_ids(tokenizer: Any, identifiers: list[str]) -> list[int]:
    """The token id of every identifier on ``tokenizer``, each id once.

    An identifier must be one token of its own: the pieces of a split one ("q", "z") belong to
    other words too, and learning their embeddings would change those words in every prompt.
    """
    from lookalike.identifier import check_identifier

    ids: list[int] = []
    for word in identifiers:
        check = check_identifier(tokenizer, word)
        if not check.single_token or check.token_ids[0] == tokenizer.unk_token_id:
            seen = "is unknown to the tokenizer" if check.single_token else f"splits into {' + '.join(check.tokens)}"
            raise LookalikeError(
                f"train.method=embedding learns the identifier's own token, but {word!r} {seen}: "
                "pick a single-token identifier with `lookalike identifier RUN`"
            )
        if check.token_ids[0] not in ids:
            ids.append(check.token_ids[0])
    return ids


def token_ids_per_tokenizer(tokenizers: list[Any], subjects: list[Any]) -> list[list[int]]:
    """The subjects' identifier token ids on each tokenizer (one list per text encoder)."""
    identifiers = [s.identifier for s in subjects]
    return [identifier_token_ids(t, identifiers) for t in tokenizers]


def pipeline_encoders(pipeline: Any) -> list[torch.nn.Module]:
    """The pipeline's text encoders, in the order the rows are saved."""
    return [e for e in (getattr(pipeline, n, None) for n in ENCODER_NAMES) if e is not None]


def train_only_rows(encoder: torch.nn.Module, token_ids: list[int]) -> torch.nn.Parameter:
    """Freeze ``encoder`` except its input-embedding table, whose gradient is kept only on ``token_ids``.

    The returned table must be optimized without weight decay: AdamW decays every row of a
    parameter it updates, including the rows whose gradient is zero.
    """
    encoder.requires_grad_(False)
    table = encoder.get_input_embeddings().weight
    table.requires_grad_(True)
    mask = torch.zeros(table.shape[0], 1)
    mask[token_ids] = 1.0
    table.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))
    return table


def save_rows(folder: Path, encoders: list[torch.nn.Module], token_ids: list[list[int]], tokenizers: list[Any]) -> Path:
    """Write the identifier rows of each encoder's embedding table to ``folder/identifier_embeddings.safetensors``."""
    from safetensors.torch import save_file

    tensors, metadata = {}, {}
    for name, encoder, ids, tokenizer in zip(ENCODER_NAMES, encoders, token_ids, tokenizers):
        table = encoder.get_input_embeddings().weight
        tensors[name] = table[ids].detach().float().cpu().contiguous()
        metadata[name] = json.dumps({"token_ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)})
    path = folder / WEIGHT_NAME
    save_file(tensors, path, metadata=metadata)
    return path


def read_rows(folder: Path) -> dict[str, tuple[list[int], torch.Tensor]]:
    """{encoder name: (token ids, rows)} from a saved identifier-embedding file."""
    from safetensors import safe_open

    path = folder / WEIGHT_NAME
    if not path.is_file():
        raise LookalikeError(f"{path} is missing: this textual-inversion model is incomplete; train again")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        return {name: (json.loads(metadata[name])["token_ids"], f.get_tensor(name)) for name in f.keys()}


@torch.no_grad()
def load_rows(folder: Path, encoders: list[torch.nn.Module]) -> None:
    """Write the saved rows into the embedding tables of ``encoders`` (a base model's text encoders)."""
    saved = read_rows(folder)
    for name, encoder in zip(ENCODER_NAMES, encoders):
        if name not in saved:
            raise LookalikeError(f"{folder / WEIGHT_NAME} has no rows for {name}: it was trained on another model family")
        ids, rows = saved[name]
        table = encoder.get_input_embeddings().weight
        if rows.shape[1] != table.shape[1] or max(ids) >= table.shape[0]:
            raise LookalikeError(f"{folder / WEIGHT_NAME} does not fit this model's {name} (trained on another base model?)")
        table[ids] = rows.to(table.device, table.dtype)
