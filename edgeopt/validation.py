"""Typed validation records: what validate measured, every gate's verdict, and the one mapping from a
verdict to an error (and so to a CLI exit code).

``ValidationResult.to_dict()`` gives the same JSON dict as the validate stage always wrote (manifests,
report.html and bench read it); ``from_dict`` reads one back (cached results, JSON reports).
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt.errors import BadInput, GateFailed, RuntimeCrash

SCHEMA = "edgeopt.validation/1"


class GateStatus(StrEnum):
    passed = "passed"
    failed = "failed"
    not_evaluated = "not evaluated"


class Gate(BaseModel):
    """One check of one profile (``-`` for gates of the validate config itself)."""

    model_config = ConfigDict(frozen=True)

    profile: str
    gate: str
    status: GateStatus
    measured: float | int | str | None = None
    budget: float | int | str | None = None
    unit: str = ""
    detail: str = ""
    method: str | None = None  # how an estimated figure was obtained (latency gates only)

    @property
    def key(self) -> str:
        """``profile/gate``, the name a user sees in messages."""
        return f"{self.profile}/{self.gate}"

    def to_dict(self) -> dict[str, Any]:
        """The gate as JSON; ``method`` only when set (older manifests have it on latency gates only)."""
        d = self.model_dump(mode="json")
        if d["method"] is None:
            del d["method"]
        return d


class _Record(BaseModel):
    """Records read back from older files may carry keys added later or earlier: keep them, in order."""

    model_config = ConfigDict(extra="allow")


class Divergence(_Record):
    """Where two runtimes part: the first op whose output differs beyond what rounding explains."""

    op_index: int  # position in the model's operator list (execution order)
    op: str
    tensor: str
    steps: float  # largest difference in that tensor, in its quantization steps
    relative_rms: float  # RMS of the difference / standard deviation of the reference's values
    input_relative_rms: float  # the same for the op's inputs: what it received already differing
    example: int  # the input (index into the compared examples) the tensors were read for
    method: str = ""


class CrossCheck(_Record):
    """Two runtimes' raw outputs (or logits) on the same inputs. ``allowed`` steps scale with ``depth``,
    the requantizing ops before the compared tensor; of the ``flips`` examples that change class, the
    ``unexplained_flips`` had their two classes further apart in the reference than ``allowed`` steps (none
    may). ``relative_rms`` is the RMS difference over the reference's spread; ``first_divergence`` is
    looked for when the two disagree."""

    samples: int
    output_max_diff: float
    output_values_beyond_tolerance: int
    values: int
    top1_agreement: float
    unit: str  # "steps" (integer outputs) or "abs" (float outputs)
    allowed: int
    compared: str  # "output" or "logits (input of the final SOFTMAX)"
    max_diff: float
    agree: bool
    logits_max_diff: float | None = None
    method: str | None = None
    depth: int | None = None
    flips: int | None = None
    unexplained_flips: int | None = None
    relative_rms: float | None = None
    bound: str | None = None  # how ``allowed`` was set
    first_divergence: Divergence | None = None


class Latency(_Record):
    """Host latency at one thread count (batch 1, ``invoke()`` only)."""

    threads: int
    runs: int
    init_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    times_ms: list[float] = Field(default_factory=list)
    method: str = ""


class TflmRun(_Record):
    """TFLite Micro: the smallest arena and, when LiteRT ran too, the comparison with it."""

    arena_bytes: int
    samples: int
    method: str = ""
    vs_litert: CrossCheck | None = None
    max_diff_vs_litert: float | None = None
    unit: str | None = None
    agree: bool | None = None


class ArmRun(_Record):
    """One evaluation on the emulated core: its outputs against x86's and the reference kernels'."""

    threads: int
    samples: int
    accuracy: float | None = None  # top-1 on the labelled examples it ran
    vs_x86: CrossCheck | None = None
    vs_reference: CrossCheck | None = None


class ArmCount(_Record):
    """Instructions per ``Invoke()`` at batch 1 (QEMU TCG plugin, median over ``windows``)."""

    threads: int
    windows: int
    critical_path: int  # the busiest thread's instructions, waiting (spin) excluded: what latency follows
    total: int  # all threads' instructions, waiting excluded
    spin: int  # instructions in wait loops (YIELD/WFE blocks), all threads
    per_thread: list[int]  # of the median window, busiest first
    kernels: str  # the kernel families, from the instructions executed
    top: dict[str, int]  # the most executed mnemonics (all threads)


class ArmCheck(_Record):
    """What the phone check measured on one core (edgeopt.arm.check): LiteRT's aarch64 build under QEMU."""

    core: str
    qemu_cpu: str
    midr: str
    uarch: str
    isa: str
    emulator: str
    litert: str  # the aarch64 wheel's version
    kernels: str | None = None  # the kernel families that ran (from the instruction counts)
    runs: list[ArmRun] = Field(default_factory=list)
    counts: list[ArmCount] = Field(default_factory=list)
    method: str = ""

    def run(self, threads: int) -> ArmRun | None:
        return next((r for r in self.runs if r.threads == threads), None)

    def count(self, threads: int) -> ArmCount | None:
        return next((c for c in self.counts if c.threads == threads), None)


