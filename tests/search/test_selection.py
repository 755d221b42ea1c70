"""Telling signal from noise on made-up figures: the interval of an accuracy, the significance rule that
lets a trial replace the pipeline as written (both sides of it), the selection with and without a
re-measurement, the rung promotion rule on made-up trial curves, and the folds a difference needs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.search import selection
from edgeopt.search.selection import Candidate


def outcomes(n: int, right: int, *, swap: tuple[int, int] = (0, 0), base: np.ndarray | None = None) -> np.ndarray:
    """``n`` examples, the first ``right`` correct; or ``base`` with ``swap = (lost, gained)`` examples turned:
    ``lost`` of its right ones wrong and ``gained`` of its wrong ones right."""
    if base is None:
        out = np.zeros(n, bool)
        out[:right] = True
        return out
    out = base.copy()
    out[np.flatnonzero(base)[: swap[0]]] = False
    out[np.flatnonzero(~base)[: swap[1]]] = True
    return out


REF = outcomes(144, 130)  # the pipeline as written: 130 of 144 validation images


def test_wilson_interval():
    lo, hi = selection.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert selection.wilson(0, 20)[0] == 0.0 and selection.wilson(20, 20)[1] == 1.0
    # on 144 images (digits) the 95% interval of 97.9% is 5 points wide; on 6,000 (Fashion-MNIST) under 1.5
    lo, hi = selection.wilson(141, 144)
    assert 4.5 < (hi - lo) * 100 < 6.5
    lo, hi = selection.wilson(5_541, 6_000)
    assert (hi - lo) * 100 < 1.5


def test_paired_counts_and_verdicts():
    p = selection.paired(REF, outcomes(0, 0, base=REF, swap=(12, 2)))
    assert (p.n, p.lost, p.gained) == (144, 12, 2) and p.diff_points == pytest.approx(-10 / 144 * 100)
    assert p.worse and not p.better and p.verdict == "worse"  # 10 > 2 sqrt(14) = 7.5
    p = selection.paired(REF, outcomes(0, 0, base=REF, swap=(5, 2)))
    assert p.verdict == "within chance"  # 3 < 2 sqrt(7) = 5.3
    p = selection.paired(REF, outcomes(0, 0, base=REF, swap=(0, 9)))
    assert p.better and p.verdict == "better"  # 9 > 2 sqrt(9) = 6
    with pytest.raises(ValueError, match="not the same examples"):
        selection.paired(REF, REF[:100])


@pytest.mark.parametrize(
    ("swap", "cand_metric", "replaces"),
    [
        ((5, 2), 900, True),  # smaller, 3 images worse: within chance -> replaces
        ((12, 2), 900, False),  # smaller, 10 images worse: beyond chance -> does not
        ((0, 3), 1000, False),  # as large, 3 images better: within chance -> does not
        ((0, 9), 1000, True),  # as large, 9 images better: beyond chance -> replaces
        ((0, 9), 1100, True),  # larger is never ahead of the reference by the rule; choose() filters it out
    ],
)
def test_significance_rule_with_a_size_rule(swap, cand_metric, replaces):
    ok, why = selection.replaces(
        REF, outcomes(0, 0, base=REF, swap=swap), ref_metric=1000, cand_metric=cand_metric, maximize=False
    )
    assert ok is replaces, why


@pytest.mark.parametrize(("swap", "replaces"), [((0, 3), False), ((1, 4), False), ((0, 9), True), ((2, 14), True)])
def test_significance_rule_with_the_accuracy_rule(swap, replaces):
    cand = outcomes(0, 0, base=REF, swap=swap)
    ok, _ = selection.replaces(REF, cand, ref_metric=0.9, cand_metric=float(cand.mean()), maximize=True)
    assert ok is replaces


def test_a_smaller_candidate_may_lose_the_tolerance_beyond_chance_and_no_more():
    # 6,000 validation examples, as Fashion-MNIST's: 30 lost and 6 gained is -0.40 points, beyond chance
    ref = outcomes(6000, 5560)
    lost_04 = outcomes(0, 0, base=ref, swap=(30, 6))
    assert selection.paired(ref, lost_04).worse
    ok, why = selection.replaces(ref, lost_04, ref_metric=1000, cand_metric=900, maximize=False, tolerance=0.5)
    assert ok and "within the 0.5-point tolerance" in why, why
    ok, _ = selection.replaces(ref, lost_04, ref_metric=1000, cand_metric=900, maximize=False)
    assert not ok  # no tolerance: the old rule
    lost_06 = outcomes(0, 0, base=ref, swap=(42, 6))  # -0.60 points
    ok, why = selection.replaces(ref, lost_06, ref_metric=1000, cand_metric=900, maximize=False, tolerance=0.5)
    assert not ok and "worse" in why, why
    # as large, or the accuracy rule: the tolerance does not apply
    ok, _ = selection.replaces(ref, lost_04, ref_metric=1000, cand_metric=1000, maximize=False, tolerance=0.5)
    assert not ok
    ok, _ = selection.replaces(ref, lost_04, ref_metric=0.93, cand_metric=0.926, maximize=True, tolerance=0.5)
    assert not ok


def test_choose_passes_the_tolerance_on_and_keeps_the_rule_order():
    ref = outcomes(6000, 5560)
    smallest = _cand(1, 800, outcomes(0, 0, base=ref, swap=(42, 6)))  # -0.60: out
    next_ = _cand(2, 850, outcomes(0, 0, base=ref, swap=(30, 6)))  # -0.40: in
    choice = selection.choose(_cand(0, 1000, ref), [smallest, next_], maximize=False, tolerance=0.5)
    assert choice.chosen == 2, choice
    choice = selection.choose(_cand(0, 1000, ref), [smallest, next_], maximize=False)
    assert choice.chosen == 0, choice


def test_no_outcomes_no_replacement():
    ok, why = selection.replaces(None, REF, ref_metric=1000, cand_metric=10, maximize=False)
    assert not ok and "no per-example outcomes" in why


def _cand(number, metric, correct, feasible=True):
    return Candidate(number, metric, float(correct.mean()), feasible, correct)


def test_choose_takes_the_first_by_the_rule_that_beats_the_reference():
    ref = _cand(0, 1000, REF)
    much_worse = _cand(1, 600, outcomes(0, 0, base=REF, swap=(20, 0)))  # smallest, but loses 20 images
    close = _cand(2, 800, outcomes(0, 0, base=REF, swap=(4, 2)))
    closer = _cand(3, 900, REF.copy())
    infeasible = _cand(4, 500, REF.copy(), feasible=False)
    larger = _cand(5, 1200, outcomes(0, 0, base=REF, swap=(0, 10)))
    c = selection.choose(ref, [much_worse, close, closer, infeasible, larger], maximize=False)
    assert c.chosen == 2, c
    assert "worse" in c.notes[1] and "within chance" in c.notes[2]
    assert 4 not in c.notes and 5 not in c.notes  # infeasible, and behind the reference by the rule
    # nothing beats it: the pipeline as written
    c = selection.choose(ref, [much_worse, larger], maximize=False)
    assert c.chosen == 0 and "pipeline as written" in c.why
    # a reference that fails a constraint: the first feasible trial by the rule, however it compares
    c = selection.choose(_cand(0, 1000, REF, feasible=False), [much_worse, close], maximize=False)
    assert c.chosen == 1
    # nothing feasible at all
    c = selection.choose(None, [infeasible], maximize=False)
    assert c.chosen is None and "no trial met every constraint" in c.why


def test_choose_remeasures_and_can_change_its_mind():
    """On a small split the passing candidates are measured again (pooled over folds, with the reference on
    the same examples) and must pass again; the reference is measured once, and only when needed."""
    ref = _cand(0, 1000, REF)
    lucky = _cand(1, 700, REF.copy())  # as good on the one split...
    solid = _cand(2, 800, REF.copy())
    pooled_ref = outcomes(576, 520)
    pooled = {
        0: pooled_ref,
        1: outcomes(0, 0, base=pooled_ref, swap=(30, 5)),  # ... but 25 images worse on four folds
        2: outcomes(0, 0, base=pooled_ref, swap=(8, 6)),
    }
    calls = []

    def remeasure(c):
        calls.append(c.number)
        return pooled[c.number]

    c = selection.choose(ref, [lucky, solid], maximize=False, remeasure=remeasure)
    assert c.chosen == 2 and calls == [1, 0, 2], (c, calls)
    assert "re-measured" in c.notes[1] and "worse" in c.notes[1]
    assert c.remeasured == {1: pytest.approx(495 / 576), 0: pytest.approx(520 / 576), 2: pytest.approx(518 / 576)}
    # recheck=1: only the first is re-measured; it fails, so the pipeline as written stays
    calls.clear()
    c = selection.choose(ref, [lucky, solid], maximize=False, recheck=1, remeasure=remeasure)
    assert c.chosen == 0 and calls == [1, 0]
    # a floor judged on the re-measurement too
    calls.clear()
    c = selection.choose(ref, [lucky, solid], maximize=False, floor=0.95, remeasure=remeasure)
    assert c.chosen == 0 and "below the floor" in c.notes[2] and calls == [1, 0, 2]
    assert "scores 0.9028, below the floor 0.9500" in c.why  # trial 0 too, but more accurate than both
    # below the floor with trial 0 below it too: the candidate at least as accurate as trial 0 there replaces it
    calls.clear()
    c = selection.choose(ref, [lucky, solid], maximize=False, floor=0.903, remeasure=remeasure)
    assert c.chosen == 0, c  # 2 (0.8993) is less accurate than trial 0 (0.9028): both below 0.903
    pooled[2] = outcomes(0, 0, base=pooled_ref, swap=(2, 6))  # 524/576 = 0.9097, still below 0.92
    c = selection.choose(ref, [lucky, solid], maximize=False, floor=0.92, remeasure=remeasure)
    assert c.chosen == 2 and "neither meets the accuracy floor" in c.why, c
    assert "as is the pipeline as written (0.9028)" in c.notes[2]
    # trial 0 meets the floor on the folds: a candidate below it never replaces it
    pooled[2] = outcomes(0, 0, base=pooled_ref, swap=(8, 6))  # 518/576 = 0.8993, below 0.90; trial 0 0.9028
    c = selection.choose(ref, [lucky, solid], maximize=False, floor=0.9, remeasure=remeasure)
    assert c.chosen == 0 and c.notes[2].endswith("below the floor 0.9000"), c
    # nothing passes on the validation split: nothing is re-measured
    calls.clear()
    worse = _cand(3, 700, outcomes(0, 0, base=REF, swap=(20, 0)))
    assert selection.choose(ref, [worse], maximize=False, remeasure=remeasure).chosen == 0 and calls == []


def test_a_candidate_that_meets_the_floor_comes_before_one_below_it():
    """With trial 0 below the floor on the folds, a smaller candidate below it too (but more accurate than
    trial 0) is chosen only when no other re-measured candidate meets the floor (digits, seed 43: the first
    by the rule, 0.19 points over a floor it missed on fresh folds, shipped 1.67 points below the teacher)."""
    ref = _cand(0, 1000, REF)
    small = _cand(1, 700, REF.copy())
    larger = _cand(2, 800, REF.copy())
    pooled_ref = outcomes(576, 520)  # 0.9028, below the floor of 0.91
    pooled = {
        0: pooled_ref,
        1: outcomes(0, 0, base=pooled_ref, swap=(2, 6)),  # 524/576 = 0.9097: below 0.91, above trial 0
        2: outcomes(0, 0, base=pooled_ref, swap=(0, 10)),  # 530/576 = 0.9201: meets it
    }
    c = selection.choose(ref, [small, larger], maximize=False, floor=0.91, remeasure=lambda c: pooled[c.number])
    assert c.chosen == 2 and "meets the accuracy floor there" in c.why, c
    assert "below the floor 0.9100, as is the pipeline as written (0.9028)" in c.notes[1]
    assert c.remeasured == {1: pytest.approx(524 / 576), 0: pytest.approx(520 / 576), 2: pytest.approx(530 / 576)}
    # only the smaller one re-measured: nothing meets the floor, so it replaces trial 0 below the floor
    c = selection.choose(
        ref, [small, larger], maximize=False, floor=0.91, recheck=1, remeasure=lambda c: pooled[c.number]
    )
    assert c.chosen == 1 and "neither meets the accuracy floor" in c.why, c
    # neither re-measured candidate meets it: the first by the rule of those at least as accurate as trial 0
    pooled[2] = outcomes(0, 0, base=pooled_ref, swap=(0, 3))  # 523/576 = 0.9080
    c = selection.choose(ref, [small, larger], maximize=False, floor=0.91, remeasure=lambda c: pooled[c.number])
    assert c.chosen == 1 and "neither meets the accuracy floor" in c.why, c


def test_the_remeasured_floor_is_asked_once_and_only_when_needed():
    """On the folds the floor is the teachers' own accuracy there (it may take training a teacher per fold):
    asked once, after the first re-measurement, and it decides over the validation split's floor."""
    ref = _cand(0, 1000, REF)
    small = _cand(1, 700, REF.copy())
    smaller = _cand(2, 600, REF.copy())
    pooled_ref = outcomes(576, 540)
    pooled = {
        0: pooled_ref,
        1: outcomes(0, 0, base=pooled_ref, swap=(4, 4)),
        2: outcomes(0, 0, base=pooled_ref, swap=(30, 0)),
    }
    asked = []

    def floor():
        asked.append(1)
        return 0.92

    c = selection.choose(
        ref, [small, smaller], maximize=False, floor=0.5, remeasured_floor=floor, remeasure=lambda c: pooled[c.number]
    )
    assert c.chosen == 1 and asked == [1], (c, asked)  # 2: 510/576 = 0.885 on the folds, below 0.92
    assert "below the floor 0.9200" in c.notes[2]
    asked.clear()  # nothing passes on the validation split: nothing re-measured, the floor never asked
    worse = _cand(3, 700, outcomes(0, 0, base=REF, swap=(20, 0)))
    assert selection.choose(ref, [worse], maximize=False, remeasured_floor=floor, remeasure=lambda c: None).chosen == 0
    assert asked == []


