"""The CLI through Typer's CliRunner: files written, exit codes, one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeopt.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_help_lists_every_stage():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("train", "prune", "cluster", "distill", "convert", "validate", "run"):
        assert cmd in r.output


def test_stage_chain_writes_models_and_metrics(tiny_model, tiny_model_path, tmp_path):
    from edgeopt.artifacts import load_model

    pruned, clustered, student = tmp_path / "p.keras", tmp_path / "c.keras", tmp_path / "s.keras"
    r = invoke(
        "distill", tiny_model_path, "--data", "digits", "--out", student, "--width", "0.5", "--epochs", "2", "--quiet"
    )
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "s.keras.json").read_text())
    # the counts are those of the files, and half the width leaves well under half the parameters
    assert d["student_params"] == sum(w.size for w in load_model(student).get_weights())
    assert d["teacher_params"] == sum(w.size for w in tiny_model.get_weights())
    assert d["student_params"] < d["teacher_params"] / 2
    r = invoke(
        "prune",
        tiny_model_path,
        "--data",
        "digits",
        "--out",
        pruned,
        "--final-sparsity",
        "0.5",
        "--epochs",
        "2",
        "--skip-layer",
        "conv1",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "p.keras.json").read_text())
    assert abs(m["sparsity"] - 0.5) <= 0.01 and "conv1" in m["skipped_layers"]
    r = invoke("cluster", pruned, "--data", "digits", "--out", clustered, "--clusters", "8", "--epochs", "1", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "c.keras.json").read_text())
    assert m["preserve_sparsity"] is True and m["max_distinct_values"] <= 8
    out = tmp_path / "c.tflite"
    r = invoke("convert", clustered, "--out", out, "--quantization", "int8", "--data", "digits")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c.tflite.json").read_text())["inputs"][0]["dtype"] == "int8"
    assert "convert" in r.output and "gzip_bytes" in r.output  # the summary table
    r = invoke("validate", out, "--data", "digits", "--keras", clustered, "--json", tmp_path / "v.json")
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())["models"][0]
    assert v["agreement"] > 0.9 and v["samples"] == 360


def test_train_command(tmp_path):
    out = tmp_path / "t.keras"
    r = invoke("train", "--zoo", "tiny_cnn", "--data", "digits", "--epochs", "1", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert out.is_file() and json.loads((tmp_path / "t.keras.json").read_text())["params"] > 1000


def test_validate_gate_failure_exits_1(tiny_model_path, tmp_path):
    out = tmp_path / "m.tflite"
    assert invoke("convert", tiny_model_path, "--out", out, "--quantization", "float32", "-q").exit_code == 0
    r = invoke("validate", out, "--data", "digits", "--min-accuracy", "0.9999", "-q")
    assert r.exit_code == 1 and "min" in r.output


def _fill(arg: str, subs: dict) -> str:
    for key, value in subs.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "notes.keras").write_text("hello")
    (tmp_path / "lfs.tflite").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    (tmp_path / "page.tflite").write_text("<!DOCTYPE html><html></html>")
    (tmp_path / "empty.tflite").write_bytes(b"")
    (tmp_path / "random.tflite").write_bytes(np.random.default_rng(0).bytes(256))
    return {p.name: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "{missing}", "--data", "digits", "--out", "{out}"], "no such file"),
        (["prune", "{notes.keras}", "--data", "digits", "--out", "{out}"], "not a Keras model"),
        (["prune", "{model}", "--data", "digits", "--out", "{out}", "--final-sparsity", "1.5"], "--final-sparsity"),
        (["prune", "{model}", "--data", "digits", "--out", "{out}", "--m-by-n", "4:2"], "--m-by-n"),
        (["cluster", "{model}", "--data", "digits", "--out", "{out}", "--clusters", "1"], "--clusters"),
        (["prune", "{model}", "--data", "digits", "--out", "{out}", "--block", "0"], "--block"),
        (["prune", "{model}", "--data", "digits", "--out", "{out}", "--kd-alpha", "0.5"], "need --teacher"),
        (
            ["qat", "{model}", "--data", "digits", "--out", "{out_d}", "--teacher", "{model}", "--kd-alpha", "2"],
            "--kd-alpha",
        ),
        (
            ["distill", "{model}", "--data", "digits", "--out", "{out}", "--width", "0.5", "--temperature", "0"],
            "--temperature",
        ),
        (["distill", "{model}", "--data", "digits", "--out", "{out}", "--width", "1.5"], "--width"),
        (["distill", "{model}", "--data", "digits", "--out", "{out}"], "exactly one of student"),
        (["prune", "{model}", "--data", "fashion_mnist", "--max-train", "50", "--out", "{out}"], "(28, 28, 1)"),
        (["prune", "{model}", "--data", "mnist", "--out", "{out}"], "unknown dataset"),
        (["convert", "{model}", "--out", "{out_t}", "--quantization", "int8"], "calibration data"),
        (["validate", "{empty.tflite}", "--data", "digits"], "empty file"),
        (["validate", "{page.tflite}", "--data", "digits"], "TFL3"),
        (["validate", "{lfs.tflite}", "--data", "digits"], "TFL3"),
        (["validate", "{random.tflite}", "--data", "digits"], "TFL3"),
        (["run", "{missing}.yaml"], "no such pipeline file"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tiny_model_path, tmp_path):
    files = _bad_files(tmp_path)
    out = tmp_path / "out.keras"
    subs = {
        "missing": tmp_path / "missing.keras",
        "out": out,
        "out_t": tmp_path / "out.tflite",
        "out_d": tmp_path / "qat_out",
        "model": tiny_model_path,
        **{k: str(v) for k, v in files.items()},
    }
    r = invoke(*[_fill(a, subs) for a in args], "-q")
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert r.output.strip().startswith("error:")
    assert not out.exists() and not (tmp_path / "out.tflite").exists(), "half-written output"


def test_yaml_typo_exit_2(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(
        "name: x\ndata: digits\nteacher: {path: m.keras}\nsteps:\n  - stage: convert\n    quantisation: int8\n"
    )
    r = invoke("run", p)
    assert r.exit_code == 2 and "steps[0].quantisation: unknown key" in r.output and str(p) in r.output


def test_wrong_choice_is_usage_error(tiny_model_path, tmp_path):
    r = invoke("convert", tiny_model_path, "--out", tmp_path / "x.tflite", "--quantization", "int3")
    assert r.exit_code == 2 and "int3" in r.output


def test_run_shows_each_stage_and_the_artifacts(tmp_path):
    """`run` draws a table per stage from the runner's on_stage events, the runner's log lines, and the
    artifacts table; the second run reuses the cached stage and says so."""
    p = tmp_path / "tiny.yaml"
    p.write_text(
        f"name: tiny\nseed: 3\ndata: digits\n"
        f"teacher: {{path: {tmp_path / 't.keras'}, train: {{zoo: tiny_cnn, epochs: 1}}}}\n"
        "steps:\n  - {stage: convert, quantization: float32}\n"
        "  - {stage: validate, latency: false, cross_check: false}\n"
    )
    r = invoke("run", p, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert "step 1/2: convert" in r.output and "step 2/2: validate" in r.output  # library log lines
    assert "gzip_bytes" in r.output  # the convert step's table
    assert "model_float32.tflite" in r.output and "accuracy 0." in r.output  # the validate step's table
    assert "tiny: artifacts in" in r.output and "manifest:" in r.output
    again = invoke("run", p, "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    assert "reused 01_convert" in again.output
    quiet = invoke("run", p, "--out", tmp_path / "b", "-q")
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output


def test_every_option_has_help_and_config_flags_take_the_field_description():
    """A flag that fills a config field is documented once, by the field's description (a field a
    subclass overrides, like PruneConfig.epochs, by the description where it was declared first)."""
    import typer

    from edgeopt import config
    from edgeopt.cli.options import OPTION_FIELDS

    def description(cls, field: str) -> str:
        declared = [k for k in reversed(cls.__mro__) if field in k.__dict__.get("__annotations__", {})]
        return next(d for k in declared + [cls] if (d := k.model_fields[field].description))

    configs = {
        "train": config.TrainConfig,
        "prune": config.PruneConfig,
        "cluster": config.ClusterConfig,
        "distill": config.DistillConfig,
        "qat": config.QATConfig,
        "convert": config.ConvertConfig,
        "validate": config.ValidateConfig,
    }
    commands = typer.main.get_command(app).commands
    checked = 0
    for name, cls in configs.items():
        for param in commands[name].params:
            assert param.help, f"edgeopt {name} {param.opts}: no help"
            field = OPTION_FIELDS.get(param.name, param.name)
            if param.name == "data" and name != "convert":  # convert's --data is calibration data only
                owner, field = config.DataConfig, "name"
            elif field in cls.model_fields:
                owner = cls
            elif field in config.DataConfig.model_fields:
                owner = config.DataConfig
            elif param.name.startswith("kd_"):
                owner, field = config.KDConfig, param.name.removeprefix("kd_")
            else:
                continue
            assert param.help.startswith(description(owner, field)), (name, param.name, param.help)
            checked += 1
    assert checked == 119, checked  # update when a flag is added: every config-backed flag is checked
