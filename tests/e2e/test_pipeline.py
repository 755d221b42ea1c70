"""A small pipeline file end to end (digits), its manifest, and same seed -> same bytes."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeopt.cli import app
from edgeopt.pipeline import run
from edgeopt.pipeline.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _pipeline(tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load((ROOT / "tests" / "data" / "digits.yaml").read_text())
    raw["teacher"]["path"] = str(tmp_path / "teacher.keras")
    raw.update(overrides)
    p = tmp_path / "digits.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run1")
    r = CliRunner().invoke(app, ["run", str(_pipeline(tmp)), "--out", str(tmp / "build")])
    assert r.exit_code == 0, r.output
    return tmp, json.loads((tmp / "build" / "manifest.json").read_text())


def test_manifest(first_run):
    tmp, m = first_run
    assert m["seed"] == 7 and m["pipeline"] == "digits_small"
    assert set(m["versions"]) >= {
        "edgeopt",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
    }
    assert all(v != "unknown" for v in m["versions"].values())
    assert m["baseline"]["quantization"] == "float32" and m["baseline"]["accuracy"] > 0.85
    names = [s["name"] for s in m["stages"]]
    assert names == ["teacher", "baseline", "distill", "prune", "cluster", "convert", "qat", "convert", "validate"]
    for s in m["stages"]:
        assert {"name", "output", "sha256", "seconds", "metrics"} <= set(s)
    assert m["stages"][0]["metrics"]["trained"] is True  # the teacher was missing, so it was trained
    arts = {a["quantization"]: a for a in m["artifacts"]}
    assert set(arts) == {"int8", "float16"}
    validated = m["stages"][-1]["metrics"]["artifacts"]
    for a in arts.values():
        f = tmp / "build" / a["path"]
        assert f.is_file() and f.stat().st_size == a["bytes"]
        # the accuracy is the validate stage's, within 3 points of the Keras model it was converted from
        assert a["accuracy"] == validated[f.name]["accuracy"]
        source = next(s for s in m["stages"] if s["output"].split("/")[0] == a["source_stage"])
        assert abs(a["accuracy"] - source["metrics"]["accuracy"]) <= 0.03, (a["source_stage"], a["accuracy"])
        assert a["gzip_bytes"] < a["bytes"] and len(a["sha256"]) == 64
    assert arts["int8"]["inputs"][0]["dtype"] == "int8"
    assert (tmp / "build" / "05_qat" / "saved_model" / "saved_model.pb").is_file()
    convert = next(s for s in m["stages"] if s["output"].endswith("model_int8.tflite"))["metrics"]
    kernels = convert["kernels"]
    dense = [v for k, v in kernels.items() if "Conv2D" not in k]
    assert dense and all(v["distinct_values"] <= 8 for v in dense)  # the 8 clusters survive int8
    # the QAT SavedModel's per-channel conv grids go back on the clustered model's 8 codes
    shared = convert["shared_codebook"]
    assert shared and all(r["codes_after"] <= 8 < r["codes_before"] for r in shared), shared
    assert (tmp / "build" / "02_prune" / "model.keras").is_file()
    assert (tmp / "build" / "07_validate" / "metrics.json").is_file()
    int8 = arts["int8"]
    assert {g["profile"] for g in int8["gates"]} == {"-", "cortex-m7-512k", "my-board"}
    arena = next(g for g in int8["gates"] if g["profile"] == "my-board" and g["gate"] == "arena_bytes")
    assert arena["status"] == "passed" and 0 < arena["measured"] <= 65536
    base_p50 = m["baseline"]["latency"]["1"]["p50_ms"]
    assert int8["speedup_vs_baseline_p50_1thread"] == pytest.approx(base_p50 / int8["latency"]["1"]["p50_ms"])
    assert validated[Path(int8["path"]).name]["latency"]["1"]["runs"] >= 50
    assert (tmp / "build" / "07_validate" / "junit.xml").is_file()
    assert "cortex-m7-512k" in (tmp / "build" / "07_validate" / "report.md").read_text()
    assert m["passed"] is True


def test_same_seed_same_tflite_bytes(first_run, tmp_path):
    """A second run from scratch (teacher trained again) gives byte-identical .tflite files."""
    _, m1 = first_run
    r = CliRunner().invoke(app, ["run", str(_pipeline(tmp_path)), "--out", str(tmp_path / "build"), "-q"])
    assert r.exit_code == 0, r.output
    m2 = json.loads((tmp_path / "build" / "manifest.json").read_text())
    assert [a["sha256"] for a in m2["artifacts"]] == [a["sha256"] for a in m1["artifacts"]]
    assert m2["baseline"]["sha256"] == m1["baseline"]["sha256"]


def test_failed_gate_writes_manifest_and_exits_1(first_run, tmp_path):
    tmp, _ = first_run
    shutil.copy(tmp / "teacher.keras", tmp_path / "teacher.keras")
    raw = yaml.safe_load(_pipeline(tmp_path).read_text())
    raw["steps"] = [{"stage": "convert", "quantization": "float32"}, {"stage": "validate", "min_accuracy": 0.9999}]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 1 and "min_accuracy" in r.output
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["passed"] is False and m["failed_gates"]


def test_library_run_returns_report(first_run, tmp_path):
    tmp, _ = first_run
    shutil.copy(tmp / "teacher.keras", tmp_path / "teacher.keras")
    cfg = load_pipeline(_pipeline(tmp_path, steps=[{"stage": "convert", "quantization": "dynamic"}]))
    report = run(cfg, tmp_path / "out")
    assert report.passed and report.manifest.artifacts[0].quantization == "dynamic"
    assert report.manifest.stages[0].metrics["trained"] is False
    assert report.manifest.to_json() == json.loads((tmp_path / "out" / "manifest.json").read_text())


@pytest.mark.slow
def test_default_pipeline_end_to_end(tmp_path):
    """The real thing: pipelines/fashion_mnist.yaml (teacher trained if missing). `make test-slow`."""
    r = CliRunner().invoke(app, ["run", str(ROOT / "pipelines" / "fashion_mnist.yaml"), "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["baseline"]["accuracy"] >= 0.91 and m["passed"]
    art = m["artifacts"][0]
    # the compression issue's targets: 40x smaller gzipped, within 1 point, 3x faster (LiteRT, 1 thread)
    assert art["quantization"] == "int8" and art["gzip_ratio_vs_baseline"] >= 40
    assert art["accuracy_drop_vs_baseline"] <= 0.01 and art["speedup_vs_baseline_p50_1thread"] >= 3


def test_lambda_teacher_needs_unsafe_in_the_pipeline_file(tmp_path):
    """A pipeline file says `teacher: {unsafe: true}` where the CLI stages take --unsafe."""
    from edgeopt._keras import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(keras.layers.Flatten()(inp))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x)).save(tmp_path / "lambda.keras")
    raw = {
        "name": "lam",
        "data": "digits",
        "teacher": {"path": str(tmp_path / "lambda.keras")},
        "steps": [{"stage": "convert", "quantization": "float32"}],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 2 and "Lambda" in r.output and "unsafe" in r.output, r.output
    raw["teacher"]["unsafe"] = True
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["artifacts"][0]["quantization"] == "float32"


# ---- the cache in the other direction: every part of a stage's key makes it run again ------------------

ALL = ["00_baseline", "01_distill", "02_prune", "03_convert", "04_validate"]


def _small(tmp: Path, **overrides) -> dict:
    raw = {
        "name": "keyparts",
        "seed": 3,
        "data": {"name": "digits", "max_train": 600},
        "teacher": {"path": str(tmp / "teacher.keras"), "train": {"zoo": "tiny_cnn", "epochs": 2}},
        "steps": [
            {"stage": "distill", "width": 0.5, "epochs": 1},
            {"stage": "prune", "final_sparsity": 0.5, "epochs": 1},
            {"stage": "convert", "quantization": "int8"},
            {"stage": "validate", "profiles": ["my-board"], "latency": False, "cross_check": False},
        ],
        "profiles": [{"name": "my-board", "runtime": "tflm", "budgets": {"arena_bytes": 65536}}],
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """One run of a small pipeline; tests copy its folder (stages and cache) and change one key part."""
    from edgeopt.pipeline.spec import PipelineConfig

    tmp = tmp_path_factory.mktemp("keyed")
    report = run(PipelineConfig.model_validate(_small(tmp)), tmp / "build")
    assert report.passed
    return tmp


def _rerun(keyed: Path, tmp_path: Path, mutate=None, **overrides) -> list[str]:
    """Copy the first run's folder, apply one change, run again; return the stage folders reused."""
    from edgeopt.pipeline.spec import PipelineConfig

    shutil.copytree(keyed, tmp_path / "k")
    raw = _small(tmp_path / "k", **overrides)
    if mutate is not None:
        mutate(tmp_path / "k", raw)
    events = []
    run(PipelineConfig.model_validate(raw), tmp_path / "k" / "build", on_stage=events.append)
    reused = [f"{e.index:02d}_{e.stage}" for e in events if e.reused]
    m = json.loads((tmp_path / "k" / "build" / "manifest.json").read_text())
    assert m["reused"] == reused  # the manifest says the same as the events
    return reused


