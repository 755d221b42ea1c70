"""Named datasets with seeded train / validation / test splits.

``fashion_mnist`` (the four IDX files), ``digits`` (scikit-learn's bundled 8x8 digits),
``npz:PATH`` (arrays ``x_train, y_train, x_test, y_test``) and ``image_dir:PATH`` (one folder per
class, optionally under ``train/`` and ``test/``). Images are float32 in [0, 1] with a channel axis.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import DataConfig
from edgeopt.errors import BadInput

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_HOW_TO_GET = (
    "install Debian's package (apt-get install dataset-fashion-mnist), run `make data`, "
    "or set EDGEOPT_DATA_DIR to a folder holding " + ", ".join(FASHION_FILES)
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass
class Dataset:
    """Train / validation / test arrays of one dataset, with where they came from and the split seed."""

    name: str
    source: str
    seed: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def representative(self, n: int) -> np.ndarray:
        """``n`` training examples chosen with the dataset seed (calibration data for int8)."""
        idx = np.random.default_rng(self.seed).permutation(len(self.x_train))[:n]
        return self.x_train[np.sort(idx)]

    def check_fits(self, model: Any, *, what: str = "model") -> None:
        """Fail before any training when the data's shape or class count does not fit ``model``."""
        want = tuple(model.input_shape[1:])
        got = self.input_shape
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got, strict=False)):
            raise BadInput(
                f"data {self.name} has examples of shape {got} but the {what} expects inputs of shape {want}"
            )
        out = model.output_shape[-1]
        if out is not None and out < self.num_classes:
            raise BadInput(f"data {self.name} has {self.num_classes} classes but the {what} has {out} outputs")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "seed": self.seed,
            "input_shape": list(self.input_shape),
            "classes": self.num_classes,
            "train": len(self.x_train),
            "val": len(self.x_val),
            "test": len(self.x_test),
        }


