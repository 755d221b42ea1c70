"""LiteRT (ai_edge_litert) adapter: describe a .tflite and run data through it."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.errors import BadInput
from edgeopt.progress import captured_stderr

NAME = "litert"


def _interpreter_class() -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def _resolver(name: str) -> Any:
    from ai_edge_litert.interpreter import OpResolverType

    return {
        "auto": OpResolverType.AUTO,  # optimized kernels with the default XNNPACK delegate
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": OpResolverType.BUILTIN_REF,
    }[name]


def version() -> str:
    from importlib.metadata import version as v

    return v("ai-edge-litert")


class LiteRTModel:
    """One .tflite loaded in ``ai_edge_litert``'s interpreter.

    ``predict`` takes float inputs, quantizes them with the model's own scale and zero point when
    the input tensor is integer, and returns dequantized float outputs.
    """

    def __init__(
        self, content: bytes, *, num_threads: int | None = None, resolver: str = "auto", preserve: bool = False
    ) -> None:
        if content[4:8] != b"TFL3":
            raise BadInput("not a TFLite model (the flatbuffer identifier TFL3 is missing)")
        self.content = content
        self.num_threads = num_threads
        self.resolver = resolver
        try:
            with captured_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" and the like
                self.interpreter = _interpreter_class()(
                    model_content=content,
                    num_threads=num_threads,
                    experimental_op_resolver_type=_resolver(resolver),
                    experimental_preserve_all_tensors=preserve,
                )
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"LiteRT cannot load the model: {msg}") from None
        self._batch: int | None = None

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.interpreter.get_input_details()

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.interpreter.get_output_details()

    def _allocate(self, batch: int) -> None:
        if self._batch == batch:
            return
        for d in self.inputs:
            self.interpreter.resize_tensor_input(d["index"], [batch, *d["shape"][1:]], strict=False)
        with captured_stderr():
            self.interpreter.allocate_tensors()
        self._batch = batch

    def predict(
        self, x: np.ndarray, batch_size: int = 256, progress: Any = None, raw: bool = False, tap: int | None = None
    ) -> Any:
        """Run ``x`` (float) through the first input; the first output dequantized to float, or
        with ``raw`` in the output tensor's own dtype."""
        inp, out = self.inputs[0], self.outputs[0]
        want = tuple(inp["shape"][1:])
        if tuple(x.shape[1:]) != want:
            raise BadInput(f"data has examples of shape {tuple(x.shape[1:])} but the .tflite expects {want}")
        try:
            self._allocate(batch_size)
        except (ValueError, RuntimeError):  # a model with a fixed batch: one example at a time
            batch_size = int(inp["shape"][0]) or 1
            self._allocate(batch_size)
        inp, out = self.inputs[0], self.outputs[0]
        results, tapped = [], []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            n = len(chunk)
            if n < batch_size:  # pad the last batch rather than re-allocating
                chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)])
            self.interpreter.set_tensor(inp["index"], quantize(chunk, inp))
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(out["index"])
            results.append((y.copy() if raw else dequantize(y, out))[:n])
            if tap is not None:
                tapped.append(self.interpreter.get_tensor(tap)[:n].copy())
            if progress is not None:
                progress(n)
        if tap is not None:
            return np.concatenate(results), np.concatenate(tapped)
        return np.concatenate(results)


def tensors(content: bytes, x: np.ndarray, indices: list[int], *, resolver: str = "auto") -> dict[int, np.ndarray]:
    """The raw values of tensors ``indices`` after running one example ``x`` with every tensor preserved
    (XNNPACK then runs each op as its own delegated partition, so its intermediate results are readable)."""
    m = LiteRTModel(content, resolver=resolver, preserve=True)
    m._allocate(1)
    inp = m.inputs[0]
    m.interpreter.set_tensor(inp["index"], quantize(x[:1], inp))
    m.interpreter.invoke()
    return {i: m.interpreter.get_tensor(i).copy() for i in indices}


def quantize_values(x: np.ndarray, dtype: Any, scale: float, zero_point: int) -> np.ndarray:
    """Float data to an integer dtype with a scale and zero point, clipped (float dtypes: a cast)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_values(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer data back to float; float data, or no scale, is only cast."""
    if np.asarray(q).dtype.kind == "f" or not scale:
        return q.astype(np.float32)
    return (q.astype(np.float32) - zero_point) * scale


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float data to the tensor's dtype with its scale and zero point (LiteRT tensor details)."""
    dtype = np.dtype(detail["dtype"])
    scale, zp = detail["quantization"]
    if dtype.kind != "f" and not scale:
        raise BadInput(f"input tensor {detail['name']} is {dtype} without quantization parameters")
    return quantize_values(x, dtype, scale, zp)


def dequantize(q: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    return dequantize_values(q, *detail["quantization"])
