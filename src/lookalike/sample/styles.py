"""The style pack (a TOML data file), quality boosters and negative prompts -> the prompts to render.

A style is a prompt template with ``{subject}`` (which becomes "ohwx man") and an optional negative
prompt. The bundled pack is ``styles.toml`` beside this module; a user's own file merges over it
or replaces it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from lookalike.config import GenerateConfig
from lookalike.errors import LookalikeError

BUNDLED_PACK = Path(__file__).with_name("styles.toml")
STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative: str = ""


@dataclass(frozen=True)
class PromptSpec:
    """One prompt to render: its gallery group (style name or 'prompt-1'), prompt and negative prompt."""

    group: str
    prompt: str
    negative_prompt: str


def fill_subject(template: str, subject_phrase: str, where: str) -> str:
    """``template`` with ``{subject}`` filled in; any other placeholder is the user's mistake."""
    if "{subject}" not in template:
        raise LookalikeError(f"{where}: the prompt needs a {{subject}} placeholder, e.g. 'a watercolor painting of {{subject}}'")
    try:
        return template.format(subject=subject_phrase)
    except (KeyError, IndexError, ValueError) as err:
        raise LookalikeError(
            f"{where}: only {{subject}} may appear in braces (found a problem with {err}); write a literal brace as {{{{ or }}}}"
        ) from None


def _style_from_table(name: str, table: object, path: Path) -> Style:
    where = f"{path} [styles.{name}]"
    if not STYLE_NAME.match(name):
        raise LookalikeError(f"{where}: style names use lower-case letters, digits, '-' and '_' (e.g. film-noir)")
    if not isinstance(table, dict) or not isinstance(table.get("prompt"), str):
        raise LookalikeError(f"{where}: each style needs prompt = \"... {{subject}} ...\"")
    unknown = set(table) - {"prompt", "negative"}
    if unknown:
        raise LookalikeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a style has prompt and negative")
    negative = table.get("negative", "")
    if not isinstance(negative, str):
        raise LookalikeError(f"{where}: negative must be a string")
    fill_subject(table["prompt"], "x", where)
    return Style(name, table["prompt"], negative)


def read_pack(path: Path) -> dict[str, Style]:
    """The styles of one pack file, checked: name -> Style."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookalikeError(f"style file {path} not found; fix generate.style_file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LookalikeError(f"style file {path} is not valid TOML: {err}") from None
    styles = data.get("styles")
    if not isinstance(styles, dict) or set(data) != {"styles"}:
        raise LookalikeError(f"style file {path}: put every style in a [styles.NAME] table (see docs/GENERATE.md)")
    return {name: _style_from_table(name, table, path) for name, table in styles.items()}


def load_pack(style_file: str | None = None, mode: str = "merge") -> dict[str, Style]:
    """The bundled pack, with the user's file merged over it (same names replaced) or instead of it."""
    pack = read_pack(BUNDLED_PACK)
    if style_file is None:
        return pack
    own = read_pack(Path(style_file))
    return own if mode == "replace" else {**pack, **own}


def select_styles(pack: dict[str, Style], names: str | list[str]) -> list[Style]:
    """The styles named (in the order given), or all of them for 'all'."""
    if names == "all" or names == ["all"]:
        return list(pack.values())
    names = [names] if isinstance(names, str) else list(dict.fromkeys(names))  # a repeat would render twice
    missing = [n for n in names if n not in pack]
    if missing:
        raise LookalikeError(
            f"generate.styles: no style named {', '.join(map(repr, missing))}; choose from: {', '.join(pack)}"
        )
    return [pack[n] for n in names]


def join_phrases(*parts: str) -> str:
    """Comma-join the non-empty phrases: the prompt, then boosters; or the negatives."""
    return ", ".join(p.strip() for p in parts if p and p.strip())


def build_prompts(gen: GenerateConfig, subject_phrase: str) -> list[PromptSpec]:
    """Every prompt of a generate run: the chosen styles, then the extra prompts, boosters appended."""
    styles = select_styles(load_pack(gen.style_file, gen.style_file_mode), gen.styles)
    specs = [
        PromptSpec(
            s.name,
            join_phrases(fill_subject(s.prompt, subject_phrase, f"style {s.name}"), *gen.boosters),
            join_phrases(s.negative, gen.negative_prompt),
        )
        for s in styles
    ]
    for i, template in enumerate(gen.prompts):
        prompt = fill_subject(template, subject_phrase, f"generate.prompts.{i}")
        specs.append(PromptSpec(f"prompt-{i + 1}", join_phrases(prompt, *gen.boosters), gen.negative_prompt))
    if not specs:
        raise LookalikeError("nothing to render: set generate.styles (e.g. 'all') or add generate.prompts")
    return specs
