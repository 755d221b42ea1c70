"""The architecture table: rendering from made-up results (fast), and a real run on two small MLPerf
Tiny architectures in strict mode (slow: child processes, a latency calibration of its own)."""

from __future__ import annotations

import json

import pytest

from benchmarks import archtable
from benchmarks.archtable import cell, crash_cause, render

SOFTMAX_CRASH = (
    "litert-reference crashed: killed by SIGABRT; SOFTMAX input 'm/predictions/MatMul2' has scale 7.84e-09 (its "
    "int8 range spans only 2e-06), at or below 2^-26/beta = 1.49e-08: the reference int8 Softmax "
    "(PreprocessSoftmaxScaling) aborts; the logits are near zero, as in an untrained model"
)


def g(profile: str, gate: str, status: str, measured=None, unit: str = "", detail: str = "", budget=None) -> dict:
    return {
        "profile": profile,
        "gate": gate,
        "status": status,
        "measured": measured,
        "budget": budget,
        "unit": unit,
        "detail": detail,
    }


M7, PX = "cortex-m7-512k", "pixel4-cpu4"


def row(model: str, gates: list[dict], crashed: list[str] | None = None, **extra) -> dict:
    return {
        "model": model,
        "source": "zoo",
        "input_shape": [49, 10, 1],
        "convert_s": 1.5,
        "validate_s": 2.5,
        "exit_code": 3 if crashed else 1,
        "validation": {
            "structure": {"params": 22_606, "macs": 2_656_832, "bytes": 42_544},
            "accuracy": 0.25,
            "gates": gates,
            "crashed": crashed or [],
        },
        **extra,
    }


def made_up_table() -> dict:
    kws = row(
        "kws",
        [
            g(PX, "model_bytes", "passed", 42_544, "bytes", budget=10_000_000),
            g(PX, "latency_p90_ms", "passed", 0.9451, "ms"),
            g(M7, "arena_bytes", "failed", 956_064, "bytes", "956,064 bytes of tensor arena (budget <= 393,216 bytes)"),
            g(M7, "min_agreement", "failed", 0.25, "", "top-1 agreement with the Keras model 0.2500"),
            g(M7, "tflm_runs", "passed"),
        ],
        logits={"scale": 9.7e-8, "span": 2.47e-5, "top1_agreement": 0.78125},
        distinct_labels=3,
    )
    mnv2 = row(
        "mobilenet_v2_035_96",
        [
            g(PX, "kernel_cross_check", "failed", detail=SOFTMAX_CRASH),
            g(M7, "tflm_runs", "failed", detail="tflm crashed: killed by SIGABRT; " + SOFTMAX_CRASH.split("; ", 1)[1]),
            g(M7, "arena_bytes", "not evaluated", detail="tflm crashed: killed by SIGABRT", budget=393_216),
        ],
        crashed=[SOFTMAX_CRASH],
    )
    logits = row(
        "mobilenet_v2_035_96_logits",
        [
            g(PX, "kernel_cross_check", "passed", 1, "steps"),
            g(M7, "tflm_runs", "passed"),
            g(M7, "tflm_agreement", "passed", 0, "steps"),
            g(M7, "arena_bytes", "passed", 300_000, "bytes"),
        ],
        note="workaround: classifier_activation=None",
    )
    topk = row(
        "topk",
        [
            g(M7, "tflm_runs", "failed", detail="tflm failed: CannotRun: Didn't find op for builtin opcode 'TOPK_V2'"),
            g(M7, "arena_bytes", "failed", 67_108_864, "bytes", "needs more than 67,108,864 bytes of tensor arena"),
        ],
    )
    broken = {"model": "broken", "error": "x.keras: cannot translate to tf-keras: Foo", "exit_code": 2}
    return {
        "command": "python -m benchmarks.archtable --out bench/architectures",
        "wall_seconds": 1234.4,
        "host": "a host",
        "versions": {"tflite-micro": "0.dev"},
        "profiles": [PX, M7],
        "samples": 16,
        "calibration_samples": 32,
        "rows": [kws, mnv2, logits, topk, broken],
    }


def table_row(md: str, section: str, model: str) -> list[str]:
    """The cells of ``model``'s row in the table under ``## section``."""
    part = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    (line,) = [ln for ln in part.splitlines() if ln.startswith(f"| {model} |")]
    return [c.strip() for c in line.strip("|").split(" | ")]


