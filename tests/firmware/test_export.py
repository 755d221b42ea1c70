"""A bundle exported with a firmware profile: its mcu/ holds the example (main.cc, Makefile, startup,
linker scripts, op resolver, kernel list, a checked example input), its manifest the typed firmware
record, its model card and report the firmware check; `edgeopt firmware` on it builds the bundle's own
example and passes."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from edgeopt.cli import app
from edgeopt.manifest import BundleManifest

PIPELINE = {
    "name": "tiny",
    "seed": 7,
    "data": {"name": "digits", "max_train": 600},
    "teacher": {"path": None, "train": {"zoo": "tiny_cnn", "epochs": 3, "learning_rate": 0.003}},
    "steps": [
        {"stage": "convert", "quantization": "int8"},
        {"stage": "validate", "min_accuracy": 0.3, "profiles": ["nucleo-l4r5zi-firmware"]},
    ],
}


def test_export_with_a_firmware_profile(fw_tree, m4_record, tmp_path):
    raw = json.loads(json.dumps(PIPELINE))
    raw["teacher"]["path"] = str(tmp_path / "teacher.keras")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "dist" / "tiny"
    r = CliRunner().invoke(
        app, ["export", str(tmp_path / "tiny.yaml"), "--out", str(out), "--build", str(tmp_path / "b"), "-q"]
    )
    assert r.exit_code == 0, r.output
    mcu = out / "mcu"
    for f in ("main.cc", "Makefile", "startup.c", "board.h", "mps2_an386.ld", "tiny_ops.h", "tiny_ops.mk", "README.md"):
        assert (mcu / f).is_file(), f
    assert "kExampleHasExpected = 1;" in (mcu / "example_inputs.c").read_text()
    m = BundleManifest.model_validate_json((out / "manifest.json").read_text())
    fw = m.model("mcu").firmware["nucleo-l4r5zi-firmware"]
    assert fw.passed and fw.bit_exact and fw.inputs == 10 and fw.cpu == "cortex-m4"
    gates = {g["gate"]: g["status"] for g in m.model("mcu").validation["nucleo-l4r5zi-firmware"]}
    assert gates["firmware"] == gates["flash_bytes"] == gates["ram_bytes"] == "passed"
    card = (out / "model_card.md").read_text()
    assert (
        "## Firmware check" in card
        and "| mcu/tiny_model.c | nucleo-l4r5zi-firmware | cortex-m4 / mps2-an386 / cmsis-nn | yes (10 inputs) |"
        in card
    )
    assert "<h2>Firmware check</h2>" in (out / "report.html").read_text()
    # the check on the bundle builds the bundle's own example (the library from the cache)
    r = CliRunner().invoke(app, ["firmware", str(out), "--cpu", "cortex-m4", "--work", str(tmp_path / "w"), "-q"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w" / "example" / "main.cc").read_bytes() == (mcu / "main.cc").read_bytes()
