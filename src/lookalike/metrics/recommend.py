"""Which checkpoint to use: the most alike to the subject that still follows prompts.

Training longer makes samples look more like the subject and, past some point, makes the model
ignore the rest of the prompt (every picture becomes the training photos). The rule keeps the
checkpoints whose CLIP-T stays within ``tolerance`` of the base model's and picks the one with the
highest likeness among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BASE = "base"
METRIC_NAMES = {"face_similarity": "face identity (SFace)", "dino": "DINO", "clip_i": "CLIP-I"}


@dataclass(frozen=True)
class Summary:
    """One evaluated model, its subjects' scores averaged."""

    target: str
    step: int
    likeness: float | None
    clip_t: float | None


@dataclass(frozen=True)
class Recommendation:
    rule: str
    target: str | None
    step: int | None
    reason: str


def summarise(rows: list[dict[str, Any]]) -> list[Summary]:
    """Rows (one per model × subject) -> one Summary per model, in step order."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_target.setdefault(row["target"], []).append(row)

    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(values) / len(values)

    out = []
    for target, group in by_target.items():
        likeness = mean([r["metrics"].get(r["likeness_metric"]) for r in group])
        out.append(Summary(target, group[0]["step"], likeness, mean([r["metrics"].get("clip_t") for r in group])))
    return sorted(out, key=lambda s: (s.step, s.target != BASE))


def rule_text(likeness_metrics: set[str], tolerance: float, has_base: bool) -> str:
    names = " / ".join(METRIC_NAMES.get(m, m) for m in sorted(likeness_metrics)) or "likeness"
    reference = "the base model's CLIP-T" if has_base else "the best CLIP-T among the checkpoints (no base model evaluated)"
    return f"highest {names} among trained checkpoints whose CLIP-T is at least {reference} minus {tolerance:g}"


def recommend(summaries: list[Summary], tolerance: float, likeness_metrics: set[str]) -> Recommendation:
    base = next((s for s in summaries if s.target == BASE), None)
    trained = [s for s in summaries if s.target != BASE and s.clip_t is not None]
    rule = rule_text(likeness_metrics, tolerance, base is not None and base.clip_t is not None)
    if not trained:
        return Recommendation(rule, None, None, "no trained checkpoint was evaluated")
    reference = base.clip_t if base is not None and base.clip_t is not None else max(s.clip_t for s in trained)
    floor = reference - tolerance
    kept = [s for s in trained if s.clip_t >= floor and s.likeness is not None]
    if not kept:
        best = max(trained, key=lambda s: (s.clip_t, -s.step))
        return Recommendation(
            rule, best.target, best.step,
            f"no checkpoint keeps CLIP-T at or above {floor:.4f}; this one follows prompts best "
            f"(CLIP-T {best.clip_t:.4f}): train fewer steps or with a lower learning rate",
        )
    # Ties go to the earlier step: as alike, with less chance of overfitting.
    best = max(kept, key=lambda s: (s.likeness, -s.step))
    return Recommendation(
        rule, best.target, best.step,
        f"likeness {best.likeness:.4f}, CLIP-T {best.clip_t:.4f} "
        f"(floor {floor:.4f}; {len(kept)} of {len(trained)} checkpoints within it)",
    )
