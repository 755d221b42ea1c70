"""TFLite Micro's tensor arena: the figure a model needs is measured even when it is far over the
profile's budget (the search grows its limit), so the arena gate fails with that figure instead of
"not evaluated"; the tapped run (every tensor kept) grows its arena too; an op without a kernel is
named instead of being searched for."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages
from edgeopt._keras import keras, set_seed, tf
from edgeopt.config import Budget, ConvertConfig, DeviceProfile, ValidateConfig
from edgeopt.data import Dataset
from edgeopt.errors import GateFailed
from edgeopt.gates import tflm_gates
from edgeopt.runtimes import tflm
from edgeopt.runtimes.isolate import ChildFailed, run_task
from edgeopt.tflite import inspect
from edgeopt.validation import GateStatus, Measurements, ValidationResult

P, F, N = GateStatus.passed, GateStatus.failed, GateStatus.not_evaluated
QUICK = ValidateConfig(max_samples=20, latency=False)


@pytest.fixture(scope="module")
def int8(tiny_model, digits) -> bytes:
    return stages.convert(tiny_model, ConvertConfig(quantization="int8", calibration_samples=64), data=digits).tflite


@pytest.fixture(scope="module")
def over_budget(int8, tiny_model, digits) -> ValidationResult:
    """The tiny digits CNN against an MCU whose arena budget (256 bytes) it cannot fit."""
    mcu = DeviceProfile(name="mcu", runtime="tflm", budgets=Budget(arena_bytes=256))
    return stages.validate(int8, digits, QUICK, keras_model=tiny_model, profiles=[mcu], name="tiny")


def test_arena_gate_fails_with_the_measured_figure(over_budget):
    g = over_budget.gate("mcu", "arena_bytes")
    need = over_budget.measurements.tflm.arena_bytes
    assert g.status is F and g.measured == need > 256 and g.budget == 256
    assert g.detail == f"{need:,} bytes of tensor arena (budget <= 256 bytes)"
    assert over_budget.gate("mcu", "tflm_runs").status is P
    assert [x.key for x in over_budget.failed_gates] == ["mcu/arena_bytes"]
    assert over_budget.not_evaluated == []
    with pytest.raises(GateFailed, match=r"^tiny: 1 gate\(s\) failed: mcu/arena_bytes$"):
        over_budget.raise_for_status(strict=True)


def test_the_figure_runs_and_16_bytes_less_does_not(over_budget, int8, digits):
    need = over_budget.measurements.tflm.arena_bytes
    x = digits.x_test[:3]
    out, _ = tflm.run(int8, x, need)
    assert out.shape == (3, 10) and out.dtype == np.int8
    with pytest.raises(RuntimeError, match="failed to allocate tensors"):
        tflm.run(int8, x, need - 16)


def test_search_from_below_the_need_grows_to_the_same_figure(over_budget, int8, digits):
    """Started at 1 KiB (below the need) the search doubles its limit and finds the same figure as the
    default start of 8 MiB; with the limit itself below the need, ArenaExceeded names it."""
    need = over_budget.measurements.tflm.arena_bytes
    x = digits.x_test[:1]
    assert tflm.min_arena(int8, x, start=1024) == need
    assert tflm.min_arena(int8, x, start=need) == need
    with pytest.raises(tflm.ArenaExceeded, match=f"needs more than {need - 16} bytes of tensor arena") as e:
        tflm.min_arena(int8, x, limit=need - 16)
    assert e.value.limit == need - 16


def test_arena_over_the_search_limit_fails_the_gate_with_the_lower_bound(int8, digits):
    """A child told to search no further than 1 KiB reports that the model needs more; the arena gate
    fails on that lower bound when it is already over the budget, and stays not evaluated when not."""
    with pytest.raises(ChildFailed) as e:
        run_task("tflm_eval", "tflm", int8, digits.x_test[:2], arena_limit=1024)
    why = str(e.value)
    assert tflm.arena_exceeded(why) == 1024
    m = Measurements(structure={}, samples=2)
    for budget, status in ((512, F), (4096, N)):
        p = DeviceProfile(name="mcu", runtime="tflm", budgets=Budget(arena_bytes=budget))
        runs, arena = tflm_gates(p, m, {"tflm:tflm_eval": why})
        assert runs.status is F and arena.status is status
        if status is F:
            assert arena.measured == 1024 and arena.budget == budget
            assert arena.detail == f"needs more than 1,024 bytes of tensor arena (budget <= {budget} bytes)"
        else:
            assert arena.measured is None and arena.detail == why


def deep_cnn() -> tuple[bytes, np.ndarray]:
    """Twelve 3x3 convolutions at 16x16x8, then a softmax head: the planner reuses two activation
    buffers, but keeping every tensor (for the logits tap) needs more than 4x that arena."""
    set_seed(0)
    L = keras.layers
    i = keras.Input((16, 16, 8))
    x = i
    for _ in range(12):
        x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    o = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    xs = np.random.default_rng(0).uniform(-1, 1, (32, 16, 16, 8)).astype(np.float32)
    y = np.arange(32) % 10
    data = Dataset("random", "uniform noise", 0, xs, y, xs[:0], y[:0], xs, y, [str(c) for c in range(10)])
    cfg = ConvertConfig(quantization="int8", calibration_samples=32)
    return stages.convert(keras.Model(i, o), cfg, data=data).tflite, xs


def test_tapped_run_grows_its_arena_past_four_times_the_plan():
    content, xs = deep_cnn()
    arena = tflm.min_arena(content, xs[:1])
    with pytest.raises(RuntimeError, match="failed to allocate"):  # the old fixed 4x arena
        tflm._interpreter(content, 4 * arena, preserve=True)
    tap = inspect(content)["logits"]["index"]
    out, logits = tflm.run(content, xs[:4], arena, tap=tap)
    lit, _ = run_task("litert_eval", "litert", content, xs[:4], tap=tap)
    # the tapped logits are TFLite Micro's own, within a step of LiteRT's optimized kernels
    assert logits.shape == lit["tap"].shape == (4, 10)
    assert np.abs(logits.astype(int) - lit["tap"].astype(int)).max() <= 1
    assert out.shape == (4, 10)


def test_op_without_a_kernel_is_named_without_a_search():
    i = keras.Input((8,))
    content = stages.convert(keras.Model(i, tf.math.top_k(i, k=3).values), ConvertConfig(quantization="float32"))
    with pytest.raises(tflm.CannotRun, match="Didn't find op for builtin opcode 'TOPK_V2'"):
        tflm.min_arena(content.tflite, np.zeros((1, 8), np.float32))


def test_an_arena_try_that_crashes_tflite_micro_counts_as_too_small():
    """MLPerf Tiny's FC autoencoder (random weights, int8): TFLite Micro dies by SIGSEGV ("All temp
    buffers must be freed before calling ResetTempAllocations()") on an arena 16 bytes short instead of
    failing cleanly. Every try runs in a forked child, so the search survives it, counts the size as
    too small and reports it; the figure found runs."""
    from edgeopt import zoo

    set_seed(0)
    model = zoo.build("fc_autoencoder", (640,), 640)
    xs = np.random.default_rng(0).uniform(-1, 1, (40, 640)).astype(np.float32)
    y = np.zeros(40, np.int64)
    data = Dataset("random", "uniform noise", 0, xs[:32], y[:32], xs[:0], y[:0], xs[32:], y[32:], ["0"])
    content = stages.convert(model, ConvertConfig(quantization="int8", calibration_samples=32), data=data).tflite
    out, raw = run_task("tflm_eval", "tflm", content, xs[32:])
    arena, crashed = out["arena_bytes"], out.get("arena_tries_crashed", [])
    assert raw.shape == (8, 640) and crashed and max(crashed) < arena
    short = tflm.probe(content, xs[:1], arena - 16)
    assert not short.fits
    assert tflm.probe(content, xs[:1], arena).fits


def test_a_model_that_crashes_tflite_micro_at_any_arena_is_a_crash_not_a_size():
    """An int8 SOFTMAX on logits that span ~1e-5 aborts TFLite Micro while preparing (the untrained
    MobileNet case): the first try dies before any size ran, so the worker dies by the same signal and
    the crash is reported with its cause, not searched up to 64 MiB and called too big."""
    set_seed(0)
    i = keras.Input((16,))
    m = keras.Model(i, keras.layers.Dense(10, activation="softmax", name="logits")(i))
    w, b = m.get_layer("logits").get_weights()
    m.get_layer("logits").set_weights([w * 1e-6, b * 0])
    xs = np.random.default_rng(0).uniform(-1, 1, (40, 16)).astype(np.float32)
    y = np.arange(40) % 10
    data = Dataset("random", "uniform noise", 0, xs[:32], y[:32], xs[:0], y[:0], xs[32:], y[32:], list("0123456789"))
    content = stages.convert(m, ConvertConfig(quantization="int8", calibration_samples=32), data=data).tflite
    with pytest.raises(ChildFailed) as e:
        run_task("tflm_eval", "tflm", content, xs[32:])
    assert e.value.crashed and e.value.detail.startswith("killed by SIGABRT"), str(e.value)
    assert "SOFTMAX input" in e.value.detail and "PreprocessSoftmaxScaling" in e.value.detail
    assert tflm.arena_exceeded(str(e.value)) is None
