"""The search block: parsing, the default space, bad input (exit 2, one line), scoring and selection."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgeopt.errors import BadInput
from edgeopt.pipeline.spec import load_pipeline
from edgeopt.search import objectives, space
from edgeopt.search.config import SearchConfig
from edgeopt.search.storage import normalize_url
from tests.search.conftest import write_pipeline


@pytest.fixture
def pipe(tmp_path):
    return load_pipeline(write_pipeline(tmp_path))


def _params(p, **search):
    return space.resolve_space(p, SearchConfig(**search))


def test_space_binds_parameters_to_steps(pipe):
    ps = {p.name: p for p in space.resolve_space(pipe, pipe.search)}
    assert (ps["prune.final_sparsity"].step, ps["cluster.clusters"].step, ps["qat"].step) == (1, 2, 3)
    assert ps["qat"].field is None and ps["cluster.clusters"].choices == (8, None)


def test_apply_sets_values_and_drops_steps(pipe):
    ps = space.resolve_space(pipe, pipe.search)
    cfg = space.apply(pipe, ps, {"prune.final_sparsity": 0.4, "cluster.clusters": None, "qat": False}, name="x")
    assert [s.stage for s in cfg.steps] == ["distill", "prune", "convert", "validate"]
    assert cfg.steps[1].final_sparsity == 0.4 and cfg.name == "x" and cfg.search is None
    profiles = objectives.resolve_profiles(pipe, pipe.search)
    run = space.trial_pipeline(cfg, profiles)
    assert [s.stage for s in run.steps] == ["distill", "prune", "convert", "validate"] and run.baseline is None
    assert run.on_regression.value == "continue"  # a trial measures what its parameters make: no model swap
    check = run.steps[-1]  # one validation of the trial's .tflite, on the validation split, no test-split gates
    assert check.split.value == "val" and check.profiles == ["cortex-m7-512k"] and check.max_step_diff == 2
    assert check.max_accuracy_drop is None and check.latency is False  # no LiteRT profile: no host latency


def test_indexed_step_and_range(pipe):
    ps = _params(
        pipe,
        space={
            "convert[0].quantization": ["int8", "float16"],
            "prune.final_sparsity": {"low": 0.5, "high": 0.9, "step": 0.1},
        },
    )
    dist = space.distributions(ps)["prune.final_sparsity"]
    assert (dist.low, dist.high, dist.step) == (0.5, 0.9, 0.1)
    assert ps[0].step == 4


def test_default_space_comes_from_the_steps(pipe):
    names = set(space.default_space(pipe))
    # cortex-m7-512k is an MCU (int8 only): the quantization is not searched.
    assert names == {
        "distill.width",
        "prune.final_sparsity",
        "prune.dense_share",
        "prune.block",
        "cluster.clusters",
        "qat",
    }


def test_default_space_blocks_only_without_another_sparsity_pattern(pipe):
    """prune.block is searched around the file's own value, and not at all when the step uses m_by_n (the two
    patterns exclude each other), so the default space still resolves."""
    prune = next(i for i, s in enumerate(pipe.steps) if s.stage == "prune")

    def with_prune(**kw):
        steps = list(pipe.steps)
        steps[prune] = steps[prune].model_copy(update=kw)
        return pipe.model_copy(update={"steps": steps})

    assert space.default_space(with_prune(block=8))["prune.block"] == [1, 4, 8]
    m_by_n = with_prune(m_by_n="2:4")
    assert "prune.block" not in space.default_space(m_by_n)
    assert space.resolve_space(m_by_n, SearchConfig())  # resolves: no block choice to refuse


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"prune.sparsity": [0.5]},
            "search.space.prune.sparsity: unknown step parameter 'sparsity' of prune; allowed:",
        ),
        ({"prune.final_sparsity": {"low": 0.9, "high": 0.5}}, "empty range: low (0.9) must be below high (0.5)"),
        ({"prune.final_sparsity": []}, "search.space.prune.final_sparsity: empty list of choices"),
        ({"prune.final_sparsity": [0.5, 1.5]}, "1.5 is not a valid prune.final_sparsity"),
        ({"quantize.bits": [8]}, "unknown stage 'quantize'"),
        ({"convert": [True, False]}, "a convert step cannot be dropped"),
        ({"convert[3].quantization": ["int8"]}, "the pipeline has 1 convert step(s)"),
    ],
)
def test_bad_space(tmp_path, spec, message):
    path = write_pipeline(tmp_path, space=spec)
    with pytest.raises(BadInput) as e:
        p = load_pipeline(path)
        space.resolve_space(p, p.search)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_objective_the_profile_cannot_measure(pipe):
    from edgeopt.config import DeviceProfile
    from edgeopt.profiles import load_profile

    o = SearchConfig(objectives=["accuracy", "latency_ms@x"]).parsed_objectives[1]
    board = DeviceProfile(name="bare-board", runtime="tflm", budgets={"latency_p90_ms": 50})
    assert "bare-board has no latency estimate" in objectives.cannot_measure(o, board)
    # a Cortex-M profile with an mcu: section is estimated from its MACs (edgeopt.mcu_latency)
    assert objectives.cannot_measure(o, load_profile("cortex-m7-512k")) is None
    s = SearchConfig(objectives=["accuracy", "arena_bytes@pixel4-cpu4"])
    with pytest.raises(BadInput, match="pixel4-cpu4 runs litert, not TFLite Micro"):
        objectives.resolve_profiles(pipe, s)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("postgresql://u:secret@/db", "needs a host and a database name"),
        ("sqlite://", "in-memory SQLite study cannot be shared"),
    ],
)
def test_malformed_storage_url(url, message):
    with pytest.raises(BadInput, match=message) as e:
        normalize_url(url)
    assert "secret" not in str(e.value)


def test_postgresql_means_psycopg3():
    assert normalize_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"


def _validation(gates, accuracy=0.9, arena=4096):
    return {"accuracy": accuracy, "tflm": {"arena_bytes": arena}, "gates": gates, "failures": {}}


def test_a_failed_gate_is_infeasible_not_dropped():
    s = SearchConfig(objectives=["accuracy", "gzip_bytes", "arena_bytes@cortex-m7-512k"], max_accuracy_drop=1.0)
    ok = {"profile": "cortex-m7-512k", "gate": "arena_bytes", "status": "passed", "measured": 4096}
    bad = {**ok, "gate": "model_bytes", "status": "failed"}
    skipped = {**ok, "gate": "latency_p90_ms", "status": "not evaluated"}
    tflite = bytes(range(256)) * 8
    sc = objectives.score(tflite, _validation([ok, skipped]), s, teacher_accuracy=0.905)
    assert sc.feasible and sc.values[0] == 0.9 and sc.values[2] == 4096.0 and sc.values[1] < len(tflite)
    assert sc.constraints["accuracy_drop"] == pytest.approx(0.5 - 1.0)
    assert sc.not_evaluated == ["cortex-m7-512k/latency_p90_ms"]
    sc = objectives.score(tflite, _validation([ok, bad]), s, teacher_accuracy=0.905)
    assert not sc.feasible and sc.failed_gates == ["cortex-m7-512k/model_bytes"] and sc.values[0] == 0.9
    sc = objectives.score(tflite, _validation([ok], accuracy=0.88), s, teacher_accuracy=0.905)
    assert not sc.feasible and sc.constraints["accuracy_drop"] == pytest.approx(1.5)


def test_floor_rule():
    s = SearchConfig(max_accuracy_drop=1.0, min_accuracy=0.95, recover_points=0.5)
    assert objectives.accuracy_floor(s, 0.97) == 0.96  # the stricter of teacher - 1 point and 0.95
    assert space.floor_margin(s, 3) == pytest.approx(0.015)


def test_cli_bad_input_is_exit_2_and_one_line(tmp_path):
    from edgeopt.cli import app

    runner = CliRunner()
    path = write_pipeline(tmp_path, space={"prune.nope": [1]})
    r = runner.invoke(app, ["search", str(path)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown step parameter 'nope' of prune" in lines[0]
    r = runner.invoke(
        app, ["search", str(write_pipeline(tmp_path)), "--storage", "postgresql+psycopg://u@127.0.0.1:9/db"]
    )
    assert r.exit_code == 2
    assert "--storage postgresql+psycopg://u@127.0.0.1:9/db: cannot connect" in r.output
