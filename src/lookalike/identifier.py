"""The identifier: the rare token DreamBooth binds the subject to ("a photo of ohwx man").

A good identifier is one token of the model's own tokenizer that means little to the model yet.
CLIP's BPE vocabulary is ordered by merge rank: bytes first, then merges in the order they were
learned, most frequent first. So a low token id is a frequent piece (an everyday word) and a high
id is a rare one. Some rare-looking tokens still carry a strong meaning (``sks`` is a rifle to
Stable Diffusion); those are listed by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Single tokens in the first 40% of the vocabulary are frequent pieces: in SD's 49,408-token
# CLIP vocabulary (ids under ~20,000) 'dog' is 1929, 'man' 786, 'rifle' 15354. Identifiers there
# already mean something the subject must overwrite. Fractions, so smaller vocabularies (the toy
# model's) are judged the same way.
COMMON_SHARE = 0.4

# Proposals come from the rarest fifth of the vocabulary only (SD: ids of ~40,000 and up).
RARE_SHARE = 0.8

# Tokens that look rare but mean something strong (or unpleasant) to Stable Diffusion.
KNOWN_MEANINGS = {
    "sks": "the SKS rifle (images drift towards guns)",
    "bnha": "the anime My Hero Academia",
    "dbz": "the anime Dragon Ball Z",
    "ffxv": "the video game Final Fantasy XV",
    "acdc": "the band AC/DC",
    "dprk": "North Korea",
    "fck": "a swear word",
    "stfu": "a swear word",
    "kkkk": "a laugh in Portuguese, and the KKK",
}

_PROPOSAL_SHAPE = re.compile(r"[a-z]{3,4}")
_VOWELS = re.compile(r"[aeiouy]")
_CONSONANT_RUN = re.compile(r"[^aeiouy]{3}")


@dataclass
class IdentifierCheck:
    """How one tokenizer sees an identifier, and what is wrong with it (nothing, ideally)."""

    word: str
    tokens: list[str]  # BPE pieces, without the end-of-word marker
    token_ids: list[int]
    problems: list[str] = field(default_factory=list)

    @property
    def single_token(self) -> bool:
        return len(self.tokens) == 1

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        pieces = " + ".join(f"{t} (id {i})" for t, i in zip(self.tokens, self.token_ids))
        verdict = "ok, a rare single token" if self.ok else "; ".join(self.problems)
        return f"{self.word!r} -> {pieces}: {verdict}"


def _pieces(tokenizer: Any, word: str) -> tuple[list[str], list[int]]:
    tokens = tokenizer.tokenize(word)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    return [t.removesuffix("</w>") for t in tokens], list(ids)


def check_identifier(tokenizer: Any, word: str) -> IdentifierCheck:
    """Tokenize ``word`` with the model's tokenizer and list every reason it is a poor identifier."""
    tokens, ids = _pieces(tokenizer, word)
    check = IdentifierCheck(word=word, tokens=tokens, token_ids=ids)
    meaning = KNOWN_MEANINGS.get(word.lower())
    if meaning:
        check.problems.append(f"to Stable Diffusion '{word}' already means {meaning}")
    if len(tokens) > 1:
        check.problems.append(
            f"splits into {len(tokens)} tokens, each with a meaning of its own: pick a single-token identifier"
        )
    elif ids and ids[0] < COMMON_SHARE * len(tokenizer):
        common = int(COMMON_SHARE * len(tokenizer))
        check.problems.append(
            f"a common word to the model (token id {ids[0]}; ids under {common} are frequent words): "
            "the subject would have to overwrite what it already means"
        )
    return check


def _looks_unpronounceable(word: str) -> bool:
    # English words of 3-4 letters have vowels and no 3-consonant run ('y' counted as a vowel):
    # this keeps acronym-like pieces such as 'ohwx' and drops rare words such as 'kilt'.
    return not _VOWELS.search(word) or bool(_CONSONANT_RUN.search(word))


def propose_identifiers(tokenizer: Any, n: int = 5) -> list[str]:
    """``n`` rare single-token identifiers, rarest first; the same list every time for a vocabulary."""
    candidates = []
    rare = RARE_SHARE * len(tokenizer)
    for token, token_id in tokenizer.get_vocab().items():
        word = token.removesuffix("</w>")
        if token_id < rare or word == token or not _PROPOSAL_SHAPE.fullmatch(word):
            continue
        if word in KNOWN_MEANINGS or not _looks_unpronounceable(word):
            continue
        candidates.append((token_id, word))
    proposals = []
    for _, word in sorted(candidates, reverse=True):
        if check_identifier(tokenizer, word).ok:  # BPE may split a word even when its token exists
            proposals.append(word)
            if len(proposals) == n:
                break
    return proposals


# ---------------------------------------------------------------- the verb


def _subject_lines(tokenizers: list[Any], subject: Any) -> list[str]:
    checks = [check_identifier(t, subject.identifier) for t in tokenizers]
    lines = [f"subject {subject.name!r}: {checks[0].describe()}"]
    for i, other in enumerate(checks[1:], start=2):
        if other.tokens != checks[0].tokens:
            lines.append(f"  tokenizer {i}: {other.describe()}")
    if subject.identifier.lower() in subject.resolved_class_prompt().lower().split():
        lines.append("  the class prompt contains the identifier: priors would teach it the whole class")
    return lines


def _proposals(tokenizers: list[Any], taken: set[str], n: int = 5) -> list[str]:
    pool = propose_identifiers(tokenizers[0], n + len(taken))
    fits_all = [w for w in pool if w not in taken and all(check_identifier(t, w).ok for t in tokenizers[1:])]
    return fits_all[:n]


def check_run(run: Any) -> str:
    """`lookalike identifier RUN`: each subject's identifier on the base model's tokenizer(s), plus proposals."""
    from lookalike.models.load import load_tokenizers

    tokenizers = load_tokenizers(run.config.model)
    which = "both tokenizers (SDXL)" if len(tokenizers) > 1 else "its tokenizer"
    lines = [f"identifiers checked on {run.config.model.source}, {which} ({len(tokenizers[0])} tokens)"]
    for subject in run.config.subjects:
        lines += _subject_lines(tokenizers, subject)
    proposals = _proposals(tokenizers, {s.identifier.lower() for s in run.config.subjects})
    if proposals:
        lines.append(f"rare single-token identifiers for this model: {', '.join(proposals)}")
        lines.append(f"use one with: lookalike identifier {run.root} subject.identifier={proposals[0]}")
    else:
        lines.append("no rare single-token identifier found in this vocabulary to propose")
    return "\n".join(lines)
