"""The phone check: LiteRT's own aarch64 build run under QEMU user-mode emulation on the core model of a
phone profile, so that the kernels a phone runs (XNNPACK's NEON, dot-product, i8mm assembly) are
checked on the machine where the release is built, and their work (instructions per ``Invoke()``)
gives a latency estimate that does not depend on this host's CPU.

- ``cores``: the core models (QEMU CPU model + the MIDR shown to XNNPACK), kernel families;
- ``qemu``: the emulator, its version, what it is refused for (SME on QEMU before 10);
- ``guest``: the Debian 12 arm64 root and aarch64 wheel folder, built once per machine;
- ``plugin``: the instruction-counting TCG plugin (``icount.c``), built with the host's compiler;
- ``latency``: instructions to milliseconds, fitted and hold-out tested on published phone figures;
- ``check``: the measurements validate makes with all of the above.
"""
