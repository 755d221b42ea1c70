"""Fault injection for edgeopt's child processes, for tests only; production code has no hook for it.

Python imports ``sitecustomize`` at start-up from ``sys.path``, so a test that puts this folder on
the ``PYTHONPATH`` of the processes it starts reaches every child edgeopt starts from them: the
runtime workers (``python -m edgeopt.runtimes.worker JOB_DIR``) and Vela (the ``vela`` script).
``EDGEOPT_FAULT`` says which child does what, e.g. ``litert_bench:hang,tflm_eval:segv,vela:abort``:

- the target is a worker task (the ``task`` of the job's ``job.json``), ``TASK@RESOLVER`` for a task run
  with that LiteRT op resolver only (``litert_eval@reference``: the reference kernels), ``TASK@MACHINE``
  for a task run by a Python of that machine only (``litert_eval@aarch64``: the arm64 guest's worker
  under QEMU, not the host's), or ``vela``;
- the action is ``hang`` (sleep, deaf to SIGTERM and SIGINT, like a wedged native call), ``segv``,
  ``abort`` or ``kill`` (the process sends itself that signal), ``exit`` (exit code 70, no result), or
  ``corrupt=N``: the runtime computes op N wrongly (the weights it reads for op N are negated in the job's
  copy of the model, in place), as a broken kernel would, and the child then runs normally.

The fault fires before the child runs any edgeopt code: the parent only sees the child's exit, its
silence or its results, so where inside the child it happens changes nothing the tests check, and the
injection does not depend on the worker's internals. With ``EDGEOPT_FAULT_LOG=DIR`` every fault that
fires first writes ``DIR/<target>-<pid>.json``, so a test can tell that its fault really happened and
which process to look for.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HANG_LIMIT_S = 900.0  # a hung child outlives a test run that forgot to kill it by at most this long


def _chain() -> None:
    """Run the sitecustomize this one shadows, if the interpreter has one further down the path."""
    here = Path(__file__).resolve().parent
    for entry in sys.path:
        try:
            candidate = Path(entry or ".").resolve() / "sitecustomize.py"
        except OSError:
            continue
        if candidate.parent != here and candidate.is_file():
            code = compile(candidate.read_bytes(), str(candidate), "exec")
            exec(code, {"__name__": "sitecustomize", "__file__": str(candidate)})
            return


def parse(spec: str) -> dict[str, str]:
    """``"a:hang, b:segv"`` -> ``{"a": "hang", "b": "segv"}``."""
    out: dict[str, str] = {}
    for item in spec.replace(";", ",").split(","):
        if item.strip():
            target, _, action = item.strip().partition(":")
            out[target.strip()] = action.strip()
    return out


def targets(argv: list[str]) -> list[str]:
    """Which child this process is, most specific first: ``TASK@RESOLVER``, ``TASK@MACHINE`` and ``TASK``
    for a worker task, ``vela``, or nothing for any other process."""
    if "-m" in argv:
        i = argv.index("-m")
        if argv[i + 1 : i + 2] == ["edgeopt.runtimes.worker"] and len(argv) > i + 2:
            try:
                job = json.loads((Path(argv[i + 2]) / "job.json").read_text())
            except (OSError, ValueError):
                return []
            import platform

            task = str(job.get("task"))
            by_resolver = [f"{task}@{job['resolver']}"] if "resolver" in job else []
            return [*by_resolver, f"{task}@{platform.machine()}", task]
    if len(argv) > 1 and Path(argv[1]).name == "vela":
        return ["vela"]
    if "-c" in argv and "ethosu.vela" in " ".join(argv[argv.index("-c") + 1 :][:1]):
        return ["vela"]
    return []


def corrupt(job_dir: Path, op_index: int) -> None:
    """Negate, in place, the int8 weights op ``op_index`` of the job's model reads (its second input)."""
    from edgeopt import tflite

    path = job_dir / "model.tflite"
    content = path.read_bytes()
    model = tflite.parse(content)
    sg = model.subgraphs[0]
    weights = sg.tensors[sg.operators[op_index].inputs[1]]
    data = bytes(model.buffers[weights.buffer].data)
    at = content.find(data)
    assert data and at >= 0, "the weights of that op are not in the file"
    path.write_bytes(content[:at] + bytes((256 - b) % 256 for b in data) + content[at + len(data) :])


def fire(name: str, action: str, argv: list[str]) -> None:
    import signal

    log_dir = os.environ.get("EDGEOPT_FAULT_LOG")
    if log_dir:
        record = {"target": name, "action": action, "pid": os.getpid()}
        (Path(log_dir) / f"{name}-{os.getpid()}.json").write_text(json.dumps(record))
    if action.startswith("corrupt="):
        corrupt(Path(argv[argv.index("-m") + 2]), int(action.split("=", 1)[1]))
        return
    if action == "hang":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        end = time.monotonic() + HANG_LIMIT_S
        while time.monotonic() < end:
            time.sleep(1.0)
        os._exit(71)
    if action == "exit":
        os._exit(70)
    sig = {"segv": signal.SIGSEGV, "abort": signal.SIGABRT, "kill": signal.SIGKILL}.get(action)
    if sig is None:
        sys.stderr.write(
            f"faultinject: unknown action {action!r} for {name} (hang, segv, abort, kill, exit, corrupt=N)\n"
        )
        os._exit(64)
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a real signal, but no core file in the cwd
    os.kill(os.getpid(), sig)
    time.sleep(5)  # the signal is delivered before this returns
    os._exit(72)


def _main() -> None:
    _chain()
    spec = os.environ.get("EDGEOPT_FAULT")
    if not spec:
        return
    argv = list(getattr(sys, "orig_argv", sys.argv))
    faults = parse(spec)
    name = next((t for t in targets(argv) if t in faults), None)
    if name is not None:
        fire(name, faults[name], argv)


_main()
