"""A study's outputs in ``search/<name>/``: every trial as CSV and JSON (with its accuracy's confidence
interval and its paired comparison with the pipeline as written), the Pareto front as a plot and an HTML
page (the pipeline as written marked as the reference), and ``best.yaml``, the complete pipeline of the
trial the selection (``selection.choose``) picked: the pipeline as written when nothing beat it.

No TensorFlow: the test-split results and the selection are made by the caller and passed in.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any

import yaml

from edgeopt.artifacts import write_bytes, write_json
from edgeopt.search import selection
from edgeopt.search.config import Objective, SearchConfig
from edgeopt.validation import unpack_outcomes

STATES = ("complete", "running", "waiting", "pruned", "fail")


def is_repeat(t: Any) -> bool:
    """Whether the trial's sampled values repeat a tried trial's (skipped, not run: ``worker.repeat_of``)."""
    return t.user_attrs.get("repeat_of") is not None


def counts(study: Any) -> dict[str, int]:
    """Trials by state, with complete trials split into feasible and infeasible; ``repeats``: sampled values
    already tried, skipped without running."""
    out = dict.fromkeys(("done", "feasible", "infeasible", "running", "waiting", "pruned", "failed", "repeats"), 0)
    for t in study.get_trials(deepcopy=False):
        s = t.state.name.lower()
        if is_repeat(t):
            out["repeats"] += 1
        elif s == "complete":
            out["done"] += 1
            out["feasible" if _feasible(t) else "infeasible"] += 1
        elif s == "fail":
            out["failed"] += 1
        elif s in out:
            out[s] += 1
    return out


def _feasible(t: Any) -> bool:
    return t.state.name == "COMPLETE" and all(v <= 0 for v in t.constraints.values())


def status_line(study: Any, select: str | None = None) -> str:
    """``7 done (2 infeasible), 1 running, 1 pruned, 0 failed; best so far: trial 3 (...)``."""
    c = counts(study)
    line = (
        f"{c['done']} done ({c['infeasible']} infeasible), {c['running']} running, {c['pruned']} pruned, "
        f"{c['failed']} failed" + (f", {c['repeats']} repeat(s) skipped" if c["repeats"] else "")
    )
    rule = select or study.user_attrs.get("select", "flash_bytes")
    best = choose(study.get_trials(deepcopy=False), rule)
    if best is not None:
        m = best.user_attrs.get("metrics", {})
        line += f"; best so far ({rule}): trial {best.number}, accuracy {m.get('accuracy', 0):.4f}"
        if rule != "accuracy" and m.get(rule) is not None:
            line += f", {rule} {m[rule]:,.0f}"
    else:
        line += "; no feasible trial yet"
    return line


def choose(trials: list[Any], select: str) -> Any | None:
    """The rule before any test of chance (progress lines: "best so far"): among complete trials that meet
    every constraint, the least ``select`` (the most, for accuracy); ties go to the higher validation
    accuracy, then to the earlier trial. ``best.yaml`` is chosen by ``selection.choose``."""
    o = Objective.parse(select)
    feasible = [t for t in trials if _feasible(t) and t.user_attrs.get("metrics", {}).get(o.key) is not None]
    if not feasible:
        return None

    def key(t: Any) -> tuple[float, float, int]:
        m = t.user_attrs["metrics"]
        v = float(m[o.key])
        return (-v if o.maximize else v, -float(m["accuracy"]), t.number)

    return min(feasible, key=key)


def reference(trials: list[Any], values: dict[str, Any]) -> Any | None:
    """The pipeline as written: the earliest complete trial queued as the reference with the file's values."""
    refs = [t for t in trials if t.user_attrs.get("reference") and t.state.name == "COMPLETE" and t.params == values]
    return min(refs, key=lambda t: t.number) if refs else None


def outcomes(t: Any) -> Any | None:
    """Which validation examples a complete trial's .tflite got right (None for trials of older versions)."""
    bits, n = t.user_attrs.get("correct"), t.user_attrs.get("n")
    return unpack_outcomes(bits, n) if bits and n else None


def candidate(t: Any, select: str) -> selection.Candidate | None:
    """A complete trial as the selection sees it (None when it is not complete or lacks the rule's figure)."""
    m = t.user_attrs.get("metrics", {})
    key = Objective.parse(select).key
    if t.state.name != "COMPLETE" or m.get(key) is None or m.get("accuracy") is None:
        return None
    return selection.Candidate(t.number, float(m[key]), float(m["accuracy"]), _feasible(t), outcomes(t))


