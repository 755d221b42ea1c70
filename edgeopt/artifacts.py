"""Files: atomic writes, sha256 and gzip sizes, loading and saving Keras models with clear errors."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt import keras3
from edgeopt.errors import BadInput


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gzip_size(data: bytes) -> int:
    """Bytes after gzip at level 9 with a fixed mtime (what a download or an APK would carry)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it into place.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):  # str enums
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def metrics_path(out: str | Path) -> Path:
    """Where a stage's metrics go: ``OUT.json`` next to ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".json") if out.suffix in ("", ".") else out.with_suffix(out.suffix + ".json")


# ---- Keras models -------------------------------------------------------------------------------


def is_saved_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file())


def load_model(path: str | Path, *, unsafe: bool = False) -> Any:
    """Load a Keras model for the training stages, without compiling; one clear BadInput otherwise.

    Takes tf-keras ``.keras`` / ``.h5`` files, Keras 3 ``.keras`` files (translated into an equivalent
    tf-keras model, see ``edgeopt.keras3``) and SavedModel folders that hold a tf-keras model. Layers
    that carry Python code (``Lambda``) are refused unless ``unsafe``: loading them runs that code.
    """
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if p.is_dir():
        if not is_saved_model_dir(p):
            raise BadInput(f"{p}: is a folder without saved_model.pb; expected a .keras or .h5 model or a SavedModel")
        return _load_saved_model_keras(p, unsafe=unsafe)
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise BadInput(f"{p}: expected a .keras or .h5 model file or a SavedModel folder")
    if p.suffix == ".keras" and not zipfile.is_zipfile(p):
        raise BadInput(f"{p}: not a Keras model (a .keras file is a zip archive; this one is not)")
    if p.suffix == ".keras" and keras3.is_keras3_archive(p):
        model = keras3.load_keras3(p, unsafe=unsafe)
    else:
        keras3.check_config(_tf_keras_config(p), p, unsafe=unsafe, keras3=False)
        try:
            model = _load_tf_keras(p, unsafe)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"{p}: cannot load as a tf-keras model: {first[:300]}") from None
    if not isinstance(model, keras.Model):
        raise BadInput(f"{p}: does not hold a Keras model")
    return model


def _tf_keras_config(p: Path) -> Any:
    """The model config stored in a tf-keras .keras or .h5 file (None when it cannot be read)."""

    if p.suffix == ".keras":
        return keras3.read_archive_json(p, "config.json")
    try:
        import h5py

        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else None
    except (OSError, ValueError, ImportError):
        return None


def _load_saved_model_keras(p: Path, *, unsafe: bool) -> Any:
    """The tf-keras model inside a SavedModel folder; a SavedModel without one is for convert/validate only."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    if not (p / "keras_metadata.pb").is_file():
        raise BadInput(
            f"{p}: is a TensorFlow SavedModel without a Keras model (no keras_metadata.pb); "
            "convert and validate take it, the training stages need a Keras model file"
        )
    try:
        model = _load_tf_keras(p, unsafe)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{p}: cannot load the Keras model in this SavedModel: {first[:300]}") from None
    if not isinstance(model, keras.Model):
        raise BadInput(f"{p}: does not hold a Keras model")
    return model


class SavedModelDir:
    """A TensorFlow SavedModel folder used as is: converted with ``TFLiteConverter.from_saved_model``
    and run through its ``serving_default`` signature (``predict``) as a validation reference."""

    def __init__(self, path: str | Path) -> None:
        from edgeopt._keras import tf  # lazy: imports TensorFlow

        self.path = Path(path)
        try:
            self._loaded = tf.saved_model.load(str(self.path))
            self._fn = self._loaded.signatures["serving_default"]
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(
                f"{self.path}: cannot load the SavedModel's serving_default signature: {first[:300]}"
            ) from None
        _, kw = self._fn.structured_input_signature
        if len(kw) != 1:
            raise BadInput(f"{self.path}: serving_default has {len(kw)} inputs; edgeopt handles one")
        self._input_name, spec = next(iter(kw.items()))
        self.input_shape = tuple(spec.shape.as_list())
        self.input_dtype = spec.dtype
        outs = self._fn.structured_outputs
        self._output_name = sorted(outs)[0]
        self.output_shape = tuple(outs[self._output_name].shape.as_list())
        self.name = self.path.name

    def predict(self, x: Any, batch_size: int = 512, verbose: int = 0) -> Any:
        import numpy as np

        from edgeopt._keras import tf  # lazy: imports TensorFlow

        out = [
            self._fn(**{self._input_name: tf.constant(x[i : i + batch_size], self.input_dtype)})[self._output_name]
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate([o.numpy() for o in out])

    @property
    def weights(self) -> list[Any]:
        return list(self._loaded.variables) if hasattr(self._loaded, "variables") else []


def load_inference_model(path: str | Path, *, unsafe: bool = False) -> Any:
    """For convert and validate: a SavedModel folder as is (``SavedModelDir``), else ``load_model``."""
    if is_saved_model_dir(path):
        return SavedModelDir(path)
    return load_model(path, unsafe=unsafe)


def _load_tf_keras(p: Path, unsafe: bool) -> Any:
    """tf-keras load with tfmot's quantize wrappers known (models saved after the qat stage)."""
    from edgeopt._keras import keras, tfmot  # lazy: imports TensorFlow

    with tfmot.quantization.keras.quantize_scope():
        return keras.models.load_model(p, compile=False, safe_mode=not unsafe)


def export_saved_model(model: Any, path: str | Path) -> Path:
    """Write an inference SavedModel folder atomically (for models that carry tfmot's quantize wrappers,
    which do not survive a .keras/.h5 round trip); ``edgeopt convert`` and ``validate --keras`` read it."""
    import contextlib
    import io
    import shutil

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", dir=p.parent))
    try:
        from edgeopt._keras import tf  # lazy: imports TensorFlow

        # A fixed input name (Keras numbers its input layers per process: input_1, input_2, ...), so
        # the same weights give the same SavedModel and the same .tflite bytes.
        n = len(model.inputs)
        specs = [
            tf.TensorSpec([None, *t.shape[1:]], t.dtype, name="input" if n == 1 else f"input_{i}")
            for i, t in enumerate(model.inputs)
        ]

        @tf.function(input_signature=specs)
        def serve(*args: Any) -> Any:
            return {"output_0": model(args[0] if n == 1 else list(args), training=False)}

        with contextlib.redirect_stdout(io.StringIO()):
            tf.saved_model.save(model, str(tmp / "m"), signatures={"serving_default": serve})
        if p.exists():
            shutil.rmtree(p)
        os.replace(tmp / "m", p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return p


def sha256_tree(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def save_model(model: Any, path: str | Path) -> Path:
    """Save a tf-keras model atomically (the format follows the suffix: .keras or .h5)."""
    p = Path(path)
    if p.suffix not in (".keras", ".h5"):
        raise BadInput(f"{p}: output model must end in .keras or .h5")
    with atomic_path(p) as tmp:
        tmp.unlink()  # Keras refuses some existing targets
        model.save(tmp)
    return p
