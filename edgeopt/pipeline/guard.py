"""The stage guard: did a training step lower validation top-1 by more than its tolerance, and by more than
chance? What the runner keeps of each model-making step (which validation examples it gets right) and the
verdict on the step, as a typed record.

The two models are scored on the same examples, so the test is McNemar's: of the examples only one of them
gets right, the input must win by more than two standard deviations (b - c > 2 sqrt(b + c)). A validation
split of 150 images moves 0.7 points per image: without the test, one-epoch fine-tuning would be judged on
noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeopt.manifest import GuardVerdict
from edgeopt.validation import pack_outcomes, unpack_outcomes

ACTIONS = {"keep_best": "kept the input", "fail": "failed", "continue": "continued"}
# Share of validation examples whose outcome a fine-tuning stage changes, to size the split by: on the
# default pipeline (6,000 images) distillation changed 2.9%, pruning 4.5%, clustering 1.8%, QAT 0.6%.
TYPICAL_CHANGED = 0.03


def detectable_drop(n: int, changed: float = TYPICAL_CHANGED) -> float:
    """The smallest drop of validation top-1 (points) the McNemar rule can tell from chance on ``n``
    examples when a stage changes the outcome of ``changed`` of them: b - c must exceed 2 sqrt(b + c)
    with b + c = n * changed, so the drop must exceed 2 sqrt(n * changed) / n."""
    return math.inf if n <= 0 else 100.0 * 2.0 * math.sqrt(max(n * changed, 1.0)) / n


def examples_needed(points: float, changed: float = TYPICAL_CHANGED) -> int:
    """Validation examples for ``detectable_drop`` to reach ``points``: 4 * changed / drop^2."""
    return math.ceil(4.0 * changed / (points / 100.0) ** 2)


def split_warning(n: int, tolerance: float) -> str | None:
    """What to tell the user when the validation split is too small for the guard's tolerance."""
    can = detectable_drop(n)
    if can <= tolerance:
        return None
    return (
        f"the validation split has {n:,} examples: the stage guard can only tell drops of about {can:.1f} "
        f"points or more from chance (a stage changes the outcome of about {TYPICAL_CHANGED:.0%} of them); a "
        f"{tolerance:g}-point tolerance needs about {examples_needed(tolerance):,} (more data or a larger "
        "data.val_fraction)"
    )


def pack(correct: np.ndarray | None) -> dict[str, Any]:
    """Top-1 on the validation split and the per-example outcome, packed for a cache entry's info."""
    if correct is None:
        return {"val_accuracy": None}
    return {"val_accuracy": float(correct.mean()), "val_correct": pack_outcomes(correct), "val_n": len(correct)}


def unpack(info: dict[str, Any]) -> np.ndarray | None:
    """The per-example outcome ``pack`` stored (None when the step has no validation split)."""
    if not info.get("val_correct"):
        return None
    return unpack_outcomes(info["val_correct"], info["val_n"])


def mcnemar(before: np.ndarray, after: np.ndarray) -> tuple[int, int, bool]:
    """(examples lost, examples gained, whether the loss is beyond two standard deviations of chance)."""
    b, c = int(np.sum(before & ~after)), int(np.sum(~before & after))
    return b, c, (b - c > 2 * math.sqrt(b + c)) if b + c else False


def judge(policy: str, tolerance: float, before: np.ndarray | None, after: np.ndarray | None) -> GuardVerdict | None:
    """The verdict on one step (None when either side has no validation outcome to compare)."""
    if before is None or after is None or len(before) != len(after):
        return None
    b, c, significant = mcnemar(before, after)
    drop = (float(before.mean()) - float(after.mean())) * 100
    detectable = 100.0 * 2.0 * math.sqrt(b + c) / len(before)
    regressed = drop > tolerance and significant
    detail = (
        f"validation top-1 {before.mean():.2%} -> {after.mean():.2%} ({-drop:+.2f} points, tolerance "
        f"{tolerance:.2f}; {b} examples lost, {c} gained)"
    )
    return GuardVerdict(
        policy=policy,
        tolerance_points=tolerance,
        val_accuracy_before=float(before.mean()),
        val_accuracy_after=float(after.mean()),
        drop_points=drop,
        examples_lost=b,
        examples_gained=c,
        detectable_points=detectable,
        regressed=regressed,
        action=ACTIONS[policy] if regressed else "none",
        detail=detail,
    )
