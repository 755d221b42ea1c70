"""Host-to-device latency factors from a reference architecture with published device figures.

The factor for a profile and precision is the published device latency of MobileNet 1.0 224
(ANCHORS.md) divided by the same architecture's p50 latency measured on this host with the same
thread count and precision. Weights do not change latency, so the model has random weights and the
int8 version is calibrated with random data. Validate multiplies a model's host p90 by the factor
and labels the result as an estimate.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import hostinfo, progress
from edgeopt.artifacts import write_json
from edgeopt.config import ConvertConfig, DeviceProfile
from edgeopt.data import Dataset
from edgeopt.errors import BadInput
from edgeopt.profiles import load_profile, shipped
from edgeopt.runtimes.isolate import run_task

SCHEMA = "edgeopt.calibration/1"
REFERENCE = "mobilenet_1.0_224"

log = logging.getLogger(__name__)


def default_path() -> Path:
    env = os.environ.get("EDGEOPT_CALIBRATION")
    return Path(env) if env else Path.home() / ".cache" / "edgeopt" / "calibration.json"


def load(path: str | Path | None = None) -> dict[str, Any] | None:
    """The stored calibration, or None when there is none. The default file is used only when it was
    measured on a host with this one's fingerprint (CPU model, ISA flags, cores): factors measured on
    another CPU would scale this host's figures wrongly. A file given explicitly is used as it is."""
    import json

    p = Path(path) if path else default_path()
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except ValueError:
        raise BadInput(f"{p}: not a calibration file (invalid JSON); run `edgeopt calibrate` again") from None
    if data.get("schema") != SCHEMA:
        raise BadInput(f"{p}: calibration schema {data.get('schema')!r}, expected {SCHEMA}")
    here = hostinfo.host()["fingerprint"]
    if not path and data.get("host", {}).get("fingerprint") != here:
        log.info(
            "%s was measured on another host (fingerprint %s, this host %s): not used",
            p,
            data.get("host", {}).get("fingerprint"),
            here,
        )
        return None
    return data


def needs(profiles: list[DeviceProfile]) -> list[DeviceProfile]:
    """The profiles whose latency gate scales host figures by a calibration factor (not those whose
    gate estimates from the Arm work, ``arm: {latency: arm}``)."""
    return [
        p
        for p in profiles
        if p.runtime.value == "litert"
        and p.reference is not None
        and p.budgets.latency_p90_ms is not None
        and p.vela is None
        and (p.arm is None or p.arm.latency.value != "arm")
    ]


def ensure(profiles: list[DeviceProfile], path: str | Path | None = None) -> dict[str, Any] | None:
    """The calibration, measured now (about 40 s, once per host fingerprint) when a profile needs one
    and none is stored for this host; an automatic run is labelled ``"auto": true``."""
    cal = load(path)
    missing = [p for p in needs(profiles) if p.name not in (cal or {}).get("profiles", {})]
    if not missing:
        return cal

    todo = {p.name: p for p in [*(load_profile(n) for n in shipped()), *missing] if p in needs([p])}
    log.warning(
        "no latency calibration for %s on this host: measuring MobileNet 1.0 224 now (about 40 s, once per host)",
        ", ".join(p.name for p in missing),
    )
    calibrate(list(todo.values()), out=path, auto=True)
    return load(path)  # as stored, so a later run's cache key sees the same calibration


def reference_model(input_size: int = 224, alpha: float = 1.0) -> Any:
    from edgeopt._keras import keras, set_seed  # lazy: imports TensorFlow

    set_seed(0)
    return keras.applications.MobileNet(input_shape=(input_size, input_size, 3), alpha=alpha, weights=None)


def reference_tflites(input_size: int = 224) -> tuple[dict[str, bytes], np.ndarray]:
    """MobileNet 1.0 (random weights) converted to float32 and int8 (calibrated on 8 random images), and
    the random images: latency does not depend on the weights. The phone check counts the same models."""
    from edgeopt import stages  # lazy: imports TensorFlow

    model = reference_model(input_size)
    rng = np.random.default_rng(0)
    x = rng.random((8, input_size, input_size, 3), dtype=np.float32)
    fake = Dataset(
        "random",
        "random calibration images",
        0,
        x,
        np.zeros(8, np.int64),
        x[:0],
        np.zeros(0, np.int64),
        x[:1],
        np.zeros(1, np.int64),
        [str(i) for i in range(1000)],
    )
    log.info("converting the reference MobileNet 1.0 %d (random weights) to float32 and int8 ...", input_size)
    tfl = {
        "float32": stages.convert(model, ConvertConfig(quantization="float32")).tflite,
        "int8": stages.convert(model, ConvertConfig(quantization="int8", calibration_samples=8), data=fake).tflite,
    }
    return tfl, x


def calibrate(
    profiles: list[DeviceProfile],
    *,
    out: str | Path | None = None,
    seconds: float = 3.0,
    input_size: int = 224,
    auto: bool = False,
) -> dict[str, Any]:
    """Measure the reference on this host for every thread count the profiles need; store the factors."""
    usable = [p for p in profiles if p.reference is not None and p.runtime.value == "litert"]
    if not usable:
        raise BadInput("none of the profiles has a published reference latency to calibrate against")
    tfl, x = reference_tflites(input_size)
    host: dict[str, dict[str, Any]] = {"float32": {}, "int8": {}}
    threads = sorted({p.reference.threads for p in usable if p.reference})
    with progress.task("calibrate (host latency)", len(threads) * 2) as advance:
        for precision, content in tfl.items():
            for t in threads:
                r, _ = run_task("litert_bench", "litert", content, x[:1], threads=t, seconds=seconds, min_runs=20)
                times = np.asarray(r["times_ms"])
                host[precision][str(t)] = {"p50_ms": float(np.percentile(times, 50)), "runs": len(times)}
                advance()
    factors: dict[str, Any] = {}
    for p in usable:
        ref = p.reference
        assert ref is not None
        entry: dict[str, Any] = {"threads": ref.threads, "source": ref.source, "reference": ref.model}
        for precision, device_ms in (("float32", ref.float32_ms), ("int8", ref.int8_ms)):
            if device_ms is None:
                continue
            host_ms = host[precision][str(ref.threads)]["p50_ms"]
            entry[precision] = {"device_ms": device_ms, "host_p50_ms": host_ms, "factor": device_ms / host_ms}
        factors[p.name] = entry
    result = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "auto": auto,
        "host": {
            **hostinfo.host(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
        },
        "reference": REFERENCE if input_size == 224 else f"mobilenet_1.0_{input_size}",
        "method": "factor = published device latency / host p50 latency, same architecture, threads and precision",
        "host_latency": host,
        "profiles": factors,
    }
    path = Path(out) if out else default_path()
    write_json(path, result)
    result["path"] = str(path)
    return result
