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
    assert run.on_regression.value == "keep_best"  # the file's policy: what export of best.yaml does too
    check = run.steps[-1]  # one validation of the trial's .tflite, on the validation split, no test-split gates
    assert check.split.value == "val" and check.profiles == ["cortex-m7-512k"] and check.max_step_diff == 2
    assert check.max_accuracy_drop is None and check.latency is False  # no LiteRT profile: no host latency
    assert check.outcomes  # which examples it got right: the paired tests
    light = space.trial_pipeline(cfg, profiles, light=True)  # a rung or a fold: accuracy only
    assert light.steps[-1].profiles == [] and not light.steps[-1].cross_check and light.steps[-1].split.value == "val"


def test_as_shipped_leaves_out_what_the_guard_undid_and_keeps_the_rest(pipe):
    """A re-measurement fold runs the recipe that made the trial's model: a stage whose output the guard
    replaced by its input is left out, and no stage is undone on the fold (the guard goes on)."""
    ps = space.resolve_space(pipe, pipe.search)
    run = space.trial_pipeline(space.apply(pipe, ps, space.reference_values(pipe, ps), name="x"), [], light=True)
    assert "prune" in [s.stage for s in run.steps] and run.on_regression.value == "keep_best"
    shipped = space.as_shipped(run, {"prune": "kept the input", "distill": "none"})
    assert [s.stage for s in shipped.steps] == [s.stage for s in run.steps if s.stage != "prune"]
    assert shipped.on_regression.value == "continue"
    trained = [s for s in shipped.steps if hasattr(s, "on_regression")]
    assert trained and all(s.on_regression.value == "continue" for s in trained)
    assert [s.stage for s in space.as_shipped(run, {}).steps] == [s.stage for s in run.steps]  # nothing undone


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


def test_default_space_comes_from_the_steps_around_their_values(pipe):
    sp = space.default_space(pipe)
    # cortex-m7-512k is an MCU (int8 only): the quantization is not searched.
    assert set(sp) == {
        "distill.width",
        "distill.epochs",
        "prune.final_sparsity",
        "prune.dense_share",
        "prune.block",
        "prune.epochs",
        "cluster.clusters",
        "cluster.epochs",
        "qat",
        "qat.epochs",
    }
    # the file: distill width 0.5 for 25 epochs, prune to 0.5 for 2 epochs, 8 clusters for 1 epoch, qat 1 epoch
    assert sp["distill.width"] == [0.375, 0.5, 0.75] and sp["distill.epochs"] == [25, 50, 75]
    r = sp["prune.final_sparsity"]
    assert (r.low, r.high, r.step) == (0.4, 0.6, 0.05)  # 10 points either side of 0.5, not 0.5-0.9
    assert sp["prune.epochs"] == [2, 4] and sp["cluster.epochs"] == [1, 2] and sp["qat.epochs"] == [1, 2]
    assert sp["cluster.clusters"] == [4, 8, 16, None]


def test_default_space_of_the_default_pipeline_scales_with_it_and_with_the_data():
    from pathlib import Path

    p = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "fashion_mnist.yaml")
    big = space.default_space(p, n_train=54_000)
    r = big["prune.final_sparsity"]
    assert (r.low, r.high) == (0.7, 0.9) and big["cluster.clusters"] == [8, 16, 32, None]
    # On 54,000 images the epochs decide the length (distill: 20 epochs = 8,440 steps > its floor of 3,000) ...
    assert big["distill.epochs"] == [20, 40, 60] and "distill.min_steps" not in big
    # ... on 1,293 digits the step floors do (20 epochs = 220 steps < 3,000): those are what is varied.
    small = space.default_space(p, n_train=1_293)
    assert small["distill.min_steps"] == [3000, 6000, 9000] and "distill.epochs" not in small
    assert small["prune.min_steps"] == [2000, 4000] and small["qat.min_steps"] == [500, 1000]
    # every parameter's choices hold the file's own value: the pipeline as written is in the space
    params = space.resolve_space(p, SearchConfig(), n_train=1_293)
    ref = space.reference_values(p, params)
    assert ref["distill.min_steps"] == 3000 and ref["cluster.clusters"] == 16 and ref["qat"] is True
    for q in params:
        assert ref[q.name] in q.choices if q.choices is not None else q.range.low <= ref[q.name] <= q.range.high


