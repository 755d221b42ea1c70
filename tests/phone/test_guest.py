"""The arm64 guest: the mirror from apt's configuration, what an incomplete guest says and how it is
rebuilt, the emulator's refusals, and the core models' /proc/cpuinfo."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeopt.arm import cores, guest, qemu
from edgeopt.cli import app

runner = CliRunner()


# ---- the mirror comes from the machine's apt configuration ----------------------------------------


def test_mirror_from_deb822_and_one_line_sources(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://security.example/debian-security bookworm-security main\n"
    )
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\n# a comment inside\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert guest.mirror_from_apt(etc) == "http://mirror.example/debian"
    (etc / "sources.list").write_text("deb [trusted=yes] http://first.example/debian bookworm main contrib\n")
    assert guest.mirror_from_apt(etc) == "http://first.example/debian"


def test_no_bookworm_source_says_how_to_give_one(tmp_path, monkeypatch):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    assert guest.mirror_from_apt(etc) is None
    monkeypatch.delenv(guest.MIRROR_ENV, raising=False)
    monkeypatch.setattr(guest, "mirror_from_apt", lambda etc="/etc/apt": None)
    with pytest.raises(guest.GuestMissing, match="--mirror URL"):
        guest.mirror()
    assert guest.mirror("http://given.example/debian") == "http://given.example/debian"


def test_the_code_names_no_mirror_host():
    """The mirror is the machine's or the user's: no host name is written into the code."""
    for f in [*Path(guest.__file__).parent.glob("*.py"), Path(guest.__file__).parents[1] / "phone.py"]:
        assert not re.search(r"(https?|ftp)://\w", f.read_text()), f


# ---- an incomplete guest --------------------------------------------------------------------------


def test_incomplete_guest_names_what_is_missing(tmp_path):
    cache = tmp_path / "arm64"
    (cache / "root" / "usr" / "bin").mkdir(parents=True)
    (cache / "root" / guest.PYTHON).write_text("")
    problems = guest.problems(cache)
    assert any("no .edgeopt-stamp.json" in p for p in problems), problems
    assert any("lacks lib/ld-linux-aarch64.so.1" in p for p in problems), problems
    assert any("no aarch64 wheels for ai-edge-litert" in p for p in problems), problems
    if qemu.find() is None:
        pytest.skip(qemu.missing())
    with pytest.raises(guest.GuestMissing, match="lacks lib/ld-linux-aarch64.so.1.*edgeopt phone setup"):
        guest.setup(cache, build=False)


def test_setup_without_build_tools_is_exit_2_naming_them(tmp_path, monkeypatch):
    if qemu.find() is None:
        pytest.skip(qemu.missing())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("qemu-aarch64", "tar"):  # the emulator is there; debootstrap and dpkg-deb are not
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    r = runner.invoke(app, ["phone", "setup", "--cache", str(tmp_path / "empty"), "-q"])
    assert r.exit_code == 2, r.output
    assert "debootstrap" in r.output and "dpkg-deb" in r.output and "Traceback" not in r.output


def test_an_incomplete_wheel_folder_is_rebuilt(arm_guest, tmp_path):
    """A cache whose wheel folder lost a file (and its root shared with the session's guest) is
    completed by setup: the wheels are installed again, for real."""
    cache = tmp_path / "arm64"
    cache.mkdir()
    (cache / "root").symlink_to(arm_guest.root)
    wheels = guest._wheels_dir(cache, guest.wanted_versions())
    shutil.copytree(arm_guest.wheels, wheels, symlinks=True)
    (wheels / "numpy" / "__init__.py").unlink()
    assert guest.problems(cache) == [f"wheel folder {wheels} lacks numpy/__init__.py"]
    g = guest.setup(cache)
    assert guest.problems(cache) == [] and (g.wheels / "numpy" / "__init__.py").is_file()
    assert guest._stamp(g.wheels)["versions"] == guest.wanted_versions()


# ---- the emulator and the cores ---------------------------------------------------------------------


def test_qemu_7_refuses_sme_and_names_the_way_out(arm_guest):
    sme = cores.core("armv9-sme")
    assert sme.sme and not cores.core("armv9-i8mm").sme
    if arm_guest.emulator.version[:2] >= qemu.SME_TRUSTED_FROM:
        pytest.skip(f"{arm_guest.emulator.describe()} is trusted with SME")
    with pytest.raises(qemu.EmulatorRefused, match=r"not trusted with SME.*armv9-i8mm.*QEMU 10"):
        arm_guest.command(sme)
    arm_guest.command(cores.core("armv9-i8mm"))  # max,sme=off is fine


def test_every_core_a_profile_can_name_has_a_model():
    from edgeopt.config import ArmCore

    assert set(cores.CORES) == {c.value for c in ArmCore}


def test_unknown_core_is_bad_input_with_the_known_ones():
    from edgeopt.errors import BadInput

    with pytest.raises(BadInput, match="unknown Arm core 'cortex-x9'; known: cortex-a53"):
        cores.core("cortex-x9")


def test_core_root_shows_qemus_features_and_the_phones_midr(arm_guest):
    """The Features line comes from what QEMU reports for the core, the MIDR from the table: a core
    without dot product must not claim it (XNNPACK would run SDOT and die with SIGILL)."""
    a73 = (arm_guest.core_root(cores.core("kryo-280-gold")) / "proc/cpuinfo").read_text()
    a76 = (arm_guest.core_root(cores.core("kryo-485-gold")) / "proc/cpuinfo").read_text()
    assert "asimddp" not in a73 and "CPU part\t: 0x800" in a73 and "CPU implementer\t: 0x51" in a73
    assert "asimddp" in a76 and "CPU part\t: 0x804" in a76
    assert a73.count("processor\t:") == (os.cpu_count() or 1)
    root = arm_guest.core_root(cores.core("kryo-485-gold"))
    assert (root / "usr").resolve() == (arm_guest.root / "usr").resolve() and not (root / "dev").exists()


def test_hwcap_names_and_kernel_families():
    assert cores.hwcap_names(0x119FFB, 0) == (
        "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp".split()
    )
    assert "i8mm" in cores.hwcap_names(0, 1 << 13) and "sme" in cores.hwcap_names(0, 1 << 23)
    int8_dot = {"sdot": 350, "ldr": 100, "fmul": 5, "smull": 1}
    assert cores.kernel_family(int8_dot) == "dot product (SDOT)"
    assert cores.kernel_family({"smlal": 300, "smull": 300, "sadalp": 300, "ldp": 100}) == (
        "plain NEON integer (SMLAL/SMULL)"
    )
    assert cores.kernel_family({"fmla": 100, "ldr": 30}) == "NEON float (FMLA)"
    assert cores.kernel_family({"smmla": 10, "ldr": 30}) == "i8mm (SMMLA)"
    assert cores.kernel_family({"ldr": 30}) == "scalar / other"
