"""The search benchmark's verdicts on made-up runs (``benchmarks.search_bench.judge``) and its targets file."""

from __future__ import annotations

from benchmarks import search_bench

TARGETS = {"max_minutes": 60, "max_drop_points": 1.0, "dominates": ["fashion_mnist"]}


def _run(kind="fashion_mnist", *, chosen=None, teacher=0.92):
    ref = {"trial": 0, "test_accuracy": 0.917, "test_low": 0.9115, "test_high": 0.9223, "gzip_bytes": 13_000}
    c = {**ref, **(chosen or {})}
    return {"kind": kind, "teacher_test_accuracy": teacher, "reference": ref, "chosen": c}


def test_targets_file_has_the_search_targets():
    t = search_bench.load_targets()
    assert t["max_minutes"] == 60 and t["max_drop_points"] == 1.0 and t["dominates"] == ["fashion_mnist"]


def test_dominating_the_pipeline_as_written():
    smaller_within_chance = {
        "trial": 3,
        "gzip_bytes": 11_500,
        "test_accuracy": 0.9160,
        "test_vs_reference": "within chance",
    }
    v = search_bench.judge(_run(chosen=smaller_within_chance), TARGETS)
    assert all(v.values()), v
    # smaller but worse beyond chance on the test split: does not dominate
    v = search_bench.judge(_run(chosen={**smaller_within_chance, "test_vs_reference": "worse"}), TARGETS)
    assert not v["dominates the pipeline as written (gzip smaller, test accuracy not lower beyond chance)"]
    # trial 0 itself never dominates itself
    v = search_bench.judge(_run(), TARGETS)
    assert not v["dominates the pipeline as written (gzip smaller, test accuracy not lower beyond chance)"]
    # on digits nothing needs dominating, and trial 0 may be the answer
    assert all(search_bench.judge(_run("digits", teacher=0.92), TARGETS).values())


def test_drop_below_the_teacher_and_below_the_interval_of_trial_0():
    v = search_bench.judge(_run("digits", teacher=0.93), TARGETS)  # 1.3 points below the teacher
    assert not v["at most 1 point below the teacher"]
    v = search_bench.judge(_run("digits", chosen={"trial": 2, "test_accuracy": 0.911}), TARGETS)
    assert not v["not below the pipeline as written beyond its 95% interval"]  # 0.911 < 0.9115
    assert search_bench.judge({"kind": "digits", "chosen": None, "reference": None}, TARGETS) == {
        "a model was chosen": False
    }
