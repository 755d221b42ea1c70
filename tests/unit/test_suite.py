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


def _fake_seed_process(tmp_path, fail: set[int] = frozenset(), sleep: dict[int, float] | None = None):
    """A stand-in for one seed's export process: sleeps, notes when it ran, writes figures (or fails)."""
    sleep = sleep or {}

    def start(pair, seed, out, build, threads):
        logfile, result = suite._seed_files(pair, seed, build)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import json, sys, time; t = time.time(); "
            f"time.sleep({sleep.get(seed, 0.5)}); "
            f"open({str(tmp_path / f'span{seed}')!r}, 'w').write(f'{{t}} {{time.time()}}'); "
            + (
                "print('boom: a stage crashed'); sys.exit(3)"
                if seed in fail
                else f"open({str(result)!r}, 'w').write(json.dumps({{'seed': {seed}, 'threads': {threads}, "
                "'passed': True, 'minutes': 0.01}))"
            )
        )
        with logfile.open("wb") as f:
            return subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)

    return start


def test_seeds_run_side_by_side_at_most_jobs_at_once_and_come_back_in_seed_order(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "_start_seed", _fake_seed_process(tmp_path, sleep={1: 2.0, 2: 0.5, 3: 0.5}))
    monkeypatch.setattr(suite.os, "cpu_count", lambda: 2)
    runs = suite.run_seeds_side_by_side(suite.PAIRS[4], tmp_path, tmp_path, [1, 2, 3], jobs=2)
    assert [r["seed"] for r in runs] == [1, 2, 3] and {r["threads"] for r in runs} == {1}
    span = {s: [float(x) for x in (tmp_path / f"span{s}").read_text().split()] for s in (1, 2, 3)}
    assert span[2][0] < span[1][1], "seeds 1 and 2 ran at the same time"
    assert span[3][0] >= span[2][1] - 0.1, "seed 3 waited for a free slot"
    assert span[3][0] < span[1][1], "... the first one that came free"


def test_a_seed_whose_process_fails_stops_the_pair_and_ends_its_sibling(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "_start_seed", _fake_seed_process(tmp_path, fail={1}, sleep={1: 0.2, 2: 120}))
    started = time.time()
    with pytest.raises(RuntimeError, match="seed 1: the export process ended with 3.*boom: a stage crashed"):
        suite.run_seeds_side_by_side(suite.PAIRS[4], tmp_path, tmp_path, [1, 2], jobs=2)
    assert time.time() - started < 60, "the sibling was terminated, not waited for"
    assert not (tmp_path / "span2").exists()


def test_one_seed_runs_in_this_process_on_every_core_whatever_the_jobs(tmp_path, monkeypatch):
    def no_children(*a, **k):
        raise AssertionError("one seed needs no child process")

    monkeypatch.setattr(suite, "run_seeds_side_by_side", no_children)
    monkeypatch.setattr(suite, "train_zoo_teacher", no_children)
    monkeypatch.setattr(suite, "export_figures", lambda pair, seed, teacher, out, build: {"seed": seed})
    res = suite.run_pair(suite.PAIRS[4], tmp_path / "dist", tmp_path, [42], jobs=2)
    assert res["runs"] == [{"seed": 42}] and res["jobs"] == 1


def test_a_seed_process_exports_on_the_threads_it_is_given(tmp_path, monkeypatch):
    from edgeopt import threads

    calls = []
    monkeypatch.setattr(threads, "limit", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(
        suite,
        "export_figures",
        lambda pair, seed, teacher, out, build: calls.append((pair.name, seed, teacher, out)) or {"seed": seed},
    )
    args = ["--seed-run", "resnet8", "--seeds", "43", "--threads", "1", "--quiet"]
    assert suite.main(args + ["--out", str(tmp_path / "dist"), "--build", str(tmp_path)]) == 0
    assert calls == [("threads", 1), ("resnet8", 43, tmp_path / "models" / "resnet8.keras", tmp_path / "dist")]
    assert json.loads((tmp_path / "resnet8-s43.figures.json").read_text()) == {"seed": 43}


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


def made_up(pair, out, build, seeds, jobs=1):
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

    def commits_while_running(pair, out, build, seeds, jobs):
        head["commit"] = "2222222"
        return made_up(pair, out, build, seeds, jobs)

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