class Measurements(_Record):
    """Everything validate measured; a field left unset was not measured (and is not written)."""

    structure: dict[str, Any]  # edgeopt.tflite.inspect(...)
    samples: int
    runtime: str | None = None
    accuracy: float | None = None
    outputs_finite: bool | None = None
    predicted_classes: int | None = None
    keras_accuracy: float | None = None
    agreement: float | None = None
    accuracy_drop_vs_keras: float | None = None  # fraction (keras - litert), not points
    correct: str | None = None  # which scored examples were right, in order (pack_outcomes), when asked for
    max_abs_output_diff: float | None = None
    kernel_cross_check: CrossCheck | None = None
    latency: dict[str, Latency] = Field(default_factory=dict)  # by thread count, as a string
    tflm: TflmRun | None = None
    vela: dict[str, dict[str, Any]] = Field(default_factory=dict)  # by accelerator config
    firmware: dict[str, dict[str, Any]] = Field(default_factory=dict)  # by profile: FirmwareRecord JSON
    arm: dict[str, ArmCheck] = Field(default_factory=dict)  # the phone check, by core model


def pack_outcomes(correct: np.ndarray) -> str:
    """Per-example outcomes (a bool array) as text: bits packed 8 to a byte, base64 (10,000 examples: 1.7 kB)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool))).decode()


def unpack_outcomes(text: str, n: int) -> np.ndarray:
    """The bool array ``pack_outcomes`` packed (``n``: how many examples it holds)."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


# Keys of the flat dict that belong to the result, not to the measurements.
_RESULT_KEYS = {"schema", "model", "seconds", "gates", "crashed", "failures", "passed"}


class ValidationResult(BaseModel):
    """What ``edgeopt.stages.validate`` returns: measurements, gates, crashes and why checks did not run."""

    model: str  # the model's name (file name)
    seconds: float = 0.0
    measurements: Measurements
    gates: list[Gate] = Field(default_factory=list)
    crashed: list[str] = Field(default_factory=list)  # runtimes that crashed or hung, with the signal
    failures: dict[str, str] = Field(default_factory=dict)  # "runtime:task" -> why its checks could not run

    @property
    def passed(self) -> bool:
        """No runtime crashed, no gate failed and the outputs were not found non-finite."""
        return (
            not self.crashed
            and self.measurements.outputs_finite is not False
            and all(g.status is not GateStatus.failed for g in self.gates)
        )

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if g.status is GateStatus.failed]

    @property
    def not_evaluated(self) -> list[Gate]:
        return [g for g in self.gates if g.status is GateStatus.not_evaluated]

    def gate(self, profile: str, name: str) -> Gate:
        """The gate ``name`` of ``profile``; KeyError when there is none."""
        for g in self.gates:
            if g.profile == profile and g.gate == name:
                return g
        raise KeyError(f"{profile}/{name}")

    def raise_for_status(self, *, strict: bool = False) -> None:
        """RuntimeCrash (exit 3) when a runtime crashed, else GateFailed (exit 1) when a gate failed or the
        outputs are not finite. ``strict``: a gate that was not evaluated fails too, and the message says
        why it was not and how to evaluate it."""
        if self.crashed:
            raise RuntimeCrash(f"{self.model}: runtime crashed: " + "; ".join(self.crashed))
        parts: list[str] = []
        failed = self.failed_gates
        if failed:
            parts.append(f"{len(failed)} gate(s) failed: " + ", ".join(g.key for g in failed))
        elif self.measurements.outputs_finite is False:
            parts.append("non-finite outputs (NaN or Inf)")
        if strict and self.not_evaluated:
            todo = self.not_evaluated
            parts.append(
                f"{len(todo)} gate(s) not evaluated (strict): "
                + "; ".join(f"{g.key} not evaluated: {g.detail}" for g in todo)
            )
        if parts:
            raise GateFailed(f"{self.model}: " + "; ".join(parts))

    def to_dict(self) -> dict[str, Any]:
        """The validate stage's JSON dict, keys as always: schema, model, the measurements, gates,
        crashed, failures, passed. ``seconds`` is left out (manifests record it beside the dict)."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            **self.measurements.model_dump(mode="json", exclude_unset=True),
            "gates": [g.to_dict() for g in self.gates],
            "crashed": list(self.crashed),
            "failures": dict(self.failures),
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationResult:
        """Read a dict written by ``to_dict`` (or an older validate stage); ``passed`` is recomputed."""
        if d.get("schema", SCHEMA) != SCHEMA:
            raise BadInput(f"validation result schema {d.get('schema')!r}, expected {SCHEMA}")
        return cls(
            model=d["model"],
            seconds=d.get("seconds", 0.0),
            measurements=Measurements.model_validate({k: v for k, v in d.items() if k not in _RESULT_KEYS}),
            gates=[Gate.model_validate(g) for g in d.get("gates", [])],
            crashed=d.get("crashed", []),
            failures=d.get("failures", {}),
        )


def as_result(r: ValidationResult | dict[str, Any]) -> ValidationResult:
    """A ValidationResult from either itself or its dict (reports accept both)."""
    return r if isinstance(r, ValidationResult) else ValidationResult.from_dict(r)
