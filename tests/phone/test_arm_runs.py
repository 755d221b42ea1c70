"""LiteRT's aarch64 build on emulated cores, for real: outputs against x86 and the reference kernels,
the instructions counted per Invoke(), and faults (a hang, a crash) injected into the guest's Python."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgeopt import gates
from edgeopt import tflite as tfl
from edgeopt.arm import check, cores
from edgeopt.runtimes import litert_arm
from edgeopt.runtimes.isolate import ChildFailed
from edgeopt.runtimes.litert import LiteRTModel
from edgeopt.stages.validate import compare_arm
from edgeopt.validation import CrossCheck
from tests.faultinject import alive, fault_env, fired
from tests.phone.conftest import DEFAULT_MODEL, random_cnn_int8


def x86_runs(content: bytes, x: np.ndarray, n_ref: int = 200):
    """x86 XNNPACK on every input and the reference kernels on the first ``n_ref``, with the logits."""
    s = tfl.inspect(content, "m")
    tap = s["logits"]["index"] if s["logits"] else None
    xnn = LiteRTModel(content, preserve=tap is not None).predict(x, raw=True, tap=tap)
    ref = LiteRTModel(content, resolver="reference", preserve=tap is not None).predict(x[:n_ref], raw=True, tap=tap)
    if tap is None:
        return s, (xnn, None), (ref, None)
    return s, xnn, ref


def comparing(structure, fixed_steps=None):
    """validate's comparison of the Arm run with another, as the phone check gets it."""

    def compare(a, b, at, bt, same_kernels):
        return compare_arm(a, b, at, bt, structure, fixed_steps, same_kernels=same_kernels)

    return compare


def measure(guest, core, content, x, y, threads, profile_threads, count=False, timeout=600.0) -> check.ArmCheck:
    s, xnn, ref = x86_runs(content, x)
    failures: dict[str, str] = {}
    crashed: list[str] = []
    result = check.measure(
        guest, core, content, x, y, threads=threads, profile_threads=profile_threads, out_detail=s["outputs"][0],
        logits=s["logits"], x86=xnn, reference=ref, compare=comparing(s), timeout=timeout, count=count,
        failures=failures, crashed=crashed,
    )  # fmt: skip
    assert not failures and not crashed, (failures, crashed)
    return result


def test_small_int8_model_is_bit_exact_on_every_core_family(arm_guest, small_int8):
    """A small int8 CNN (convolution, depthwise, add, pooling, fully connected): plain NEON (Pixel 2's
    core), dot product (Pixel 4's, at 1 and 4 threads) and i8mm give exactly x86 XNNPACK's outputs;
    the kernels that ran are named."""
    x = np.random.default_rng(7).random((150, 16, 16, 1), dtype=np.float32)
    y = np.random.default_rng(8).integers(0, 10, 150)
    families = {}
    for core, threads in (("kryo-280-gold", [1]), ("kryo-485-gold", [1, 4]), ("armv9-i8mm", [1])):
        r = measure(arm_guest, core, small_int8, x, y, threads, max(threads), count=True)
        for run in r.runs:
            assert run.vs_x86.output_values_differing == 0, (core, run)
            assert run.vs_x86.output_max_abs_diff_dequantized == 0.0 and run.vs_x86.top1_agreement == 1.0
            assert run.vs_x86.agree and run.vs_reference.agree and run.vs_reference.top1_agreement >= 0.9
        assert r.run(max(threads)).samples == 150 and r.run(max(threads)).accuracy is not None
        families[core] = r.kernels
    assert families == {
        "kryo-280-gold": "plain NEON integer (SMLAL/SMULL)",
        "kryo-485-gold": "dot product (SDOT)",
        "armv9-i8mm": "i8mm (SMMLA)",
    }


