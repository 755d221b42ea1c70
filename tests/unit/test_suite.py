"""The model-family suite's arithmetic on made-up runs (no model trains): means over seeds, the verdict on
each target, the table, and the data it builds for ResNet-8."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import suite


def run(seed: int, *, acc: float, teacher: float = 0.92, nbytes: int = 20_000, gz: int = 9_000, passed: bool = True):
    return {
        "seed": seed,
        "passed": passed,
        "failed_gates": [] if passed else ["x"],
        "not_evaluated": [],
        "teacher_accuracy": teacher,
        "accuracy": acc,
        "drop_points": (teacher - acc) * 100,
        "teacher_bytes": 100_000,
        "teacher_gzip_bytes": 90_000,
        "bytes": nbytes,
        "gzip_bytes": gz,
        "raw_ratio": 100_000 / nbytes,
        "gzip_ratio": 90_000 / gz,
        "reverted": ["prune"] if seed == 43 else [],
        "kernel_cross_check": "3/9",
        "tflm_agreement": "2/9",
        "minutes": 4.0,
    }


TARGETS = {"max_minutes": 60, "max_drop_points": 1.0, "min_raw_ratio": 4.0, "min_gzip_ratio": 8.0}


def test_targets_are_judged_on_the_mean_of_the_seeds():
    ok = suite.summarize({"runs": [run(42, acc=0.915), run(43, acc=0.905)]}, TARGETS)  # 0.5 and 1.5 points: mean 1.0
    assert ok["drop_points"] == pytest.approx(1.0) and ok["met"] and ok["passed_runs"] == 2
    worse = suite.summarize({"runs": [run(42, acc=0.915), run(43, acc=0.9)]}, TARGETS)
    assert not worse["met"] and [k for k, v in worse["verdicts"].items() if not v] == [
        "at most 1 point below the teacher"
    ]


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"nbytes": 40_000}, "at least 4x smaller raw"),  # 2.5x and 5x: 3.75x on the mean
        ({"gz": 20_000}, "at least 8x smaller gzipped"),  # 4.5x and 10x: 7.25x
        ({"passed": False}, "strict release passes"),
    ],
)
def test_each_target_can_fail_alone(change, missed):
    s = suite.summarize({"runs": [run(42, acc=0.915, **change), run(43, acc=0.915)]}, TARGETS)
    assert [k for k, v in s["verdicts"].items() if not v] == [missed]


def test_the_table_names_what_a_pair_missed_and_what_the_guard_reverted():
    pair = {"title": "made-up pair", "note": "a note", "runs": [run(42, acc=0.915), run(43, acc=0.9)], "minutes": 9.0}
    pair["summary"] = suite.summarize(pair, TARGETS)
    r = {"host": {"describe": "a host"}, "pipeline": "p.yaml", "seeds": [42, 43], "targets": TARGETS, "pairs": [pair],
         "minutes": 9.0}  # fmt: skip
    md = suite.markdown(r)
    row = next(line for line in md.splitlines() if line.startswith("| made-up pair"))
    assert "| prune |" in row and "3/9, 2/9; 3/9, 2/9" in row and "missed: at most 1 point below the teacher" in row
    assert "- made-up pair: a note" in md and "Whole suite: 9.0 minutes (target 60)." in md
    assert "reference training step" not in md  # a run from before the probe says nothing of its host's speed
    r["host"]["reference_step_ms"] = [21.04, 26.8]
    assert "took 21.0 ms at the start and 26.8 ms at the end" in suite.markdown(r)


def test_the_reference_step_trains_the_default_student_in_a_child_process():
    ms = suite.reference_step_ms(steps=3, repeats=2)
    assert np.isfinite(ms) and ms > 0


def _fake_job_process(tmp_path, fail: frozenset[str] = frozenset(), sleep: dict[str, float] | None = None):
    """A stand-in for one job's process (a teacher or a seed's export): sleeps, notes when it ran, writes its
    result (or fails)."""
    sleep = sleep or {}

    def start(job, out, build, threads):
        logfile, result = job.files(build)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        figures = {"seconds": 1.0} if job.seed is None else {"seed": job.seed, "passed": True, "minutes": 0.01}
        code = (
            "import json, sys, time; t = time.time(); "
            f"time.sleep({sleep.get(job.name, 0.3)}); "
            f"open({str(tmp_path / ('span-' + job.name))!r}, 'w').write(f'{{t}} {{time.time()}}'); "
            + (
                "print('boom: a stage crashed'); sys.exit(3)"
                if job.name in fail
                else f"open({str(result)!r}, 'w').write(json.dumps({{**{figures!r}, 'threads': {threads}}}))"
            )
        )
        with logfile.open("wb") as f:
            return subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)

    return start


def _spans(tmp_path) -> dict[str, tuple[float, float]]:
    return {
        f.name.removeprefix("span-"): tuple(float(x) for x in f.read_text().split()) for f in tmp_path.glob("span-*")
    }


def test_the_pool_runs_teachers_first_seeds_after_their_teacher_at_most_jobs_at_once(tmp_path, monkeypatch):
    mlp, tiny = suite.PAIRS[4], suite.PAIRS[5]
    sleep = {"mlp_digits-teacher": 1.5, "tiny_cnn_digits-teacher": 0.3, "tiny_cnn_digits-s1": 2.0}
    monkeypatch.setattr(suite, "_start_job", _fake_job_process(tmp_path, sleep=sleep))
    monkeypatch.setattr(suite.os, "cpu_count", lambda: 2)
    res = suite.run_pool([mlp, tiny], tmp_path / "dist", tmp_path, [1, 2], jobs=2)
    assert [p["pair"] for p in res] == ["mlp_digits", "tiny_cnn_digits"]
    assert [[r["seed"] for r in p["runs"]] for p in res] == [[1, 2], [1, 2]]
    assert {r["threads"] for p in res for r in p["runs"]} == {1} and res[0]["teacher"]["threads"] == 1
    assert res[0]["jobs"] == 2 and res[0]["threads"] == 1 and res[0]["teacher"]["seconds"] == 1.0
    span = _spans(tmp_path)
    assert len(span) == 6
    for t in span.values():  # never more than two at once
        assert sum(1 for u in span.values() if u[0] < t[0] + 0.05 < u[1]) <= 2
    for pair in ("mlp_digits", "tiny_cnn_digits"):
        for seed in (1, 2):
            assert span[f"{pair}-s{seed}"][0] >= span[f"{pair}-teacher"][1] - 0.05, "a seed waits for its teacher"
    # tiny_cnn's teacher is done first: its seeds take the free slot while mlp's teacher still trains
    assert span["tiny_cnn_digits-s1"][0] < span["mlp_digits-teacher"][1]
    assert span["mlp_digits-s1"][0] < span["tiny_cnn_digits-s1"][1], "mlp's seeds did not wait for tiny_cnn's"
    # a pair's minutes: its teacher's, then its slowest seed's (each job's wall time)
    assert res[1]["minutes"] * 60 >= 0.3 + 2.0


def test_a_job_that_fails_stops_the_run_and_ends_the_others(tmp_path, monkeypatch):
    sleep = {"mlp_digits-teacher": 0.2, "tiny_cnn_digits-teacher": 120}
    fake = _fake_job_process(tmp_path, fail=frozenset({"mlp_digits-teacher"}), sleep=sleep)
    monkeypatch.setattr(suite, "_start_job", fake)
    started = time.time()
    with pytest.raises(RuntimeError, match="mlp_digits-teacher: the process ended with 3.*boom: a stage crashed"):
        suite.run_pool([suite.PAIRS[4], suite.PAIRS[5]], tmp_path / "dist", tmp_path, [1, 2], jobs=2)
    assert time.time() - started < 60, "the other job was terminated, not waited for"
    assert set(_spans(tmp_path)) == {"mlp_digits-teacher"}


def test_one_seed_of_one_pair_runs_in_this_process_on_every_core_whatever_the_jobs(tmp_path, monkeypatch):
    def no_children(*a, **k):
        raise AssertionError("one seed of one pair needs no child process")

    monkeypatch.setattr(suite, "run_pool", no_children)
    monkeypatch.setattr(suite, "reference_step_ms", lambda: 30.0)
    monkeypatch.setattr(suite, "export_figures", lambda pair, seed, teacher, out, build: run(seed, acc=0.915))
    r = suite.run_suite(tmp_path, tmp_path / "build", [42], only=["mlp_digits"], jobs=2)
    assert [run["seed"] for run in r["pairs"][0]["runs"]] == [42] and r["pairs"][0]["jobs"] == 1


@pytest.mark.parametrize("name", ["resnet8-s43", "resnet8-teacher"])
def test_a_job_process_runs_its_job_on_the_threads_it_is_given(tmp_path, monkeypatch, name):
    from edgeopt import threads

    calls = []
    monkeypatch.setattr(threads, "limit", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(
        suite,
        "export_figures",
        lambda pair, seed, teacher, out, build: calls.append((pair.name, seed, teacher, out)) or {"seed": seed},
    )
    monkeypatch.setattr(
        suite, "train_zoo_teacher", lambda pair, path: calls.append((pair.name, path)) or {"seconds": 2.0}
    )
    args = ["--job", name, "--threads", "1", "--quiet"]
    assert suite.main(args + ["--out", str(tmp_path / "dist"), "--build", str(tmp_path)]) == 0
    teacher = tmp_path / "models" / "resnet8.keras"
    if name.endswith("s43"):
        assert calls == [("threads", 1), ("resnet8", 43, teacher, tmp_path / "dist")]
        assert json.loads((tmp_path / "resnet8-s43.json").read_text()) == {"seed": 43}
    else:
        assert calls == [("threads", 1), ("resnet8", teacher)]
        assert json.loads((tmp_path / "resnet8-teacher.json").read_text()) == {"seconds": 2.0}


def test_the_pairs_use_the_default_pipeline_changed_only_in_name_data_and_teacher(tmp_path):
    import yaml

    default = yaml.safe_load(suite.PIPELINE.read_text())
    for pair in suite.PAIRS:
        cfg = suite.pipeline_for(pair, 43, tmp_path / "t.keras")
        assert cfg.name == f"suite_{pair.name}" and cfg.seed == 43 and cfg.data.seed == default["seed"]
        assert [s.model_dump(mode="json", exclude_unset=True) for s in cfg.steps] == default["steps"]
        assert (cfg.teacher.train is None) == bool(pair.teacher.get("keras3"))


def _idx(path, arr: np.ndarray) -> None:
    import gzip

    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_32x32x3_is_padded_and_tiled(tmp_path, monkeypatch):
    """From IDX files like the dataset's (read by edgeopt's own reader): the pixels keep their 0..255 values,
    and edgeopt's npz loader gives the same [0, 1] images as the 28x28 dataset, padded and tiled."""
    from edgeopt import data

    x = (np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256).astype(np.uint8)
    for name, arr in zip(data.FASHION_FILES, (x[:2], np.array([1, 2]), x[2:], np.array([3])), strict=True):
        _idx(tmp_path / name, arr)
    monkeypatch.setattr(data, "find_fashion_mnist", lambda: tmp_path)
    path = tmp_path / "f.npz"
    suite.make_npz("fashion32x3", path)
    with np.load(path) as z:
        assert z["x_train"].shape == (2, 32, 32, 3) and z["x_test"].shape == (1, 32, 32, 3)
        assert (z["x_train"][:, :2] == 0).all() and (z["x_train"][0, 2:30, 2:30, 1] == x[0]).all()
        assert z["x_test"].max() == 255 and list(z["y_train"]) == [1, 2]
        assert list(z["class_names"])[0] == "T-shirt/top"
    d = data.load_dataset(data.DataConfig(name=f"npz:{path}", val_fraction=0.5))
    images = np.concatenate([d.x_train, d.x_val])
    assert images.shape[1:] == (32, 32, 3) and images.max() == 1.0  # scaled once, to [0, 1]
    assert np.allclose(d.x_test[0, 2:30, 2:30, 0], x[2] / 255.0)