def pareto(study: Any) -> list[Any]:
    """Optuna's Pareto front: complete trials, feasible ones only when any trial has constraints."""
    return sorted(study.best_trials, key=lambda t: t.number)


def trial_rows(
    study: Any,
    params: list[str],
    test: dict[int, dict[str, Any]] | None = None,
    reference: Any | None = None,
    choice: selection.Choice | None = None,
) -> list[dict[str, Any]]:
    """One flat record per trial: number, state, parameters, metrics with the 95% interval of the validation
    accuracy and the paired comparison with the pipeline as written (``vs_reference``: points, and whether
    beyond chance), the selection's verdict, test accuracy where measured, constraints, seconds, worker."""
    front = {t.number for t in pareto(study)}
    test = test or {}
    ref_correct = outcomes(reference) if reference is not None else None
    ref_test = test.get(reference.number) if reference is not None else None
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        ua = t.user_attrs
        row: dict[str, Any] = {
            "trial": t.number,
            "reference": bool(ua.get("reference")),
            "state": "repeat" if is_repeat(t) else t.state.name.lower(),
            "feasible": _feasible(t) if t.state.name == "COMPLETE" else None,
            "pareto": t.number in front,
            "worker": ua.get("worker"),
            "host": ua.get("host"),
            "pid": ua.get("pid"),
            "seconds": ua.get("seconds")
            if ua.get("seconds") is not None
            else (round(t.duration.total_seconds(), 1) if t.duration else None),
            "retry_of": t.system_attrs.get("failed_trial"),
        }
        for p in params:
            row[f"param.{p}"] = t.params.get(p)
        for k, v in ua.get("metrics", {}).items():
            row[k] = v
        n, correct = ua.get("n"), outcomes(t) if t.state.name == "COMPLETE" else None
        if correct is not None:
            row["val_examples"] = n
            row["accuracy_low"], row["accuracy_high"] = selection.wilson(int(correct.sum()), n)
            if ref_correct is not None and len(ref_correct) == n and t.number != reference.number:
                p = selection.paired(ref_correct, correct)
                row["vs_reference_points"], row["vs_reference"] = round(p.diff_points, 4), p.verdict
        for k, v in t.constraints.items():
            row[f"constraint.{k}"] = v
        tr = test.get(t.number)
        row["test_accuracy"] = tr["accuracy"] if tr else None
        if tr:
            row["test_low"], row["test_high"] = selection.wilson(round(tr["accuracy"] * tr["n"]), tr["n"])
            if ref_test and t.number != reference.number and tr.get("correct") and ref_test.get("correct"):
                p = selection.paired(
                    unpack_outcomes(ref_test["correct"], ref_test["n"]), unpack_outcomes(tr["correct"], tr["n"])
                )
                row["test_vs_reference_points"], row["test_vs_reference"] = round(p.diff_points, 4), p.verdict
        if choice is not None:
            row["selection"] = choice.notes.get(t.number)
            row["remeasured_accuracy"] = choice.remeasured.get(t.number)
        row["guard"] = "; ".join(f"{k}: {v}" for k, v in (ua.get("guard") or {}).items()) or None
        row["rungs"] = (
            "; ".join(
                f"{float(r['fraction']):.3g}: {r['accuracy']:.4f}" for _, r in sorted((ua.get("rungs") or {}).items())
            )
            or None
        )
        row["failed_gates"] = "; ".join(ua.get("failed_gates", []))
        row["pruned"] = ua.get("pruned")
        row["error"] = ua.get("error")
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    write_bytes(path, buf.getvalue().encode())