def test_unchanged_run_reuses_every_stage(keyed, tmp_path):
    assert _rerun(keyed, tmp_path) == ALL


def test_seed_reruns_everything(keyed, tmp_path):
    assert _rerun(keyed, tmp_path, seed=4) == []


def test_data_and_max_train_rerun_everything(keyed, tmp_path):
    assert _rerun(keyed, tmp_path, data={"name": "digits", "max_train": 500}) == []


def test_teacher_weights_rerun_everything(keyed, tmp_path):
    from edgeopt.artifacts import load_model, save_model

    def perturb(folder: Path, raw: dict) -> None:
        m = load_model(folder / "teacher.keras")
        w = m.get_weights()
        w[0] = w[0] + 1e-3
        m.set_weights(w)
        save_model(m, folder / "teacher.keras")

    assert _rerun(keyed, tmp_path, mutate=perturb) == []


def test_earlier_step_config_reruns_it_and_what_follows(keyed, tmp_path):
    def hotter(folder: Path, raw: dict) -> None:
        raw["steps"][0]["temperature"] = 2.0

    assert _rerun(keyed, tmp_path, mutate=hotter) == ["00_baseline"]


def test_kd_fine_tuning_uses_the_pipeline_teacher_and_keys_on_it(keyed, tmp_path):
    """kd on the prune step: prune and what follows run again, against the pipeline's teacher, whose
    weights join the prune step's key (a new teacher must rerun it even where its input is unchanged)."""
    from edgeopt.pipeline.runner import plan
    from edgeopt.pipeline.spec import PipelineConfig

    def with_kd(folder: Path, raw: dict) -> None:
        raw["steps"][1]["kd"] = {"temperature": 2.0, "alpha": 0.5}

    assert _rerun(keyed, tmp_path, mutate=with_kd) == ALL[:2]
    prune_metrics = json.loads((tmp_path / "k" / "build" / "02_prune" / "metrics.json").read_text())
    assert prune_metrics["kd"] == {"temperature": 2.0, "alpha": 0.5}  # without the teacher it raises BadInput
    raw = _small(tmp_path)
    with_kd(tmp_path, raw)
    prune_step = next(s for s in plan(PipelineConfig.model_validate(raw)) if s.name == "prune")
    without = next(s for s in plan(PipelineConfig.model_validate(_small(tmp_path))) if s.name == "prune")

    class State:
        model_hash, teacher_hash = "m", "t"

    assert prune_step.key_inputs(State()) == {"model": "m", "teacher": "t"}
    assert without.key_inputs(State()) == {"model": "m"}