def header(md: str, section: str) -> list[str]:
    part = md.split(f"## {section}\n", 1)[1]
    line = next(ln for ln in part.splitlines() if ln.startswith("| model |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_cells_say_status_and_measured_value():
    assert cell(g(M7, "arena_bytes", "failed", 956_064, "bytes")) == "**failed** 956,064 B"
    assert cell(g(PX, "latency_p90_ms", "passed", 0.94512, "ms")) == "passed 0.945 ms"
    assert cell(g(PX, "accuracy_drop_max", "failed", 100.0, "points")) == "**failed** 100.00 pts"
    assert cell(g(PX, "accuracy_drop_max", "passed", -0.0, "points")) == "passed 0.00 pts"
    assert cell(g(PX, "kernel_cross_check", "failed", 2, "steps")) == "**failed** 2 steps"
    assert cell(g(PX, "kernel_cross_check", "passed", 1, "steps")) == "passed 1 step"
    assert cell(g(PX, "min_agreement", "passed", 0.96875)) == "passed 0.969"
    assert cell(g(M7, "input_dtype", "passed", "int8")) == "passed int8"
    assert cell(g(PX, "builtin_ops_only", "passed", 0)) == "passed 0 custom"
    assert cell(g(PX, "outputs_finite", "passed")) == "passed finite"
    assert cell(g(M7, "tflm_runs", "passed")) == "passed runs"
    assert cell(g(M7, "arena_bytes", "not evaluated", budget=1)) == "not evaluated"


def test_cells_name_the_crash_cause_and_the_op_that_cannot_run():
    c = cell(g(PX, "kernel_cross_check", "failed", detail=SOFTMAX_CRASH))
    assert c == (
        "**crashed**: int8 SOFTMAX input scale below 2^-26/beta aborts the reference Softmax "
        f"([repro]({archtable.REPRO_LINK}))"
    )
    unknown = cell(g(M7, "tflm_runs", "failed", detail="tflm crashed: killed by SIGSEGV (oops)"))
    assert unknown == "**crashed**: killed by SIGSEGV, cause not identified"
    assert crash_cause("tflm hung: no answer within 600 s, killed") == "hung, cause not identified"
    op = cell(
        g(M7, "tflm_runs", "failed", detail="tflm failed: CannotRun: Didn't find op for builtin opcode 'TOPK_V2'")
    )
    assert op == "**cannot run**: TOPK_V2"
    over = g(M7, "arena_bytes", "failed", 67_108_864, "bytes", "needs more than 67,108,864 bytes of tensor arena")
    assert cell(over) == "**failed** > 67,108,864 B"


def test_render_made_up_table():
    md = render(made_up_table())
    assert md.startswith("# Architecture table")
    assert "`python -m benchmarks.archtable --out bench/architectures`; wall time 1234 s on a host." in md
    assert "labelled by the Keras model's own argmax" in md and "32 **random inputs**" in md
    # the models table: structure, both agreements, the logits' int8 span, the verdict
    assert table_row(md, "Models", "kws") == [
        "kws",
        "zoo",
        "49x10x1",
        "22,606",
        "2,656,832",
        "42,544 B",
        "3",
        "0.250",
        "0.781",
        "2.5e-05",
        "1.5 s",
        "2.5 s",
        "gate(s) failed (exit 1)",
    ]
    assert table_row(md, "Models", "broken")[-1] == "not measured: x.keras: cannot translate to tf-keras: Foo"
    assert "- mobilenet_v2_035_96_logits: workaround: classifier_activation=None." in md
    # one table per profile, gates in the order met, a cell per gate
    assert header(md, PX) == ["model", "model_bytes", "latency_p90_ms", "kernel_cross_check"]
    assert table_row(md, PX, "kws") == ["kws", "passed 42,544 B", "passed 0.945 ms", ""]
    assert header(md, M7) == ["model", "arena_bytes", "min_agreement", "tflm_runs", "tflm_agreement"]
    assert table_row(md, M7, "kws") == ["kws", "**failed** 956,064 B", "**failed** 0.250", "passed runs", ""]
    mnv2 = table_row(md, M7, "mobilenet_v2_035_96")
    assert mnv2[1] == "not evaluated" and mnv2[3].startswith("**crashed**: int8 SOFTMAX input scale")
    assert table_row(md, M7, "topk")[1:4] == ["**failed** > 67,108,864 B", "", "**cannot run**: TOPK_V2"]
    # what was not passed, in words, under its profile's table
    assert (
        "- kws / arena_bytes: failed: 956,064 bytes of tensor arena (budget <= 393,216 bytes)"
        in md.split(f"## {M7}", 1)[1]
    )
    # crashes with the named cause and the reproduction command
    crashes = md.split("## Crashes\n", 1)[1]
    assert f"- mobilenet_v2_035_96: {SOFTMAX_CRASH}" in crashes
    assert f"Reproduction: `python {archtable.REPRO}`" in crashes
    # the workaround verdict compares the pair on TFLite Micro
    wa = md.split("## Workaround verdict", 1)[1]
    assert "| mobilenet_v2_035_96 | **crashed**: int8 SOFTMAX" in wa
    assert "| mobilenet_v2_035_96_logits | passed runs | passed 0 steps | passed 300,000 B | passed 1 step |" in wa
    assert (
        "Verdict: without the softmax (`classifier_activation=None`, argmax of the logits) TFLite Micro runs it." in wa
    )


def test_render_without_crashes_or_the_pair():
    t = made_up_table()
    t["rows"] = t["rows"][:1]
    md = render(t)
    assert "## Crashes\n\nNo runtime crashed." in md and "Workaround verdict" not in md


def test_unknown_architecture_is_bad_input(tmp_path):
    from edgeopt.errors import BadInput

    with pytest.raises(BadInput, match="unknown architecture\\(s\\) nope; allowed: ds_cnn, fc_autoencoder"):
        archtable.build_table(["nope"], tmp_path)


@pytest.mark.slow
def test_table_on_two_small_architectures_judges_every_gate(tmp_path, isolated_calibration):
    """DS-CNN and the FC autoencoder, for real: every gate of both profiles is passed or failed with
    its measured value (strict mode leaves nothing not evaluated), and the files say the same."""
    table = archtable.build_table(
        ["ds_cnn", "fc_autoencoder"], tmp_path, samples=16, calibration_path=isolated_calibration
    )
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == table["rows"]
    md = (tmp_path / "results.md").read_text()
    measured_units = {"bytes", "ms", "points", "steps"}
    for r in table["rows"]:
        v = r["validation"]
        assert v["crashed"] == [] and "error" not in r
        gates = v["gates"]
        assert {x["profile"] for x in gates} == {"pixel4-cpu4", "cortex-m7-512k"}
        names = {x["gate"] for x in gates if x["profile"] == "cortex-m7-512k"}
        assert {"latency_p90_ms", "tflm_runs", "tflm_agreement", "arena_bytes", "min_agreement"} <= names
        for x in gates:
            assert x["status"] in ("passed", "failed"), x
            if x["unit"] in measured_units or x["budget"] is not None:
                assert isinstance(x["measured"], int | float | str), x
        failed = [x for x in gates if x["status"] == "failed"]
        assert r["exit_code"] == (1 if failed else 0) and (r["verdict"] == "passed") == (not failed)
        arena = next(x for x in gates if x["gate"] == "arena_bytes")
        assert arena["measured"] == v["tflm"]["arena_bytes"] and f"{arena['measured']:,} B" in md
        assert table_row(md, "Models", r["model"])[0] == r["model"]


def test_render_only_rewrites_the_markdown_from_the_json(tmp_path):
    from edgeopt.artifacts import write_json

    write_json(tmp_path / "results.json", made_up_table())
    assert archtable.main(["--out", str(tmp_path), "--render-only"]) == 0
    assert (tmp_path / "results.md").read_text() == render(made_up_table())


def test_an_unexplained_abort_is_named_from_the_measured_sum_of_exps():
    """EfficientNetB0's case: SIGABRT with no diagnosis, but its int8 logits sum to ~1000 exps (>= 512)."""
    crash = g(M7, "tflm_runs", "failed", detail="tflm crashed: killed by SIGABRT")
    tied = {"logits": {"max_sum_of_exps": 999.7}}
    assert cell(crash, tied) == (
        "**crashed**: int8 SOFTMAX over >= 512 tied logits aborts the reference Softmax "
        f"([repro]({archtable.REPRO_SUM_LINK}))"
    )
    assert cell(crash, {"logits": {"max_sum_of_exps": 511.0}}) == "**crashed**: killed by SIGABRT, cause not identified"
    t = made_up_table()
    eff = row("eff", [crash], crashed=["tflm crashed: killed by SIGABRT"], **tied)
    t["rows"] = [eff]
    md = render(t)
    assert "sum of exp(logit - max) up to 1000 (>= 512" in md and f"`python {archtable.REPRO_SUM}`" in md
