"""The Arm core models edgeopt emulates, and what each one shows LiteRT.

XNNPACK picks its kernels in two steps, both from what the CPU says about itself: the instruction
set (the kernel's family: plain NEON, dot product, i8mm, SME) from the hardware capabilities the
kernel reports (``AT_HWCAP``, the ``Features`` line of ``/proc/cpuinfo``), then a variant tuned for
the microarchitecture (Cortex-A53, A55, A75 ... assembly kernels) from the MIDR register as
``/proc/cpuinfo`` gives it. An emulated core therefore has two halves here:

- ``qemu_cpu``: the QEMU CPU model, which fixes the instruction set the guest may run and the
  capabilities QEMU reports; QEMU 7.2 (Debian 12) has no Cortex-A55, A73 or A75 model, so a core
  with the same instruction set stands in (the table says which);
- ``midr``: the implementer, variant, part and revision shown in the emulated ``/proc/cpuinfo``,
  so that XNNPACK's CPU detection (cpuinfo) picks the kernels it picks on that phone. The Pixel
  cores use the values their own ``/proc/cpuinfo`` reports (Qualcomm's Kryo parts, which cpuinfo maps
  to the Cortex core they derive from).

The ``Features`` line is not written by hand: it is read from what QEMU reports for ``qemu_cpu``
(``hwcap_names``), so the two halves can never disagree (a Features line that claims dot product on
a core without it makes XNNPACK run SDOT and die with SIGILL).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.errors import BadInput


@dataclass(frozen=True)
class Midr:
    implementer: int
    variant: int
    part: int
    revision: int

    def __str__(self) -> str:
        return f"implementer 0x{self.implementer:02x} part 0x{self.part:03x} r{self.variant}p{self.revision}"


@dataclass(frozen=True)
class Core:
    name: str
    qemu_cpu: str  # the -cpu value (instruction set)
    midr: Midr  # shown in the emulated /proc/cpuinfo (microarchitecture)
    uarch: str  # the core cpuinfo identifies from the MIDR (and whose tuned kernels XNNPACK picks)
    isa: str  # the instruction set, in words
    note: str = ""

    @property
    def sme(self) -> bool:
        """Whether QEMU offers SME on this core (``max`` without ``sme=off``)."""
        parts = self.qemu_cpu.split(",")
        return parts[0] == "max" and "sme=off" not in parts[1:]


ARM = 0x41
QUALCOMM = 0x51

CORES: dict[str, Core] = {
    c.name: c
    for c in (
        Core(
            "cortex-a53",
            "cortex-a53",
            Midr(ARM, 0x0, 0xD03, 4),
            "Cortex-A53",
            "ARMv8.0-A, NEON (in-order little core)",
        ),
        Core(
            "cortex-a55",
            "cortex-a76",
            Midr(ARM, 0x2, 0xD05, 0),
            "Cortex-A55",
            "ARMv8.2-A, NEON + dot product + FP16",
            "QEMU 7.2 has no Cortex-A55: cortex-a76 gives the same instruction set",
        ),
        Core("cortex-a72", "cortex-a72", Midr(ARM, 0x0, 0xD08, 3), "Cortex-A72", "ARMv8.0-A, NEON"),
        Core(
            "kryo-280-gold",
            "cortex-a72",
            Midr(QUALCOMM, 0xA, 0x800, 1),
            "Cortex-A73",
            "ARMv8.0-A, NEON (no dot product)",
            "Snapdragon 835's big core (Pixel 2), derived from Cortex-A73; QEMU 7.2 has no A73: "
            "cortex-a72 gives the same instruction set",
        ),
        Core(
            "kryo-385-gold",
            "cortex-a76",
            Midr(QUALCOMM, 0x6, 0x802, 13),
            "Cortex-A75",
            "ARMv8.2-A, NEON + dot product + FP16",
            "Snapdragon 845's big core (Pixel 3), derived from Cortex-A75; QEMU 7.2 has no A75: "
            "cortex-a76 gives the same instruction set",
        ),
        Core(
            "kryo-485-gold",
            "cortex-a76",
            Midr(QUALCOMM, 0xD, 0x804, 14),
            "Cortex-A76",
            "ARMv8.2-A, NEON + dot product + FP16",
            "Snapdragon 855's big cores (Pixel 4: 1 prime + 3 gold), derived from Cortex-A76",
        ),
        Core(
            "cortex-a76", "cortex-a76", Midr(ARM, 0x4, 0xD0B, 1), "Cortex-A76", "ARMv8.2-A, NEON + dot product + FP16"
        ),
        Core(
            "armv9-i8mm",
            "max,sme=off",
            Midr(ARM, 0x2, 0xD47, 0),
            "Cortex-A710",
            "ARMv9-A, NEON + dot product + i8mm + BF16 + SVE2 (no SME)",
            "QEMU's `max` core without SME, shown as a Cortex-A710 (the i8mm kernels of recent phones)",
        ),
        Core(
            "armv9-sme",
            "max",
            Midr(ARM, 0x2, 0xD47, 0),
            "Cortex-A710",
            "ARMv9-A with SME (XNNPACK's SME kernels)",
            "QEMU before 10.0 computes XNNPACK's SME kernels wrongly (QEMU 7.2: top-1 agreement 2-9%): refused there",
        ),
    )
}


def core(name: str) -> Core:
    try:
        return CORES[name]
    except KeyError:
        raise BadInput(f"unknown Arm core {name!r}; known: {', '.join(CORES)}") from None


# Linux's arm64 hardware capability bits (arch/arm64/include/uapi/asm/hwcap.h), in bit order: the names
# /proc/cpuinfo prints on its Features line.
HWCAP = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
    "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2 = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm "
    "bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 "
    "sme_f32f32 sme_fa64 wfxt ebf16 sve_ebf16"
).split()


def hwcap_names(hwcap: int, hwcap2: int) -> list[str]:
    """The Features words of ``/proc/cpuinfo`` for these ``AT_HWCAP`` / ``AT_HWCAP2`` values."""
    names = [n for i, n in enumerate(HWCAP) if hwcap >> i & 1]
    return names + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1]


def cpuinfo(c: Core, features: list[str], processors: int) -> str:
    """An arm64 ``/proc/cpuinfo``: ``processors`` identical entries for core ``c`` (as many as the host
    has CPUs, which is what cpuinfo finds in ``/sys/devices/system/cpu``, read from the host)."""
    entry = (
        "processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x{m.implementer:02x}\n"
        "CPU architecture: 8\nCPU variant\t: 0x{m.variant:x}\nCPU part\t: 0x{m.part:03x}\n"
        "CPU revision\t: {m.revision}\n\n"
    )
    return "".join(entry.format(i=i, f=" ".join(features), m=c.midr) for i in range(max(1, processors)))


FAMILIES = (  # (name, signature instructions), most specific first
    ("SME", ("smstart/smstop", "sme")),
    ("i8mm (SMMLA)", ("smmla", "ummla", "usmmla")),
    ("dot product (SDOT)", ("sdot", "udot", "usdot", "sudot")),
    ("plain NEON integer (SMLAL/SMULL)", ("smlal", "smlal2", "smull", "smull2", "sadalp", "umlal", "umlal2")),
    ("FP16 arithmetic (FMLA .8h)", ("fmla.f16",)),
    ("NEON float (FMLA)", ("fmla",)),
    ("SVE", ("sve",)),
)


def kernel_family(mnemonics: dict[str, int], share: float = 0.01) -> str:
    """The kernel families XNNPACK ran, from the instructions executed during ``Invoke()`` (the
    plugin's counts): a family counts when its signature instructions are at least ``share`` of them
    (the int8 kernels' requantization runs a few float multiplies, which are not float kernels)."""
    total = sum(mnemonics.values()) or 1
    found = [name for name, keys in FAMILIES if sum(mnemonics.get(k, 0) for k in keys) >= share * total]
    if "dot product (SDOT)" in found or "i8mm (SMMLA)" in found:
        found = [f for f in found if not f.startswith("plain NEON integer")]
    return " + ".join(found) or "scalar / other"