def load_dataset(cfg: DataConfig | str) -> Dataset:
    """Load a dataset by name (see module docstring) and split it with ``cfg.seed``."""
    if isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    if cfg.name == "fashion_mnist":
        folder = find_fashion_mnist()
        x_tr, y_tr, x_te, y_te = _read_fashion(folder)
        classes, source = FASHION_CLASSES, str(folder)
    elif cfg.name == "digits":
        x_tr, y_tr, x_te, y_te = _digits(cfg.seed)
        classes, source = [str(i) for i in range(10)], "sklearn.datasets.load_digits"
    elif cfg.name.startswith("npz:"):
        path = Path(cfg.name[4:])
        x_tr, y_tr, x_te, y_te = _read_npz(path)
        classes, source = [str(i) for i in range(int(max(y_tr.max(), y_te.max())) + 1)], str(path)
    else:
        path = Path(cfg.name[len("image_dir:") :])
        x_tr, y_tr, x_te, y_te, classes = _read_image_dir(path, cfg.seed)
        source = str(path)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(x_tr))
    n_val = int(round(len(x_tr) * cfg.val_fraction))
    val, train = perm[:n_val], perm[n_val:]
    if cfg.max_train is not None:
        train = train[: cfg.max_train]
        val = val[: max(1, cfg.max_train // 9)] if n_val else val
    if cfg.max_test is not None:
        x_te, y_te = x_te[: cfg.max_test], y_te[: cfg.max_test]
    train, val = np.sort(train), np.sort(val)
    return Dataset(
        name=cfg.name,
        source=source,
        seed=cfg.seed,
        x_train=x_tr[train],
        y_train=y_tr[train],
        x_val=x_tr[val],
        y_val=y_tr[val],
        x_test=x_te,
        y_test=y_te,
        class_names=list(classes),
    )


# ---- fashion_mnist ------------------------------------------------------------------------------


def fashion_mnist_search_path() -> list[Path]:
    dirs = []
    if os.environ.get("EDGEOPT_DATA_DIR"):
        env = Path(os.environ["EDGEOPT_DATA_DIR"])
        dirs += [env, env / "fashion-mnist"]
    dirs += [Path.home() / ".keras" / "datasets" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]
    return dirs


def find_fashion_mnist() -> Path:
    """The first folder on the search path that holds all four IDX files, or a clear error."""
    for d in fashion_mnist_search_path():
        if all((d / f).is_file() for f in FASHION_FILES):
            return d
    looked = ", ".join(str(d) for d in fashion_mnist_search_path())
    raise BadInput(f"Fashion-MNIST not found (looked in {looked}); {FASHION_HOW_TO_GET}")


def fetch_fashion_mnist(log: Any = print) -> Path:
    """Find Fashion-MNIST, or get it: Debian's package when apt is usable as root, else Keras' download."""
    try:
        return find_fashion_mnist()
    except BadInput:
        pass
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        log("installing Debian package dataset-fashion-mnist ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env, capture_output=True)
        if r.returncode != 0:  # the package list may be empty on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env, capture_output=True)
        try:
            return find_fashion_mnist()
        except BadInput:
            log("apt-get could not install dataset-fashion-mnist")
    log("trying Keras' own download ...")
    try:
        from edgeopt._keras import keras

        keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # noqa: BLE001 - any network or disk failure means the same thing here
        log(f"Keras' download failed: {type(e).__name__}: {e}")
    return find_fashion_mnist()


def read_idx(path: Path) -> np.ndarray:
    """Read one (gzipped) IDX file into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise BadInput(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise BadInput(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise BadInput(f"{path}: truncated IDX file (header says {dims})")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _read_fashion(folder: Path) -> tuple[np.ndarray, ...]:
    x_tr, y_tr, x_te, y_te = (read_idx(folder / f) for f in FASHION_FILES)
    return _images(x_tr), y_tr.astype(np.int64), _images(x_te), y_te.astype(np.int64)


def _images(x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    x = x.astype(np.float32) / scale
    return x[..., None] if x.ndim == 3 else x


# ---- digits, npz, image_dir --------------------------------------------------------------------


def _digits(seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = _images(d.images, scale=16.0)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, d.target.astype(np.int64), test_size=0.2, random_state=seed, stratify=d.target
    )
    return x_tr, y_tr, x_te, y_te


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    if not path.is_file():
        raise BadInput(f"{path}: no such npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
            if missing:
                raise BadInput(f"{path}: missing arrays {', '.join(missing)} (has {', '.join(z.files)})")
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: not a readable npz file ({e})") from None
    x_tr, y_tr, x_te, y_te = arrays
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise BadInput(f"{path}: x and y lengths differ")
    if x_tr.dtype == np.uint8:
        x_tr, x_te = _images(x_tr), _images(x_te)
    return (
        x_tr.astype(np.float32),
        y_tr.astype(np.int64).ravel(),
        x_te.astype(np.float32),
        y_te.astype(np.int64).ravel(),
    )


def _read_image_dir(path: Path, seed: int) -> tuple[Any, ...]:
    if not path.is_dir():
        raise BadInput(f"{path}: no such folder")
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = sorted(p.name for p in (path / "train").iterdir() if p.is_dir())
        x_tr, y_tr = _read_class_folders(path / "train", classes)
        x_te, y_te = _read_class_folders(path / "test", classes)
        return x_tr, y_tr, x_te, y_te, classes
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise BadInput(f"{path}: expected one sub-folder per class (found {len(classes)})")
    x, y = _read_class_folders(path, classes)
    perm = np.random.default_rng(seed + 1).permutation(len(x))
    n_test = max(1, len(x) // 5)
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return x[tr], y[tr], x[te], y[te], classes


def _read_class_folders(root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys, shape = [], [], None
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(f) as im:
                arr = np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I;16") else im.convert("RGB"))
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise BadInput(f"{f}: image of shape {arr.shape}, expected {shape} like the first image")
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise BadInput(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders")
    return _images(np.stack(xs)), np.asarray(ys, dtype=np.int64)