def test_top_share_is_asynchronous_successive_halving():
    assert selection.top_share(0.5, [], 3) == (True, 0.5)  # the first trial at a rung goes on
    assert selection.top_share(0.7, [0.8], 3) == (False, 0.8)  # fewer than eta: only the best so far
    assert selection.top_share(0.8, [0.8, 0.7], 3)[0]
    # 6 at the rung: the top 2 go on
    assert selection.top_share(0.75, [0.9, 0.8, 0.7, 0.6, 0.5], 3) == (False, 0.8)
    assert selection.top_share(0.85, [0.9, 0.8, 0.7, 0.6, 0.5], 3) == (True, 0.85)


def test_rung_promotion_on_made_up_trial_curves():
    """Trials arrive one after the other, each with its validation accuracy at rungs 0, 1 and 2 (the full
    length). Trial 0 is the pipeline as written. Successive halving stops the weak early, but never one
    that is still as good as the reference at its rung (within chance)."""
    n = 6000
    ref_curve = [0.80, 0.86, 0.90]
    curves = {
        1: [0.60, 0.70, 0.75],  # weak from the start: stopped at rung 0
        2: [0.82, 0.87, 0.91],  # better than the reference all along: full length
        3: [0.797, 0.858, 0.899],  # a little below the reference (within chance): promoted although not top
        4: [0.70, 0.80, 0.85],  # below the reference beyond chance and not top: stopped
        5: [0.90, 0.83, 0.92],  # top at rung 0, falls behind at rung 1 (below the reference beyond chance)
    }

    def correct(acc, base):
        # the reference's outcomes with 90 examples changed each way (two models disagree on about 3% of
        # the examples) plus what the accuracy difference needs
        k = round(acc * n) - int(base.sum())
        return outcomes(0, 0, base=base, swap=(90 + max(0, -k), 90 + max(0, k)))

    seen: dict[int, list[float]] = {0: [], 1: []}
    reached = {}
    for number in sorted(curves):
        for rung in (0, 1):
            ref_correct = outcomes(n, round(ref_curve[rung] * n))
            acc = curves[number][rung]
            against = selection.paired(ref_correct, correct(acc, ref_correct))
            others = [ref_curve[rung], *seen[rung]]
            ok, why = selection.promote(acc, others, 3, against_reference=against)
            seen[rung].append(acc)
            if not ok:
                reached[number] = rung
                break
        else:
            reached[number] = 2
    assert reached == {1: 0, 2: 2, 3: 2, 4: 0, 5: 1}, reached


