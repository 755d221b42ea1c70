"""The TensorFlow Lite Micro source tree a firmware is built from: where it is, whether it holds what a
Cortex-M build needs, and a fingerprint of its contents for the build cache.

The tree is read-only input: nothing here or in the build writes into it (objects go to the cache,
``edgeopt.firmware.build.cache_root``). It must be laid out as TFLite Micro's own Makefile expects
after its download scripts ran: third-party code in ``tensorflow/lite/micro/tools/make/downloads/``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgeopt.errors import BadInput

ENV_TFLM_SRC = "EDGEOPT_TFLM_SRC"
# Beside a clone of the repository, as on the project's machines and in CI: ../shared/third_party/...
DEFAULT_RELATIVE = Path("..") / "shared" / "third_party" / "tflm" / "tflite-micro"
DOWNLOADS = Path("tensorflow/lite/micro/tools/make/downloads")
KERNELS_DIR = Path("tensorflow/lite/micro/kernels")
RESOLVER_HEADER = Path("tensorflow/lite/micro/micro_mutable_op_resolver.h")


class Kernels(StrEnum):
    """Which TFLite Micro kernels: Arm's CMSIS-NN (optimized for Cortex-M) or the portable reference ones."""

    cmsis_nn = "cmsis-nn"
    reference = "reference"


# What each kernel set needs in the tree, with what it is for (the one-line error names it).
_NEEDED: dict[str, tuple[Path, str]] = {
    "interpreter": (Path("tensorflow/lite/micro/micro_interpreter.cc"), "TFLite Micro's interpreter"),
    "resolver": (RESOLVER_HEADER, "the op resolver header"),
    "kernels": (KERNELS_DIR / "conv.cc", "the reference kernels"),
    "flatbuffers": (DOWNLOADS / "flatbuffers/include/flatbuffers/flatbuffers.h", "flatbuffers"),
    "gemmlowp": (DOWNLOADS / "gemmlowp/fixedpoint/fixedpoint.h", "gemmlowp's fixedpoint"),
    "ruy": (DOWNLOADS / "ruy/ruy/profiler/instrumentation.h", "ruy's profiler header"),
}
_NEEDED_CMSIS_NN: dict[str, tuple[Path, str]] = {
    "cmsis-nn kernels": (KERNELS_DIR / "cmsis_nn/conv.cc", "TFLite Micro's CMSIS-NN kernels"),
    "cmsis-nn": (DOWNLOADS / "cmsis_nn/Include/arm_nnfunctions.h", "CMSIS-NN"),
}

# Folders whose sources and headers a build reads (the fingerprint covers them).
_FINGERPRINTED = (
    Path("tensorflow"),
    Path("signal"),
    DOWNLOADS / "flatbuffers/include",
    DOWNLOADS / "gemmlowp",
    DOWNLOADS / "ruy/ruy",
)
_FINGERPRINTED_CMSIS_NN = (DOWNLOADS / "cmsis_nn/Include", DOWNLOADS / "cmsis_nn/Source")
_SOURCE_SUFFIXES = {".h", ".hpp", ".hh", ".inc", ".c", ".cc", ".cpp", ".S", ".s"}


def repo_root() -> Path:
    """The folder holding the ``edgeopt`` package (a clone of the repository when installed with -e)."""
    return Path(__file__).resolve().parents[2]


def default_tree() -> Path:
    return (repo_root() / DEFAULT_RELATIVE).resolve()


@dataclass(frozen=True)
class Tree:
    """A checked TensorFlow Lite Micro tree."""

    root: Path
    kernels: Kernels

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS

    @property
    def kernels_dir(self) -> Path:
        return self.root / KERNELS_DIR


def find_tree(explicit: str | Path | None, kernels: Kernels | str = Kernels.cmsis_nn) -> Tree:
    """The tree from ``explicit`` (``--tflm-src``), else ``$EDGEOPT_TFLM_SRC``, else the default beside the
    repository; BadInput with one line when it is missing or lacks what the kernel set needs."""
    kernels = Kernels(kernels)
    if explicit:
        root, said = Path(explicit), "--tflm-src"
    elif os.environ.get(ENV_TFLM_SRC):
        root, said = Path(os.environ[ENV_TFLM_SRC]), f"${ENV_TFLM_SRC}"
    else:
        root, said = default_tree(), "the default"
    root = root.expanduser().resolve()
    if not root.is_dir():
        raise BadInput(
            f"no TensorFlow Lite Micro tree at {root} ({said}): give one with --tflm-src DIR or ${ENV_TFLM_SRC}"
        )
    missing = missing_parts(root, kernels)
    if missing:
        raise BadInput(
            f"the TensorFlow Lite Micro tree at {root} ({said}) lacks {'; '.join(missing)}: a tree laid out as "
            "its Makefile expects after its download scripts ran is needed (tools/make/downloads/)"
        )
    return Tree(root=root, kernels=kernels)


def missing_parts(root: Path, kernels: Kernels) -> list[str]:
    """What the tree lacks for ``kernels``, one phrase each (empty: nothing)."""
    needed = dict(_NEEDED)
    if kernels == Kernels.cmsis_nn:
        needed |= _NEEDED_CMSIS_NN
    return [f"{what} ({rel})" for rel, what in needed.values() if not (root / rel).is_file()]


def fingerprint(tree: Tree) -> str:
    """sha256 over the path and content of every source and header a build of ``tree`` can read: a
    change to any of them gives another build cache entry."""
    h = hashlib.sha256()
    folders = _FINGERPRINTED + (_FINGERPRINTED_CMSIS_NN if tree.kernels == Kernels.cmsis_nn else ())
    for folder in folders:
        base = tree.root / folder
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.suffix in _SOURCE_SUFFIXES and p.is_file()):
            h.update(str(path.relative_to(tree.root)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
