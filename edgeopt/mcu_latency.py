"""Latency of an int8 .tflite on an Arm Cortex-M core with CMSIS-NN kernels, estimated from its op mix.

No MCU runs here, so the figure is an estimate, and says so: its method names the model, its constants
and the published measurements they come from.

Model: cycles = (MACs of CONV_2D x c_conv + MACs of DEPTHWISE_CONV_2D x c_dw + MACs of FULLY_CONNECTED x
c_fc) x core factor, and time = cycles / clock. The cycles-per-MAC constants are those of CMSIS-NN int8
kernels on a Cortex-M4, fitted by least squares on relative error to MLPerf Tiny results of CMSIS-NN
submissions on Cortex-M4 boards (role ``fit`` in ANCHORS). A core factor carries them to other cores:
the geometric mean of cycles(core) / cycles(Cortex-M4) over the submissions that ran the same inference
engine and version on both (role ``core``; X-CUBE-AI, Plumerai and Bosch HALE each ran on Cortex-M4,
M33 and M7 boards, and their factors for one core agree within 8%). No
MLPerf Tiny submission (v0.5 to v1.3) ran CMSIS-NN on a Cortex-M7, so the Cortex-M7 estimate rests on
that transfer; the CMSIS-NN submissions kept out of the fit (role ``holdout``: another M4 board and
clock, and two Cortex-M33 boards that test the transfer) measure how far the estimate is off
(``holdout()``, tests/unit/test_mcu_latency.py).

Other ops (ADD, pooling, reshapes, softmax) are not counted: in the reference models they hold under
0.3% of the MACs. There is no per-op cost either: the published figures cannot tell it apart from the
fully-connected rate (the one FC-heavy benchmark always has 10 ops; a fit with it put all of that model's
time on its ops and none on its MACs), so models of many small ops come out too fast.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from edgeopt.errors import BadInput

CLASSES = ("conv", "depthwise", "fully_connected")
_OP_CLASS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fully_connected"}
BASE_CORE = "cortex-m4"  # the core the kernel constants are fitted on

# Op mix of MLPerf Tiny's reference int8 models, counted by edgeopt.tflite.inspect on the .tflite files of
# github.com/mlcommons/tiny (master at 1afd2c9, benchmark/training/*/trained_models/): MACs per class and
# operator count. The zoo builds the same architectures (edgeopt.zoo: resnet8, ds_cnn, mobilenet_v1_025,
# fc_autoencoder), whose converted MACs equal these (tests/unit/test_zoo.py).
REFERENCE_MIX: dict[str, dict[str, int]] = {
    # pretrainedResnet_quant.tflite: ResNet-8, CIFAR-10
    "ic": {"conv": 12_500_992, "depthwise": 0, "fully_connected": 640, "ops": 16},
    # kws_ref_model.tflite: DS-CNN small, Speech Commands
    "kws": {"conv": 2_368_000, "depthwise": 288_000, "fully_connected": 768, "ops": 13},
    # vww_96_int8.tflite: MobileNetV1 0.25, 96x96, visual wake words
    "vww": {"conv": 6_690_816, "depthwise": 798_336, "fully_connected": 512, "ops": 31},
    # ad01_int8.tflite: FC autoencoder, ToyADMOS
    "ad": {"conv": 0, "depthwise": 0, "fully_connected": 264_192, "ops": 10},
}


@dataclass(frozen=True)
class System:
    """One MLPerf Tiny submission's system: where it ran and what it published (median throughput of the
    single-stream run, inferences per second over 5 windows, per benchmark)."""

    version: str
    org: str
    board: str
    core: str
    clock_hz: float
    software: str
    kernels: str  # cmsis-nn, or the engine's own kernels (x-cube-ai, plumerai, hale)
    role: str  # fit, core, holdout or context (see ANCHORS)
    results: str  # the results folder in github.com/mlcommons/tiny_results_<version>
    throughput: dict[str, float]


# Published MLPerf Tiny results, read from the results repositories mlcommons/tiny_results_v0.5 ... v1.1
# (<results>/<benchmark>/performance/results.txt, "Median throughput is ..."); core and clock from each
# submission's systems/*.json. role: fit (kernel constants), core (core factors), holdout (not fitted
# on: the error report), context (shown, not used: TFLite Micro 2.3.1's CMSIS-NN integration of 2021
# predates most of the optimized kernels and is 1.5-2x slower than the later CMSIS-NN submissions).
# fmt: off
SYSTEMS: list[System] = [
    System("v1.0", "OctoML", "NUCLEO-L4R5ZI", "cortex-m4", 120e6, "microTVM + CMSIS-NN", "cmsis-nn", "fit",
           "closed/OctoML/results/microtvm_cmsis_nn/NUCLEO_L4R5ZI",
           {"ic": 2.567, "kws": 10.019, "vww": 3.320, "ad": 116.212}),
    System("v1.1", "Skymizer", "NUCLEO-L4R5ZI", "cortex-m4", 120e6, "ONNC + CMSIS-NN (Zephyr)", "cmsis-nn", "fit",
           "closed/Skymizer/results/NUCLEO_L4R5ZI-zephyr",
           {"ic": 3.372, "kws": 10.679, "vww": 5.056, "ad": 124.906}),
    System("v1.1", "Nuvoton", "NuMaker-M467HJ", "cortex-m4", 200e6, "ONNC + CMSIS-NN (Zephyr)", "cmsis-nn", "holdout",
           "closed/Nuvoton/results/NUMAKER_M467HJ-zephyr",
           {"ic": 5.833, "kws": 21.652, "vww": 10.129, "ad": 204.635}),
    System("v1.0", "OctoML", "nRF5340-DK", "cortex-m33", 128e6, "microTVM + CMSIS-NN", "cmsis-nn", "holdout",
           "closed/OctoML/results/microtvm_cmsis_nn/NRF5340-DK",
           {"ic": 3.163, "kws": 13.143, "vww": 4.310, "ad": 159.579}),
    System("v0.7", "Renesas", "EK-RA6M4", "cortex-m33", 200e6, "TFLite Micro + CMSIS-NN", "cmsis-nn", "holdout",
           "closed/renesas/results/EK-RA6M4",
           {"ic": 4.062, "kws": 19.774, "vww": 6.159, "ad": 216.772}),
    System("v0.5", "MLCommons reference", "NUCLEO-L4R5ZI", "cortex-m4", 120e6, "TFLite Micro 2.3.1 + CMSIS-NN",
           "cmsis-nn",
           "context",
           "closed/reference/results/Nucleo-L4R5ZI",
           {"ic": 1.420, "kws": 5.497, "vww": 1.665, "ad": 99.487}),
    System("v1.0", "STMicroelectronics", "NUCLEO-L4R5ZI", "cortex-m4", 120e6, "X-CUBE-AI", "x-cube-ai", "core",
           "closed/STMicroelectronics/results/NUCLEO_L4R5ZI",
           {"ic": 4.407, "kws": 13.323, "vww": 4.339, "ad": 131.950}),
    System("v1.0", "STMicroelectronics", "NUCLEO-H7A3ZI-Q", "cortex-m7", 280e6, "X-CUBE-AI", "x-cube-ai", "core",
           "closed/STMicroelectronics/results/NUCLEO-H7A3ZI-Q",
           {"ic": 18.401, "kws": 59.667, "vww": 19.722, "ad": 547.705}),
    System("v1.0", "STMicroelectronics", "NUCLEO-U575ZI-Q", "cortex-m33", 160e6, "X-CUBE-AI", "x-cube-ai", "core",
           "closed/STMicroelectronics/results/NUCLEO-U575ZI-Q",
           {"ic": 7.158, "kws": 22.608, "vww": 7.496, "ad": 206.211}),
    System("v1.0", "Plumerai", "NUCLEO-L4R5ZI", "cortex-m4", 120e6, "Plumerai Inference Engine", "plumerai", "core",
           "closed/plumerai/results/NUCLEO_L4R5ZI",
           {"ic": 5.775, "kws": 13.955, "vww": 4.795, "ad": 179.448}),
    System("v1.0", "Plumerai", "DISCO-F746NG", "cortex-m7", 216e6, "Plumerai Inference Engine", "plumerai", "core",
           "closed/plumerai/results/DISCO_F746NG",
           {"ic": 15.440, "kws": 52.288, "vww": 17.535, "ad": 435.741}),
    System("v1.0", "Plumerai", "B-U585I-IOT02A", "cortex-m33", 160e6, "Plumerai Inference Engine", "plumerai", "core",
           "closed/plumerai/results/B_U585I_IOT02A",
           {"ic": 9.341, "kws": 28.219, "vww": 9.342, "ad": 206.127}),
    System("v1.1", "Bosch", "NUCLEO-L4R5ZI", "cortex-m4", 120e6, "Bosch HALE 1.0", "hale", "core",
           "closed/bosch/results/NUCLEO_L4R5ZI",
           {"ic": 5.586, "kws": 15.954, "vww": 5.533, "ad": 176.699}),
    System("v1.1", "Bosch", "DISCO-F746NG", "cortex-m7", 216e6, "Bosch HALE 1.0", "hale", "core",
           "closed/bosch/results/DISCO_F746NG",
           {"ic": 16.242, "kws": 54.293, "vww": 17.490, "ad": 587.335}),
    System("v1.1", "Bosch", "NUCLEO-H7A3ZI", "cortex-m7", 280e6, "Bosch HALE 1.0", "hale", "core",
           "closed/bosch/results/NUCLEO_H7A3ZI",
           {"ic": 21.353, "kws": 67.956, "vww": 22.906, "ad": 737.281}),
    System("v1.1", "Bosch", "NUCLEO-U575ZI-Q", "cortex-m33", 160e6, "Bosch HALE 1.0", "hale", "core",
           "closed/bosch/results/NUCLEO_U575ZI",
           {"ic": 8.493, "kws": 25.166, "vww": 8.715, "ad": 262.993}),
]
# fmt: on


def _anchor(s: System, benchmark: str) -> dict[str, Any]:
    thr = s.throughput[benchmark]
    return {
        "version": s.version,
        "org": s.org,
        "board": s.board,
        "core": s.core,
        "clock_hz": s.clock_hz,
        "software": s.software,
        "kernels": s.kernels,
        "role": s.role,
        "benchmark": benchmark,
        "throughput": thr,
        "latency_ms": 1000.0 / thr,  # one inference: the inverse of the published throughput
        "source": f"MLPerf Tiny {s.version} closed, {s.org}, {s.board} ({s.core} at {s.clock_hz / 1e6:g} MHz, "
        f"{s.software}): median throughput {thr} inf./s, github.com/mlcommons/tiny_results_{s.version}/"
        f"{s.results}/{benchmark}/performance/results.txt",
    }


# One row per published figure (system x benchmark), each with its ``source``.
ANCHORS: list[dict[str, Any]] = [_anchor(s, b) for s in SYSTEMS for b in s.throughput]


@dataclass(frozen=True)
class KernelModel:
    """Cycles of CMSIS-NN int8 kernels on the base core (Cortex-M4), and the factor of each core."""

    cycles_per_mac: dict[str, float]
    core_factors: dict[str, float]
    fitted_on: tuple[str, ...]

    def cycles(self, mix: dict[str, float], core: str) -> float:
        """Clock cycles of one inference of a model with op mix ``mix`` on ``core``."""
        if core not in self.core_factors:
            raise BadInput(f"no MCU latency model for core {core!r}; known: {', '.join(sorted(self.core_factors))}")
        base = sum(mix.get(c, 0) * self.cycles_per_mac[c] for c in CLASSES)
        return base * self.core_factors[core]


def op_mix(structure: dict[str, Any]) -> dict[str, int]:
    """MACs per op class and the operator count, from ``edgeopt.tflite.inspect(content)``."""
    mix = dict.fromkeys(CLASSES, 0)
    for op in structure["macs_per_op"]:
        cls = _OP_CLASS.get(op["op"])
        if cls:
            mix[cls] += int(op["macs"])
    mix["ops"] = len(structure["macs_per_op"])
    return mix


def _cycles(anchor: dict[str, Any]) -> float:
    return anchor["latency_ms"] * 1e-3 * anchor["clock_hz"]


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares by trying every set of free variables (three unknowns: 7 small solves);
    a negative cycles-per-MAC would be meaningless."""
    best, best_err = np.zeros(a.shape[1]), float(np.sum(b**2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x_sub, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x_sub < 0):
                continue
            x = np.zeros(a.shape[1])
            x[list(cols)] = x_sub
            err = float(np.sum((a @ x - b) ** 2))
            if err < best_err - 1e-12:
                best, best_err = x, err
    return best


def core_factors(anchors: list[dict[str, Any]]) -> dict[str, float]:
    """cycles(core) / cycles(Cortex-M4) per core: the geometric mean over every benchmark of every engine
    (and version) that has a ``core`` result on both."""
    ratios: dict[str, list[float]] = {}
    core_rows = [a for a in anchors if a["role"] == "core"]
    base = {(a["kernels"], a["version"], a["benchmark"]): a for a in core_rows if a["core"] == BASE_CORE}
    for a in core_rows:
        b = base.get((a["kernels"], a["version"], a["benchmark"]))
        if a["core"] != BASE_CORE and b is not None:
            ratios.setdefault(a["core"], []).append(_cycles(a) / _cycles(b))
    return {BASE_CORE: 1.0} | {c: math.exp(float(np.mean(np.log(r)))) for c, r in sorted(ratios.items())}


def fit(anchors: list[dict[str, Any]] = ANCHORS) -> KernelModel:
    """Kernel constants from the ``fit`` anchors (least squares on relative error, constants >= 0) and core
    factors from the ``core`` anchors."""
    factors = core_factors(anchors)
    rows = [a for a in anchors if a["role"] == "fit"]
    if not rows:
        raise BadInput("no anchors with role 'fit' to fit the MCU latency model on")
    a = np.array([[REFERENCE_MIX[r["benchmark"]][c] for c in CLASSES] for r in rows], dtype=float)
    y = np.array([_cycles(r) / factors[r["core"]] for r in rows])
    x = _nnls(a / y[:, None], np.ones(len(rows)))  # each row divided by its target: relative error
    return KernelModel(
        cycles_per_mac=dict(zip(CLASSES, (float(v) for v in x), strict=True)),
        core_factors=factors,
        fitted_on=tuple(sorted({f"{r['org']} {r['version']} {r['board']}" for r in rows})),
    )


@cache
def model() -> KernelModel:
    """The model fitted on ANCHORS (computed once)."""
    return fit(ANCHORS)


def predict_ms(mix: dict[str, float], core: str, clock_hz: float, km: KernelModel | None = None) -> float:
    """Estimated latency of one inference in milliseconds."""
    if clock_hz <= 0:
        raise BadInput(f"clock_hz must be positive (got {clock_hz})")
    return (km or model()).cycles(mix, core) / clock_hz * 1e3


def holdout(km: KernelModel | None = None, role: str = "holdout") -> list[dict[str, Any]]:
    """Every anchor of ``role`` with the estimate for it and the error in percent of the published figure."""
    km = km or model()
    out = []
    for a in ANCHORS:
        if a["role"] == role:
            est = predict_ms(REFERENCE_MIX[a["benchmark"]], a["core"], a["clock_hz"], km)
            out.append(a | {"estimated_ms": est, "error_pct": (est - a["latency_ms"]) / a["latency_ms"] * 100})
    return out


@cache
def max_holdout_error_pct() -> float:
    """The largest absolute hold-out error, in percent."""
    return max(abs(r["error_pct"]) for r in holdout())


@cache
def mean_holdout_error_pct() -> float:
    """The mean absolute hold-out error, in percent."""
    rows = holdout()
    return sum(abs(r["error_pct"]) for r in rows) / len(rows)


@dataclass(frozen=True)
class McuEstimate:
    ms: float
    cycles: float
    macs: int
    method: str


def estimate(structure: dict[str, Any], core: str, clock_hz: float) -> McuEstimate:
    """Latency of the int8 model described by ``structure`` (``edgeopt.tflite.inspect``) on ``core`` at
    ``clock_hz``, with its method in words."""
    km = model()
    mix = op_mix(structure)
    cycles = km.cycles(mix, core)
    ms = cycles / clock_hz * 1e3
    macs = sum(mix[c] for c in CLASSES)
    c = km.cycles_per_mac
    method = (
        f"estimate for CMSIS-NN int8 kernels on {core} at {clock_hz / 1e6:g} MHz: {macs:,} MACs "
        f"(conv {mix['conv']:,}, depthwise {mix['depthwise']:,}, fully connected {mix['fully_connected']:,}) x "
        f"{c['conv']:.3g}/{c['depthwise']:.3g}/{c['fully_connected']:.3g} cycles per MAC, "
        f"x {km.core_factors[core]:.3g} for {core} vs {BASE_CORE}; fitted on "
        f"MLPerf Tiny CMSIS-NN results ({'; '.join(km.fitted_on)}); off by {mean_holdout_error_pct():.0f}% on "
        f"average, {max_holdout_error_pct():.0f}% at worst, on the published results it was not fitted on "
        f"(edgeopt.mcu_latency.ANCHORS)"
    )
    return McuEstimate(ms=ms, cycles=cycles, macs=macs, method=method)
