"""Named datasets with seeded train / validation / test splits.

``fashion_mnist`` (the four IDX files), ``digits`` (scikit-learn's bundled 8x8 digits),
``npz:PATH`` (arrays ``x_train, y_train, x_test, y_test``, optionally ``class_names``) and
``image_dir:PATH`` (one folder per class, optionally under ``train/`` and ``test/``). Images are
float32 in [0, 1] with a channel axis.

Every split is checked when it loads: finite inputs, labels that are whole numbers in
``0 .. classes-1``. ``image_dir:`` numbers classes in the sorted order of the folder names, which need
not be the order of a trained model's outputs: ``align_labels`` maps the labels to the model's
class names before anything is scored.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import DataConfig
from edgeopt.errors import BadInput
from edgeopt.metadata import read_manifest

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

log = logging.getLogger(__name__)


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
    # False when class_names are only the label numbers ("0", "1", ... of an npz without class_names):
    # then there is no name to match a model's labels by, and label i means output i.
    named_classes: bool = True
    val_folds: int = 1  # how many disjoint validation splits of this size the training data holds (k-fold)

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

    def scored_on(self, split: str) -> Dataset:
        """This dataset with ``split`` (``test`` or ``val``) as the examples a validation scores."""
        if split == "test":
            return self
        return dataclasses.replace(self, x_test=getattr(self, f"x_{split}"), y_test=getattr(self, f"y_{split}"))

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

    def check(self) -> None:
        """BadInput naming the split and index of the first non-finite input or out-of-range label."""
        for split in ("train", "val", "test"):
            check_split(self.name, split, getattr(self, f"x_{split}"), getattr(self, f"y_{split}"), self.num_classes)

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


_LOADED: dict[tuple[str, Any], Dataset] = {}


def load_dataset(cfg: DataConfig | str) -> Dataset:
    """Load a dataset by name (see module docstring) and split it with ``cfg.seed``.

    Loaded once per process for the same config and the same source files (their sizes and modification
    times): a pipeline, a search and its workers' trials all score on one copy. Its arrays are read-only,
    so no caller can change what the next one sees."""
    if isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    key = (cfg.model_dump_json(), _source_stamp(cfg))
    if key not in _LOADED:
        data = _load(cfg)
        for a in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test):
            a.setflags(write=False)
        _LOADED[key] = data
    return _LOADED[key]


def _source_stamp(cfg: DataConfig) -> Any:
    """What identifies the files a dataset is read from: (path, size, mtime) of each; None for digits."""
    if cfg.name == "digits":
        return None
    if cfg.name == "fashion_mnist":
        try:
            root = find_fashion_mnist()
        except BadInput:
            return "missing"  # _load says what to do
        files = [root / f for f in FASHION_FILES]
    else:
        root = Path(cfg.name.split(":", 1)[1])
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists())


def _load(cfg: DataConfig) -> Dataset:
    classes: list[str] | None  # None: an npz without class names, numbered by its labels
    if cfg.name == "fashion_mnist":
        folder = find_fashion_mnist()
        x_tr, y_tr, x_te, y_te = _read_fashion(folder)
        classes, source = FASHION_CLASSES, str(folder)
    elif cfg.name == "digits":
        x_tr, y_tr, x_te, y_te = _digits(cfg.seed)
        classes, source = [str(i) for i in range(10)], "sklearn.datasets.load_digits"
    elif cfg.name.startswith("npz:"):
        path = Path(cfg.name[4:])
        x_tr, y_tr, x_te, y_te, classes = _read_npz(path)
        source = str(path)
    else:
        path = Path(cfg.name[len("image_dir:") :])
        x_tr, y_tr, x_te, y_te, classes = _read_image_dir(path, cfg.seed)
        source = str(path)
    # Checked as read, before the validation split is drawn: the index is the one in the file's arrays.
    named = classes is not None
    y_tr = check_split(cfg.name, "train", x_tr, y_tr, len(classes) if named else None)
    y_te = check_split(cfg.name, "test", x_te, y_te, len(classes) if named else None)
    if classes is None:
        classes = [str(i) for i in range(int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1)]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(x_tr))
    n_val = int(round(len(x_tr) * cfg.val_fraction))
    folds = len(x_tr) // n_val if n_val else 1
    if cfg.val_fold >= folds:
        raise BadInput(
            f"data {cfg.name}: val_fold {cfg.val_fold} out of range: {len(x_tr):,} training examples make "
            f"{folds} validation fold(s) of {n_val:,} (val_fraction {cfg.val_fraction:g}), numbered from 0"
        )
    # Fold f is the f-th block of n_val examples of the permutation; fold 0 is the usual split, unchanged.
    lo, hi = cfg.val_fold * n_val, (cfg.val_fold + 1) * n_val
    val, train = perm[lo:hi], np.concatenate([perm[:lo], perm[hi:]])
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
        named_classes=named,
        val_folds=folds,
    )


# ---- checks -------------------------------------------------------------------------------------

_CHUNK = 4096  # examples checked at a time: the mask of a whole split would double its memory


def check_split(name: str, split: str, x: np.ndarray, y: np.ndarray, num_classes: int | None) -> np.ndarray:
    """The labels of one split as int64, after checking it: every input value finite, every label a
    whole number in ``0 .. num_classes-1`` (``None``: no upper bound). BadInput names the data, the
    split and the index of the first bad example."""
    where = f"data {name}, {split} split"
    if len(x) != len(y):
        raise BadInput(f"{where}: {len(x)} inputs but {len(y)} labels")
    if np.asarray(x).dtype.kind == "f":
        for start in range(0, len(x), _CHUNK):
            chunk = np.asarray(x[start : start + _CHUNK]).reshape(min(_CHUNK, len(x) - start), -1)
            bad = ~np.isfinite(chunk)
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise BadInput(f"{where}: example {start + i} has a non-finite input value ({chunk[i, j]})")
    elif np.asarray(x).dtype.kind not in "iub":
        raise BadInput(f"{where}: inputs of dtype {x.dtype} are not numbers")
    y = np.asarray(y)
    if y.ndim > 1 and all(d == 1 for d in y.shape[1:]):
        y = y.reshape(len(y))
    if y.ndim != 1:
        raise BadInput(
            f"{where}: labels of shape {y.shape}; expected one class index per example "
            "(one-hot labels: store argmax(y, axis=1))"
        )
    if y.dtype.kind not in "iubf":
        raise BadInput(f"{where}: labels of dtype {y.dtype} are not class indices")
    yf = y.astype(np.float64)
    checks = [
        (~np.isfinite(yf) | (yf != np.floor(yf)), "is not a whole number"),
        (yf < 0, "is negative"),
    ]
    if num_classes is not None:
        checks.append((yf >= num_classes, f"is not below the number of classes ({num_classes})"))
    for bad, why in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise BadInput(f"{where}: label of example {i} ({y[i]}) {why}")
    return y.astype(np.int64)


# ---- class order --------------------------------------------------------------------------------


def _loose(name: str) -> str:
    """A class name without case and punctuation: "T-shirt/top" (no folder can hold "/") ~ "t_shirt_top"."""
    return re.sub(r"[\W_]+", "", name.casefold())


def align_labels(data: Dataset, model_labels: list[str] | None, *, source: str = "the model") -> Dataset:
    """``data`` with its labels numbered in the order of ``model_labels`` (the model's outputs).

    Class names are matched exactly, then ignoring case and punctuation (one to one). The data may
    hold fewer classes than the model. BadInput when a data class has no label in the model, so a
    model is never scored against classes in another order. ``model_labels`` None or empty: nothing
    to match, ``data`` is returned as is; so is data whose classes have no names (label i is output i).
    """
    if not model_labels:
        return data
    labels = list(model_labels)
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise BadInput(f"{source}: class labels {dup} appear more than once")
    if labels == data.class_names:
        return data
    if not data.named_classes:
        log.info("data %s has numbered classes only: label i is scored as output i of %s", data.name, source)
        return data
    index = {c: i for i, c in enumerate(labels)}
    mapping: dict[str, int] = {c: index[c] for c in data.class_names if c in index}
    loose = [c for c in data.class_names if c not in mapping]
    if loose:
        free = [c for c in labels if c not in data.class_names]
        by_key: dict[str, list[str]] = {}
        for c in free:
            by_key.setdefault(_loose(c), []).append(c)
        for c in loose:
            hits = by_key.get(_loose(c), [])
            if len(hits) == 1:  # two data classes on one label is caught below
                mapping[c] = index[hits[0]]
    missing = [c for c in data.class_names if c not in mapping]
    if missing or len(set(mapping.values())) != len(mapping):
        raise BadInput(
            f"data {data.name} has classes {data.class_names} but {source} has labels {labels}; "
            f"no model label for {missing or 'several classes at once'}: name the classes after the model's "
            "labels (or give the model's labels in output order with --labels FILE)"
        )
    table = np.array([mapping[c] for c in data.class_names], dtype=np.int64)
    moved = [f"{c}: {i}->{mapping[c]}" for i, c in enumerate(data.class_names) if mapping[c] != i]
    if moved:
        log.info("data %s: labels renumbered to %s's order (%s)", data.name, source, ", ".join(moved))
    return dataclasses.replace(
        data,
        y_train=table[data.y_train],
        y_val=table[data.y_val],
        y_test=table[data.y_test],
        class_names=labels,
    )


def read_labels_file(path: str | Path) -> list[str]:
    """Class names in a model's output order from a text file, one a line (blank lines at the end ignored)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{p}: cannot read the labels file ({e})") from None
    names = [line.strip() for line in text.rstrip().splitlines()]
    if not names or not names[0]:
        raise BadInput(f"{p}: no class names (expected one a line, in the model's output order)")
    if "" in names:
        raise BadInput(f"{p}: line {names.index('') + 1} is blank (expected one class name a line)")
    return names


def labels_from_tflite(content: bytes) -> list[str] | None:
    """The class names edgeopt embedded in a .tflite (manifest key ``labels``), or None when it has none."""

    try:
        manifest = read_manifest(content)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise BadInput(f"the .tflite's embedded edgeopt manifest is unreadable ({e})") from None
    labels = (manifest or {}).get("labels") if isinstance(manifest, dict) else None
    if not labels:
        return None
    if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
        raise BadInput("the .tflite's embedded edgeopt manifest has a 'labels' entry that is not a list of names")
    return labels


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


def fetch_fashion_mnist(log: Any = log.info) -> Path:  # default: this module's logger, never print
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
        from edgeopt._keras import keras  # lazy: imports TensorFlow

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
            names = [str(c) for c in z["class_names"].tolist()] if "class_names" in z else None
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: not a readable npz file ({e})") from None
    x_tr, y_tr, x_te, y_te = arrays
    if x_tr.dtype == np.uint8:
        x_tr, x_te = _images(x_tr), _images(x_te)
    for key, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype.kind not in "iubf":
            raise BadInput(f"{path}: {key} of dtype {x.dtype} is not numbers")
    # labels stay as stored: load_dataset checks them before they become int64
    return x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te, names


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
