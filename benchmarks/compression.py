"""``make bench`` (``python -m benchmarks.compression``): the compression frontier on one teacher and one
test set, over several seeds.

What runs: the teacher is trained once (``teacher.path`` of the pipeline file, seed of that file) and
shared by every row, as a release would share it. The peers are computed once from it: the float32
teacher .tflite (the baseline), int8 post-training quantization, the tfmot pruning tutorial
(polynomial decay 50% -> 80% over 2 epochs, strip, int8) and litert-quantizer's recipes on the
teacher's float32 .tflite (weight-only int8, static int8, int4 weights with int8 activations, the same with
MSE weight clipping). The default pipeline and the two flash-first pipelines (int8, and 4-bit kernels) run
once per seed (the model seed: initialisation, shuffling, dropout; the data split stays that of the file),
sharing the stage cache with ``make export`` for the file's own seed. The rows of the quantization frontier
(PTQ only, the Keras 3 MobileNet-style model, the binarized default student) are ``benchmarks.quant.rows``'.

Every row is validated by the same code (``stages.validate``): top-1 on the full test split in LiteRT,
host latency at 1 and 4 threads, TFLite Micro (``cortex-m7-512k``: every op supported, arena), and a
device latency estimate for ``pixel4-cpu4`` and ``pixel2-cpu1``: host p50 at the profile's thread count
x the calibrated factor for the model's compute precision (int8 when every op computes in integers,
else float32; ``edgeopt.calibrate``: published MobileNet 1.0 224 device latency / its p50 on this host).
The speed-up target is judged on the pixel4-cpu4 estimate, because the host's int8 kernels can be slower
than float32 (AVX2 without VNNI) while a phone's are faster. Targets are judged on the means over seeds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from benchmarks._report import write_results_md
from benchmarks.quant import rows as quant_rows
from edgeopt.artifacts import write_json
from edgeopt.config import ConvertConfig, PruneConfig, Quantization, ValidateConfig
from edgeopt.data import load_dataset
from edgeopt.errors import GateFailed, RuntimeCrash
from edgeopt.gates import precision_of
from edgeopt.manifest import ArtifactRecord, RunManifest
from edgeopt.pipeline import ensure_teacher, registry
from edgeopt.pipeline import run as run_pipeline
from edgeopt.pipeline.spec import load_pipeline
from edgeopt.profiles import load_profile

log = logging.getLogger(__name__)

SCHEMA = "edgeopt.bench/2"
SEEDS = (42, 43, 44)
DEVICES = ("pixel4-cpu4", "pixel2-cpu1")
MCU = "cortex-m7-512k"
FLASH_FIRST = "pipelines/flash_first.yaml"

TARGETS_FILE = Path(__file__).with_name("targets.yaml")


def load_targets() -> dict[str, Any]:
    """This benchmark's targets (``targets.yaml``, key ``compression``)."""
    return yaml.safe_load(TARGETS_FILE.read_text())["compression"]


# Figures aggregated over seeds (mean and standard deviation).
NUMERIC = (
    "accuracy",
    "accuracy_drop_points",
    "bytes",
    "gzip_bytes",
    "gzip_ratio",
    "p50_ms_1",
    "p50_ms_4",
    "host_speedup_1",
    "est_ms_pixel4-cpu4",
    "est_ms_pixel2-cpu1",
    "speedup_pixel4-cpu4",
    "speedup_pixel2-cpu1",
    "tflm_arena_bytes",
    "tflm_runs",
    "macs",
    "float_accuracy",  # rows judged against their own float model (PTQ only, the MobileNet-style model)
    "drop_vs_float_points",
)


# ---- measuring ---------------------------------------------------------------------------------


