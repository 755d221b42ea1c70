"""``make suite`` (``python -m benchmarks.suite``): the default pipeline on models and data it was not tuned on.

Every pair runs ``pipelines/fashion_mnist.yaml`` unchanged but for its name, data and teacher, as a user
would after copying it, through ``edgeopt export`` (strict, the file's own gates), at two seeds (the
model seed: initialisation, shuffling; the data split stays the file's). Every teacher is trained from
scratch in the run with a fixed seed, once per pair, and shared by both seeds; the BatchNorm networks'
teachers (MobileNet-style, ResNet-8, DS-CNN) with a cosine-decaying learning rate (at a constant one their
last epoch lands anywhere in a swing of several points). The pairs:

- ``fashion_cnn`` on Fashion-MNIST: today's default;
- a Keras 3 functional MobileNet-style model (depthwise convolutions, BatchNorm, ReLU6, residual Add),
  trained by Keras 3, saved as a Keras 3 ``.keras`` file and read through edgeopt's bridge;
- MLPerf Tiny's ResNet-8 (edgeopt's zoo) on 32x32x3 inputs: Fashion-MNIST padded by 2 pixels a side and
  tiled to 3 channels (Fashion-MNIST, not CIFAR-10: nothing is downloaded);
- MLPerf Tiny's DS-CNN (the zoo's) on Fashion-MNIST's 28x28x1 images, an input it accepts;
- ``mlp_300_100`` and ``tiny_cnn`` on scikit-learn's digits.

Fashion-MNIST pairs but the first train on a slice of the training split (``max_train``, the same for
all of them) so that the suite fits its time budget; the pipeline's step floors (``min_steps``) give every
stage enough optimizer steps on it. Targets (``targets.yaml``, key ``suite``) are judged per pair on the
mean of the seeds. Writes ``bench/suite.json`` and ``bench/suite.md`` (notes below its mark are kept).

The teachers and the seeds' exports run as jobs in child processes, ``--jobs`` at a time, each on cores // jobs
TensorFlow threads: two 1-thread trainings of a small student do more work than one 2-thread training
(1.35x for the default student on a 2-core host, bench/suite.md). Every teacher comes first (a pair's seeds
wait for theirs), then the seeds, pair by pair; a slot that comes free takes the next job that can run.
``--jobs 1`` runs the pairs one after the other in this process, on every core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks._report import write_results_md
from edgeopt import hostinfo, tflite_diet
from edgeopt import threads as tf_threads
from edgeopt.artifacts import gzip_size, write_json
from edgeopt.config import DataConfig
from edgeopt.data import FASHION_CLASSES, load_dataset
from edgeopt.errors import GateFailed, RuntimeCrash
from edgeopt.export import export
from edgeopt.firmware.check import array_bytes
from edgeopt.manifest import BundleManifest
from edgeopt.pipeline.spec import PipelineConfig
from edgeopt.progress import Timer

log = logging.getLogger("edgeopt.suite")  # under the library logger: shown by the render session, as the stages are

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "fashion_mnist.yaml"
TARGETS_FILE = Path(__file__).with_name("targets.yaml")
SCHEMA = "edgeopt.suite/1"
SEEDS = (42, 43)
SLICE = 12_000  # training images of the Fashion-MNIST pairs other than the default
TRAINING_STAGES = ("teacher", "distill", "prune", "cluster", "qat")  # what --rebundle must find reused


@dataclass(frozen=True)
class Pair:
    """One model family on one dataset: how its data and its teacher are made."""

    name: str
    title: str
    data: dict[str, Any]  # the pipeline's data: block (DataConfig fields)
    teacher: dict[str, Any]  # zoo, epochs, learning_rate, ... (TrainConfig) or keras3: true with epochs
    note: str = ""
    npz: str | None = None  # a dataset this harness writes first (see make_npz)
    extra: dict[str, Any] = field(default_factory=dict)


PAIRS = (
    Pair(
        "fashion_cnn",
        "fashion_cnn on Fashion-MNIST (the default)",
        {"name": "fashion_mnist"},
        {"zoo": "fashion_cnn", "epochs": 12},
    ),
    Pair(
        "mobilenet_style_k3",
        "Keras 3 MobileNet-style on Fashion-MNIST",
        {"name": "fashion_mnist", "max_train": SLICE},
        {"keras3": True, "epochs": 15, "learning_rate": 0.003},
        "Keras 3 functional model (6 depthwise blocks, BatchNorm, ReLU6, 3 residual Adds), read through the bridge",
    ),
    Pair(
        "resnet8",
        "MLPerf Tiny ResNet-8 on Fashion-MNIST 32x32x3",
        {"name": "npz:build/suite/data/fashion32x3.npz", "max_train": SLICE},
        {"zoo": "resnet8", "epochs": 10, "learning_rate": 0.002, "lr_schedule": "cosine"},
        "Fashion-MNIST padded to 32x32 and tiled to 3 channels",
        npz="fashion32x3",
    ),
    Pair(
        "ds_cnn",
        "MLPerf Tiny DS-CNN on Fashion-MNIST",
        {"name": "fashion_mnist", "max_train": SLICE},
        {"zoo": "ds_cnn", "epochs": 12, "learning_rate": 0.002, "lr_schedule": "cosine"},
        "DS-CNN on 28x28x1 images instead of 49x10 MFCCs",
    ),
    Pair(
        "mlp_digits",
        "mlp_300_100 on digits",
        {"name": "digits"},
        {"zoo": "mlp_300_100", "epochs": 60, "learning_rate": 0.002},
    ),
    Pair(
        "tiny_cnn_digits",
        "tiny_cnn on digits",
        {"name": "digits"},
        {"zoo": "tiny_cnn", "epochs": 60, "learning_rate": 0.003},
    ),
)


def load_targets() -> dict[str, Any]:
    return yaml.safe_load(TARGETS_FILE.read_text())["suite"]


# ---- data and teachers ------------------------------------------------------------------------------


def make_npz(kind: str, path: Path) -> None:
    """``fashion32x3``: Fashion-MNIST's training and test images padded to 32x32 and tiled to 3 channels (written
    in every run, like the teachers: a file from older code is never reused)."""
    assert kind == "fashion32x3", kind
    from edgeopt.data import FASHION_FILES, find_fashion_mnist, read_idx

    folder = find_fashion_mnist()
    x_tr, y_tr, x_te, y_te = (read_idx(folder / f) for f in FASHION_FILES)  # the files' own uint8 pixels

    def prep(x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.uint8, x.dtype  # 0..255: the npz loader scales uint8 images to [0, 1]
        x = np.pad(x.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))
        return np.repeat(x[..., None], 3, axis=-1)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        x_train=prep(x_tr),
        y_train=y_tr.astype(np.int64),
        x_test=prep(x_te),
        y_test=y_te.astype(np.int64),
        class_names=np.array(FASHION_CLASSES),
    )
    os.replace(tmp, path)


def _child(what: str, args: list[str], timeout: float) -> str:
    """``python -m benchmarks.suite ARGS`` in a fresh process: the last line it printed (its result)."""
    cmd = [sys.executable, "-m", "benchmarks.suite", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


def _keras3_teacher_main(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """In a child (``--job <pair>-teacher``; Keras 3 and tf-keras do not share a process): Keras 3 builds,
    trains and saves the model (``edgeopt.zoo.mobilenet_style``); its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # Keras 3: this process never imports edgeopt._keras

    from edgeopt import zoo

    keras.utils.set_random_seed(spec["seed"])
    d = load_dataset(DataConfig(**{**spec["data"], "seed": spec["seed"]}))
    t = spec["teacher"]
    model = zoo.mobilenet_style(keras, d.input_shape, d.num_classes)
    steps = int(np.ceil(len(d.x_train) / 128)) * t["epochs"]
    lr = keras.optimizers.schedules.CosineDecay(t["learning_rate"], steps)
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.time()
    model.fit(d.x_train, d.y_train, batch_size=128, epochs=t["epochs"], verbose=0)
    acc = float(model.evaluate(d.x_test, d.y_test, verbose=0)[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return {"params": model.count_params(), "accuracy": acc, "seconds": round(time.time() - started, 1)}


# ---- one pair ------------------------------------------------------------------------------------------


def pipeline_for(pair: Pair, seed: int, teacher_path: Path) -> PipelineConfig:
    """The default pipeline file with this pair's name, data and teacher, at ``seed``."""
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["name"] = f"suite_{pair.name}"
    raw["data"] = {**pair.data, "seed": raw["seed"]}
    teacher: dict[str, Any] = {"path": str(teacher_path)}
    if not pair.teacher.get("keras3"):
        teacher["train"] = dict(pair.teacher)
    raw["teacher"] = teacher
    raw["seed"] = seed
    return PipelineConfig.model_validate(raw)


def run_pair(pair: Pair, out: Path, build: Path, seeds: list[int]) -> dict[str, Any]:
    """The pair's teacher, then one strict export per seed, one after the other in this process, on every
    core; the figures of each."""
    started = time.time()
    teacher_path = _fresh_start(pair, build)
    teacher_info: dict[str, Any] = {}
    if pair.teacher.get("keras3"):  # in a child process on every core, as the pool would train it
        teacher = Job(pair)
        teacher_info = _job_result(teacher, build, _start_job(teacher, out, build, threads=0).wait())
    # the first seed's export trains a zoo teacher, the others load it
    runs = [export_figures(pair, seed, teacher_path, out, build) for seed in seeds]
    side = teacher_path.with_suffix(teacher_path.suffix + ".json")  # what the export that trained it wrote
    if not pair.teacher.get("keras3") and side.is_file():
        teacher_info = json.loads(side.read_text())
    return _pair_result(pair, teacher_info, runs, (time.time() - started) / 60, jobs=1, threads=0)


def _fresh_start(pair: Pair, build: Path) -> Path:
    """The pair's data written if the suite makes it, and its teacher's path with no teacher there: every
    teacher is trained from scratch in the run."""
    if pair.npz:
        make_npz(pair.npz, ROOT / pair.data["name"].removeprefix("npz:"))
    teacher_path = build / "models" / f"{pair.name}.keras"
    teacher_path.unlink(missing_ok=True)
    return teacher_path


def _pair_result(
    pair: Pair, teacher: dict[str, Any], runs: list[dict[str, Any]], minutes: float, jobs: int, threads: int
) -> dict[str, Any]:
    return {
        "pair": pair.name,
        "title": pair.title,
        "note": pair.note,
        "data": pair.data,
        "teacher": {**pair.teacher, **teacher},
        "runs": runs,
        "minutes": round(minutes, 2),
        "jobs": jobs,
        "threads": threads,  # TensorFlow threads of each job (0: every core)
    }


def train_zoo_teacher(pair: Pair, teacher_path: Path) -> dict[str, Any]:
    """The zoo teacher, trained in this process as the first seed's export would train it (same pipeline, same
    seed), so that the seeds' exports all load it: its metrics and seconds."""
    from edgeopt._keras import keras
    from edgeopt.pipeline.runner import ensure_teacher

    cfg = pipeline_for(pair, SEEDS[0], teacher_path)
    _, info = ensure_teacher(cfg, load_dataset(cfg.data))
    keras.backend.clear_session()
    return {k: v for k, v in info.items() if k != "trained"}


def export_figures(pair: Pair, seed: int, teacher_path: Path, out: Path, build: Path) -> dict[str, Any]:
    """One seed's strict export and its figures."""
    with Timer() as t:
        manifest = export_run(pair, seed, teacher_path, out, build)
    run = f"{pair.name}-s{seed}"
    return figures(manifest, seed, t.seconds, build / run, out / run)


# ---- the pairs as jobs in child processes -------------------------------------------------------------


@dataclass
class Job:
    """One child process of ``run_pool``: a pair's teacher (``seed`` None) or one seed's strict export."""

    pair: Pair
    seed: int | None = None

    @property
    def name(self) -> str:
        return f"{self.pair.name}-" + ("teacher" if self.seed is None else f"s{self.seed}")

    @classmethod
    def parse(cls, name: str) -> Job:
        """The job named ``name`` (``resnet8-teacher``, ``resnet8-s43``)."""
        pair_name, _, what = name.rpartition("-")
        pair = next(p for p in PAIRS if p.name == pair_name)
        return cls(pair, None if what == "teacher" else int(what.removeprefix("s")))

    def files(self, build: Path) -> tuple[Path, Path]:
        """Its log and the JSON file its result goes to."""
        return build / f"{self.name}.log", build / f"{self.name}.json"


def run_pool(pairs: list[Pair], out: Path, build: Path, seeds: list[int], jobs: int) -> list[dict[str, Any]]:
    """Every pair's teacher and seeds as jobs in child processes (``--job``), ``jobs`` at a time, each on
    cores // jobs TensorFlow threads; each job's log in ``build/<pair>-teacher.log`` or ``<pair>-s<seed>.log``.
    The teachers come first; a seed waits for its pair's teacher; a free slot takes the first job that can run.
    A pair's minutes are its own path through the run: its teacher's, then its slowest seed's (the pairs share
    the machine, so they add up to more than the suite's). A job that fails stops the run and ends the others.
    Latency figures are measured while another job trains: the suite reports none, and its gates' budgets are
    about 50x the figures."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    for pair in pairs:
        _fresh_start(pair, build)
    todo = [Job(p) for p in pairs] + [Job(p, s) for p in pairs for s in seeds]
    running: dict[str, tuple[Job, subprocess.Popen[bytes], float]] = {}  # by job name: its process, when started
    done: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}  # each job's wall time, its process's start-up included
    log.info("suite: %d jobs, %d at a time on %d thread(s) each", len(todo), jobs, threads)
    try:
        while todo or running:
            ready = [j for j in todo if j.seed is None or Job(j.pair).name in done]
            while ready and len(running) < jobs:
                job = ready.pop(0)
                todo.remove(job)
                running[job.name] = (job, _start_job(job, out, build, threads), time.time())
                log.info("suite: %s started", job.name)
            time.sleep(1)
            for name, (job, proc, began) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                seconds[name] = time.time() - began
                done[name] = _job_result(job, build, proc.returncode)
                _log_done(job, done[name], seconds[name])
    finally:
        for _, proc, _ in running.values():  # Ctrl-C or a failed job: no child left training
            proc.terminate()
            proc.wait()
    results = []
    for pair in pairs:
        names = [Job(pair, s).name for s in seeds]
        teacher, runs = done[Job(pair).name], [done[n] for n in names]
        minutes = (seconds[Job(pair).name] + max(seconds[n] for n in names)) / 60
        results.append(_pair_result(pair, teacher, runs, minutes, jobs=jobs, threads=threads))
    return results


def _log_done(job: Job, result: dict[str, Any], seconds: float) -> None:
    what = "trained" if job.seed is None else "released" if result["passed"] else "failed"
    log.info("suite: %s %s in %.1f min", job.name, what, seconds / 60)


def _start_job(job: Job, out: Path, build: Path, threads: int) -> subprocess.Popen[bytes]:
    logfile, result = job.files(build)
    result.unlink(missing_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "benchmarks.suite", "--job", job.name, "--threads", str(threads)]
    args += ["--out", str(out), "--build", str(build)]
    with logfile.open("wb") as f:
        return subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def _job_result(job: Job, build: Path, returncode: int) -> dict[str, Any]:
    logfile, result = job.files(build)
    if returncode != 0 or not result.is_file():
        tail = logfile.read_text(errors="replace").strip().splitlines()[-5:] if logfile.is_file() else []
        raise RuntimeError(f"{job.name}: the process ended with {returncode} ({logfile}): {tail}")
    return json.loads(result.read_text())


def _job_main(job: Job, out: Path, build: Path, threads: int) -> None:
    """The child of ``run_pool``: the job on ``threads`` threads; its result to a file."""
    tf_threads.limit(threads)
    teacher_path = build / "models" / f"{job.pair.name}.keras"
    if job.seed is not None:
        result = export_figures(job.pair, job.seed, teacher_path, out, build)
    elif job.pair.teacher.get("keras3"):  # Keras 3 here: this process has not imported tf-keras's models
        spec = {"data": job.pair.data, "teacher": job.pair.teacher, "seed": SEEDS[0]}
        result = _keras3_teacher_main(teacher_path, spec)
    else:
        result = train_zoo_teacher(job.pair, teacher_path)
    write_json(job.files(build)[1], result)


def export_run(pair: Pair, seed: int, teacher_path: Path, out: Path, build: Path) -> BundleManifest:
    """One strict ``edgeopt export`` of the pair at ``seed``: the bundle's manifest, passed or failed."""
    cfg = pipeline_for(pair, seed, teacher_path)
    try:
        return export(cfg, out / f"{pair.name}-s{seed}", build_dir=build / f"{pair.name}-s{seed}", strict=True).manifest
    except (GateFailed, RuntimeCrash) as e:
        log.warning("%s seed %d: %s", pair.name, seed, e)
        failed = out / f"{pair.name}-s{seed}.failed" / "manifest.json"
        return BundleManifest.model_validate_json(failed.read_text())


def _cross(gates: list[dict[str, Any]], gate: str) -> str | None:
    """``measured/allowed`` steps of a cross-check gate over its profiles (the worst one)."""
    found = [g for g in gates if g["gate"] == gate and g.get("measured") is not None]
    if not found:
        return None
    worst = max(found, key=lambda g: g["measured"] / max(1, g["budget"] or 1))
    return f"{worst['measured']:g}/{worst['budget']:g}"


def _sparsity(m: BundleManifest) -> float | None:
    """The model's sparsity after the prune stage (0 when the guard kept its input), None without one."""
    for st in m.stages:
        if st.name == "prune":
            kept = st.guard is not None and st.guard.action == "kept the input"
            return 0.0 if kept else st.metrics.get("model_sparsity")
    return None


def shipped_image(m: BundleManifest, bundle: Path | None) -> bytes | None:
    """The MCU image's bytes as the bundle ships them (its C array), from ``bundle`` or the failed bundle beside
    it; None when neither holds it."""
    rec = m.model("mcu")
    if bundle is None or rec is None:
        return None
    for folder in (bundle, bundle.with_name(bundle.name + ".failed")):
        if (folder / rec.path).is_file():
            return array_bytes((folder / rec.path).read_text())
    return None


def figures(
    m: BundleManifest, seed: int, seconds: float, build_root: Path | None = None, bundle: Path | None = None
) -> dict[str, Any]:
    """What the table reports of one run: accuracies, sizes and ratios of the shipped model (the MCU image:
    what flash stores), how many of its bytes are weights (from the run's ``build_root``) and what the image
    gzips to with every weight zero (from the ``bundle``), reverted stages, cross-checks."""
    shipped = m.model("mcu") or m.model("android")
    assert shipped is not None, "a bundle ships a model"
    base = m.baseline
    art = next(a for a in m.artifacts if a.path == shipped.build_artifact)
    gates = art.gates
    weights = None
    if build_root is not None and (build_root / art.path).is_file():
        weights = tflite_diet.anatomy((build_root / art.path).read_bytes())["weights"]
    image = shipped_image(m, bundle)
    floor = gzip_size(tflite_diet.weights_zeroed(image)) if image is not None else None
    return {
        "seed": seed,
        "passed": m.passed,
        "failed_gates": m.validation.failed_gates,
        "not_evaluated": m.validation.not_evaluated or [],
        "teacher_accuracy": base.accuracy if base else None,
        "accuracy": art.accuracy,
        "drop_points": (base.accuracy - art.accuracy) * 100 if base and art.accuracy is not None else None,
        "teacher_bytes": base.bytes if base else None,
        "teacher_gzip_bytes": base.gzip_bytes if base else None,
        "bytes": shipped.bytes,
        "weight_bytes": weights,  # weight and bias buffers: the same in the converter's bytes and the image
        "sparsity": _sparsity(m),  # of the whole model after pruning (thin layers left dense count)
        "gzip_bytes": shipped.gzip_bytes,
        "raw_ratio": base.bytes / shipped.bytes if base else None,
        "gzip_ratio": base.gzip_bytes / shipped.gzip_bytes if base else None,
        # the image gzipped with every weight and bias byte zero: no weight compression goes below it
        "gzip_floor_bytes": floor,
        "reverted": [s.name for s in m.stages if s.guard is not None and s.guard.action == "kept the input"],
        "kernel_cross_check": _cross(gates, "kernel_cross_check"),
        "tflm_agreement": _cross(gates, "tflm_agreement"),
        "minutes": round(seconds / 60, 2),
    }


# ---- judging and the report ----------------------------------------------------------------------------


def summarize(result: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
    """Means over the seeds and the verdict on each target (pure: tested on made-up runs)."""
    runs = result["runs"]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in runs if r.get(key) is not None]
        return statistics.fmean(vals) if len(vals) == len(runs) and vals else None

    s = {k: mean(k) for k in ("teacher_accuracy", "accuracy", "drop_points", "bytes", "gzip_bytes", "raw_ratio")}
    s["gzip_ratio"] = mean("gzip_ratio")
    s["passed_runs"] = sum(1 for r in runs if r["passed"])
    verdicts = {
        "strict release passes": s["passed_runs"] == len(runs),
        f"at most {targets['max_drop_points']:g} point below the teacher": s["drop_points"] is not None
        and round(s["drop_points"], 9) <= targets["max_drop_points"],
        f"at least {targets['min_raw_ratio']:g}x smaller raw": s["raw_ratio"] is not None
        and s["raw_ratio"] >= targets["min_raw_ratio"],
        f"at least {targets['min_gzip_ratio']:g}x smaller gzipped": s["gzip_ratio"] is not None
        and s["gzip_ratio"] >= targets["min_gzip_ratio"],
    }
    return {**s, "verdicts": verdicts, "met": all(verdicts.values())}


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _why(p: dict[str, Any], missed: list[str], gzip_target: float | None = None) -> str:
    """For a size target missed: how much of the shipped image is weights (what compression can shrink), and
    for a missed ``gzip_target`` (x smaller), how many gzip bytes it leaves the weights above the floor."""
    runs = p["runs"]
    if not any("smaller" in k for k in missed) or any(r.get("weight_bytes") is None for r in runs):
        return ""
    w = statistics.fmean(r["weight_bytes"] for r in runs)
    b = statistics.fmean(r["bytes"] for r in runs)
    t = statistics.fmean(r["teacher_bytes"] for r in runs)
    sp = [r["sparsity"] for r in runs if r.get("sparsity") is not None]
    zeros = f", {statistics.fmean(sp):.0%} of the model's weights zero after pruning" if len(sp) == len(runs) else ""
    floor = ""
    if all(r.get("gzip_floor_bytes") and r.get("teacher_gzip_bytes") for r in runs):
        f = statistics.fmean(r["gzip_floor_bytes"] for r in runs)
        ratio = statistics.fmean(r["teacher_gzip_bytes"] / r["gzip_floor_bytes"] for r in runs)
        floor = (
            f"; with every weight and bias byte set to zero the image still gzips to {f:,.0f} bytes, "
            f"{ratio:.1f}x smaller than the teacher: the most weight compression could reach"
        )
        if gzip_target and any("gzipped" in k for k in missed) and all(r.get("gzip_bytes") for r in runs):
            most = statistics.fmean(r["teacher_gzip_bytes"] for r in runs) / gzip_target
            now = statistics.fmean(r["gzip_bytes"] for r in runs) - f
            floor += (
                f"; {gzip_target:g}x means at most {most:,.0f} gzip bytes, {max(0.0, most - f):,.0f} above that floor "
                f"for the weights and biases, which take {now:,.0f} now"
            )
    if w >= b / 2:
        return f" (the image's weights are {w:,.0f} of its {b:,.0f} bytes{zeros}{floor})"
    return (
        f" (the image's weights are {w:,.0f} of its {b:,.0f} bytes{zeros}, the rest per-layer scales, zero points "
        f"and flatbuffer tables, which no weight compression shrinks; the float32 teacher is {t:,.0f} bytes{floor})"
    )


def markdown(r: dict[str, Any]) -> str:
    t = r["targets"]
    lines = [
        f"Host: {r['host']['describe']}. Pipeline: `{r['pipeline']}` unchanged but for name, data and teacher; "
        f"seeds {', '.join(map(str, r['seeds']))}; every teacher trained from scratch in the run. Figures are "
        "means over the seeds (per seed in suite.json). Targets per pair: the strict release passes, at most "
        f"{t['max_drop_points']:g} point below the teacher (test split, LiteRT), the shipped int8 model at least "
        f"{t['min_raw_ratio']:g}x smaller raw and {t['min_gzip_ratio']:g}x smaller gzipped than the float32 teacher.",
        "",
        "| pair | teacher top-1 | shipped top-1 | drop (points) | raw bytes (x smaller) | gzip bytes (x smaller) "
        "| strict release | stages the guard reverted | cross-checks: kernels, TFLite Micro (steps/allowed) "
        "| minutes | targets |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|---|",
    ]
    for p in r["pairs"]:
        s = p["summary"]
        reverted = sorted({x for run in p["runs"] for x in run["reverted"]}) or ["none"]
        cross = "; ".join(
            f"{run['kernel_cross_check'] or 'n/a'}, {run['tflm_agreement'] or 'n/a'}" for run in p["runs"]
        )
        missed = [k for k, ok in s["verdicts"].items() if not ok]
        lines.append(
            f"| {p['title']} | {_f(s['teacher_accuracy'], '.2%')} | {_f(s['accuracy'], '.2%')} | "
            f"{_f(s['drop_points'], '+.2f')} | {_f(s['bytes'], ',.0f')} ({_f(s['raw_ratio'], '.1f')}x) | "
            f"{_f(s['gzip_bytes'], ',.0f')} ({_f(s['gzip_ratio'], '.1f')}x) | {s['passed_runs']}/{len(p['runs'])} | "
            f"{', '.join(reverted)} | {cross} | {p['minutes']:.1f} | "
            f"{'met' if s['met'] else 'missed: ' + '; '.join(missed) + _why(p, missed, t['min_gzip_ratio'])} |"
        )
    notes = [f"- {p['title']}: {p['note']}" for p in r["pairs"] if p["note"]]
    notes += [
        f"- {p['title']}: run again alone at {p['rerun']['commit']} ({p['rerun']['at']}, `--pair {p['pair']}`)"
        for p in r["pairs"]
        if p.get("rerun")
    ]
    lines += ["", *notes, "", f"Whole suite: {r['minutes']:.1f} minutes (target {t['max_minutes']:g})."]
    pooled = [p for p in r["pairs"] if p.get("jobs", 1) > 1 and p.get("threads")]
    if pooled:
        jobs, threads = pooled[0]["jobs"], pooled[0]["threads"]
        lines.append(
            f"The teachers and the seeds' exports ran as jobs, {jobs} at a time on {threads} thread(s) each; a pair's "
            "minutes are its teacher's then its slowest seed's, so the pairs' add up to more than the whole suite's."
        )
    speed = r["host"].get("reference_step_ms")
    if speed:
        lines.append(
            f"This host's speed during the run: a reference training step (`reference_step_ms`: the default "
            f"student, batch 128, one thread) took {speed[0]:.1f} ms at the start and {speed[-1]:.1f} ms at the end; "
            "compare two runs' minutes next to it."
        )
    if r.get("rebundled"):
        lines.append(
            f"Converted, validated and bundled again at {r['rebundled']['commit']} ({r['rebundled']['at']}) from the "
            "run's own stage folders (`--rebundle`: the teacher and every training stage reused, nothing trained); "
            "accuracies and bytes are the new bundles', suite.json keeps the earlier ones as `*_before_rebundle`."
        )
    return "\n".join(lines) + "\n"


def reference_step_ms(steps: int = 60, repeats: int = 3) -> float:
    """Milliseconds per optimizer step of one fixed workload: the default student (fashion_cnn at width 0.5)
    trained on fixed random 28x28 images, batch 128, on one thread, the median of ``repeats`` timings, in a
    fresh process. The suite's minutes scale with it, and this VM's speed varies by 1.3x between runs, so two
    runs' minutes compare only next to it. One thread: on two this 2-core VM times the same steps at about
    23 or about 44 ms, run to run. Measured at the start of a run, before any pair, and at its end."""
    args = ["--reference-step", str(steps), str(repeats), "--threads", "1"]
    return float(_child("reference step", args, timeout=900))


def _reference_step_main(steps: int, repeats: int) -> float:
    """The child of ``reference_step_ms`` (its thread count set by the caller)."""
    from edgeopt import zoo
    from edgeopt._keras import keras, set_seed

    set_seed(0)
    model = zoo.width_scaled(zoo.build("fashion_cnn", (28, 28, 1), 10), 0.5)
    rng = np.random.default_rng(0)
    x = rng.random((128 * steps, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[: 128 * 5], y[: 128 * 5], batch_size=128, epochs=1, verbose=0)  # tracing: not timed
    times = []
    for _ in range(repeats):
        with Timer() as t:
            model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=False)
        times.append(t.seconds / steps * 1000)
    return round(statistics.median(times), 1)


def run_suite(out: Path, build: Path, seeds: list[int], only: list[str] | None = None, jobs: int = 1) -> dict[str, Any]:
    """Every pair (or those in ``only``: run again and put in place of theirs in ``out/suite.json``, the
    whole suite's minutes then the sum of its pairs'); ``jobs`` teachers or seeds at once (``run_pool``; 1:
    ``run_pair`` after ``run_pair`` in this process)."""
    started = time.time()
    commit = _stamp()["commit"]  # the code this run imported: a commit made while it runs is not it
    targets = load_targets()
    pairs = [p for p in PAIRS if not only or p.name in only]
    step_ms = [reference_step_ms()]
    if jobs > 1 and len(pairs) * len(seeds) > 1:
        results = run_pool(pairs, build / "dist", build, seeds, jobs)
    else:
        results = []
        for pair in pairs:
            log.info("suite: %s", pair.title)
            results.append(run_pair(pair, build / "dist", build, seeds))
    for res in results:
        res["summary"] = summarize(res, targets)
        if only:
            res["rerun"] = {**_stamp(), "commit": commit}
    step_ms.append(reference_step_ms())
    minutes = round((time.time() - started) / 60, 1)
    if only and (out / "suite.json").is_file():
        by_name = {p["pair"]: p for p in json.loads((out / "suite.json").read_text())["pairs"]}
        by_name.update({p["pair"]: p for p in results})
        results = [by_name[p.name] for p in PAIRS if p.name in by_name]
        minutes = round(sum(p["minutes"] for p in results), 1)
    r = {
        "schema": SCHEMA,
        "pipeline": str(PIPELINE.relative_to(ROOT)),
        "seeds": seeds,
        "host": {**hostinfo.host(), "describe": hostinfo.describe(), "reference_step_ms": step_ms},
        "targets": targets,
        "pairs": results,
        "minutes": minutes,
    }
    return _write(out, r, targets)


def rebundle(out: Path, build: Path) -> dict[str, Any]:
    """The bundles of the last run (``out/suite.json``) written again from its stage folders, every training
    stage reused, nothing trained: for a change in the conversion, the validation or the bundle writer. Stops
    if a run trained a stage again or its guard reverted other stages (its stages were not the last run's).
    Minutes stay the full run's; each run keeps the accuracy and bytes it had before."""
    r = json.loads((out / "suite.json").read_text())
    targets = load_targets()
    for res in r["pairs"]:
        pair = next(p for p in PAIRS if p.name == res["pair"])
        teacher_path = build / "models" / f"{pair.name}.keras"
        runs = []
        for old in res["runs"]:
            m = export_run(pair, old["seed"], teacher_path, build / "dist", build)
            run = f"{pair.name}-s{old['seed']}"
            new = figures(m, old["seed"], old["minutes"] * 60, build / run, build / "dist" / run)
            trained = [s.name for s in m.stages if s.name in TRAINING_STAGES and not s.reused]
            if trained or new["reverted"] != old["reverted"]:
                raise RuntimeError(f"{pair.name} seed {old['seed']}: the stages were not the last run's ({trained})")
            for key in ("accuracy", "bytes", "gzip_bytes"):
                new[f"{key}_before_rebundle"] = old.get(f"{key}_before_rebundle", old[key])
            runs.append(new)
        res["runs"] = runs
        res["summary"] = summarize(res, targets)
    r["rebundled"] = _stamp()
    return _write(out, r, targets)


def _write(out: Path, r: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
    """The verdict on the whole suite, then ``suite.json`` and ``suite.md``."""
    r["all_met"] = all(p["summary"]["met"] for p in r["pairs"]) and r["minutes"] <= targets["max_minutes"]
    write_json(out / "suite.json", r)
    write_results_md(out / "suite.md", markdown(r))
    return r


def _stamp() -> dict[str, Any]:
    """Which commit wrote a result, and when."""
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"commit": proc.stdout.strip() or None, "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench"), help="where suite.md and suite.json go")
    ap.add_argument("--build", type=Path, default=Path("build/suite"), help="stage folders, bundles, teachers")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--pair", action="append", help="run only this pair (repeatable)")
    ap.add_argument(
        "--jobs",
        type=int,
        default=max(1, min(len(SEEDS), os.cpu_count() or 1)),
        help="teachers or seeds' exports at once, each in its own process on cores // jobs threads "
        "(default: one per core, at most as many as the seeds; 1: one after the other in this process)",
    )
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--rebundle", action="store_true", help="the last run's bundles again from its stage folders")
    ap.add_argument("--job", help=argparse.SUPPRESS)  # one job of run_pool: resnet8-teacher, resnet8-s43
    ap.add_argument("--reference-step", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reference_step:
        tf_threads.limit(args.threads)
        print(_reference_step_main(*args.reference_step))
        return 0
    from edgeopt.cli import render

    if args.job:
        job = Job.parse(args.job)
        with render.session(quiet=args.quiet):
            _job_main(job, args.out, args.build, args.threads)
        return 0

    if args.build.exists() and not args.pair and not args.rebundle:
        shutil.rmtree(args.build)  # from scratch: no stage of an earlier run is reused
    with render.session(quiet=args.quiet):
        r = (
            rebundle(args.out, args.build)
            if args.rebundle
            else run_suite(args.out, args.build, args.seeds, args.pair, args.jobs)
        )
        render.text_file(args.out / "suite.md")
    return 0 if r["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