def test_profile_contents_rerun_validation_only(keyed, tmp_path):
    def tighter(folder: Path, raw: dict) -> None:
        raw["profiles"][0]["budgets"]["arena_bytes"] = 32768

    assert _rerun(keyed, tmp_path, mutate=tighter) == ALL[:-1]


def test_calibration_reruns_validation_only(keyed, tmp_path, monkeypatch):
    from edgeopt import calibrate, hostinfo

    cal = tmp_path / "calibration.json"
    profiles = {"pixel4-cpu4": {"int8": {"factor": 2.0}}}
    cal.write_text(json.dumps({"schema": calibrate.SCHEMA, "host": hostinfo.host(), "profiles": profiles}))
    monkeypatch.setenv("EDGEOPT_CALIBRATION", str(cal))
    assert _rerun(keyed, tmp_path) == ALL[:-1]


def test_edgeopt_version_reruns_everything(keyed, tmp_path, monkeypatch):
    from edgeopt.pipeline import hashing, runner

    bumped = {**hashing.versions(), "edgeopt": "99.0.0"}
    monkeypatch.setattr(runner, "versions", lambda: bumped)
    assert _rerun(keyed, tmp_path) == []


def test_tf_kernels_rerun_everything(keyed, tmp_path, monkeypatch):
    """oneDNN and Eigen round differently: a build made with the other kernels is not reused."""
    from edgeopt.pipeline import hashing

    m = json.loads((keyed / "build" / "manifest.json").read_text())
    assert m["versions"]["tf-kernels"] == hashing.tf_kernels() == "onednn"  # edgeopt's default
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # what a run with Eigen's kernels records
    assert hashing.tf_kernels() == "eigen"
    assert _rerun(keyed, tmp_path) == []


