"""The installed ``edgeopt`` script as a user runs it: real stdout and stderr, real exit codes.

CliRunner (tests/e2e/test_cli.py) shares one process and mixes the streams; here each run is a child
process, so what lands on stdout, what on stderr, and what ``--quiet`` leaves are checked as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EDGEOPT = Path(sys.executable).parent / "edgeopt"


def edgeopt(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script in ``cwd``; COLUMNS fixed so rich lays tables out the same everywhere,
    no EDGEOPT_DEBUG so errors are the user's one line."""
    assert EDGEOPT.is_file(), f"{EDGEOPT}: the edgeopt script is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k != "EDGEOPT_DEBUG"} | {"COLUMNS": "120"}
    return subprocess.run(
        [str(EDGEOPT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float32 .tflite of a 2-layer Dense model (no training needed to inspect it)."""
    from edgeopt import stages
    from edgeopt._keras import keras
    from edgeopt.config import ConvertConfig

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(stages.convert(model, ConvertConfig(quantization="float32")).tflite)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "missing.keras", "--data", "digits", "--out", "out.keras"], "missing.keras: no such file"),
        (
            ["convert", "missing.keras", "--out", "out.tflite", "--quantization", "int3"],
            "Invalid value for '--quantization': 'int3' is not one of 'float32', 'dynamic',",
        ),
        (["convert", "missing.keras", "--out", "out.tflite", "--bogus"], "No such option: --bogus"),
        (["validate", "missing.tflite", "--data", "digits"], "missing.tflite: no such file"),
    ],
)
def test_bad_input_is_exit_2_and_one_line_on_stderr(args: list[str], message: str, tmp_path: Path) -> None:
    r = edgeopt(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "bad input must write nothing"


def test_inspect_json_is_the_only_output_on_stdout(tiny_tflite: Path, tmp_path: Path) -> None:
    r = edgeopt("inspect", tiny_tflite, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)  # the whole of stdout is one JSON document
    content = tiny_tflite.read_bytes()
    assert info["bytes"] == len(content)
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert [t["shape"] for t in info["inputs"]] == [[1, 8]]
    assert info["edgeopt_manifest"] is None
    assert r.stderr == ""


def test_inspect_tables_go_to_stderr(tiny_tflite: Path, tmp_path: Path) -> None:
    r = edgeopt("inspect", tiny_tflite, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert hashlib.sha256(tiny_tflite.read_bytes()).hexdigest() in r.stderr
    assert "no edgeopt manifest embedded" in r.stderr


def test_progress_and_summary_without_quiet_nothing_with_quiet(tmp_path: Path) -> None:
    args = ["train", "--zoo", "tiny_cnn", "--data", "digits", "--epochs", "2", "--max-train", "300"]
    loud = edgeopt(*args, "--out", "loud.keras", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout == ""
    # Not a terminal: the bar is printed when it ends, with one line per epoch from the Keras callback.
    epoch_lines = [ln for ln in loud.stderr.splitlines() if ln.startswith("train tiny_cnn: epoch ")]
    assert [ln.split()[3] for ln in epoch_lines] == ["1/2", "2/2"], loud.stderr
    assert "val_accuracy=" in epoch_lines[-1]
    assert "params" in loud.stderr and "loud.keras" in loud.stderr  # the summary table

    quiet = edgeopt(*args, "--out", "quiet.keras", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert json.loads((tmp_path / "quiet.keras.json").read_text())["epochs"] == 2


def test_quiet_keeps_library_warnings(tiny_model_path: Path, tmp_path: Path) -> None:
    """--quiet is the WARNING level: a library warning still shows, as one prefixed line, INFO does not."""
    r = edgeopt(
        "prune", tiny_model_path, "--data", "digits", "--max-train", "256", "--epochs", "1",
        "--end-step", "1000", "--out", "p.keras", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    # 256 examples minus the 10% validation split at batch 128: 2 steps, too few to leave sparsity 0.
    assert r.stderr.splitlines() == [
        "warning: pruning ends at step 1000 but training has only 2 steps",
        "warning: sparsity reached 0.000, target 0.800",
    ]


def test_library_imports_and_runs_without_rich(tmp_path: Path) -> None:
    """Only the CLI draws: with rich made unimportable the library still imports and reports progress.

    (Importing tfmot probes the Keras 3 package, which imports rich itself, so "rich not in
    sys.modules" cannot hold in this environment; blocking rich shows edgeopt does not need it.)"""
    code = """
import sys
sys.modules["rich"] = None  # any `import rich...` now raises ImportError
import edgeopt.stages, edgeopt.calibrate, edgeopt.data
from edgeopt import progress
from edgeopt.config import TrainConfig
from edgeopt.data import load_dataset
with progress.task("no reporter", 3) as advance:
    advance(3, "done")
r = edgeopt.stages.train(load_dataset("digits"), TrainConfig(zoo="tiny_cnn", epochs=1), seed=0)
from edgeopt.stages._common import progress_callback
assert progress_callback("x", 1, 1) is None
print("ok", r.metrics["epochs"])
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "1"]
    assert r.stderr == ""  # the library printed nothing


def test_light_modules_do_not_import_rich_or_tensorflow() -> None:
    """The progress interface and the configs are cheap to import: no rich, no TensorFlow."""
    code = (
        "import sys, edgeopt.progress, edgeopt.config\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'tensorflow', 'tf_keras'}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
