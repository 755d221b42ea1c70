"""The bench's arithmetic on made-up rows: relative figures, mean and standard deviation over seeds,
targets judged on the means, device estimates by precision, and the table; no model runs."""

from __future__ import annotations

import math

import pytest

from benchmarks import compression as bench
from edgeopt.config import DeviceProfile


def _row(name: str, kind: str, seed: int, *, acc: float, nbytes: int, gz: int, p50: float, est4: float, **kw):
    return {
        "name": name,
        "kind": kind,
        "seed": seed,
        "how": "made up",
        "accuracy": acc,
        "bytes": nbytes,
        "gzip_bytes": gz,
        "macs": 1000,
        "p50_ms_1": p50,
        "p50_ms_4": p50 / 2,
        "est_ms_pixel4-cpu4": est4,
        "est_ms_pixel2-cpu1": est4 * 3,
        "tflm_arena_bytes": kw.get("arena", 20_000),
        "tflm_runs": kw.get("runs", 1.0),
        "precision": "int8",
    }


@pytest.fixture
def rows() -> list[dict]:
    base = _row("teacher", "baseline", 42, acc=0.92, nbytes=880_000, gz=820_000, p50=0.09, est4=3.0)
    rs = [base]
    # default pipeline: drops 0.4, 0.6, 0.5 points (mean 0.5), gzip 13,000 / 14,000 / 15,000 bytes
    for seed, acc, gz in ((42, 0.916, 13_000), (43, 0.914, 14_000), (44, 0.915, 15_000)):
        rs.append(_row("default", "default", seed, acc=acc, nbytes=61_000, gz=gz, p50=0.03, est4=0.9))
    # flash first: 39,000 and 41,000 raw bytes (mean 40,000), one seed not running in TFLite Micro
    for seed, nbytes, runs in ((42, 39_000, 1.0), (43, 41_000, 0.0)):
        r = _row("flash", "flash_first", seed, acc=0.912, nbytes=nbytes, gz=30_000, p50=0.02, est4=0.5, runs=runs)
        rs.append(r)
    bench.relate(rs, base)
    return rs


def test_relate_against_the_baseline(rows):
    d = next(r for r in rows if r["seed"] == 43 and r["kind"] == "default")
    assert d["gzip_ratio"] == pytest.approx(820_000 / 14_000)
    assert d["accuracy_drop_points"] == pytest.approx(0.6)
    assert d["speedup_pixel4-cpu4"] == pytest.approx(3.0 / 0.9)
    assert d["host_speedup_1"] == pytest.approx(3.0)
    assert rows[0]["accuracy_drop_points"] == 0.0 and rows[0]["gzip_ratio"] == 1.0


def test_aggregate_mean_and_sample_std(rows):
    s = {x["name"]: x for x in bench.aggregate(rows)}
    assert [x["name"] for x in bench.aggregate(rows)] == ["teacher", "default", "flash"]
    d = s["default"]
    assert d["n"] == 3 and d["seeds"] == [42, 43, 44]
    assert d["accuracy_drop_points"] == pytest.approx(0.5)
    assert d["accuracy_drop_points_std"] == pytest.approx(0.1)  # sample std of 0.4, 0.6, 0.5
    assert d["gzip_bytes"] == pytest.approx(14_000) and d["gzip_bytes_std"] == pytest.approx(1000)
    assert s["teacher"]["n"] == 1 and s["teacher"]["bytes_std"] == 0.0
    assert s["flash"]["tflm_runs"] == 0.5


def test_a_figure_missing_in_one_seed_is_none_not_a_partial_mean(rows):
    rows[1]["est_ms_pixel4-cpu4"] = None
    d = next(x for x in bench.aggregate(rows) if x["name"] == "default")
    assert d["est_ms_pixel4-cpu4"] is None and d["est_ms_pixel4-cpu4_std"] is None