def test_a_given_space_is_widened_to_hold_the_file_values(pipe):
    ps = {
        p.name: p
        for p in _params(
            pipe,
            space={
                "prune.final_sparsity": {"low": 0.6, "high": 0.9, "step": 0.1},  # the file has 0.5
                "cluster.clusters": [16, 32],  # the file has 8
                "distill.epochs": {"low": 30, "high": 60},  # the file has 25
            },
        )
    }
    r = ps["prune.final_sparsity"].range
    assert (r.low, r.high, r.step) == (0.5, 0.9, 0.1)
    assert ps["cluster.clusters"].choices == (16, 32, 8)
    assert (ps["distill.epochs"].range.low, ps["distill.epochs"].range.high) == (25, 60)
    values = space.reference_values(pipe, list(ps.values()))
    assert values == {"prune.final_sparsity": 0.5, "cluster.clusters": 8, "distill.epochs": 25}
    # the values rebuild the file's own steps
    cfg = space.apply(pipe, list(ps.values()), values)
    assert [s.model_dump() for s in cfg.steps] == [s.model_dump() for s in pipe.steps]


def test_rungs_shorten_only_the_fine_tuning(pipe):
    assert space.rung_fractions(SearchConfig(), pipe) == [1 / 9, 1 / 3, 1]
    assert space.rung_fractions(SearchConfig(rungs=2, reduction_factor=4), pipe) == [0.25, 1]
    short = space.at_fidelity(pipe, 1 / 3)
    lengths = {s.stage: s.epochs for s in short.steps if hasattr(s, "epochs")}
    assert lengths == {"distill": 25, "prune": 1, "cluster": 1, "qat": 1}  # distill is not fine-tuning
    from pathlib import Path

    p = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "fashion_mnist.yaml")
    short = space.at_fidelity(p, 1 / 9)
    prune = next(s for s in short.steps if s.stage == "prune")
    assert (prune.epochs, prune.min_steps) == (2, 223)  # 10 epochs / 9 rounded up, 2,000 steps / 9
    # a pipeline with nothing to shorten has one rung
    bare = pipe.model_copy(update={"steps": [s for s in pipe.steps if s.stage in ("distill", "convert", "validate")]})
    assert space.rung_fractions(SearchConfig(), bare) == [1.0]


def test_constraints_default_to_the_pipelines_own_gates(tmp_path, pipe):
    from pathlib import Path

    digits = load_pipeline(Path(__file__).resolve().parents[2] / "tests" / "data" / "digits.yaml")
    s = objectives.with_constraints(digits, SearchConfig())
    assert (s.max_accuracy_drop, s.min_accuracy) == (None, 0.5)  # digits.yaml's validate: min_accuracy 0.5
    fashion = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "fashion_mnist.yaml")
    assert objectives.with_constraints(fashion, SearchConfig()).max_accuracy_drop == 1.0
    # given ones stay as given, null (no limit) included
    assert objectives.with_constraints(fashion, SearchConfig(max_accuracy_drop=2.0)).max_accuracy_drop == 2.0
    assert objectives.with_constraints(fashion, SearchConfig(max_accuracy_drop=None)).max_accuracy_drop is None
    assert objectives.with_constraints(pipe, pipe.search).max_accuracy_drop == 15


def test_stage_keys_match_steps_across_trials(pipe):
    assert space.stage_keys(pipe) == ["distill", "prune", "cluster", "qat", "convert", "validate"]
    ps = space.resolve_space(pipe, pipe.search)
    cfg = space.apply(pipe, ps, {"prune.final_sparsity": 0.4, "cluster.clusters": None, "qat": False})
    assert space.stage_keys(cfg) == ["distill", "prune", "convert", "validate"]


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


def test_the_fashion_search_file_starts_from_the_default_pipeline():
    """make search-bench's Fashion-MNIST search: trial 0 is the default pipeline, so both files have the same
    steps (and every trial reuses the default's cached student)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "pipelines"
    default, searched = load_pipeline(root / "fashion_mnist.yaml"), load_pipeline(root / "search_fashion_mnist.yaml")
    assert [s.model_dump() for s in searched.steps] == [s.model_dump() for s in default.steps]
    assert searched.search is not None and searched.search.select == "gzip_bytes"


def test_the_digits_search_file_runs_the_default_recipe():
    """make search-bench's digits search: the fixed recipe is the default pipeline's, so its training steps
    are the default's (the step floors included: a copy without them ended 2-3 points below the teacher)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "pipelines"
    default, digits = load_pipeline(root / "fashion_mnist.yaml"), load_pipeline(root / "search_digits.yaml")
    recipe = [s.model_dump() for s in default.steps if s.stage != "validate"]
    assert [s.model_dump() for s in digits.steps if s.stage != "validate"] == recipe
    assert digits.steps[-1].max_accuracy_drop == default.steps[-1].max_accuracy_drop
    assert digits.search is not None and not any(k.startswith("distill.") for k in digits.search.space)
