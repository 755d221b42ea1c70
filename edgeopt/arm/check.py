"""The phone check's measurements: a .tflite run by LiteRT's aarch64 build on an emulated core, its
outputs compared with the x86 run and with the reference kernels, its accuracy, and the instructions
its kernels execute per ``Invoke()``. This module measures; ``edgeopt.gates`` judges.

Runs are in child processes with a timeout (``edgeopt.runtimes.litert_arm``); a crash or hang is
recorded in ``failures`` and ``crashed`` under the runtime's name, which names the core.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np

from edgeopt.arm import cores
from edgeopt.arm import guest as guest_mod
from edgeopt.arm.guest import Guest
from edgeopt.arm.qemu import EmulatorRefused
from edgeopt.runtimes import litert_arm
from edgeopt.runtimes.isolate import ChildFailed
from edgeopt.runtimes.litert import dequantize_values
from edgeopt.validation import ArmCheck, ArmCount, ArmRun, CrossCheck

log = logging.getLogger(__name__)

SAMPLES_OTHER_THREADS = 200  # inputs run at the thread counts other than the profile's
COUNT_WINDOWS = 5  # invokes counted; several threads share work differently from one to the next


# compare(arm, other, arm_logits, other_logits, same_kernels) -> a CrossCheck dict: validate's comparison,
# with its bound (edgeopt.stages.validate.compare_arm); measuring here, judging there.
Compare = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, bool], dict[str, Any]]


@np.errstate(invalid="ignore")
def differences(
    a: np.ndarray, b: np.ndarray, a_logits: np.ndarray | None, b_logits: np.ndarray | None, out_detail: dict[str, Any]
) -> dict[str, Any]:
    """How many values of two runs' raw outputs (and logits) differ, and the largest difference of the
    outputs once dequantized: what a comparison's largest step leaves out."""
    integer = np.dtype(out_detail["dtype"]).kind in "iu"

    def differing(p: np.ndarray, q: np.ndarray) -> int:
        return int(np.sum(p.astype(np.int64) != q.astype(np.int64) if integer else p != q))

    scale, zero = out_detail.get("scale", 0.0), out_detail.get("zero_point", 0)
    deq = np.abs(dequantize_values(a, scale, zero).astype(np.float64) - dequantize_values(b, scale, zero))
    out = {
        "output_values_differing": differing(a, b),
        "output_max_abs_diff_dequantized": float(deq.max()) if deq.size else 0.0,
    }
    if a_logits is not None and b_logits is not None:
        out["logits_values_differing"] = differing(a_logits, b_logits)
    return out


