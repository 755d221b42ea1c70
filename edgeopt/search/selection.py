"""Telling signal from noise: the confidence interval of a trial's accuracy, the paired test of a trial
against the pipeline as written (trial 0, the reference), how much data a difference needs, the rule
that promotes a trial from one rung of fine-tuning length to the next, and the rule that picks
``best.yaml``. Pure functions of figures, tested on made-up ones: no TensorFlow, no Optuna.

Two trials are scored on the same validation examples, so they are compared as the stage guard compares
a stage's input and output (McNemar's test): of the examples only one of them gets right, one side must
win by more than two standard deviations of chance, ``|gained - lost| > 2 sqrt(gained + lost)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeopt.pipeline.guard import TYPICAL_CHANGED, examples_needed, mcnemar

Z = 1.96  # 95% two-sided, the confidence of every interval the search reports


def wilson(correct: int, n: int, z: float = Z) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``correct / n`` (sound near 0 and 1, unlike +-2 SE)."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p: at 0 or n of n, rounding would otherwise put a bound a hair inside it
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


@dataclass(frozen=True)
class Paired:
    """A candidate against the reference on the same ``n`` examples: ``lost`` are right for the reference
    only, ``gained`` for the candidate only."""

    n: int
    lost: int
    gained: int

    @property
    def diff_points(self) -> float:
        """Candidate minus reference, accuracy points."""
        return 100.0 * (self.gained - self.lost) / self.n if self.n else 0.0

    @property
    def chance_points(self) -> float:
        """How far apart (points) the two must be to differ beyond chance: 2 sqrt(lost + gained) / n."""
        return 100.0 * 2.0 * math.sqrt(self.lost + self.gained) / self.n if self.n else math.inf

    @property
    def worse(self) -> bool:
        return mcnemar_loss(self.lost, self.gained)

    @property
    def better(self) -> bool:
        return mcnemar_loss(self.gained, self.lost)

    @property
    def verdict(self) -> str:
        return "better" if self.better else "worse" if self.worse else "within chance"

    def describe(self) -> str:
        return (
            f"{self.diff_points:+.2f} points vs the pipeline as written on {self.n:,} examples ({self.gained} gained, "
            f"{self.lost} lost): {self.verdict}"
            + ("" if self.verdict != "within chance" else f" (beyond chance takes {self.chance_points:.2f})")
        )


def mcnemar_loss(lost: int, gained: int) -> bool:
    """The stage guard's rule: a loss beyond two standard deviations of chance."""
    return lost - gained > 2 * math.sqrt(lost + gained) if lost + gained else False


def paired(reference: np.ndarray, candidate: np.ndarray) -> Paired:
    """The paired comparison of two per-example outcomes on the same examples (``guard.mcnemar``)."""
    if len(reference) != len(candidate):
        raise ValueError(f"paired test on {len(reference)} and {len(candidate)} examples: not the same examples")
    lost, gained, _ = mcnemar(np.asarray(reference, bool), np.asarray(candidate, bool))
    return Paired(len(reference), lost, gained)


def folds_needed(n_val: int, available: int, points: float, max_folds: int, changed: float = TYPICAL_CHANGED) -> int:
    """How many validation folds of ``n_val`` examples, besides the validation split, it takes to tell
    ``points`` of accuracy from chance in a paired test (``guard.examples_needed``), at most ``max_folds`` and
    the ``available - 1`` other folds the data holds; 0 when the validation split alone is enough. The split
    that ranked the trials is not one of them: a candidate is there because it scored well on it."""
    if n_val <= 0:
        return 0
    needed = math.ceil(examples_needed(points, changed) / n_val)
    return 0 if needed <= 1 else max(0, min(max_folds, available - 1, needed))


# ---- rungs: successive halving over fine-tuning length --------------------------------------------------