def test_a_trial_ahead_of_the_pipeline_as_written_is_not_stopped_on_other_trials_alone():
    # two workers: trial 1 reaches the rung before trial 0 (the pipeline as written) and is below trial 2
    ok, why = selection.promote(0.8958, [0.9167], 3)
    assert not ok and "needs 0.9167" in why
    ok, why = selection.promote(0.8958, [0.9167], 3, reference_pending=True)
    assert ok and "has not reached it yet" in why
    # once the reference is there, the paired test decides
    worse = selection.paired(outcomes(144, 140), outcomes(144, 110))
    ok, why = selection.promote(0.76, [0.9167, 0.97], 3, against_reference=worse)
    assert not ok and "below the pipeline as written" in why


def test_on_track_promotes_a_trial_below_the_reference_when_the_reference_is_infeasible():
    ok, why = selection.promote(0.70, [0.9, 0.85, 0.8, 0.75], 3, on_track=True)
    assert ok and "on track" in why
    ok, why = selection.promote(0.70, [0.9, 0.85, 0.8, 0.75], 3, on_track=False)
    assert not ok and "needs 0.9000" in why


@pytest.mark.parametrize(
    ("n_val", "available", "points", "max_folds", "folds"),
    [
        (6000, 9, 1.0, 4, 0),  # Fashion-MNIST: 6,000 examples tell 1 point (1,200 needed) -> the split alone
        (6000, 9, 0.5, 4, 0),  # and half a point (4,800)
        (1000, 9, 1.0, 4, 2),  # 1,200 needed: the split is not one of the folds, so two more of 1,000
        (144, 9, 1.0, 4, 4),  # digits: 1,200 needed, 144 a fold -> 9, capped at 4
        (144, 9, 1.0, 3, 3),
        (144, 9, 2.0, 10, 3),  # 300 needed -> 3 folds
        (144, 3, 1.0, 4, 2),  # no more folds than the data holds besides the validation split
        (144, 1, 1.0, 4, 0),
        (0, 1, 1.0, 4, 0),
    ],
)
def test_folds_needed(n_val, available, points, max_folds, folds):
    assert selection.folds_needed(n_val, available, points, max_folds) == folds