def summarize(threads: int, windows: list[dict[str, Any]]) -> ArmCount:
    """The plugin's windows (one ``Invoke()`` each) as one record: the median window by critical path."""

    def work(w: dict[str, Any]) -> list[int]:
        return sorted((v["insns"] - v["spin"] for v in w["threads"].values()), reverse=True)

    ranked = sorted(windows, key=lambda w: work(w)[0])
    mid = ranked[len(ranked) // 2]
    mnemonics: dict[str, int] = mid["mnemonics"]
    return ArmCount(
        threads=threads,
        windows=len(windows),
        critical_path=int(statistics.median(work(w)[0] for w in windows)),
        total=int(statistics.median(sum(work(w)) for w in windows)),
        spin=int(statistics.median(sum(v["spin"] for v in w["threads"].values()) for w in windows)),
        per_thread=work(mid),
        kernels=cores.kernel_family(mnemonics),
        top=dict(sorted(mnemonics.items(), key=lambda kv: -kv[1])[:12]),
        critical_path_range=[work(ranked[0])[0], work(ranked[-1])[0]],
    )


def measure(
    guest: Guest,
    core_name: str,
    content: bytes,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    threads: list[int],
    profile_threads: int,
    out_detail: dict[str, Any],
    logits: dict[str, Any] | None,
    x86: tuple[np.ndarray, np.ndarray | None] | None,
    reference: tuple[np.ndarray, np.ndarray | None] | None,
    compare: Compare,
    timeout: float,
    batch_size: int = 256,
    count: bool = True,
    failures: dict[str, str],
    crashed: list[str],
) -> ArmCheck:
    """Run ``content`` on core ``core_name`` at each of ``threads``: all of ``x`` at ``profile_threads``
    (the accuracy on the test split), the first 200 at the others; compare with ``x86`` (raw outputs
    and logits of the x86 XNNPACK run on the same ``x``) and ``reference`` (the reference kernels on
    the first examples) with ``compare``; count instructions per ``Invoke()`` at each thread count when
    ``count``. Runs that crash or hang are recorded in ``failures`` / ``crashed`` and skipped."""
    c = cores.core(core_name)
    name = litert_arm.runtime_name(c)
    integer = np.dtype(out_detail["dtype"]).kind in "iu"
    tap = logits["index"] if logits and integer else None
    check = ArmCheck(
        core=c.name,
        qemu_cpu=c.qemu_cpu,
        midr=str(c.midr),
        uarch=c.uarch,
        isa=c.isa,
        emulator=guest.emulator.describe(),
        litert=version("ai-edge-litert"),
        method=(
            f"ai_edge_litert's aarch64 wheel under {guest.emulator.describe()} user mode, QEMU CPU {c.qemu_cpu} "
            f"({c.isa}), /proc/cpuinfo showing {c.uarch} ({c.midr}); optimized kernels (XNNPACK), child process"
        ),
    )

    runs: list[ArmRun] = []
    counts: list[ArmCount] = []
    dead: list[str] = []  # a core that crashed or hung once is not run again (each hang costs the timeout)

    def child(task: str, xs: np.ndarray, **kw: Any) -> tuple[dict[str, Any], Any] | None:
        if dead:
            failures.setdefault(f"{name}:{task}", f"not run: {dead[0]}")
            return None
        try:
            return litert_arm.run(guest, c, task, content, xs, timeout=timeout, **kw)
        except ChildFailed as e:
            log.warning("%s: %s (%s)", name, e, task)
            failures[f"{name}:{task}"] = str(e)
            if e.crashed:
                crashed.append(str(e))
                dead.append(str(e))
            return None

    for t in sorted(set(threads), key=lambda t: (t != profile_threads, t)):
        n = len(x) if t == profile_threads else min(len(x), SAMPLES_OTHER_THREADS)
        r = child("litert_eval", x[:n], threads=t, batch_size=batch_size, tap=tap)
        if r is None:
            continue
        raw, raw_tap = r[1], r[0].get("tap")
        run = ArmRun(threads=t, samples=n)
        if y is not None:
            out = dequantize_values(raw, out_detail.get("scale", 0.0), out_detail.get("zero_point", 0))
            run.accuracy = float(np.mean(np.argmax(out, -1) == y[:n]))
        where = f"{c.name} ({c.qemu_cpu}), {t} thread(s)"
        for attr, other, same, what in (
            ("vs_x86", x86, True, "x86 XNNPACK on this host"),
            ("vs_reference", reference, False, "the reference kernels (OpResolverType.BUILTIN_REF)"),
        ):
            if other is not None:
                m = min(n, len(other[0]))
                cc = compare(raw[:m], other[0][:m], _head(raw_tap, m), _head(other[1], m), same)
                cc["method"] = f"LiteRT aarch64 XNNPACK on {where} vs {what}"
                setattr(run, attr, CrossCheck.model_validate(cc))
        runs.append(run)

    if count:
        if guest.plugin is None:
            failures[f"{name}:litert_count"] = f"not counted: {guest.no_count}"
        else:
            for t in sorted(set(threads)):
                r = child("litert_count", x[:1], threads=t, windows=COUNT_WINDOWS)
                if r is not None:
                    counts.append(summarize(t, r[0]["windows"]))
    # assigned, not appended to: a record's dump leaves out fields never set
    check.runs, check.counts = runs, counts
    if counts:
        check.kernels = counts[0].kernels
    return check


def _head(a: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if a is None else a[:n]


def measure_profiles(
    profiles: list[Any],
    content: bytes,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    structure: dict[str, Any],
    x86: tuple[np.ndarray, np.ndarray | None] | None,
    reference: tuple[np.ndarray, np.ndarray | None] | None,
    compare: Compare,
    timeout: float,
    batch_size: int,
    failures: dict[str, str],
    crashed: list[str],
    advance: Any = None,
) -> dict[str, ArmCheck]:
    """The phone check for every profile with an ``arm:`` core, once per core: at 1 thread and at every
    thread count of the profiles on that core (the test split at the largest). The guest is built on
    first use; when it cannot be (no QEMU, no debootstrap, no mirror) or the emulator is refused for a
    core, ``failures["litert-arm:<core>"]`` says why and that core is skipped."""
    by_core: dict[str, set[int]] = {}
    for p in profiles:
        if p.arm is not None:
            by_core.setdefault(p.arm.core, {1}).add(p.threads)
    out: dict[str, ArmCheck] = {}
    if not by_core:
        return out
    try:
        g = guest_mod.setup()
    except guest_mod.GuestMissing as e:
        for core_name in by_core:
            failures[f"litert-arm:{core_name}"] = f"the phone check could not run: {e}"
        return out
    for core_name, threads in sorted(by_core.items()):
        try:
            out[str(core_name)] = measure(
                g, core_name, content, x, y, threads=sorted(threads), profile_threads=max(threads),
                out_detail=structure["outputs"][0], logits=structure["logits"], x86=x86, reference=reference,
                compare=compare, timeout=timeout, batch_size=batch_size, failures=failures, crashed=crashed,
            )  # fmt: skip
        except (EmulatorRefused, guest_mod.GuestMissing) as e:
            failures[f"litert-arm:{core_name}"] = f"the phone check could not run: {e}"
        if advance is not None:
            advance()
    return out
