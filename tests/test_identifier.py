"""Identifier checks on Stable Diffusion's real 49,408-token CLIP vocabulary."""

from __future__ import annotations

import pytest

from lookalike.cli import main
from lookalike.identifier import check_identifier, propose_identifiers
from lookalike.models.tiny import sd_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return sd_clip_tokenizer()


def test_ohwx_is_one_rare_token(tokenizer):
    check = check_identifier(tokenizer, "ohwx")
    assert check.single_token and check.ok
    assert check.tokens == ["ohwx"]


def test_sks_warns_about_the_rifle(tokenizer):
    check = check_identifier(tokenizer, "sks")
    assert check.single_token and not check.ok
    assert any("rifle" in p for p in check.problems)


@pytest.mark.parametrize("word", ["dog", "man", "photo"])
def test_common_words_are_flagged(tokenizer, word):
    check = check_identifier(tokenizer, word)
    assert check.single_token
    assert any("common word" in p for p in check.problems)


def test_long_made_up_word_is_several_tokens(tokenizer):
    check = check_identifier(tokenizer, "xyzabc123")
    assert len(check.tokens) > 1 and len(check.token_ids) == len(check.tokens)
    assert any("splits into" in p for p in check.problems)


def test_proposals_are_rare_single_tokens_and_deterministic(tokenizer):
    proposals = propose_identifiers(tokenizer, n=5)
    assert len(proposals) == len(set(proposals)) == 5
    assert proposals == propose_identifiers(sd_clip_tokenizer(), n=5)
    for word in proposals:
        check = check_identifier(tokenizer, word)
        assert check.single_token and check.ok, check.describe()
        assert "sks" != word


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_identifier_verb(tmp_path, capsys, tiny_models, family):
    run = tmp_path / "run"
    code = main(["identifier", str(run), f"model.source={tiny_models[family]}", "subject.identifier=sks"])
    out = capsys.readouterr().out
    assert code == 0
    assert "rifle" in out
    assert ("both tokenizers" in out) == (family == "sdxl")
    proposals = out.split("rare single-token identifiers for this model: ")[1].splitlines()[0].split(", ")
    assert len(proposals) == 5 and "sks" not in proposals


def test_identifier_verb_bad_source_is_one_line(tmp_path, capsys):
    code = main(["identifier", str(tmp_path / "run"), f"model.source={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "no such file or folder" in err