def test_shared_cache_serves_another_run_folder(keyed, tmp_path):
    """A cache directory shared by two run folders (as search workers share one): the second run
    materializes every stage from it and gets the same bytes."""
    from edgeopt.pipeline.spec import PipelineConfig

    events = []
    run(
        PipelineConfig.model_validate(_small(keyed)),
        tmp_path / "other",
        cache_dir=keyed / "build" / ".cache",
        on_stage=events.append,
    )
    assert all(e.reused for e in events)
    a = json.loads((keyed / "build" / "manifest.json").read_text())["artifacts"]
    b = json.loads((tmp_path / "other" / "manifest.json").read_text())["artifacts"]
    assert [x["sha256"] for x in a] == [x["sha256"] for x in b]
    assert (tmp_path / "other" / "03_convert" / "model_int8.tflite").read_bytes() == (
        keyed / "build" / "03_convert" / "model_int8.tflite"
    ).read_bytes()


def test_stage_events_carry_validation_accuracy(keyed, tmp_path):
    from edgeopt.data import load_dataset
    from edgeopt.pipeline.spec import PipelineConfig
    from edgeopt.stages._common import accuracy

    events = []
    cfg = PipelineConfig.model_validate(_small(keyed))
    run(cfg, keyed / "build", on_stage=events.append)
    by = {e.stage: e for e in events}
    assert by["convert"].val_accuracy is None and by["validate"].val_accuracy is None
    from edgeopt.artifacts import load_model

    data = load_dataset(cfg.data)
    want = accuracy(load_model(keyed / "build" / "02_prune" / "model.keras"), data.x_val, data.y_val)
    assert by["prune"].val_accuracy == pytest.approx(want, abs=1e-9)


# ---- the stage guard: a training stage that lowers validation accuracy -------------------------------


@pytest.fixture
def guarded(tiny_model_path, tmp_path):
    """A pipeline whose one training stage surely makes the model worse, on a teacher at ~93%."""

    def make(**step_overrides):
        from edgeopt.pipeline.spec import PipelineConfig

        shutil.copy(tiny_model_path, tmp_path / "teacher.keras")
        raw = _small(tmp_path, data="digits")
        # 97% of the weights gone in one epoch at a high rate
        raw["steps"] = [
            {"stage": "prune", "final_sparsity": 0.97, "epochs": 1, "learning_rate": 0.05, **step_overrides},
            {"stage": "convert", "quantization": "float32"},
        ]
        return PipelineConfig.model_validate(raw)

    return make