def device_estimates(v: dict[str, Any], calibration: dict[str, Any] | None, profiles: list[Any]) -> dict[str, Any]:
    """``est_ms_<profile>``: host p50 at the profile's threads x the factor of the model's precision."""
    prec = precision_of(v["structure"])
    out: dict[str, Any] = {"precision": prec}
    for p in profiles:
        lat = v.get("latency", {}).get(str(p.threads))
        entry = ((calibration or {}).get("profiles") or {}).get(p.name, {}).get(prec)
        out[f"est_ms_{p.name}"] = lat["p50_ms"] * entry["factor"] if lat and entry else None
    return out


def row_from_validation(
    name: str,
    kind: str,
    v: dict[str, Any],
    *,
    seed: int | None,
    how: str,
    calibration: dict[str, Any] | None,
    profiles: list[Any],
    seconds: float = 0.0,
) -> dict[str, Any]:
    """One table row from a validation record (``ValidationResult.to_dict()``)."""
    s, lat = v["structure"], v.get("latency", {})
    tflm = v.get("tflm") or {}
    tflm_failed = [g for g in v.get("gates", []) if g["profile"] == MCU and g["status"] == "failed"]
    return {
        "name": name,
        "kind": kind,
        "seed": seed,
        "how": how,
        "bytes": s["bytes"],
        "gzip_bytes": s["gzip_bytes"],
        "macs": s["macs"],
        "params": s["params"],
        "accuracy": v["accuracy"],
        "p50_ms_1": lat.get("1", {}).get("p50_ms"),
        "p90_ms_1": lat.get("1", {}).get("p90_ms"),
        "p50_ms_4": lat.get("4", {}).get("p50_ms"),
        "tflm_arena_bytes": tflm.get("arena_bytes"),
        "tflm_runs": 1.0 if tflm.get("arena_bytes") else 0.0,
        "tflm_agree": tflm.get("agree"),
        "tflm_failed_gates": [f"{g['gate']}: {g['detail']}" for g in tflm_failed],
        "failures": v.get("failures", {}),
        **device_estimates(v, calibration, profiles),
        "seconds": round(seconds, 1),
    }


def relate(rows: list[dict[str, Any]], base: dict[str, Any]) -> None:
    """Add the figures relative to the baseline row (ratio, drop in points, speed-ups) to every row."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    for r in rows:
        r["gzip_ratio"] = base["gzip_bytes"] / r["gzip_bytes"]
        r["accuracy_drop_points"] = (base["accuracy"] - r["accuracy"]) * 100
        r["host_speedup_1"] = ratio(base["p50_ms_1"], r["p50_ms_1"])
        for d in DEVICES:
            r[f"speedup_{d}"] = ratio(base.get(f"est_ms_{d}"), r.get(f"est_ms_{d}"))


# ---- aggregating and judging (pure: tested on made-up rows) -------------------------------------


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per row name, in first-seen order: ``n``, the seeds, and for every numeric figure
    its mean and sample standard deviation (0 for one seed; None when a seed lacks the figure)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in groups.items():
        s: dict[str, Any] = {"name": name, "kind": rs[0]["kind"], "how": rs[0]["how"], "n": len(rs)}
        s["seeds"] = [r["seed"] for r in rs]
        s["precision"] = rs[0].get("precision")
        for k in NUMERIC:
            vals = [r.get(k) for r in rs]
            if any(v is None for v in vals):
                s[k] = s[k + "_std"] = None
                continue
            s[k] = statistics.fmean(vals)
            s[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def judge(summaries: list[dict[str, Any]], targets: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Each target of each kind (``default``, ``flash_first``) against the mean of that kind's row:
    ``{kind: [{metric, op, target, measured, std, met, what}]}``; a missing row or figure is not met."""
    if targets is None:
        targets = {k: v for k, v in load_targets().items() if isinstance(v, list)}
    out: dict[str, Any] = {}
    for kind, ts in targets.items():
        row = next((s for s in summaries if s["kind"] == kind), None)
        verdicts = []
        for t in ts:
            m = row.get(t["metric"]) if row else None
            # rounded: accuracies are k/n fractions, and 0.5 points must not fail as 0.5000000000000071
            r = None if m is None else round(m, 9)
            met = r is not None and (r >= t["value"] if t["op"] == ">=" else r <= t["value"])
            verdicts.append(
                {
                    "metric": t["metric"],
                    "op": t["op"],
                    "target": t["value"],
                    "measured": m,
                    "std": row.get(t["metric"] + "_std") if row else None,
                    "n": row["n"] if row else 0,
                    "met": met,
                    "what": t["what"],
                }
            )
        out[kind] = verdicts
    return out


