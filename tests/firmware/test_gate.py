"""The firmware check as validate's gate (a profile's ``firmware:`` block) and in the bundle's model card:
passed with its figures when the tools are here, not evaluated (strict fails, naming why) when they
are not."""

from __future__ import annotations

import pytest

from edgeopt import stages
from edgeopt.config import ValidateConfig
from edgeopt.errors import GateFailed
from edgeopt.profiles import load_profile
from edgeopt.validation import GateStatus

QUICK = ValidateConfig(max_samples=20, latency=False, cross_check=False)


def test_validate_runs_the_firmware_gate(m4_record, tiny_int8, tiny_model, digits):
    profile = load_profile("nucleo-l4r5zi-firmware")
    r = stages.validate(tiny_int8, digits, QUICK, keras_model=tiny_model, profiles=[profile], name="tiny.tflite")
    fw = r.gate("nucleo-l4r5zi-firmware", "firmware")
    assert fw.status is GateStatus.passed, fw.detail
    assert fw.detail.startswith("bit-exact on 10 inputs in QEMU (mps2-an386, cmsis-nn), ")
    record = r.measurements.firmware["nucleo-l4r5zi-firmware"]
    assert fw.measured == record["instructions"]["median"]
    flash, ram = r.gate("nucleo-l4r5zi-firmware", "flash_bytes"), r.gate("nucleo-l4r5zi-firmware", "ram_bytes")
    assert flash.status is GateStatus.passed and flash.measured == record["footprint"]["flash_bytes"]
    assert ram.status is GateStatus.passed and ram.measured == record["footprint"]["ram_bytes"]
    # On the M4 the MAC model is the better estimate (bench/firmware.md): the gate says it used it.
    lat = r.gate("nucleo-l4r5zi-firmware", "latency_p90_ms")
    assert "from the firmware check" not in lat.detail and "MACs" in lat.detail
    assert r.to_dict()["firmware"]["nucleo-l4r5zi-firmware"]["bit_exact"] is True


def test_without_a_tree_the_gate_is_not_evaluated_and_strict_fails(
    tiny_int8, tiny_model, digits, tmp_path, monkeypatch
):
    monkeypatch.setenv("EDGEOPT_TFLM_SRC", str(tmp_path / "none"))
    profile = load_profile("nucleo-l4r5zi-firmware")
    r = stages.validate(tiny_int8, digits, QUICK, keras_model=tiny_model, profiles=[profile], name="tiny.tflite")
    for gate in ("firmware", "flash_bytes", "ram_bytes"):
        g = r.gate("nucleo-l4r5zi-firmware", gate)
        assert g.status is GateStatus.not_evaluated
        assert g.detail.startswith(f"no TensorFlow Lite Micro tree at {tmp_path / 'none'} ($EDGEOPT_TFLM_SRC)")
    assert r.crashed == []
    with pytest.raises(GateFailed, match="not evaluated"):
        r.raise_for_status(strict=True)


def test_a_profile_with_firmware_needs_a_core():
    from pydantic import ValidationError

    from edgeopt.config import DeviceProfile

    with pytest.raises(ValidationError, match="firmware: needs an mcu: section"):
        DeviceProfile(name="x", runtime="tflm", firmware={})


def test_the_model_card_and_report_show_the_firmware_check(m4_record):
    from edgeopt.htmlreport import _firmware_rows

    manifest = {"models": [{"path": "mcu/tiny_model.c", "firmware": {"nucleo-l4r5zi-firmware": m4_record.to_json()}}]}
    (row,) = _firmware_rows(manifest)
    fp = m4_record.footprint
    assert row[:3] == ["mcu/tiny_model.c", "nucleo-l4r5zi-firmware", "cortex-m4 / mps2-an386 / cmsis-nn"]
    assert row[3] == "yes (8 inputs)"
    assert (
        row[5] == f"{fp.flash_bytes:,} B = {fp.flash_bytes - fp.flash_parts['model']:,} + {fp.flash_parts['model']:,}"
    )
