"""Parts of the export that need no pipeline: metadata embedding, C literals and identifiers, the stripping
of run-to-run values from the embedded manifest."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import metadata
from edgeopt.export import c_float, c_identifier, strip


@pytest.fixture(scope="module")
def tflite(tiny_model, digits) -> bytes:
    from edgeopt import stages
    from edgeopt.config import ConvertConfig

    return stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits, seed=0).tflite


def test_embed_is_deterministic_replaces_and_keeps_other_entries(tflite):
    a = metadata.embed(tflite, "edgeopt_manifest", b'{"x":1}')
    assert a == metadata.embed(tflite, "edgeopt_manifest", b'{"x":1}')
    assert metadata.read_manifest(a) == {"x": 1}
    b = metadata.embed(a, "edgeopt_manifest", b'{"x":2}')
    entries = metadata.read_all(b)
    assert entries["edgeopt_manifest"] == b'{"x":2}'
    assert set(entries) == set(metadata.read_all(tflite)) | {"edgeopt_manifest"}
    assert metadata.read_manifest(tflite) is None


def test_embedded_model_keeps_16_byte_aligned_buffers(tflite):
    from ai_edge_litert import schema_py_generated as schema

    out = metadata.embed(tflite, "edgeopt_manifest", b"{}")
    model = schema.Model.GetRootAsModel(out, 0)
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            assert buf.DataAsNumpy().ctypes.data % 16 == np.frombuffer(out, np.uint8).ctypes.data % 16


def test_manifest_bytes_are_canonical():
    assert metadata.manifest_bytes({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


def test_c_literals():
    assert c_float(1.0) == "1.0f" and c_float(0.00390625) == "0.00390625f" and c_float(1e-5) == "1e-05f"
    assert float(c_float(0.1)[:-1]) == pytest.approx(0.1, rel=1e-8)
    assert c_identifier("digits-small.v2") == "digits_small_v2" and c_identifier("3d") == "m_3d"


def test_strip_drops_timings_and_logs():
    m = {"accuracy": 0.9, "seconds": 3.0, "history": [1], "p50_ms": 2, "layers": {"a": {"sparsity": 0.5}}}
    assert strip(m) == {"accuracy": 0.9, "layers": {"a": {"sparsity": 0.5}}}


def test_accuracy_plot_labels_do_not_overlap():
    """Points at the same spot (the teacher's weights and its .tflite) and close points each get a label
    box of their own, inside the axes, with a leader line when pushed away."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeopt.htmlreport import place_labels

    xy = [(818_606, 0.9197), (819_892, 0.9197), (20_602, 0.9094), (16_174, 0.9109), (62_757, 0.9098)]
    labels = ["teacher", "baseline (teacher .tflite)", "cluster", "int8 (from 04_qat)", "prune"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(*zip(*xy, strict=True))
    ax.set_xscale("log")
    ax.set_xlim(8_000, 2_000_000)
    ax.set_ylim(0.905, 0.925)
    anns = place_labels(ax, xy, labels)
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in anns]
    assert [a.get_text() for a in anns] == labels
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (labels[i], labels[j])
        assert ax.get_window_extent(renderer).contains(boxes[i].x0, boxes[i].y0)
    # The two coincident points' labels went in different directions (the old plot printed one over the other).
    assert anns[0].xyann != anns[1].xyann
    plt.close(fig)
