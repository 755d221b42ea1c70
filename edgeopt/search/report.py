"""A study's outputs in ``search/<name>/``: every trial as CSV and JSON, the Pareto front as a plot and an
HTML page, and ``best.yaml``, the complete pipeline of the trial the selection rule picks.

No TensorFlow: the test-split accuracies of the front are measured by the caller and passed in.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import yaml

from edgeopt.artifacts import write_bytes, write_json
from edgeopt.search.config import Objective, SearchConfig

STATES = ("complete", "running", "waiting", "pruned", "fail")


def counts(study: Any) -> dict[str, int]:
    """Trials by state, with complete trials split into feasible and infeasible."""
    out = dict.fromkeys(("done", "feasible", "infeasible", "running", "waiting", "pruned", "failed"), 0)
    for t in study.get_trials(deepcopy=False):
        s = t.state.name.lower()
        if s == "complete":
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
        f"{c['failed']} failed"
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
    """The stated rule: among complete trials that meet every constraint, the least ``select`` (the most,
    for accuracy); ties go to the higher validation accuracy, then to the earlier trial."""
    o = Objective.parse(select)
    feasible = [t for t in trials if _feasible(t) and t.user_attrs.get("metrics", {}).get(o.key) is not None]
    if not feasible:
        return None

    def key(t: Any) -> tuple[float, float, int]:
        m = t.user_attrs["metrics"]
        v = float(m[o.key])
        return (-v if o.maximize else v, -float(m["accuracy"]), t.number)

    return min(feasible, key=key)


def pareto(study: Any) -> list[Any]:
    """Optuna's Pareto front: complete trials, feasible ones only when any trial has constraints."""
    return sorted(study.best_trials, key=lambda t: t.number)


def trial_rows(study: Any, params: list[str], test_accuracy: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """One flat record per trial: number, state, parameters, metrics, constraints, seconds, worker and host."""
    front = {t.number for t in pareto(study)}
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        ua = t.user_attrs
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name.lower(),
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
        for k, v in t.constraints.items():
            row[f"constraint.{k}"] = v
        row["test_accuracy"] = (test_accuracy or {}).get(t.number)
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


def plot_pareto(path: Path, rows: list[dict[str, Any]], objectives: list[Objective], chosen: int | None) -> None:
    """Validation accuracy against each size or speed objective: feasible trials, infeasible ones, the front
    (a step line) and the chosen trial."""
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


def best_yaml(trial: Any, select: str, source: str) -> str:
    """The chosen trial's complete pipeline file, with a header saying how it was chosen."""
    m = trial.user_attrs["metrics"]
    params = ", ".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
    head = (
        f"# Chosen by `edgeopt search {source}`: trial {trial.number}, the feasible trial with the "
        f"{'highest' if select == 'accuracy' else 'least'} {select}\n"
        f"# (it met every gate of the search's profiles and its accuracy constraints on the validation split).\n"
        f"# Parameters: {params}\n"
        f"# Validation: accuracy {m['accuracy']:.4f}, {m['flash_bytes']:,.0f} bytes, {m['gzip_bytes']:,.0f} gzipped.\n"
        f"# `edgeopt export` this file to build the release bundle.\n"
    )
    return head + yaml.safe_dump(trial.user_attrs["pipeline"], sort_keys=False)


def write_html(
    path: Path,
    *,
    name: str,
    rows: list[dict[str, Any]],
    objectives: list[Objective],
    params: list[str],
    plot: Path,
    chosen: int | None,
    select: str,
    command: str,
    counts_: dict[str, int],
) -> None:
    """One self-contained page: the plot, the Pareto front's table (with test accuracy) and how to rerun."""
    img = base64.b64encode(plot.read_bytes()).decode()
    front = [r for r in rows if r["pareto"]]
    cols = ["trial", *[f"param.{p}" for p in params], *[o.key for o in objectives], "test_accuracy", "seconds"]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1.5 else f"{v:,.0f}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c.removeprefix('param.'))}</th>" for c in cols)
    body = "".join(
        f"<tr{' class=chosen' if r['trial'] == chosen else ''}>"
        + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols)
        + "</tr>"
        for r in front
    )
    c = counts_
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>edgeopt search: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}tr.chosen{{background:#fff3b0}}</style></head><body>
<h1>edgeopt search: {html.escape(name)}</h1>
<p>{c["done"]} trials done ({c["feasible"]} feasible, {c["infeasible"]} infeasible), {c["pruned"]} pruned,
{c["failed"]} failed. Objectives and constraints on the validation split; test accuracy measured once, for
the Pareto front only. Chosen (<code>best.yaml</code>): {"trial " + str(chosen) if chosen is not None else "none"}
&mdash; rule: the feasible trial with the {"highest" if select == "accuracy" else "least"} {html.escape(select)}.</p>
<p><code>{html.escape(command)}</code></p>
<img src="data:image/png;base64,{img}" alt="Pareto front">
<h2>Pareto front</h2><table><tr>{head}</tr>{body}</table>
<p>Every trial: <a href="trials.csv">trials.csv</a>, <a href="trials.json">trials.json</a>.</p>
</body></html>"""
    write_bytes(path, text.encode())


def write_outputs(
    study: Any,
    out: Path,
    *,
    search: SearchConfig,
    params: list[str],
    test_accuracy: dict[int, float],
    source: str,
    command: str,
) -> dict[str, Any]:
    """Write trials.csv, trials.json, pareto.png, pareto.html and (when a trial is feasible) best.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study, params, test_accuracy)
    chosen = choose(study.get_trials(deepcopy=False), search.select)
    c = counts(study)
    write_csv(out / "trials.csv", rows)
    summary = {
        "study": study.study_name,
        "objectives": [o.key for o in search.parsed_objectives],
        "select": search.select,
        "chosen": chosen.number if chosen is not None else None,
        "pareto": [t.number for t in pareto(study)],
        "counts": c,
        "trials": rows,
    }
    write_json(out / "trials.json", summary)
    plot_pareto(out / "pareto.png", rows, search.parsed_objectives, chosen.number if chosen else None)
    write_html(
        out / "pareto.html",
        name=study.study_name,
        rows=rows,
        objectives=search.parsed_objectives,
        params=params,
        plot=out / "pareto.png",
        chosen=chosen.number if chosen else None,
        select=search.select,
        command=command,
        counts_=c,
    )
    best = out / "best.yaml"
    if chosen is not None:
        write_bytes(best, best_yaml(chosen, search.select, source).encode())
    else:
        best.unlink(missing_ok=True)
    return summary


def front_table(rows: list[dict[str, Any]], objectives: list[Objective], chosen: int | None) -> str:
    """The Pareto front as a Markdown table (for the README and the bench)."""
    cols = ["trial", "accuracy", "test_accuracy", *[o.key for o in objectives if o.key != "accuracy"]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if not r["pareto"]:
            continue
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append(
                f"{v:.4f}"
                if isinstance(v, float) and abs(v) < 1.5
                else (f"{v:,.0f}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v))
            )
        mark = " (chosen)" if r["trial"] == chosen else ""
        lines.append("| " + " | ".join(vals) + mark + " |")
    return "\n".join(lines)


def load_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "trials.json").read_text())
