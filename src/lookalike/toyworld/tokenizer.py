"""A CLIPTokenizer whose vocabulary is the toy world's caption words plus rare identifier words.

Same byte-level BPE machinery as Stable Diffusion's tokenizer, so identifier checks and prompt
handling take the real code path: every caption word and every identifier in
``world.IDENTIFIERS`` is one token; any other word falls back to smaller pieces, down to bytes.
"""

from __future__ import annotations

from lookalike.models.tiny import _bytes_to_unicode
from lookalike.toyworld.world import IDENTIFIERS, caption_words

MAX_LENGTH = 77


def _merges_for(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build ``word</w>`` from its characters."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges, left = [], pieces[0]
    for right in pieces[1:]:
        merges.append((left, right))
        left += right
    return merges


def _make(merges: list[tuple[str, str]]):
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [a + "</w>" for a in alphabet]
    for pair in merges:
        token = "".join(pair)
        if token not in vocab:
            vocab.append(token)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=MAX_LENGTH)


def build_tokenizer():
    """The toy tokenizer; every caption word and identifier is a single token."""
    words = sorted(caption_words()) + list(IDENTIFIERS)
    merges: list[tuple[str, str]] = []
    for word in words:
        merges += [pair for pair in _merges_for(word.lower()) if pair not in merges]
    # A merge learnt for one word can split another ("an</w>" takes the end of "man"): join the
    # pieces such words fall into with merges ranked last, until every word is one token.
    for _ in range(10):
        tokenizer = _make(merges)
        split = [tokenizer.tokenize(w) for w in words if len(tokenizer.tokenize(w)) > 1]
        if not split:
            return tokenizer
        for pieces in split:
            left = pieces[0]
            for right in pieces[1:]:
                if (left, right) not in merges:
                    merges.append((left, right))
                left += right
    raise RuntimeError(f"could not make single tokens of {split}")