# ---- the run -----------------------------------------------------------------------------------


def run_bench(
    pipeline: str | Path = "pipelines/fashion_mnist.yaml",
    out: str | Path = "bench",
    *,
    flash_first: str | Path | None = FLASH_FIRST,
    seeds: Iterable[int] = SEEDS,
    on_stage: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Measure every row and write ``out/results.md`` and ``results.json``; ``on_stage`` goes to the
    pipeline runs (``edgeopt.pipeline.run``), e.g. for the CLI's per-stage tables."""
    from edgeopt import calibrate, hostinfo, stages  # lazy: imports TensorFlow
    from edgeopt.stages import aeq  # lazy: imports TensorFlow

    started = time.time()
    out = Path(out)
    seeds = list(seeds)
    cfg = load_pipeline(pipeline)
    ff_cfg = load_pipeline(flash_first) if flash_first else None
    data = load_dataset(cfg.data)
    teacher, _ = ensure_teacher(cfg, data)
    devices = [load_profile(d) for d in DEVICES]
    mcu = load_profile(MCU)
    calibration = calibrate.ensure(devices)
    rows: list[dict[str, Any]] = []

    def measure(name: str, kind: str, content: bytes, seconds: float, how: str, keras: Any = None) -> dict[str, Any]:
        v = stages.validate(
            content,
            data,
            ValidateConfig(cross_check=False, phone_check=False),  # the rows' sizes, accuracy and latency only
            keras_model=keras,
            profiles=[*devices, mcu],
            calibration=calibration,
            name=name,
        ).to_dict()
        r = row_from_validation(
            name, kind, v, seed=cfg.seed, how=how, calibration=calibration, profiles=devices, seconds=seconds
        )
        rows.append(r)
        log.info("bench: %s: %.4f top-1, %d bytes", name, r["accuracy"], r["bytes"])
        return r

    t = time.time()
    f32 = stages.convert(teacher, ConvertConfig(quantization="float32"), seed=cfg.seed).tflite
    base = measure("float32 teacher (baseline)", "baseline", f32, time.time() - t, "TFLiteConverter, no optimization")

    t = time.time()
    ptq = stages.convert(teacher, ConvertConfig(quantization="int8"), data=data, seed=cfg.seed).tflite
    measure("int8 PTQ of the teacher", "peer", ptq, time.time() - t, "full-integer int8, 200 calibration images")

    t = time.time()
    # tfmot's pruning tutorial: PolynomialDecay 50% -> 80% over 2 epochs, batch 128, then strip and int8
    pr = stages.prune(
        teacher,
        data,
        PruneConfig(initial_sparsity=0.5, final_sparsity=0.8, epochs=2, end_step=None, learning_rate=1e-3),
        seed=cfg.seed,
    )
    tut = stages.convert(pr.model, ConvertConfig(quantization="int8"), data=data, seed=cfg.seed).tflite
    measure(
        "tfmot tutorial: prune 80% + int8",
        "peer",
        tut,
        time.time() - t,
        "PolynomialDecay 0.5->0.8, 2 epochs, strip_pruning, int8 PTQ",
    )

    aeq_how = {
        (Quantization.weight_int8, "min_max"): "weight-only int8 (weight_only_wi8_afp32), float compute",
        (Quantization.int8_aeq, "min_max"): "static int8 (static_wi8_ai8), 200 calibration images",
        (Quantization.int4, "min_max"): "int4 weights (conv per channel, dense per tensor), int8 activations",
        (Quantization.int4, "mse"): "the same, weight scales by MSE clipping (its MSE algorithm)",
    }
    for (q, algo), how in aeq_how.items():
        t = time.time()
        r = aeq.quantize(f32, q, data=data, seed=cfg.seed, algorithm=aeq.WeightAlgorithm(algo))
        label = f"litert-quantizer {q.value}" + ("" if algo == "min_max" else f" ({algo})") + " of the teacher"
        measure(label, "peer", r.tflite, time.time() - t, how)

    ff4_cfg = load_pipeline(quant_rows.FLASH_FIRST_INT4) if ff_cfg is not None else None
    kinds = [("default", cfg)] + ([("flash_first", ff_cfg), ("flash_first_int4", ff4_cfg)] if ff_cfg else [])
    roots: dict[str, Path] = {}
    for i, s in enumerate(seeds):
        for kind, pc in kinds:
            # the 4-bit flash-first pipeline distils the flash-first student: it reads that run's stage cache
            shared = roots["flash_first"] / ".cache" if kind == "flash_first_int4" else None
            root = roots[kind] = _run_pipeline(pc, s, on_stage, cache_dir=shared)
            manifest = RunManifest.model_validate_json((root / "manifest.json").read_text())
            art, v = _shipped(manifest)
            how = " -> ".join(st.stage for st in pc.steps if st.stage not in registry.having("validates"))
            r = row_from_validation(
                f"edgeopt {pc.name} pipeline",
                kind,
                v,
                seed=s,
                how=how,
                calibration=calibration,
                profiles=devices,
                seconds=sum(st.seconds for st in manifest.stages[1:]),
            )
            r["validation_passed"] = manifest.passed
            rows.append(r)
            if kind == "default":  # PTQ only: its model before QAT, every seed; binarized: first seed
                src = _last_model(manifest, root)
                if src is not None:
                    quant_rows.ptq_row(measure, src, data, s, method=quant_rows.PTQ_METHOD)
                distilled = next((root / st.output for st in manifest.stages if st.name == "distill"), None)
                if i == 0 and distilled is not None and distilled.suffix == ".keras":
                    quant_rows.binary_row(measure, distilled, data, s)
    if ff_cfg is not None:
        quant_rows.mobilenet_rows(measure, data, cfg.seed)

    relate(rows, base)
    summaries = aggregate(rows)
    verdict = judge(summaries)
    result = {
        "schema": SCHEMA,
        "pipelines": [str(pipeline)] + ([str(flash_first), quant_rows.FLASH_FIRST_INT4] if flash_first else []),
        "seeds": seeds,
        "teacher": {"path": str(cfg.teacher.path), "trained_once": True, "seed": cfg.seed},
        "test_examples": len(data.x_test),
        "host": {**hostinfo.host(), "describe": hostinfo.describe()},
        "calibration": _calibration_summary(calibration),
        "rows": rows,
        "summary": summaries,
        "targets": verdict,
        "wall_seconds": round(time.time() - started, 1),
        "method": METHOD,
    }
    result["targets"]["bench"] = [wall_time_target(result["wall_seconds"])]
    result["all_targets_met"] = all(t["met"] for ts in result["targets"].values() for t in ts)
    write_json(out / "results.json", result)
    write_results_md(out / "results.md", markdown(result))
    return result


def wall_time_target(seconds: float) -> dict[str, Any]:
    """The run-time target, judged like the others (one run, so no deviation)."""
    minutes, limit = seconds / 60, float(load_targets()["max_wall_minutes"])
    what = "wall time of the whole run on this host (minutes)"
    return {"metric": "wall_minutes", "op": "<=", "target": limit, "measured": minutes, "std": 0.0, "n": 1,
            "met": minutes <= limit, "what": what}  # fmt: skip


METHOD = (
    "sizes: .tflite bytes and gzip -9 of them; accuracy: top-1 on the full test split in ai_edge_litert "
    "(XNNPACK); host latency: ai_edge_litert p50 at batch 1 in a child process, 1 and 4 threads; device "
    "estimate: host p50 at the profile's thread count x (published MobileNet 1.0 224 latency on the device / "
    "its p50 on this host, same threads and precision), precision int8 when no op computes in float; "
    "TFLite Micro: tflite-micro's interpreter on 1,000 test images, smallest arena that runs"
)


def _run_pipeline(pc: Any, seed: int, on_stage: Callable[[Any], None] | None, cache_dir: Path | None = None) -> Path:
    """Run ``pc`` with ``seed``; the file's own seed runs in ``build/<name>`` (``make export`` reuses its
    stages), another in ``build/<name>-seed<seed>``; ``cache_dir``: another run's stage cache to share. A
    failed gate is recorded, not fatal."""

    root = Path("build") / (pc.name if seed == pc.seed else f"{pc.name}-seed{seed}")
    # The phone check is a release check (about a minute per phone profile and model under QEMU, its cost in
    # bench/phone.md); the rows below measure what the table shows without it, as search trials do.
    raw = pc.model_dump(mode="json") | {"seed": seed}
    raw["steps"] = [s | {"phone_check": False} if s["stage"] == "validate" else s for s in raw["steps"]]
    try:
        run_pipeline(type(pc).model_validate(raw), root, on_stage=on_stage, cache_dir=cache_dir)
    except (GateFailed, RuntimeCrash) as e:  # the table is still worth having; the gates are in it
        log.warning("%s seed %d: the pipeline's validation did not pass: %s", pc.name, seed, e)
    return root


def _shipped(manifest: RunManifest) -> tuple[ArtifactRecord, dict[str, Any]]:
    """The artifact a release ships (``RunManifest.shipped``, the rule the bundle follows) and its
    validation record."""
    art = manifest.shipped()[0]
    assert art is not None, "a pipeline makes at least one .tflite"
    return art, manifest.validations()[art.name]


def _last_model(manifest: RunManifest, root: Path) -> Path | None:
    """The last Keras model file the pipeline wrote (before QAT's SavedModel): the model of the PTQ-only row."""
    for s in reversed(manifest.stages[1:]):
        p = root / s.output
        if p.suffix == ".keras" and p.is_file():
            return p
    return None


def _calibration_summary(cal: dict[str, Any] | None) -> dict[str, Any] | None:
    if not cal:
        return None
    factors = {
        name: {prec: e[prec]["factor"] for prec in ("float32", "int8") if prec in e}
        for name, e in cal.get("profiles", {}).items()
        if name in DEVICES
    }
    return {k: cal.get(k) for k in ("created", "auto", "reference", "method")} | {"factors": factors}


# ---- the report --------------------------------------------------------------------------------


def _pm(s: dict[str, Any], k: str, fmt: str, scale: float = 1.0) -> str:
    m = s.get(k)
    if m is None:
        return "n/a"
    text = format(m * scale, fmt)
    sd = s.get(k + "_std")
    return text if s["n"] == 1 or sd is None else f"{text} ± {format(sd * scale, fmt.lstrip('+'))}"


def markdown(r: dict[str, Any]) -> str:
    """``results.md``: the table (mean ± std over seeds), the targets, how every figure was obtained."""
    lines = [
        f"Host: {r['host']['describe']} (fingerprint {r['host']['fingerprint']}). "
        f"Seeds {', '.join(map(str, r['seeds']))} for the pipelines; the teacher ({r['teacher']['path']}, "
        f"seed {r['teacher']['seed']}) is trained once and shared by every row, and the peers are computed "
        "once from it (n = 1). Figures are mean ± standard deviation over n runs.",
        "",
        "| model | n | bytes | gzip bytes | smaller (gzip) | top-1 | drop (points) | MACs | host p50 ms (1 thr) "
        "| pixel4-cpu4 est. ms | speed-up pixel4 (est.) | pixel2-cpu1 est. ms | speed-up pixel2 (est.) "
        "| host speed-up (1 thr) | TFLite Micro arena |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["summary"]:
        runs = s.get("tflm_runs")
        share = "" if runs == 1 else f" ({runs:.0%})"  # not every seed's model ran
        arena = "does not run" if runs == 0 else _pm(s, "tflm_arena_bytes", ",.0f") + share
        lines.append(
            f"| {s['name']} | {s['n']} | {_pm(s, 'bytes', ',.0f')} | {_pm(s, 'gzip_bytes', ',.0f')} | "
            f"{_pm(s, 'gzip_ratio', '.1f')}x | {_pm(s, 'accuracy', '.2f', 100)}% | "
            f"{_pm(s, 'accuracy_drop_points', '+.2f')} | {_pm(s, 'macs', ',.0f')} | {_pm(s, 'p50_ms_1', '.4f')} | "
            f"{_pm(s, 'est_ms_pixel4-cpu4', '.3f')} | {_pm(s, 'speedup_pixel4-cpu4', '.1f')}x | "
            f"{_pm(s, 'est_ms_pixel2-cpu1', '.3f')} | {_pm(s, 'speedup_pixel2-cpu1', '.1f')}x | "
            f"{_pm(s, 'host_speedup_1', '.1f')}x | {arena} |"
        )
    own = [x for x in r["summary"] if x.get("float_accuracy") is not None]
    if own:  # rows judged against their own float model (PTQ only, the MobileNet-style model)
        lines += ["", "Against their own float (Keras) model:", ""]
        lines += [
            f"- {x['name']}: float {_pm(x, 'float_accuracy', '.2f', 100)}%, {_pm(x, 'accuracy', '.2f', 100)}% in "
            f"LiteRT, {_pm(x, 'drop_vs_float_points', '+.2f')} points"
            for x in own
        ]
    lines += ["", "Targets (judged on the means; the speed-up on the pixel4-cpu4 device estimate, not the host):", ""]
    for kind, ts in r["targets"].items():
        for t in ts:
            m = t["measured"]
            got = "n/a" if m is None else f"{m:,.2f}" + ("" if not t["n"] or t["n"] == 1 else f" ± {t['std']:,.2f}")
            lines.append(
                f"- {kind}: {t['what']}: {got} vs {t['op']} {t['target']:,} -> **{'met' if t['met'] else 'NOT met'}**"
            )
    cal = r.get("calibration")
    lines += ["", "How each figure was obtained: " + r["method"] + "."]
    if cal:
        f = "; ".join(f"{n}: " + ", ".join(f"{p} x{v:.3g}" for p, v in d.items()) for n, d in cal["factors"].items())
        lines.append(
            f"Calibration ({cal['reference']}, {cal['created']}{', measured automatically' if cal['auto'] else ''}): "
            f"{f}. Precision of each row: " + ", ".join(f"{s['name']}: {s['precision']}" for s in r["summary"]) + "."
        )
    else:
        lines.append("No latency calibration for this host: device estimates are n/a (run `make calibrate`).")
    lines += [
        "",
        f"{r['test_examples']:,} test examples. Wall time of the run: {r['wall_seconds'] / 60:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.compression`` (``make bench``): the table, with the CLI's progress bars and
    a summary after each pipeline stage."""
    from edgeopt.cli import render

    ap = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__.split("\n\n")[0])
    ap.add_argument("pipeline", nargs="?", default="pipelines/fashion_mnist.yaml", help="the default pipeline")
    ap.add_argument("--flash-first", default=FLASH_FIRST, help="the flash-first pipeline ('' to leave it out)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="model seeds of the pipelines")
    ap.add_argument("--out", type=Path, default=Path("bench"), help="where results.md and results.json go")
    ap.add_argument("--quiet", action="store_true", help="warnings only")
    args = ap.parse_args(argv)
    with render.session(quiet=args.quiet):
        result = run_bench(
            args.pipeline,
            args.out,
            flash_first=args.flash_first or None,
            seeds=args.seeds,
            on_stage=render.stage_summary,
        )
        render.text_file(args.out / "results.md")
    return 0 if result["all_targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
