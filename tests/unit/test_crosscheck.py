"""The cross-checks between runtimes, on made-up tensors: a bound that grows with the network's depth, class
changes explained by near-ties only, and the first op where two runtimes part."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import gates
from edgeopt.stages.validate import _compare, compare_arm, first_divergence, relative_rms
from edgeopt.tflite import requant_depths
from edgeopt.validation import CrossCheck, Divergence


def chain(ops: list[str]) -> dict:
    """A made-up structure: ``ops`` in a chain, tensor i+1 the output of op i (tensor 0 the input, -1 weights)."""
    per_op = [{"op": op, "macs": 0, "inputs": [i, -1], "outputs": [i + 1]} for i, op in enumerate(ops)]
    return {
        "macs_per_op": per_op,
        "ops": ops,
        "outputs": [{"dtype": "int8", "scale": 0.1, "zero_point": 0}],
        "output_index": len(ops),
        "logits": None,
    }


def test_depth_counts_requantizing_ops_only():
    s = chain(["CONV_2D", "MAX_POOL_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED"])
    assert requant_depths(s) == {1: 1, 2: 1, 3: 2, 4: 2, 5: 3}
    # a residual Add takes the deeper of its two inputs
    s["macs_per_op"].append({"op": "ADD", "macs": 0, "inputs": [1, 5], "outputs": [6]})
    assert requant_depths(s)[6] == 4


def test_allowed_steps_grow_like_the_square_root_of_depth():
    assert [gates.allowed_steps(d) for d in (0, 1, 4, 16, 19, 64)] == [2, 2, 4, 8, 9, 16]


def logits(n: int = 200, classes: int = 10, seed: int = 0) -> np.ndarray:
    """Well separated int8 logits: the true class 60 steps above the rest."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-60, 0, size=(n, classes))
    x[np.arange(n), rng.integers(0, classes, n)] = 60
    return x.astype(np.int8)


@pytest.mark.parametrize("depth", [4, 19])
def test_rounding_within_the_depth_bound_agrees(depth):
    s = chain(["CONV_2D"] * depth)
    ref = logits()
    noise = np.random.default_rng(1).integers(-5, 6, size=ref.shape)  # up to 5 steps
    mine = np.clip(ref.astype(int) + noise, -128, 127).astype(np.int8)
    c = _compare(mine, ref, None, None, s)
    assert c["depth"] == depth and c["allowed"] == gates.allowed_steps(depth) and c["max_diff"] == 5
    assert c["agree"] is (depth == 19)  # 5 steps are rounding after 19 requantizing ops (9 allowed), not after 4
    assert c["flips"] == 0 and c["unexplained_flips"] == 0 and 0 < c["relative_rms"] < 0.2


def test_a_wrong_kernel_fails_on_its_difference_and_its_class_changes():
    s = chain(["CONV_2D"] * 19)
    ref = logits()
    wrong = np.roll(ref, 1, axis=1)  # every class moved: what a kernel reading the wrong weights gives
    c = _compare(wrong, ref, None, None, s)
    assert not c["agree"] and c["max_diff"] > c["allowed"]
    assert c["flips"] == 200 and c["unexplained_flips"] == 200 and c["relative_rms"] > 1


def test_a_near_tie_may_change_class_a_clear_winner_may_not():
    s = chain(["CONV_2D"] * 4)  # 4 steps allowed
    ref = np.full((2, 3), -50, np.int8)
    ref[0, :2] = [40, 38]  # a near-tie: 2 steps apart
    ref[1, :2] = [40, 10]  # a clear winner: 30 steps apart
    tie = ref.copy()
    tie[0, :2] = [38, 40]  # 2 steps each way: within the bound, and the class changes
    c = _compare(tie, ref, None, None, s)
    assert c["agree"] and c["flips"] == 1 and c["unexplained_flips"] == 0
    clear = ref.copy()
    clear[1, :2] = [12, 14]  # class changes by far more than the bound
    c = _compare(clear, ref, None, None, s)
    assert not c["agree"] and c["unexplained_flips"] == 1


def test_a_fixed_bound_replaces_the_scaled_one_and_says_so():
    s = chain(["CONV_2D"] * 19)
    ref = logits()
    mine = np.clip(ref.astype(int) + 3, -128, 127).astype(np.int8)
    c = _compare(mine, ref, None, None, s, fixed_steps=1)
    assert not c["agree"] and c["allowed"] == 1 and c["bound"] == "set by max_step_diff"
    text = gates.compare_detail(CrossCheck.model_validate(c))
    assert "(allowed: 1 step, set by max_step_diff)" in text


def test_the_logits_are_compared_when_both_runtimes_give_them():
    s = chain(["CONV_2D"] * 3 + ["SOFTMAX"])
    s["logits"] = {"index": 3, "dtype": "int8", "scale": 0.1, "zero_point": 0}
    ref_logits = logits()
    probs = np.zeros((200, 10), np.int8)
    c = _compare(probs + 9, probs, ref_logits, ref_logits, s)  # softmax kernels 9 steps apart, logits equal
    assert c["compared"].startswith("logits") and c["max_diff"] == 0 and c["output_max_diff"] == 9 and c["agree"]
    assert c["depth"] == 3


