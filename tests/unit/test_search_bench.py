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


def test_a_recorded_search_is_not_run_again(tmp_path, monkeypatch):
    """``--recorded KIND:SEED:MINUTES`` takes a finished search from its outputs; the bench runs only the
    others, and the whole run's minutes are the sum of the searches'."""
    ran, recorded = [], []

    def fake(kind, seed, minutes):
        run = _run(kind)
        run.update(name=f"{kind}_s{seed}", seed=seed, minutes=minutes, selection=None, stopped_at_rung=0)
        run["counts"] = {"done": 3, "pruned": 0}
        return run

    def record(kind, seed, path, out, build, minutes):
        recorded.append((kind, seed))
        return fake(kind, seed, minutes)

    def run_one(kind, seed, out, build):
        ran.append((kind, seed))
        return fake(kind, seed, 2.5)

    monkeypatch.setattr(search_bench, "record", record)
    monkeypatch.setattr(search_bench, "run_one", run_one)
    monkeypatch.setattr(search_bench, "pipeline_file", lambda kind, seed, build: tmp_path / f"{kind}_s{seed}.yaml")
    argv = ["--out", str(tmp_path / "out"), "--build", str(tmp_path / "build"), "--only", "digits"]
    search_bench.main([*argv, "--recorded", "digits:42:3.5"])
    assert recorded == [("digits", 42)] and ran == [("digits", 43)]
    result = (tmp_path / "out" / "results.md").read_text()
    assert "Whole run: 6.0 minutes" in result and "digits_s42" in result and "digits_s43" in result


def test_every_search_has_a_time_budget_and_the_table_says_when_it_stopped_trials(tmp_path):
    """The bench's hour holds whatever the sampler draws only if every search has a budget (search.minutes,
    written into the pipeline file it searches, so `edgeopt search` of that file reproduces it)."""
    import yaml

    assert all(run["search"]["minutes"] > 0 for run in search_bench.RUNS.values())
    path = search_bench.pipeline_file("digits", 43, tmp_path)
    assert yaml.safe_load(path.read_text())["search"]["minutes"] == search_bench.RUNS["digits"]["search"]["minutes"]

    run = _run("fashion_mnist", chosen={"trial": 2, "test_vs_reference": "within chance"})
    run.update(name="fashion_mnist_s42", seed=42, minutes=12.5, selection=None, stopped_at_rung=0)
    run["counts"] = {"done": 3, "pruned": 0}
    run["chosen"]["test_vs_reference_points"] = -0.1
    run["verdicts"] = search_bench.judge(run, TARGETS)
    result = {"host": {"describe": "test host"}, "targets": TARGETS, "suite_pair": "mlp_digits", "runs": [run]}
    result.update(minutes=12.5, within_time=True, all_met=False)
    run["budget"] = {"trials": 5, "ran": 3, "minutes": 10, "minutes_taken": 12.1, "stopped_by_time": True}
    assert "| 3 / 0 (0); 10-minute budget: 3 of 5 run |" in search_bench.markdown(result)
    run["budget"] = {**run["budget"], "ran": 5, "stopped_by_time": False}
    assert "budget" not in search_bench.markdown(result)