def test_a_missed_size_target_says_how_much_of_the_image_is_weights():
    small = [{**run(s, acc=0.915, nbytes=40_000), "weight_bytes": 10_000, "sparsity": 0.5} for s in (42, 43)]
    big = [{**run(s, acc=0.915, nbytes=40_000), "weight_bytes": 30_000} for s in (42, 43)]
    missed = ["at least 4x smaller raw"]
    assert (
        "weights are 10,000 of its 40,000 bytes, 50% of the model's weights zero after pruning, the rest per-layer"
        in suite._why({"runs": small}, missed)
    )
    assert suite._why({"runs": big}, missed) == " (the image's weights are 30,000 of its 40,000 bytes)"
    assert suite._why({"runs": small}, ["at most 1 point below the teacher"]) == ""  # not a size target
    assert suite._why({"runs": [run(42, acc=0.915)]}, missed) == ""  # weights not measured
    floored = [{**r, "gzip_floor_bytes": 6_000, "teacher_gzip_bytes": 45_000} for r in big]
    assert suite._why({"runs": floored}, missed) == (
        " (the image's weights are 30,000 of its 40,000 bytes; with every weight and bias byte set to zero the "
        "image still gzips to 6,000 bytes, 7.5x smaller than the teacher: the most weight compression could reach)"
    )
    gz = [{**r, "gzip_bytes": 9_000} for r in floored]  # 8x of 45,000 is 5,625: 0 to spare above 6,000
    assert suite._why({"runs": gz}, ["at least 8x smaller gzipped"], 8).endswith(
        "; 8x means at most 5,625 gzip bytes, 0 above that floor for the weights and biases, which take 3,000 now)"
    )
    assert suite._why({"runs": gz}, ["at least 8x smaller gzipped"], 4).endswith(
        "; 4x means at most 11,250 gzip bytes, 5,250 above that floor for the weights and biases, which take 3,000 now)"
    )
    assert "means at most" not in suite._why({"runs": gz}, missed, 8)  # the raw target missed, not the gzip one