def test_wilson_holds_its_proportion_at_the_ends():
    """At 0 or n of n the bound equals the proportion exactly (144 of 144 once gave 0.9999999999999999, and the
    Pareto plot's error bar went negative and stopped the search's report)."""
    for n in range(1, 400):
        for k in (0, 1, n - 1, n):
            lo, hi = selection.wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n)


def test_the_pareto_plot_takes_a_perfect_trial(tmp_path):
    from edgeopt.search.config import Objective
    from edgeopt.search.report import plot_pareto

    lo, hi = selection.wilson(144, 144)
    rows = [
        {"trial": 0, "state": "complete", "accuracy": 0.95, "accuracy_low": 0.90, "accuracy_high": 0.98,
         "feasible": True, "pareto": True, "gzip_bytes": 9000},
        {"trial": 1, "state": "complete", "accuracy": 1.0, "accuracy_low": lo, "accuracy_high": hi - 1e-16,
         "feasible": True, "pareto": True, "gzip_bytes": 8000},
    ]  # fmt: skip
    plot_pareto(tmp_path / "p.png", rows, [Objective.parse("accuracy"), Objective.parse("gzip_bytes")], 1, 0)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_the_tolerance_is_the_pipelines_stage_guard_tolerance_unless_the_search_sets_one():
    from edgeopt.pipeline.spec import PipelineConfig
    from edgeopt.search.config import SearchConfig
    from edgeopt.search.study import selection_tolerance
    from tests.search.conftest import PIPELINE

    pipe = PipelineConfig.model_validate({**PIPELINE, "regression_tolerance": 0.8})
    assert selection_tolerance(pipe, SearchConfig()) == 0.8
    assert selection_tolerance(pipe, SearchConfig(tolerance=0.0)) == 0.0
    assert selection_tolerance(PipelineConfig.model_validate(PIPELINE), SearchConfig()) == 0.5