def test_targets_on_the_means(rows):
    v = bench.judge(bench.aggregate(rows))
    default = {t["metric"]: t for t in v["default"]}
    gz_ratio = statistics_mean([820_000 / g for g in (13_000, 14_000, 15_000)])
    assert default["gzip_ratio"]["measured"] == pytest.approx(gz_ratio) and not default["gzip_ratio"]["met"]
    assert default["accuracy_drop_points"]["met"]  # 0.5 <= 0.5: on the boundary is met
    assert default["speedup_pixel4-cpu4"]["met"] and default["speedup_pixel4-cpu4"]["measured"] > 3
    flash = {t["metric"]: t for t in v["flash_first"]}
    assert flash["bytes"]["met"] and flash["bytes"]["measured"] == pytest.approx(40_000)
    assert not flash["tflm_runs"]["met"]  # one seed of two did not run: not met


def test_a_missing_kind_fails_its_targets(rows):
    v = bench.judge(bench.aggregate([r for r in rows if r["kind"] != "flash_first"]))
    assert [t["met"] for t in v["flash_first"]] == [False, False, False]
    assert all(t["measured"] is None for t in v["flash_first"])


def test_device_estimate_uses_the_factor_of_the_models_precision():
    profiles = [
        DeviceProfile(name="pixel4-cpu4", runtime="litert", threads=4),
        DeviceProfile(name="pixel2-cpu1", runtime="litert", threads=1),
    ]
    cal = {
        "profiles": {
            "pixel4-cpu4": {"float32": {"factor": 10.0}, "int8": {"factor": 40.0}},
            "pixel2-cpu1": {"float32": {"factor": 20.0}},
        }
    }
    latency = {"1": {"p50_ms": 0.1}, "4": {"p50_ms": 0.05}}
    int8 = {"structure": {"constant_dtypes": {"int8": 3, "int32": 2}, "float_ops": []}, "latency": latency}
    e = bench.device_estimates(int8, cal, profiles)
    assert e["precision"] == "int8"
    assert e["est_ms_pixel4-cpu4"] == pytest.approx(0.05 * 40.0)
    assert e["est_ms_pixel2-cpu1"] is None  # no int8 factor for that profile: no estimate, not a float one
    # weight-only int8 dequantizes to float: the float32 factor
    wo = {"structure": {"constant_dtypes": {"int8": 3, "float32": 2}, "float_ops": ["CONV_2D"]}, "latency": latency}
    e = bench.device_estimates(wo, cal, profiles)
    assert e["precision"] == "float32" and e["est_ms_pixel2-cpu1"] == pytest.approx(0.1 * 20.0)
    assert bench.device_estimates(int8, None, profiles)["est_ms_pixel4-cpu4"] is None


def test_markdown_says_what_is_met_and_how(rows):
    summaries = bench.aggregate(rows)
    result = {
        "host": {"describe": "Test CPU, x86_64, 2 CPUs, ISA avx2 (without VNNI/dot-product)", "fingerprint": "abc"},
        "seeds": [42, 43, 44],
        "teacher": {"path": "models/t.keras", "seed": 42},
        "summary": summaries,
        "targets": bench.judge(summaries),
        "calibration": None,
        "method": bench.METHOD,
        "test_examples": 10_000,
        "wall_seconds": 600.0,
    }
    md = bench.markdown(result)
    assert "ISA avx2 (without VNNI/dot-product)" in md
    assert "| default | 3 | 61,000 ± 0 | 14,000 ± 1,000 |" in md
    assert "| +0.50 ± 0.10 |" in md  # the drop keeps its sign, its deviation has none
    assert "| flash | 2 |" in md and "20,000 ± 0 (50%)" in md
    assert "gzip size vs the float32 teacher (x smaller): 58.77 ± 4.21 vs >= 60.0 -> **NOT met**" in md
    assert "device estimates are n/a" in md and "10.0 minutes" in md
    slow = bench.wall_time_target(41.9 * 60)
    assert slow["met"] is False and slow["measured"] == pytest.approx(41.9)
    md = bench.markdown({**result, "targets": {**result["targets"], "bench": [slow]}})
    assert "- bench: wall time of the whole run on this host (minutes): 41.90 vs <= 40.0 -> **NOT met**" in md
    assert bench.wall_time_target(39 * 60)["met"] is True


def statistics_mean(xs: list[float]) -> float:
    return math.fsum(xs) / len(xs)
