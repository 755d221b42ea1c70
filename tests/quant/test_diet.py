"""The flatbuffer diet: every cut, alone and together, leaves LiteRT's and TFLite Micro's outputs identical
to the byte and the arena the same, and the bytes fewer."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages, tflite_diet
from edgeopt import tflite as tfl
from edgeopt.artifacts import gzip_size
from edgeopt.config import ConvertConfig, QATConfig
from edgeopt.errors import BadInput
from edgeopt.runtimes import tflm
from tests.quant.conftest import run_litert


@pytest.fixture(scope="module")
def models(tiny_model, mobilenet_model, digits) -> dict[str, bytes]:
    q = stages.qat(tiny_model, digits, QATConfig(weights="int4", epochs=1, learning_rate=1e-3), seed=0)
    return {
        "tiny int8": stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite,
        "tiny int4 (QAT)": stages.convert(q.model, ConvertConfig(quantization="int8"), data=digits).tflite,
        "mobilenet block int8": stages.convert(mobilenet_model, ConvertConfig(quantization="int8"), data=digits).tflite,
    }


def _same_everywhere(a: bytes, b: bytes, x: np.ndarray, arena: int | None = None) -> int:
    """Identical outputs in LiteRT and in TFLite Micro; without ``arena``, also the same smallest arena."""
    assert np.array_equal(run_litert(a, x), run_litert(b, x))
    if arena is None:
        arena = tflm.min_arena(a, x[:1])
        assert tflm.min_arena(b, x[:1]) == arena
    assert np.array_equal(tflm.run(a, x, arena)[0], tflm.run(b, x, arena)[0])
    return arena


@pytest.mark.parametrize("name", ["tiny int8", "tiny int4 (QAT)", "mobilenet block int8"])
def test_diet_keeps_outputs(models, digits, name):
    content = models[name]
    x = digits.x_test[:40]
    slim, report = tflite_diet.diet(content)
    assert report.bytes_before == len(content) and report.bytes_after == len(slim) < len(content)
    assert sum(report.saved_by_cut.values()) == report.saved
    assert report.metadata_removed == ["min_runtime_version", "CONVERSION_METADATA"] or sorted(
        report.metadata_removed
    ) == ["CONVERSION_METADATA", "min_runtime_version"]
    m = tfl.parse(slim)
    assert all(t.name is None for t in m.subgraphs[0].tensors) and m.signatureDefs is None and not m.metadata
    assert all(b.data is not None and len(b.data) for b in m.buffers[1:])  # only buffer 0 is empty
    # constants are byte for byte the converter's, and the buffers they need are all there
    before = {tuple(t["shape"]): t for t in tfl.constant_tensors(content)}
    for t in tfl.constant_tensors(slim):
        assert t["dtype"] == before[tuple(t["shape"])]["dtype"]
    arena = _same_everywhere(content, slim, x)
    for cut in tflite_diet.CUTS:  # each cut alone is safe too
        alone, r = tflite_diet.diet(content, cuts=[cut])
        assert r.saved > 0, cut
        _same_everywhere(content, alone, x[:10], arena)


def test_shared_vectors_shrink_per_channel_zero_points(models):
    content = models["mobilenet block int8"]
    _, with_shared = tflite_diet.diet(content)
    _, without = tflite_diet.diet(content, cuts=[c for c in tflite_diet.CUTS if c != "shared"])
    assert with_shared.bytes_after < without.bytes_after - 200  # int64 zero points, one vector per length


def test_embedding_after_the_diet_keeps_its_savings(models, digits):
    """The MCU image is the diet's bytes plus a metadata entry: written the diet's way, the shared vectors stay
    shared (re-packed the plain way, a MobileNet-style image grew back from 12,672 to 17,072 bytes)."""
    from edgeopt import metadata

    content = models["mobilenet block int8"]
    slim, report = tflite_diet.diet(content)
    payload = b'{"ref":"x"}'
    plain = metadata.embed(slim, "edgeopt_manifest_ref", payload)
    shared = metadata.embed(slim, "edgeopt_manifest_ref", payload, shared=True)
    assert len(shared) <= report.bytes_after + len(payload) + 128 < len(plain)
    assert metadata.read_all(shared) == {"edgeopt_manifest_ref": payload}
    _same_everywhere(content, shared, digits.x_test[:10])


def test_anatomy_and_errors(models):
    content = models["tiny int8"]
    a = tflite_diet.anatomy(content)
    assert a["bytes"] == len(content) == sum(v for k, v in a.items() if k != "bytes")
    assert a["weights"] >= 4488 and a["names"] > 0
    slim, _ = tflite_diet.diet(content, keep_metadata=("min_runtime_version",))
    assert [m.name for m in tfl.parse(slim).metadata] == [b"min_runtime_version"]
    with pytest.raises(BadInput, match="unknown diet cut"):
        tflite_diet.diet(content, cuts=["names", "weights"])


def test_weights_zeroed_keeps_every_other_byte(models):
    """The gzip floor's image: every weight and bias byte zero, metadata and every other byte as they were,
    still a model that parses with the same tensors."""
    content, _ = tflite_diet.diet(models["mobilenet block int8"], keep_metadata=("min_runtime_version",))
    zeroed = tflite_diet.weights_zeroed(content)
    assert len(zeroed) == len(content)
    before, after = tfl.parse(content), tfl.parse(zeroed)
    meta = {m.buffer for m in before.metadata}
    changed = 0
    for i, (a, b) in enumerate(zip(before.buffers, after.buffers, strict=True)):
        if a.data is None:
            continue
        if i in meta:
            assert np.array_equal(a.data, b.data)
        else:
            assert not np.any(b.data)
            changed += int(np.count_nonzero(a.data))
    differing = sum(x != y for x, y in zip(content, zeroed, strict=True))
    assert changed > 500 and differing == changed  # only the weight bytes that were not zero already
    assert [t.shape.tolist() for t in after.subgraphs[0].tensors] == [
        t.shape.tolist() for t in before.subgraphs[0].tensors
    ]
    assert gzip_size(zeroed) < gzip_size(content)
