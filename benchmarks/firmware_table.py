"""`make firmware-table`: the firmware check on the default bundle and on MLPerf Tiny's reference
architectures, and how well the instruction-based latency estimate reproduces the published MLPerf Tiny
CMSIS-NN latencies, beside the MAC-based one.

What runs (``edgeopt.firmware.check``, the same code as ``edgeopt firmware``):

- the default bundle (``make export``: ``dist/fashion_mnist/``, its ``mcu/`` C array and example as
  they are) on the Cortex-M4 and M7 with CMSIS-NN, and on the M4 with the reference kernels, on the
  first 10 test images;
- MLPerf Tiny's reference architectures from the zoo (ResNet-8, DS-CNN, MobileNetV1 0.25/96, the FC
  autoencoder; int8, random weights and calibration, batch 1) on the M4, M33 and M7 with CMSIS-NN, on
  3 random inputs each (weights do not change the work an int8 kernel does).

It writes ``bench/firmware.json`` (every record, the host, the commands) and ``bench/firmware.md``,
and says when the instruction counts differ from ``edgeopt.firmware.estimate.MEASURED`` (which the
estimate's factors are computed from) by more than 0.5%.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ZOO = {"ic": "resnet8", "kws": "ds_cnn", "vww": "mobilenet_v1_025", "ad": "fc_autoencoder"}
TITLES = {
    "ic": "ResNet-8 (image classification)",
    "kws": "DS-CNN (keyword spotting)",
    "vww": "MobileNetV1 0.25/96 (visual wake words)",
    "ad": "FC autoencoder (anomaly detection)",
}
CORES = ("cortex-m4", "cortex-m33", "cortex-m7")
DRIFT = 0.005

log = logging.getLogger("firmware_table")


def zoo_tflite(benchmark: str, work: Path) -> tuple[Path, str]:
    """The int8 .tflite of a reference architecture (random weights, batch fixed at 1), and a note. An
    untrained model's logits are so close together that the int8 SOFTMAX aborts in TFLite Micro
    (edgeopt.runtimes.diagnose); then the model is converted without it (a 2-element softmax)."""
    from benchmarks import archtable
    from edgeopt import stages
    from edgeopt._keras import keras
    from edgeopt.config import ConvertConfig
    from edgeopt.runtimes import diagnose

    name = ZOO[benchmark]
    path = work / f"{name}.tflite"
    arch = archtable.ARCHS[name]
    model = archtable.build_model(arch, work)
    inp = keras.Input(batch_shape=(1, *arch.input_shape))
    fixed = keras.Model(inp, model(inp))
    data = archtable.synthetic_data(fixed, arch, 8, archtable.CALIBRATION_SAMPLES)
    cfg = ConvertConfig(quantization="int8", calibration_samples=archtable.CALIBRATION_SAMPLES)
    content = stages.convert(fixed, cfg, data=data).tflite
    note = ""
    if diagnose.known_aborts(content):
        fixed = keras.Model(inp, keras.Model(model.inputs, model.layers[-2].output)(inp))
        content = stages.convert(fixed, cfg, data=data).tflite
        note = "converted without its final softmax (random weights make the int8 SOFTMAX abort)"
    path.write_bytes(content)
    return path, note


def run_check(model: Path, cpu: str, kernels: str, inputs: int, work: Path, data: str | None = None) -> dict[str, Any]:
    from edgeopt.firmware.check import check

    t0 = time.perf_counter()
    record = check(model, cpu=cpu, kernels=kernels, inputs=inputs, data=data, work_dir=work)
    out = record.to_json() | {"wall_seconds": round(time.perf_counter() - t0, 1)}
    log.info(
        "%s %s %s: %s, %s instructions, %.0f s",
        model.name, cpu, kernels, "passed" if record.passed else f"FAILED {record.failures}",
        f"{record.instructions['median']:,}" if record.instructions else "no", out["wall_seconds"],
    )  # fmt: skip
    return out


def measure(bundle: Path, work: Path) -> dict[str, Any]:
    from edgeopt.firmware import estimate
    from edgeopt.hostinfo import host

    t0 = time.perf_counter()
    table: dict[str, Any] = {"host": host(), "bundle": str(bundle), "bundle_checks": [], "zoo": {}}
    for cpu, kernels in (("cortex-m4", "cmsis-nn"), ("cortex-m7", "cmsis-nn"), ("cortex-m4", "reference")):
        table["bundle_checks"].append(run_check(bundle, cpu, kernels, 10, work / f"bundle-{cpu}-{kernels}"))
    for b in ZOO:
        path, note = zoo_tflite(b, work)
        table["zoo"][b] = {"model": ZOO[b], "title": TITLES[b], "note": note, "checks": {}}
        for cpu in CORES:
            table["zoo"][b]["checks"][cpu] = run_check(path, cpu, "cmsis-nn", 3, work / f"{ZOO[b]}-{cpu}")
    drift = []
    for b, row in table["zoo"].items():
        for cpu, r in row["checks"].items():
            got = (r.get("instructions") or {}).get("median")
            want = estimate.MEASURED.get(cpu, {}).get(b)
            if got and want and abs(got - want) > DRIFT * want:
                drift.append(f"{cpu} {b}: measured {got:,}, edgeopt.firmware.estimate.MEASURED has {want:,}")
    table["drift"] = drift
    table["seconds"] = round(time.perf_counter() - t0, 1)
    return table


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.0f}%"


def render(table: dict[str, Any]) -> str:
    from edgeopt.firmware import estimate

    h = table["host"]
    lines = [
        "# The firmware check: default bundle, MLPerf Tiny architectures, latency estimates",
        "",
        f"`{table['command']}` ({table['seconds'] / 60:.1f} minutes, on {h.get('cpu')} ({h.get('cpus')} cores), "
        "a machine shared with other jobs: build times are not a benchmark; instruction counts do not depend on "
        "the host, since QEMU runs with `-icount shift=0`).",
        "",
    ]
    first = table["bundle_checks"][0]
    if table.get("note"):
        lines += [table["note"], ""]
    lines += [
        f"TFLite Micro tree `{first['tflm_src']}` (fingerprint `{first['tflm_fingerprint'][:12]}`), "
        f"{first['toolchain']}, {first['qemu']}.",
        "",
        "## The default bundle (`make export`: dist/fashion_mnist)",
        "",
        "| core / kernels | bit-exact | instructions / Invoke() | flash (runtime + model) "
        "| RAM (arena used of built; stack; .bss + .data; heap) | estimates |",
        "|---|---|---:|---|---|---|",
    ]
    for r in table["bundle_checks"]:
        fp, ins = r.get("footprint") or {}, r.get("instructions") or {}
        parts = fp.get("flash_parts", {})
        model = parts.get("model", 0)
        est = "; ".join(
            [
                f"{x['profile']}: {_ms(x['ms'])} ms from instructions, {_ms(x['macs_ms'])} ms from MACs "
                f"({x['used']} used)"
                for x in r.get("latency", [])
            ]
            + [f"{x['profile']}: {x['microjoules']:,.0f} uJ" for x in r.get("energy", [])]
        )
        lines.append(
            f"| {r['cpu']} / {r['kernels']} | {'yes' if r['bit_exact'] else 'NO'} ({r['inputs']} inputs) | "
            f"{ins.get('median', 0):,} | {fp.get('flash_bytes', 0):,} B = {fp.get('flash_bytes', 0) - model:,} + "
            f"{model:,} | {fp.get('arena_used_bytes', 0):,} of {fp.get('arena_bytes', 0):,}; "
            f"{fp.get('stack_bytes', 0):,}; "
            f"{fp.get('bss_bytes', 0) + fp.get('data_bytes', 0):,}; {fp.get('heap_bytes', 0):,} | {est or '-'} |"
        )
    lines += ["", "Flash by part (bytes):", "", "| core / kernels | " + " | ".join(_PARTS) + " |",
              "|---|" + "---:|" * len(_PARTS)]  # fmt: skip
    for r in table["bundle_checks"]:
        parts = (r.get("footprint") or {}).get("flash_parts", {})
        lines.append(f"| {r['cpu']} / {r['kernels']} | " + " | ".join(f"{parts.get(p, 0):,}" for p in _PARTS) + " |")
    ref = {r["kernels"]: r for r in table["bundle_checks"] if r["cpu"] == "cortex-m4"}
    if "reference" in ref and "cmsis-nn" in ref and ref["cmsis-nn"].get("instructions"):
        ratio = ref["reference"]["instructions"]["median"] / ref["cmsis-nn"]["instructions"]["median"]
        lines += ["", f"The reference kernels execute {ratio:.1f}x the instructions of CMSIS-NN's on the M4."]
    lines += [
        "",
        "## MLPerf Tiny's reference architectures (edgeopt.zoo, int8, random weights, CMSIS-NN)",
        "",
        "| benchmark | " + " | ".join(f"{c} instructions" for c in CORES) + " | M4 flash | M4 arena used | note |",
        "|---|" + "---:|" * len(CORES) + "---:|---:|---|",
    ]
    for row in table["zoo"].values():
        cells = []
        for c in CORES:
            r = row["checks"][c]
            ok = "" if r["bit_exact"] else " (NOT bit-exact)"
            cells.append(f"{(r.get('instructions') or {}).get('median', 0):,}{ok}")
        m4 = row["checks"]["cortex-m4"].get("footprint") or {}
        lines.append(
            f"| {row['title']} | " + " | ".join(cells)
            + f" | {m4.get('flash_bytes', 0):,} | {m4.get('arena_used_bytes', 0):,} | {row['note'] or ''} |"
        )  # fmt: skip
    if table.get("drift"):
        lines += ["", "**Drift**: these counts differ from `edgeopt.firmware.estimate.MEASURED` by more than 0.5%; "
                  "update it: " + "; ".join(table["drift"])]  # fmt: skip
    lines += _estimate_section(estimate)
    return "\n".join(lines) + "\n"


_PARTS = ("model", "tflite-micro", "kernels", "cmsis-nn", "c-runtime", "startup-main", "padding")


def _estimate_section(estimate: Any) -> list[str]:
    cpi = estimate.cpi_table()
    lines = [
        "",
        "## Latency from instructions: cycles per instruction",
        "",
        "| core | cycles per instruction | from |",
        "|---|---:|---|",
    ]
    lines += [f"| {c.core} | {c.cpi:.3f} | {c.source} |" for c in cpi.values()]
    lines += [
        "",
        "## How well the estimates reproduce the published MLPerf Tiny CMSIS-NN latencies",
        "",
        "Every published CMSIS-NN result `edgeopt.mcu_latency` uses (role: `fit`, the results both estimates are "
        "fitted on; `holdout`, results neither is fitted on; `context`, TFLite Micro 2.3.1's 2021 reference, "
        'shown only). Published cycles = latency x clock; "cycles / instruction" is what the published figure '
        "implies for the instructions the firmware check counts today.",
        "",
        "| role | submission | engine | core, clock | benchmark | published ms | cycles / instruction | "
        "from instructions | from MACs |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in estimate.comparison():
        lines.append(
            f"| {r['role']} | {r['org']} {r['version']}, {r['board']} | {r['software']} | {r['core']}, "
            f"{r['clock_hz'] / 1e6:g} MHz | {r['benchmark']} | {_ms(r['latency_ms'])} | "
            f"{r['cycles_per_instruction']:.2f} | "
            f"{_ms(r['instructions_ms'])} ({_pct(r['instructions_error_pct'])}) | {_ms(r['macs_ms'])} "
            f"({_pct(r['macs_error_pct'])}) |"
        )
    lines += [
        "",
        "Which estimate the latency gate uses, per core (the one with the smaller mean error on the core's hold-out "
        "results):",
        "",
        "| core | hold-out results | from instructions: mean / worst error | from MACs: mean / worst error | used |",
        "|---|---:|---|---|---|",
    ]
    for core, v in estimate.verdicts().items():
        if v["holdout_rows"]:
            ins = f"{v['instructions_mean_error_pct']:.1f}% / {v['instructions_max_error_pct']:.1f}%"
            macs = f"{v['macs_mean_error_pct']:.1f}% / {v['macs_max_error_pct']:.1f}%"
        else:
            ins = macs = "-"
        lines.append(f"| {core} | {v['holdout_rows']} | {ins} | {macs} | {v['used']} ({v['why']}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.firmware_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=Path("dist/fashion_mnist"), help="the bundle (make export)")
    ap.add_argument("--out", type=Path, default=Path("bench"), help="folder for firmware.{md,json}")
    ap.add_argument("--work", type=Path, default=Path("build/firmware-table"), help="models, builds and logs")
    ap.add_argument("--render-only", action="store_true", help="rewrite firmware.md from firmware.json")
    ap.add_argument("--note", default=None, help="a line under the title (e.g. where the TFLite Micro tree came from)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeopt.artifacts import write_bytes, write_json

    if a.render_only:
        table = json.loads((a.out / "firmware.json").read_text())
        if a.note is not None:
            table["note"] = a.note
            write_json(a.out / "firmware.json", table)
        write_bytes(a.out / "firmware.md", render(table).encode())
        return 0
    if not (a.bundle / "manifest.json").is_file():
        print(f"{a.bundle}: no bundle (run `make export` first)", file=sys.stderr)
        return 2
    a.work.mkdir(parents=True, exist_ok=True)
    table = measure(a.bundle, a.work)
    table["command"] = "python -m benchmarks.firmware_table " + " ".join(argv if argv is not None else sys.argv[1:])
    table["note"] = a.note
    write_json(a.out / "firmware.json", table)
    write_bytes(a.out / "firmware.md", render(table).encode())
    failed = [r for r in table["bundle_checks"] if not r["passed"]] + [
        r for row in table["zoo"].values() for r in row["checks"].values() if not r["passed"]
    ]
    for line in table["drift"]:
        print(f"drift: {line}", file=sys.stderr)
    return 1 if failed or table["drift"] else 0


if __name__ == "__main__":
    sys.exit(main())
