"""The model-family suite's arithmetic on made-up runs (no model trains): means over seeds, the verdict on
each target, the table, and the data it builds for ResNet-8."""

from __future__ import annotations

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


def test_the_pairs_use_the_default_pipeline_changed_only_in_name_data_and_teacher(tmp_path):
    import yaml

    default = yaml.safe_load(suite.PIPELINE.read_text())
    for pair in suite.PAIRS:
        cfg = suite.pipeline_for(pair, 43, tmp_path / "t.keras")
        assert cfg.name == f"suite_{pair.name}" and cfg.seed == 43 and cfg.data.seed == default["seed"]
        assert [s.model_dump(mode="json", exclude_unset=True) for s in cfg.steps] == default["steps"]
        assert (cfg.teacher.train is None) == bool(pair.teacher.get("keras3"))


def test_fashion_32x32x3_is_padded_and_tiled(tmp_path, monkeypatch):
    from edgeopt import data

    x = np.arange(2 * 28 * 28).reshape(2, 784) % 256
    monkeypatch.setattr(data, "find_fashion_mnist", lambda: tmp_path)
    monkeypatch.setattr(data, "_read_fashion", lambda _: (x, np.array([1, 2]), x[:1], np.array([3])))
    path = tmp_path / "f.npz"
    suite.make_npz("fashion32x3", path)
    with np.load(path) as z:
        assert z["x_train"].shape == (2, 32, 32, 3) and z["x_test"].shape == (1, 32, 32, 3)
        assert (z["x_train"][:, :2] == 0).all() and (z["x_train"][0, 2:30, 2:30, 1] == x[0].reshape(28, 28)).all()
        assert list(z["class_names"])[0] == "T-shirt/top"


def test_a_missed_size_target_says_how_much_of_the_image_is_weights():
    small = [{**run(s, acc=0.915, nbytes=40_000), "weight_bytes": 10_000} for s in (42, 43)]
    big = [{**run(s, acc=0.915, nbytes=40_000), "weight_bytes": 30_000} for s in (42, 43)]
    missed = ["at least 4x smaller raw"]
    assert "weights are 10,000 of its 40,000 bytes, the rest per-layer" in suite._why({"runs": small}, missed)
    assert suite._why({"runs": big}, missed) == " (the image's weights are 30,000 of its 40,000 bytes)"
    assert suite._why({"runs": small}, ["at most 1 point below the teacher"]) == ""  # not a size target
    assert suite._why({"runs": [run(42, acc=0.915)]}, missed) == ""  # weights not measured