def plot_pareto(
    path: Path, rows: list[dict[str, Any]], objectives: list[Objective], chosen: int | None, reference: int | None
) -> None:
    """Validation accuracy (with its 95% interval) against each size or speed objective: feasible trials,
    infeasible ones, the front (a step line), the pipeline as written (the reference) and the chosen trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [o for o in objectives if o.key != "accuracy"]
    fig, axes = plt.subplots(1, len(others), figsize=(5.5 * len(others), 4.2), squeeze=False)
    done = [r for r in rows if r["state"] == "complete" and r.get("accuracy") is not None]
    for ax, o in zip(axes[0], others, strict=True):
        inf = [r for r in done if not r["feasible"]]
        feas = [r for r in done if r["feasible"]]
        front = sorted((r for r in done if r["pareto"]), key=lambda r: r[o.key])
        ax.scatter([r[o.key] for r in inf], [r["accuracy"] for r in inf], marker="x", c="0.6", label="infeasible")
        ax.scatter([r[o.key] for r in feas], [r["accuracy"] for r in feas], c="tab:blue", label="feasible")
        bars = [r for r in done if r.get("accuracy_low") is not None]
        if bars:
            ax.errorbar(
                [r[o.key] for r in bars],
                [r["accuracy"] for r in bars],
                yerr=[  # never negative (matplotlib refuses it), whatever the interval was computed from
                    [max(0.0, r["accuracy"] - r["accuracy_low"]) for r in bars],
                    [max(0.0, r["accuracy_high"] - r["accuracy"]) for r in bars],
                ],
                fmt="none",
                ecolor="0.75",
                elinewidth=0.8,
                zorder=0,
                label="95% interval",
            )
        if front:
            ax.step(
                [r[o.key] for r in front],
                [r["accuracy"] for r in front],
                where="post",
                c="tab:red",
                label="Pareto front",
            )
        for r in done:
            ax.annotate(
                str(r["trial"]), (r[o.key], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ref = [r for r in done if r["trial"] == reference]
        if ref:
            ax.scatter(
                [ref[0][o.key]],
                [ref[0]["accuracy"]],
                marker="D",
                s=90,
                facecolors="none",
                edgecolors="k",
                linewidths=1.5,
                label="pipeline as written (trial 0)",
            )
        pick = [r for r in done if r["trial"] == chosen]
        if pick:
            ax.scatter(
                [pick[0][o.key]], [pick[0]["accuracy"]], marker="*", s=220, c="gold", edgecolors="k", label="chosen"
            )
        ax.set_xlabel(o.key + (" (ms, estimated)" if o.metric.value == "latency_ms" else ""))
        ax.set_ylabel("validation accuracy (top-1, LiteRT)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def best_yaml(trial: Any, select: str, source: str, *, is_reference: bool, why: str) -> str:
    """The chosen trial's complete pipeline file, with a header saying how it was chosen. A stage the
    trial kept although the stage guard judged it a regression keeps ``on_regression: continue``, so that
    ``edgeopt export`` makes the model the search measured."""
    m = trial.user_attrs["metrics"]
    pipeline = dict(trial.user_attrs["pipeline"])
    params = ", ".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
    if is_reference:
        head = (
            f"# `edgeopt search {source}`: no trial beat the pipeline as written by more than chance, so this\n"
            f"# is that pipeline unchanged (trial {trial.number}; only its name differs, and the search block is\n"
            "# left out).\n"
        )
    else:
        head = (
            f"# Chosen by `edgeopt search {source}`: trial {trial.number}, {why} (rule: the feasible trial\n"
            f"# with the {'highest' if select == 'accuracy' else 'least'} {select}; it met every gate of the search's "
            "profiles and its accuracy constraints on the validation split).\n"
        )
        continued = [k for k, v in (trial.user_attrs.get("guard") or {}).items() if v == "continued"]
        if continued:
            steps = [dict(s) for s in pipeline["steps"]]
            for s in steps:
                if s["stage"] in continued:
                    s["on_regression"] = "continue"
            pipeline["steps"] = steps
            head += (
                f"# The trial kept its {', '.join(continued)} step(s) past the stage guard: on_regression: continue.\n"
            )
    head += (
        f"# Parameters: {params}\n"
        f"# Validation: accuracy {m['accuracy']:.4f}, {m['flash_bytes']:,.0f} bytes, {m['gzip_bytes']:,.0f} gzipped.\n"
        f"# `edgeopt export` this file to build the release bundle.\n"
    )
    return head + yaml.safe_dump(pipeline, sort_keys=False)


def write_html(
    path: Path,
    *,
    name: str,
    rows: list[dict[str, Any]],
    objectives: list[Objective],
    params: list[str],
    plot: Path,
    chosen: int | None,
    reference: int | None,
    why: str,
    method: str,
    select: str,
    command: str,
    counts_: dict[str, int],
) -> None:
    """One self-contained page: the plot, the table of the Pareto front, the pipeline as written and the
    chosen trial (validation accuracy with its interval and its comparison with the reference, test
    accuracy), how best.yaml was chosen and how to rerun."""
    img = base64.b64encode(plot.read_bytes()).decode()
    shown = [r for r in rows if r["pareto"] or r["trial"] in (chosen, reference)]
    cols = [
        "trial",
        *[f"param.{p}" for p in params],
        *[o.key for o in objectives],
        "interval",
        "vs pipeline as written",
        "test_accuracy",
        "seconds",
    ]

    def cell(r: dict[str, Any], c: str) -> str:
        if c == "interval":
            lo, hi = r.get("accuracy_low"), r.get("accuracy_high")
            return f"{lo:.4f}&ndash;{hi:.4f}" if lo is not None else ""
        if c == "vs pipeline as written":
            if r["trial"] == reference:
                return "(the reference)"
            v = r.get("vs_reference_points")
            return f"{v:+.2f} points, {html.escape(r['vs_reference'])}" if v is not None else ""
        v = r.get(c)
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1.5 else f"{v:,.0f}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c.removeprefix('param.'))}</th>" for c in cols)
    body = "".join(
        f"<tr{' class=chosen' if r['trial'] == chosen else ''}>"
        + "".join(f"<td>{cell(r, c)}</td>" for c in cols)
        + "</tr>"
        for r in shown
    )
    c = counts_
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>edgeopt search: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}tr.chosen{{background:#fff3b0}}</style></head><body>
<h1>edgeopt search: {html.escape(name)}</h1>
<p>{c["done"]} trials done ({c["feasible"]} feasible, {c["infeasible"]} infeasible), {c["pruned"]} stopped early,
{c["failed"]} failed{f", {c['repeats']} repeat(s) of tried values skipped" if c["repeats"] else ""}.
Objectives and constraints on the validation split, accuracy with its 95% interval
(Wilson); "vs pipeline as written" is the paired comparison with trial {reference if reference is not None else "0"}
on the same examples (McNemar: beyond chance when the difference exceeds two standard deviations). Test
accuracy measured once, for the front, the pipeline as written and the chosen trial.</p>
<p>Chosen (<code>best.yaml</code>): {"trial " + str(chosen) if chosen is not None else "none"} &mdash;
{html.escape(why)}. Rule: the feasible trial with the {"highest" if select == "accuracy" else "least"}
{html.escape(select)} that beats the pipeline as written beyond chance; measured on {html.escape(method)}.</p>
<p><code>{html.escape(command)}</code></p>
<img src="data:image/png;base64,{img}" alt="Pareto front">
<h2>Pareto front, pipeline as written, chosen</h2><table><tr>{head}</tr>{body}</table>
<p>Every trial: <a href="trials.csv">trials.csv</a>, <a href="trials.json">trials.json</a>.</p>
</body></html>"""
    write_bytes(path, text.encode())