def top_share(value: float, others: list[float], eta: int) -> tuple[bool, float]:
    """Asynchronous successive halving on the accuracy objective (what Optuna's SuccessiveHalvingPruner does
    for one objective): (whether ``value`` is in the top 1/eta of the values at this rung, the value it had
    to reach). Until eta trials have reached the rung, only the best so far goes on."""
    values = sorted([*others, value], reverse=True)
    needed = values[max(1, len(values) // eta) - 1]
    return value >= needed, needed


def promote(
    value: float,
    others: list[float],
    eta: int,
    *,
    against_reference: Paired | None = None,
    on_track: bool | None = None,
    reference_pending: bool = False,
) -> tuple[bool, str]:
    """Whether a trial goes on from a rung, and why. It does when its validation accuracy there is in the
    top 1/eta of the trials at that rung, or when it is not below the pipeline as written at the same rung
    beyond chance (``against_reference``: the paired test there; the search never stops a trial that is
    still as good as what the user started from), or when ``on_track`` (the caller's judgement that the
    trial, gaining what the reference gains from this rung to the full length, meets the accuracy floor), or
    when ``reference_pending`` (the pipeline as written is still running and has not reached this rung: with
    parallel workers a trial can get there first, and the few other trials there say nothing of whether it is
    below what the user started from)."""
    top, needed = top_share(value, others, eta)
    n = len(others) + 1
    if top:
        return True, f"validation accuracy {value:.4f} is in the top 1/{eta} of {n} trial(s) at this rung"
    if reference_pending:
        return True, (
            f"validation accuracy {value:.4f} is not in the top 1/{eta} of {n} trial(s) at this rung, but the"
            " pipeline as written has not reached it yet"
        )
    if against_reference is not None and not against_reference.worse:
        return True, f"not below the pipeline as written at this rung beyond chance ({against_reference.describe()})"
    if on_track:
        return True, f"validation accuracy {value:.4f} is on track for the accuracy floor"
    why = f"validation accuracy {value:.4f} is not in the top 1/{eta} of {n} trial(s) at this rung (needs {needed:.4f})"
    if against_reference is not None:
        why += f" and is below the pipeline as written beyond chance ({against_reference.describe()})"
    return False, why


# ---- best.yaml -----------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A complete trial as the selection sees it."""

    number: int
    metric: float  # the figure of the selection rule (select:)
    accuracy: float  # validation top-1
    feasible: bool
    correct: np.ndarray | None = None  # per-example outcome on the validation split


@dataclass
class Choice:
    """What the selection decided: the chosen trial (None: nothing feasible), why, and a verdict on each
    candidate it looked at (for the trials table)."""

    chosen: int | None
    why: str
    notes: dict[int, str] = field(default_factory=dict)
    remeasured: dict[int, float] = field(default_factory=dict)  # trial -> accuracy over the folds


def rank_key(c: Candidate, maximize: bool) -> tuple[float, float, int]:
    """The selection rule's order: the least metric (the most, for accuracy), then the higher accuracy,
    then the earlier trial."""
    return (-c.metric if maximize else c.metric, -c.accuracy, c.number)


def ahead_of(c: Candidate, ref: Candidate, maximize: bool) -> bool:
    """Whether ``c`` comes before the reference by the rule (before any test of chance)."""
    return rank_key(c, maximize)[:2] < rank_key(ref, maximize)[:2]


def replaces(
    ref_correct: np.ndarray | None,
    cand_correct: np.ndarray | None,
    *,
    ref_metric: float,
    cand_metric: float,
    maximize: bool,
    tolerance: float = 0.0,
) -> tuple[bool, str]:
    """The significance rule: does a candidate replace the pipeline as written? With a size or speed rule,
    one strictly smaller (faster) replaces it unless its accuracy is lower beyond chance by more than
    ``tolerance`` points (the stage guard's own rule: the pipeline keeps a compressing stage that loses at
    most its ``regression_tolerance``, so a smaller configuration is judged the same way), and one as large
    only when its accuracy is higher beyond chance; with the accuracy rule, only a higher accuracy beyond
    chance does. Paired on the same examples; without per-example outcomes nothing replaces it."""
    if ref_correct is None or cand_correct is None:
        return False, "no per-example outcomes to compare on the same examples"
    p = paired(ref_correct, cand_correct)
    if not maximize and cand_metric < ref_metric:
        if p.worse and -p.diff_points <= tolerance:
            return True, f"{p.describe()}, within the {tolerance:g}-point tolerance of a smaller model"
        return not p.worse, p.describe()
    return p.better, p.describe()


def choose(
    reference: Candidate | None,
    candidates: list[Candidate],
    *,
    maximize: bool,
    floor: float | None = None,
    remeasured_floor: Callable[[], float | None] | None = None,
    recheck: int = 3,
    remeasure: Callable[[Candidate], np.ndarray | None] | None = None,
    tolerance: float = 0.0,
) -> Choice:
    """``best.yaml``'s trial. The feasible candidates ahead of the reference by the rule, in the rule's order,
    are tested against the reference on the validation split (``replaces``); when ``remeasure`` is given (the
    validation split is too small for the difference that matters), the first ``recheck`` of those that pass
    are measured again on more data (``remeasure(candidate)``: per-example outcomes pooled over the folds, the
    reference's on the same examples) and must pass again there, and meet the accuracy floor there too
    (``remeasured_floor()``, asked once when first needed: the teacher's own accuracy on the folds may take
    training; default ``floor``).
    The first that passes is chosen; else the reference when it is feasible; else none. A re-measured candidate
    below the floor may still replace a reference that is below it too on the same examples, if at least as
    accurate there (the reference was feasible on the validation split only), but only when no other
    re-measured candidate meets the floor: one that does comes first, whatever its place in the rule. Without a feasible
    reference every feasible candidate is ahead of it and only the floor (re-measured) is judged.
    ``tolerance``: the points a smaller candidate may lose beyond chance (``replaces``)."""
    ref_ok = reference is not None and reference.feasible
    pool = sorted(
        (c for c in candidates if c.feasible and (not ref_ok or ahead_of(c, reference, maximize))),  # type: ignore[arg-type]
        key=lambda c: rank_key(c, maximize),
    )
    notes: dict[int, str] = {}
    passed = []
    for c in pool:
        if ref_ok:
            ok, why = replaces(
                reference.correct,  # type: ignore[union-attr]
                c.correct,
                ref_metric=reference.metric,  # type: ignore[union-attr]
                cand_metric=c.metric,
                maximize=maximize,
                tolerance=tolerance,
            )
            notes[c.number] = f"validation split: {why}"
            if not ok:
                continue
        passed.append(c)
    fallback = Choice(
        reference.number if ref_ok else None,  # type: ignore[union-attr]
        "no trial beat the pipeline as written by more than chance: best.yaml is the pipeline as written"
        if ref_ok
        else "no trial met every constraint",
        notes,
    )
    if remeasure is None:
        if not passed:
            return fallback
        c = passed[0]
        why = "the first trial by the rule that beats the pipeline as written beyond chance"
        return Choice(c.number, why if ref_ok else "the first feasible trial by the rule", notes)
    remeasured: dict[int, float] = {}
    below_floor: Choice | None = None  # the first candidate that replaces a reference below the floor
    ref_pooled: list[np.ndarray | None] = []  # measured once, and only when a candidate needs it
    pooled_floor: list[float | None] = []  # asked once

    def reference_pooled() -> np.ndarray | None:
        if not ref_pooled:
            ref_pooled.append(remeasure(reference))  # type: ignore[arg-type,misc]
            if ref_pooled[0] is None:
                fallback.why += " (the pipeline as written could not be re-measured)"
            else:
                remeasured[reference.number] = float(ref_pooled[0].mean())  # type: ignore[union-attr]
        return ref_pooled[0]

    for c in passed[:recheck]:
        pooled = remeasure(c)
        if pooled is None:
            notes[c.number] = (notes.get(c.number, "") + "; could not be re-measured").lstrip("; ")
            continue
        remeasured[c.number] = acc = float(pooled.mean())
        if not pooled_floor:
            pooled_floor.append(remeasured_floor() if remeasured_floor is not None else floor)
        low = pooled_floor[0] is not None and acc < pooled_floor[0]
        if low:
            note = f"re-measured on {len(pooled):,} examples: {acc:.4f}, below the floor {pooled_floor[0]:.4f}"
            # Below the floor, a candidate still replaces a pipeline as written that is below it too (it was
            # feasible on the validation split only): judged against it, and only if at least as accurate.
            ref_acc = None
            if ref_ok:
                if reference_pooled() is None:
                    break
                ref_acc = remeasured[reference.number]  # type: ignore[union-attr]
            if ref_acc is None or ref_acc >= pooled_floor[0] or acc < ref_acc:  # type: ignore[operator]
                notes[c.number] = (notes.get(c.number, "") + "; " + note).lstrip("; ")
                continue
            notes[c.number] = (
                notes.get(c.number, "") + f"; {note}, as is the pipeline as written ({ref_acc:.4f})"
            ).lstrip("; ")
        if ref_ok:
            ref = reference_pooled()
            if ref is None:
                break
            ok, why = replaces(
                ref,
                pooled,
                ref_metric=reference.metric,  # type: ignore[union-attr]
                cand_metric=c.metric,
                maximize=maximize,
                tolerance=tolerance,
            )
            notes[c.number] = notes.get(c.number, "") + f"; re-measured: {why}"
            if not ok:
                continue
        else:
            notes[c.number] = f"re-measured on {len(pooled):,} examples: {acc:.4f}"
        why = (
            "the first trial by the rule at least as accurate as the pipeline as written re-measured on more data, "
            "where neither meets the accuracy floor (nor any other candidate re-measured)"
            if low
            else "the first trial by the rule that beats the pipeline as written beyond chance, on the validation "
            "split and re-measured on more data, and meets the accuracy floor there"
            if ref_ok
            else "the first feasible trial by the rule that meets the accuracy floor re-measured on more data"
        )
        if low:  # kept while a later candidate may still meet the floor
            below_floor = below_floor or Choice(c.number, why, notes, remeasured)
            continue
        return Choice(c.number, why, notes, remeasured)
    if below_floor is not None:
        return below_floor
    ref_acc = remeasured.get(reference.number) if ref_ok else None  # type: ignore[union-attr]
    if ref_acc is not None and pooled_floor and pooled_floor[0] is not None and ref_acc < pooled_floor[0]:
        fallback.why += f" (re-measured on more data it scores {ref_acc:.4f}, below the floor {pooled_floor[0]:.4f})"
    if not ref_ok and passed:
        fallback.why = (
            f"no trial met every constraint when re-measured on more data ({len(passed[:recheck])} re-measured)"
        )
    fallback.remeasured = remeasured
    return fallback