def softmax_outputs(q_logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """What an int8 SOFTMAX gives for these int8 logits (output scale 1/256, zero point -128), exactly rounded."""
    z = q_logits.astype(np.float64) * logit_scale
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return np.clip(np.round(p * 256) - 128, -128, 127).astype(np.int8)


def softmax_chain(logit_scale: float) -> dict:
    s = chain(["CONV_2D"] * 3 + ["SOFTMAX"])
    s["logits"] = {"index": 3, "dtype": "int8", "scale": logit_scale, "zero_point": 0}
    s["outputs"] = [{"dtype": "int8", "scale": 1 / 256, "zero_point": -128}]
    return s


def near_ties(n: int = 200, seed: int = 0) -> np.ndarray:
    """Logits whose two best classes are 0 to 3 steps apart: probabilities near 0.5, where they move most."""
    rng = np.random.default_rng(seed)
    x = np.full((n, 10), -80, np.int16)
    x[:, 0] = 20
    x[:, 1] = 20 - rng.integers(0, 4, n)
    return x.astype(np.int8)


def test_arm_outputs_that_follow_their_logits_agree():
    """The phone check against XNNPACK on x86: logits one step apart (within the bound) move probabilities by
    many output steps at a coarse logit scale; that part of the outputs' difference is the logits', and the
    softmax kernels computed the same, so the run agrees (the int4 flash-first model: 2 logit steps, 21 in
    the outputs)."""
    scale = 0.3
    s = softmax_chain(scale)
    ref_logits = near_ties()
    arm_logits = ref_logits.copy()
    arm_logits[::3, 0] -= 1  # one step on a third of the examples
    ref, arm = softmax_outputs(ref_logits, scale), softmax_outputs(arm_logits, scale)
    c = compare_arm(arm, ref, arm_logits, ref_logits, s, 2, same_kernels=True)
    assert c["output_max_diff"] >= 15 and c["logits_max_diff"] == 1  # 0.3/4 of a probability: ~19 steps
    assert c["output_unexplained_max_diff"] <= 1 and c["agree"] and c["compared"] == "output and logits"
    assert c["max_diff"] == 1
    text = gates.compare_detail(CrossCheck.model_validate(c))
    assert "max difference 1 step in the output and logits" in text


def test_arm_softmax_that_parts_from_its_logits_fails():
    """The same logits on both sides but outputs 5 steps apart: no logit explains it, a softmax kernel does."""
    scale = 0.3
    s = softmax_chain(scale)
    ref_logits = near_ties()
    ref = softmax_outputs(ref_logits, scale)
    arm = np.clip(ref.astype(int) + 5, -128, 127).astype(np.int8)
    c = compare_arm(arm, ref, ref_logits, ref_logits, s, 2, same_kernels=True)
    assert c["output_unexplained_max_diff"] == 5 and not c["agree"] and c["max_diff"] == 5
    # against the reference kernels (another softmax algorithm) only the logits are judged
    c = compare_arm(arm, ref, ref_logits, ref_logits, s, 2, same_kernels=False)
    assert c["agree"] and "output_unexplained_max_diff" not in c


def test_arm_logits_beyond_their_bound_fail_whatever_the_outputs():
    scale = 0.3
    s = softmax_chain(scale)
    ref_logits = near_ties()
    arm_logits = ref_logits.copy()
    arm_logits[:, 2] = 10  # a third class 10 steps up on every example: beyond the 2 allowed
    ref, arm = softmax_outputs(ref_logits, scale), softmax_outputs(arm_logits, scale)
    c = compare_arm(arm, ref, arm_logits, ref_logits, s, 2, same_kernels=True)
    assert c["logits_max_diff"] == 90 and not c["agree"]


def tensors(noise: dict[int, float], n: int = 6) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """(mine, reference) for tensors 1..n of ``chain``; ``noise[i]`` scales tensor i's difference."""
    rng = np.random.default_rng(0)
    ref = {i: rng.integers(-100, 100, size=(1, 8, 8, 4)).astype(np.int8) for i in range(1, n + 1)}
    mine = {i: np.clip(r + rng.normal(0, noise.get(i, 0.5), r.shape).round(), -128, 127).astype(np.int8)
            for i, r in ref.items()}  # fmt: skip
    return mine, ref


def test_first_divergence_names_the_op_whose_output_jumps():
    s = chain(["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"])
    mine, ref = tensors({3: 80.0, 4: 80.0, 5: 80.0, 6: 80.0})
    names = [f"t{i}" for i in range(7)]
    d = first_divergence(s, mine, ref, names)
    assert d is not None and d["op_index"] == 2 and d["op"] == "CONV_2D" and d["tensor"] == "t3"
    assert d["relative_rms"] > 0.3 and d["input_relative_rms"] < 0.05
    Divergence.model_validate({**d, "example": 0})  # the record the validation result carries


def test_no_divergence_when_the_difference_builds_up_slowly():
    s = chain(["CONV_2D"] * 6)
    mine, ref = tensors({i: 0.5 * i for i in range(1, 7)})  # a few percent more at each op: rounding
    assert first_divergence(s, mine, ref) is None
    assert relative_rms(ref[1], ref[1]) == 0.0