def write_outputs(
    study: Any,
    out: Path,
    *,
    search: SearchConfig,
    params: list[str],
    test: dict[int, dict[str, Any]],
    source: str,
    command: str,
    reference: Any | None,
    choice: selection.Choice,
    plan: dict[str, Any],
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write trials.csv, trials.json, pareto.png, pareto.html and (when a trial was chosen) best.yaml;
    ``budget``: what the command that ran trials spent (``study.budget_spent``), None when it ran none."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study, params, test, reference, choice)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    chosen = trials.get(choice.chosen) if choice.chosen is not None else None
    ref_number = reference.number if reference is not None else None
    c = counts(study)
    write_csv(out / "trials.csv", rows)
    summary = {
        "study": study.study_name,
        "objectives": [o.key for o in search.parsed_objectives],
        "select": search.select,
        "reference": ref_number,
        "chosen": choice.chosen,
        "why": choice.why,
        "selection": plan,
        "pareto": [t.number for t in pareto(study)],
        "counts": c,
        "budget": budget,
        "trials": rows,
    }
    write_json(out / "trials.json", summary)
    plot_pareto(out / "pareto.png", rows, search.parsed_objectives, choice.chosen, ref_number)
    write_html(
        out / "pareto.html",
        name=study.study_name,
        rows=rows,
        objectives=search.parsed_objectives,
        params=params,
        plot=out / "pareto.png",
        chosen=choice.chosen,
        reference=ref_number,
        why=choice.why,
        method=plan["method"],
        select=search.select,
        command=command,
        counts_=c,
    )
    best = out / "best.yaml"
    if chosen is not None:
        text = best_yaml(chosen, search.select, source, is_reference=chosen.number == ref_number, why=choice.why)
        write_bytes(best, text.encode())
    else:
        best.unlink(missing_ok=True)
    return summary
