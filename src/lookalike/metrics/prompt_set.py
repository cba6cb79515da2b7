"""The eval prompt set: the bundled DreamBench-style prompts per class kind, plus the user's own.

A prompt is a template with ``{subject}``. It is rendered with the identifier ("a ohwx man on the
beach") and scored by CLIP-T against the class-noun text ("a man on the beach"), as the paper does:
CLIP-T asks whether the picture shows the prompt's context, not whether CLIP knows the identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from lookalike.config import EvalConfig, SubjectConfig
from lookalike.errors import LookalikeError

BUNDLED_PROMPTS = Path(__file__).with_name("prompts.toml")
KINDS = ("person", "pet", "object")


@dataclass(frozen=True)
class EvalPrompt:
    group: str  # recontextualization | accessorization | property | class | the user's own
    prompt: str  # what the model renders, with the identifier
    text: str  # what CLIP-T compares with: the identifier dropped, the class noun kept


def read_prompt_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """kind -> group -> templates, checked: every template a string with one {subject}."""
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookalikeError(f"eval.prompts_file {path} not found: give the path of a TOML file (format: docs/METRICS.md)") from None
    except tomllib.TOMLDecodeError as err:
        raise LookalikeError(f"eval.prompts_file {path} is not valid TOML: {err}") from None
    for kind, groups in tables.items():
        if kind not in KINDS or not isinstance(groups, dict):
            raise LookalikeError(f"{path}: top-level tables must be the class kinds {', '.join(KINDS)}; found {kind!r}")
        for group, templates in groups.items():
            if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
                raise LookalikeError(f"{path}: [{kind}] {group} must be a list of prompt strings")
            for template in templates:
                _check_template(template, f"{path}: [{kind}] {group}")
    return tables


def _check_template(template: str, where: str) -> None:
    if "{subject}" not in template:
        raise LookalikeError(f"{where}: {template!r} needs a {{subject}} placeholder, e.g. 'a {{subject}} on the beach'")
    try:
        template.format(subject="x")
    except (KeyError, IndexError, ValueError):
        raise LookalikeError(f"{where}: {template!r} may hold only {{subject}} in braces") from None


def templates_for(kind: str, cfg: EvalConfig) -> list[tuple[str, str]]:
    """(group, template) pairs for one class kind: bundled, merged with or replaced by the user's file."""
    bundled = read_prompt_file(BUNDLED_PROMPTS).get(kind, {})
    own = read_prompt_file(Path(cfg.prompts_file).expanduser()).get(kind, {}) if cfg.prompts_file else {}
    groups = dict(own) if cfg.prompts_mode == "replace" else {g: list(t) for g, t in bundled.items()}
    if cfg.prompts_mode == "merge":
        for group, templates in own.items():
            groups[group] = groups.get(group, []) + [t for t in templates if t not in groups.get(group, [])]
    pairs = [(group, template) for group, templates in groups.items() for template in templates]
    if not pairs:
        raise LookalikeError(f"the eval prompt set has no prompts for kind {kind!r}: add a [{kind}] table to eval.prompts_file")
    return pairs[: cfg.max_prompts]


def subject_prompts(subject: SubjectConfig, cfg: EvalConfig) -> list[EvalPrompt]:
    return [
        EvalPrompt(group, template.format(subject=subject.subject_phrase), template.format(subject=subject.class_noun))
        for group, template in templates_for(subject.kind, cfg)
    ]


def class_prompt(subject: SubjectConfig, cfg: EvalConfig) -> EvalPrompt:
    try:
        text = cfg.class_prompt.format(class_noun=subject.class_noun)
    except (KeyError, IndexError, ValueError):
        raise LookalikeError(f"eval.class_prompt {cfg.class_prompt!r} may hold only {{class_noun}} in braces") from None
    return EvalPrompt("class", text, text)