def test_default_model_known_one_step_difference_is_reported_and_judged(arm_guest, fashion_slice):
    """The shipped default model: the Arm cores agree with one another exactly (dot product at 4 and 1
    threads, plain NEON), and differ from x86 XNNPACK by at most one step on the softmax outputs (the
    logits agree); the comparison counts the differing values and the gate judges the largest
    difference against the allowed steps."""
    content = DEFAULT_MODEL.read_bytes()
    x = fashion_slice.x_test[:500]
    s, (xnn, xnn_tap), _ = x86_runs(content, x)
    tap = s["logits"]["index"]
    arm = {}
    for core, threads in (("kryo-485-gold", 4), ("kryo-485-gold", 1), ("kryo-280-gold", 1)):
        r, raw = litert_arm.run(
            arm_guest, cores.core(core), "litert_eval", content, x, timeout=600, threads=threads, tap=tap
        )
        arm[(core, threads)] = (raw, r["tap"])
    raw, raw_tap = arm[("kryo-485-gold", 4)]
    for key, (other, other_tap) in arm.items():
        assert np.array_equal(other, raw) and np.array_equal(other_tap, raw_tap), key
    d = np.abs(raw.astype(np.int64) - xnn)
    assert d.max() <= 1 and np.array_equal(raw_tap, xnn_tap) and np.array_equal(raw.argmax(1), xnn.argmax(1))
    for fixed in (0, None):  # max_step_diff 0, and the bound that scales with the network
        c = CrossCheck.model_validate(comparing(s, fixed)(raw, xnn, raw_tap, xnn_tap, True))
        assert c.output_values_differing == int((d > 0).sum()) and c.output_max_diff == d.max()
        assert c.output_max_abs_diff_dequantized == pytest.approx(d.max() * s["outputs"][0]["scale"])
        assert c.logits_max_diff == 0 and c.top1_agreement == 1.0 and c.compared == "output and logits"
        allowed = c.output_allowed  # the outputs' own bound (the logits have theirs, c.allowed)
        assert allowed == 0 if fixed == 0 else allowed >= 1
        gate = gates.cross_check_gate("pixel4-cpu4", c, {})
        assert gate.status == (gates.P if d.max() <= allowed else gates.F), gate
        assert f"max difference {gates.fmt(d.max(), 'steps')} in the output and logits over 500 inputs" in gate.detail


def test_instruction_counts_grow_with_the_macs(arm_guest):
    """Two sizes of one CNN: the instructions per Invoke() grow with the MACs, at a rate of dot-product
    int8 kernels (16 MACs an SDOT, plus loads and requantization), and repeat exactly at 1 thread."""
    counts, macs = {}, {}
    for width in (8, 32):
        content = random_cnn_int8(width)
        macs[width] = tfl.inspect(content, "m")["macs"]
        x = np.random.default_rng(1).random((1, 16, 16, 1), dtype=np.float32)
        r, _ = litert_arm.run(
            arm_guest, cores.core("kryo-485-gold"), "litert_count", content, x, timeout=600, threads=1
        )
        per_window = [w["threads"]["0"]["insns"] for w in r["windows"]]
        assert max(per_window) - min(per_window) <= 0.005 * max(per_window), per_window  # repeatable
        counts[width] = check.summarize(1, r["windows"])
    assert macs[32] > 10 * macs[8]
    slope = (counts[32].critical_path - counts[8].critical_path) / (macs[32] - macs[8])
    assert 1 / 32 < slope < 0.5, (slope, counts, macs)  # instructions per extra MAC
    # an SDOT does 16 int8 MACs; the kernels pad channels to their tile, which at width 32 costs little
    assert macs[32] <= 16 * counts[32].top["sdot"] <= 1.5 * macs[32]
    assert counts[32].kernels == "dot product (SDOT)"


@pytest.fixture
def inject(tmp_path, monkeypatch):
    log = tmp_path / "faults"
    log.mkdir()

    def setup(spec: str):
        for k, v in fault_env(spec, log).items():
            monkeypatch.setenv(k, v)
        return log

    return setup


def test_a_hang_under_emulation_is_killed_after_the_timeout_naming_the_core(arm_guest, small_int8, inject):
    log = inject("litert_eval:hang")
    x = np.zeros((8, 16, 16, 1), np.float32)
    with pytest.raises(ChildFailed) as e:
        litert_arm.run(arm_guest, cores.core("kryo-485-gold"), "litert_eval", small_int8, x, timeout=20)
    assert str(e.value) == "litert-arm (kryo-485-gold) hung: no answer within 20 s, killed" and e.value.crashed
    [f] = fired(log)
    assert f["target"] == "litert_eval" and f["pid"] != os.getpid() and not alive(f["pid"])


def test_a_crash_under_emulation_names_the_core_and_the_signal(arm_guest, small_int8, inject):
    inject("litert_eval:segv")
    failures: dict[str, str] = {}
    crashed: list[str] = []
    s = tfl.inspect(small_int8, "m")
    r = check.measure(
        arm_guest, "kryo-280-gold", small_int8, np.zeros((8, 16, 16, 1), np.float32), None, threads=[1],
        profile_threads=1, out_detail=s["outputs"][0], logits=s["logits"], x86=None, reference=None,
        compare=comparing(s), timeout=120, count=False, failures=failures, crashed=crashed,
    )  # fmt: skip
    assert r.runs == [] and crashed == [failures["litert-arm (kryo-280-gold):litert_eval"]]
    assert crashed[0].startswith("litert-arm (kryo-280-gold) crashed: killed by SIGSEGV")