def test_guard_keeps_the_input_of_a_stage_that_regresses(guarded, tmp_path):
    report = run(guarded(), tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    prune = next(s for s in m["stages"] if s["name"] == "prune")
    g = prune["guard"]
    assert g["regressed"] and g["action"] == "kept the input" and g["policy"] == "keep_best"
    assert g["drop_points"] > 0.5 and g["examples_lost"] > g["examples_gained"]
    assert prune["val_accuracy"] == pytest.approx(g["val_accuracy_after"])
    # the convert step converted the prune step's input (the teacher): its float32 .tflite is the baseline's
    art = m["artifacts"][0]
    assert art["source_stage"] == "teacher" and art["sha256"] == m["baseline"]["sha256"]
    assert report.passed


def test_guard_fail_stops_the_run(guarded, tmp_path):
    from edgeopt.errors import GateFailed

    with pytest.raises(GateFailed, match="stage guard: 01_prune validation top-1"):
        run(guarded(on_regression="fail"), tmp_path / "b")


def test_guard_continue_keeps_the_worse_model(guarded, tmp_path):
    run(guarded(on_regression="continue"), tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    g = next(s for s in m["stages"] if s["name"] == "prune")["guard"]
    assert g["regressed"] and g["action"] == "continued"
    assert m["artifacts"][0]["source_stage"] == "01_prune"
    assert m["artifacts"][0]["sha256"] != m["baseline"]["sha256"]


def test_guard_tolerance_lets_a_small_loss_through(guarded, tmp_path):
    run(guarded(regression_tolerance=100.0), tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    g = next(s for s in m["stages"] if s["name"] == "prune")["guard"]
    assert not g["regressed"] and g["action"] == "none" and g["tolerance_points"] == 100.0


def test_strict_fails_a_gate_that_was_not_evaluated(keyed, tmp_path):
    """A latency budget on a board without any way to estimate latency: not evaluated. Without
    strict the run passes and says so; with strict it fails and names the gate."""
    from edgeopt.errors import GateFailed
    from edgeopt.pipeline.spec import PipelineConfig

    shutil.copytree(keyed, tmp_path / "k")
    raw = _small(tmp_path / "k")
    raw["profiles"][0]["budgets"]["latency_p90_ms"] = 5.0
    cfg = PipelineConfig.model_validate(raw)
    report = run(cfg, tmp_path / "k" / "build")
    m = json.loads((tmp_path / "k" / "build" / "manifest.json").read_text())
    assert report.passed and m["strict"] is False
    assert any("my-board/latency_p90_ms" in g for g in m["not_evaluated"])
    with pytest.raises(GateFailed, match=r"not evaluated \(strict.*my-board/latency_p90_ms"):
        run(cfg, tmp_path / "k" / "build", strict=True)
    m = json.loads((tmp_path / "k" / "build" / "manifest.json").read_text())
    assert m["passed"] is False and m["strict"] is True


def test_phone_latency_gate_calibrates_itself_once(tiny_model_path, tmp_path, monkeypatch):
    """No calibration stored for this host: the first validation against a phone profile measures it
    (about 40 s), labels it automatic and evaluates the latency gate; the second run reuses it."""
    from edgeopt.pipeline.spec import PipelineConfig

    cal = tmp_path / "calibration.json"
    monkeypatch.setenv("EDGEOPT_CALIBRATION", str(cal))
    (tmp_path / "k").mkdir()
    shutil.copy(tiny_model_path, tmp_path / "k" / "teacher.keras")
    raw = _small(tmp_path / "k", data="digits")
    raw["steps"] = [
        {"stage": "convert", "quantization": "int8"},
        {"stage": "validate", "profiles": ["pixel4-cpu4"]},
    ]
    cfg = PipelineConfig.model_validate(raw)
    run(cfg, tmp_path / "k" / "build", strict=True)
    stored = json.loads(cal.read_text())
    assert stored["auto"] is True and stored["host"]["fingerprint"]
    factor = stored["profiles"]["pixel4-cpu4"]["int8"]
    assert factor["factor"] == pytest.approx(factor["device_ms"] / factor["host_p50_ms"])
    m = json.loads((tmp_path / "k" / "build" / "manifest.json").read_text())
    gate = next(g for g in m["artifacts"][0]["gates"] if g["gate"] == "latency_p90_ms")
    assert gate["status"] in ("passed", "failed") and "estimate" in gate["detail"]
    assert m["not_evaluated"] == [] and m["strict"] is True
    before = cal.stat().st_mtime_ns
    events = []
    run(cfg, tmp_path / "k" / "build", strict=True, on_stage=events.append)
    assert cal.stat().st_mtime_ns == before and all(e.reused for e in events)