def made_up(pair, out, build, seeds):
    """``run_pair`` on made-up runs: nothing trains."""
    return {"pair": pair.name, "title": pair.title, "note": "", "runs": [run(s, acc=0.915) for s in seeds],
            "minutes": 5.0}  # fmt: skip


def test_a_pair_run_again_takes_its_place_in_the_last_results(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(suite, "run_pair", made_up)
    monkeypatch.setattr(suite, "reference_step_ms", lambda: 30.0)  # its own test above
    monkeypatch.setattr(suite.hostinfo, "describe", lambda: "made-up host")
    first = suite.run_suite(tmp_path, tmp_path / "build", [42, 43])
    assert [p["pair"] for p in first["pairs"]] == [p.name for p in suite.PAIRS] and "rerun" not in first["pairs"][0]
    # a commit made while the pair runs is not the code it ran: the stamp names the commit it started at
    head = {"commit": "1111111"}

    def commits_while_running(pair, out, build, seeds):
        head["commit"] = "2222222"
        return made_up(pair, out, build, seeds)

    monkeypatch.setattr(suite, "run_pair", commits_while_running)
    monkeypatch.setattr(suite, "_stamp", lambda: {**head, "at": "2026-12-06 14:31 UTC"})
    again = suite.run_suite(tmp_path, tmp_path / "build", [42, 43], only=["resnet8"])
    assert [p["pair"] for p in again["pairs"]] == [p.name for p in suite.PAIRS]
    assert again["pairs"][2]["rerun"] == {"commit": "1111111", "at": "2026-12-06 14:31 UTC"}
    assert [p["pair"] for p in again["pairs"] if p.get("rerun")] == ["resnet8"]
    assert again["minutes"] == 5.0 * len(suite.PAIRS)
    assert json.loads((tmp_path / "suite.json").read_text())["pairs"][2]["rerun"]
    assert "run again alone at" in (tmp_path / "suite.md").read_text()


def test_rebundle_converts_again_from_the_runs_own_stages_and_refuses_a_stage_trained_again(tmp_path, monkeypatch):
    """--rebundle: accuracies and bytes may change (the conversion ran again), the earlier ones are kept; a
    run whose teacher or training stage was not reused from the last run's folders stops it."""
    from types import SimpleNamespace

    monkeypatch.setattr(suite, "run_pair", made_up)
    monkeypatch.setattr(suite.hostinfo, "describe", lambda: "made-up host")
    before = suite.run_suite(tmp_path, tmp_path / "build", [42, 43])
    trained_again: set[str] = set()

    def export_run(pair, seed, teacher_path, out, build):
        names = ["teacher", "baseline", "distill", "prune", "cluster", "qat", "convert", "validate"]
        stages = [SimpleNamespace(name=n, reused=n not in trained_again and n in suite.TRAINING_STAGES) for n in names]
        return SimpleNamespace(stages=stages, seed=seed)

    monkeypatch.setattr(suite, "export_run", export_run)
    monkeypatch.setattr(
        suite, "figures", lambda m, seed, seconds, root, bundle=None: {**run(seed, acc=0.917, gz=8_500), "minutes": 4.0}
    )
    monkeypatch.setattr(suite, "_stamp", lambda: {"commit": "3333333", "at": "2026-12-07 02:00 UTC"})
    again = suite.rebundle(tmp_path, tmp_path / "build")
    first = again["pairs"][0]["runs"][0]
    assert first["accuracy"] == 0.917 and first["accuracy_before_rebundle"] == 0.915
    assert first["gzip_bytes"] == 8_500 and first["gzip_bytes_before_rebundle"] == 9_000
    assert again["minutes"] == before["minutes"]  # the full run's
    assert "Converted, validated and bundled again at 3333333" in (tmp_path / "suite.md").read_text()
    trained_again.add("qat")
    with pytest.raises(RuntimeError, match="not the last run's"):
        suite.rebundle(tmp_path, tmp_path / "build")
