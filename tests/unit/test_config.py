from pathlib import Path

import pytest
from pydantic import ValidationError

from edgeopt.config import ClusterConfig, ConvertConfig, DistillConfig, PruneConfig, Quantization
from edgeopt.errors import BadInput
from edgeopt.pipeline.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


GOOD = """
name: t
data: digits
teacher: {path: m.keras}
steps:
  - stage: prune
    final_sparsity: 0.5
  - stage: convert
    quantization: int8
"""


def test_default_pipeline_file_is_valid():
    cfg = load_pipeline(ROOT / "pipelines" / "fashion_mnist.yaml")
    assert [s.stage for s in cfg.steps] == ["distill", "prune", "cluster", "qat", "convert", "validate"]
    assert cfg.steps[0].width == 0.5 and cfg.steps[1].final_sparsity == 0.8 and cfg.steps[2].clusters == 16
    assert cfg.steps[0].dropout == 0.0 and cfg.steps[1].block == 4
    assert cfg.steps[1].skip_layers == [] and cfg.steps[1].dense_share == cfg.steps[2].dense_share == 0.01
    assert cfg.steps[3].epochs == 2
    assert cfg.steps[4].quantization is Quantization.int8
    assert cfg.steps[5].profiles == ["pixel4-cpu4", "cortex-m7-512k", "ethos-u55-128"]
    assert cfg.baseline.quantization is Quantization.float32


def test_default_dense_share_leaves_the_two_smallest_layers_of_the_student_dense():
    """The file picks layers by size, not name: on the width-0.5 student that is conv1 and logits
    (144 + 320 of 55,248 kernel weights), the two that cost 3.2 points when pruned."""
    from edgeopt import zoo
    from edgeopt.stages._common import dense_by_share

    cfg = load_pipeline(ROOT / "pipelines" / "fashion_mnist.yaml")
    student = zoo.width_scaled(zoo.build("fashion_cnn", (28, 28, 1), 10), cfg.steps[0].width)
    layers = [layer for layer in student.layers if layer.weights]
    assert sorted(dense_by_share(layers, cfg.steps[1].dense_share)) == ["conv1", "logits"]


def test_good_pipeline_loads(tmp_path):
    cfg = load_pipeline(write(tmp_path, GOOD))
    assert cfg.data.name == "digits" and cfg.steps[0].final_sparsity == 0.5


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, GOOD.replace("final_sparsity: 0.5", "final_sparsty: 0.5"))
    with pytest.raises(BadInput) as e:
        load_pipeline(p)
    assert str(p) in str(e.value) and "steps[0].final_sparsty: unknown key" in str(e.value)


def test_wrong_enum_lists_allowed_values(tmp_path):
    with pytest.raises(BadInput) as e:
        load_pipeline(write(tmp_path, GOOD.replace("quantization: int8", "quantization: int3")))
    msg = str(e.value)
    assert "steps[1].quantization" in msg and "'int8'" in msg and "'int4'" in msg and "(got 'int3')" in msg


def test_unknown_stage(tmp_path):
    with pytest.raises(BadInput, match="unknown stage; allowed: distill, prune, cluster, qat, convert, validate"):
        load_pipeline(write(tmp_path, GOOD.replace("stage: prune", "stage: prun")))


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(BadInput, match=r"not valid YAML at line \d+"):
        load_pipeline(write(tmp_path, "name: t\nsteps: [\n"))


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(BadInput, match="no such pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


def test_pipeline_without_convert_is_refused(tmp_path):
    with pytest.raises(BadInput, match="at least one convert step"):
        load_pipeline(write(tmp_path, GOOD.replace("  - stage: convert\n    quantization: int8\n", "")))


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1])
def test_sparsity_outside_range(value):
    with pytest.raises(ValidationError):
        PruneConfig(final_sparsity=value)


def test_initial_above_final_sparsity():
    with pytest.raises(ValidationError, match="must not exceed"):
        PruneConfig(initial_sparsity=0.6, final_sparsity=0.5)


@pytest.mark.parametrize("mn", ["4:2", "2-4", "0:4", "x"])
def test_bad_m_by_n(mn):
    with pytest.raises(ValidationError):
        PruneConfig(m_by_n=mn)


def test_fewer_than_two_clusters():
    with pytest.raises(ValidationError):
        ClusterConfig(clusters=1)


@pytest.mark.parametrize(
    "kw", [{"temperature": 0}, {"temperature": -1}, {"width": 0}, {"width": 1.5}, {"dropout": 1.0}, {"dropout": -0.1}]
)
def test_distill_ranges(kw):
    with pytest.raises(ValidationError):
        DistillConfig(**({"width": 0.5} | kw))


def test_distill_needs_exactly_one_student():
    with pytest.raises(ValidationError, match="exactly one"):
        DistillConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        DistillConfig(width=0.5, student="tiny_cnn")


def test_io_type_must_fit_quantization():
    assert ConvertConfig(quantization="int8").resolved_io_type.value == "int8"
    assert ConvertConfig(quantization="float16").resolved_io_type.value == "float32"
    with pytest.raises(ValidationError, match="does not go with"):
        ConvertConfig(quantization="float16", io_type="int8")
