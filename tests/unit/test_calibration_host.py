"""Latency calibrations belong to the host that measured them (CPU model, ISA flags, cores)."""

from __future__ import annotations

import json

import pytest

from edgeopt import calibrate, hostinfo
from edgeopt.profiles import load_profile


def _write(path, host):
    path.write_text(json.dumps({"schema": calibrate.SCHEMA, "host": host, "profiles": {"pixel4-cpu4": {}}}))


def test_host_facts_name_the_kernel_relevant_isa():
    h = hostinfo.host()
    assert h["cpu"] and h["cpus"] >= 1 and len(h["fingerprint"]) == 16
    assert set(h["isa"]) <= set(hostinfo.KERNEL_FLAGS)
    flags = open("/proc/cpuinfo").read()
    assert ("avx2" in h["isa"]) == (" avx2" in flags)
    assert ("VNNI" in hostinfo.describe()) and (("with VNNI" in hostinfo.describe()) == h["vnni"])


def test_calibration_of_another_host_is_not_used(tmp_path, monkeypatch):
    cal = tmp_path / "calibration.json"
    monkeypatch.setenv("EDGEOPT_CALIBRATION", str(cal))
    _write(cal, {**hostinfo.host(), "fingerprint": "0000000000000000"})
    assert calibrate.load() is None  # the default file was measured elsewhere
    assert calibrate.load(cal)["host"]["fingerprint"] == "0000000000000000"  # an explicit file is the user's call
    _write(cal, hostinfo.host())
    assert calibrate.load()["host"]["fingerprint"] == hostinfo.host()["fingerprint"]


def test_needs_only_profiles_scaled_by_a_factor():
    names = [p.name for p in calibrate.needs([load_profile(n) for n in ("pixel4-cpu4", "cortex-m7-512k")])]
    assert names == ["pixel4-cpu4"]


def test_ensure_returns_a_stored_calibration_without_measuring(tmp_path, monkeypatch):
    cal = tmp_path / "calibration.json"
    monkeypatch.setenv("EDGEOPT_CALIBRATION", str(cal))
    _write(cal, hostinfo.host())
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **k: pytest.fail("measured although stored"))
    assert calibrate.ensure([load_profile("pixel4-cpu4")])["profiles"] == {"pixel4-cpu4": {}}
    assert calibrate.ensure([load_profile("cortex-m7-512k")]) == calibrate.load()  # nothing to measure for an MCU
