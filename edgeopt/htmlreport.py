"""The bundle's human-readable files: ``model_card.md`` and ``report.html`` (one file, plots as base64 PNG).

Every figure is drawn from numbers measured by the run (the bundle manifest and the stage folders).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any


def _acc(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else "n/a"


def _gate_rows(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for s in manifest["stages"]:
        if s["name"] == "validate":
            for model, v in s["metrics"].get("artifacts", {}).items():
                rows += [(model, g) for g in v.get("gates", [])]
    return rows


def _stage_rows(manifest: dict[str, Any]) -> list[list[str]]:
    rows = []
    for s in manifest["stages"]:
        m = s["metrics"]
        facts = []
        for k in ("student_params", "sparsity", "max_distinct_values", "quantization", "bytes", "gzip_bytes"):
            if k in m and m[k] is not None:
                v = m[k]
                facts.append(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                )
        acc = m.get("accuracy") if s["name"] not in ("validate",) else None
        rows.append(
            [
                s["name"],
                s["output"],
                _acc(acc),
                ", ".join(facts),
                f"{s['seconds']:.1f}",
                "yes" if s.get("reused") else "no",
            ]
        )
    return rows


def model_card(manifest: dict[str, Any]) -> str:
    d = manifest["data"]
    cfg = manifest["config"]
    steps = " → ".join(
        s["stage"]
        + "("
        + ", ".join(f"{k}={v}" for k, v in s.items() if k != "stage" and v not in (None, [], False))
        + ")"
        for s in cfg["steps"]
    )
    lines = [
        f"# Model card: {manifest['pipeline']}",
        "",
        f"Status: **{manifest['status']}**. Made by edgeopt {manifest['versions'].get('edgeopt')} with TensorFlow"
        f" {manifest['versions'].get('tensorflow')}, tf-keras {manifest['versions'].get('tf-keras')}, tfmot"
        f" {manifest['versions'].get('tensorflow-model-optimization')}, ai-edge-litert"
        f" {manifest['versions'].get('ai-edge-litert')}; seed {manifest['seed']}.",
        "",
        "## What the model is",
        "",
        f"A {d.get('classes')}-class classifier for inputs of shape {d.get('input_shape')}, derived from the teacher"
        f" `{manifest['source_model']['path']}` by the pipeline steps: {steps}.",
        "",
    ]
    for m in manifest["models"]:
        i, o = m["inputs"][0], m["outputs"][0]
        lines.append(
            f"- `{m['path']}` ({m['role']}): {m['quantization']}, {m['bytes']:,} bytes ({m['gzip_bytes']:,} gzipped),"
            f" {m['params']:,} parameters, {m['macs']:,} MACs; input {i['dtype']} {i['shape']} (scale {i['scale']:.6g},"
            f" zero point {i['zero_point']}), output {o['dtype']} {o['shape']};"
            f" ops: {', '.join(sorted(m['op_counts']))}."
        )
    lines += [
        "",
        "## Data",
        "",
        f"`{d.get('name')}` from {d.get('source')}: {d.get('train'):,} training, {d.get('val'):,} validation and"
        f" {d.get('test'):,} test examples (split seed {d.get('seed')})."
        f" Classes: {', '.join(d.get('class_names', []))}."
        " Inputs are preprocessed as edgeopt's loader does (`edgeopt.data`). Accuracy is top-1 on the test split.",
        "",
        "## Metrics per stage",
        "",
        "Keras stages report Keras accuracy; .tflite accuracy is measured through ai_edge_litert.",
        "",
        "| stage | output | accuracy | facts | seconds | reused |",
        "|---|---|---:|---|---:|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _stage_rows(manifest)]
    lines += ["", "| artifact | bytes | gzip bytes | top-1 |", "|---|---:|---:|---:|"]
    b = manifest.get("baseline")
    for a in ([b] if b else []) + manifest["artifacts"]:
        lines.append(
            f"| {a['path']} ({a['quantization']}) | {a['bytes']:,} | {a['gzip_bytes']:,} | {_acc(a['accuracy'])} |"
        )
    lines += ["", "## Budgets and gates", ""]
    gates = _gate_rows(manifest)
    if gates:
        lines += ["| model | profile | gate | result | detail |", "|---|---|---|---|---|"]
        lines += [
            f"| {m} | {g['profile']} | {g['gate']} | {g['status']} | {g['detail'].replace('|', '/')} |"
            for m, g in gates
        ]
    else:
        lines.append("No validate step: no gate was evaluated.")
    v = manifest["validation"]
    lines += [
        "",
        f"Overall: {'all gates passed' if v['passed'] else 'FAILED: ' + '; '.join(v['failed_gates'] + v['crashed'])}.",
    ]
    lines += ["", "## Known limits", ""]
    limits = [
        f"Accuracy is measured on the test split of `{d.get('name')}` only ({d.get('test'):,} examples);"
        " data from another sensor, camera or preprocessing may behave differently.",
        "Latencies are measured on the build host with ai_edge_litert; device latencies are estimates"
        " (see each gate's detail for the method); a gate 'not evaluated' was not checked.",
    ]
    for m in manifest["models"]:
        if m.get("arena"):
            limits.append(f"MCU tensor arena: {m['arena']['bytes'] or 'not measured'} bytes ({m['arena']['method']}).")
    if b and b.get("accuracy") is not None:
        for a in manifest["artifacts"]:
            if a.get("accuracy") is not None:
                limits.append(
                    f"{a['path']}: top-1 {100 * (b['accuracy'] - a['accuracy']):.2f} points below the float32 baseline"
                    if b["accuracy"] >= a["accuracy"]
                    else f"{a['path']}: top-1 {100 * (a['accuracy'] - b['accuracy']):.2f} points above the baseline"
                )
    lines += [f"- {x}" for x in limits]
    return "\n".join(lines) + "\n"


# ---- report.html -----------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _weights_gzip(path: Path) -> int | None:
    """gzip-9 bytes of a Keras model's float32 weights (how much of it pruning and clustering remove)."""
    try:
        import numpy as np

        from edgeopt.artifacts import gzip_size, load_model

        model = load_model(path)
        return gzip_size(b"".join(np.asarray(w, np.float32).tobytes() for w in model.get_weights()))
    except Exception:  # noqa: BLE001 - a plot point, never a reason to fail the export
        return None


def _fig_accuracy_size(manifest: dict[str, Any], build_root: Path) -> str | None:
    import matplotlib.pyplot as plt

    pts = []  # (label, size, accuracy, kind)
    for s in manifest["stages"]:
        if s["output"].endswith(".keras") and s["metrics"].get("accuracy") is not None:
            p = build_root / s["output"] if s["name"] != "teacher" else Path(s["output"])
            size = _weights_gzip(p)
            if size:
                pts.append((s["name"], size, s["metrics"]["accuracy"], "Keras: float32 weights, gzip-9 bytes"))
    b = manifest.get("baseline")
    for a in ([b] if b else []) + manifest["artifacts"]:
        if a.get("accuracy") is not None:
            label = "baseline" if a is b else f"{a['source_stage']} → {a['quantization']}"
            pts.append((label, a["gzip_bytes"], a["accuracy"], ".tflite: file gzip-9 bytes (LiteRT accuracy)"))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, marker in (
        ("Keras: float32 weights, gzip-9 bytes", "o"),
        (".tflite: file gzip-9 bytes (LiteRT accuracy)", "s"),
    ):
        sel = [p for p in pts if p[3] == kind]
        if sel:
            ax.scatter([p[1] for p in sel], [p[2] for p in sel], marker=marker, label=kind)
            for p in sel:
                ax.annotate(p[0], (p[1], p[2]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis overlap
    ax.set_xlabel("size (bytes, gzip -9, log scale)")
    ax.set_ylabel("top-1 accuracy (test split)")
    ax.set_title("accuracy vs size, every stage and the baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _fig_latency(manifest: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    series = []
    for s in manifest["stages"]:
        if s["name"] == "validate":
            for model, v in s["metrics"].get("artifacts", {}).items():
                for th, lat in v.get("latency", {}).items():
                    if lat.get("times_ms"):
                        series.append((f"{model}\nLiteRT XNNPACK, {th} thr", lat["times_ms"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(series) + 1.5))
    ax.boxplot([t for _, t in series], vert=False, showfliers=True)
    ax.set_yticks(range(1, len(series) + 1), [n for n, _ in series], fontsize=8)
    ax.set_xscale("log")  # a few slow outliers would squash the boxes on a linear axis
    ax.set_xlabel("invoke() time per batch-1 run (ms, log scale), measured on the build host")
    ax.set_title("host latency distribution per model and runtime")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _fig_layers(manifest: dict[str, Any], stage: str, key: str, label: str) -> str | None:
    import matplotlib.pyplot as plt

    layers = next((s["metrics"].get("layers") for s in manifest["stages"] if s["name"] == stage), None)
    if not layers:
        return None
    names = list(layers)
    vals = [layers[n].get(key, 0) for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    ax.barh(range(len(names)), vals)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(f"{stage}: {label} per layer")
    for i, v in enumerate(vals):
        ax.annotate(
            f"{v:.3f}" if isinstance(v, float) else str(v),
            (v, i),
            xytext=(3, -3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def html_report(manifest: dict[str, Any], build_root: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    e = html.escape
    figs = [
        ("Accuracy vs size", _fig_accuracy_size(manifest, build_root)),
        ("Latency distribution", _fig_latency(manifest)),
        ("Per-layer sparsity (prune)", _fig_layers(manifest, "prune", "sparsity", "sparsity")),
        (
            "Distinct weights per layer (cluster)",
            _fig_layers(manifest, "cluster", "distinct_values", "distinct weight values"),
        ),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgeopt report: {e(manifest['pipeline'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:90%}.passed{color:#080}.failed{color:#b00}"
        ".not{color:#777}</style></head><body>",
        f"<h1>{e(manifest['pipeline'])}: <span class='{e(manifest['status'])}'>{e(manifest['status'])}</span></h1>",
        f"<p>seed {manifest['seed']}, "
        + ", ".join(f"{e(k)} {e(str(v))}" for k, v in manifest["versions"].items())
        + f"; config sha256 <code>{e(manifest['config_sha256'])}</code></p>",
        "<h2>Models</h2><table><tr><th>file</th><th>quantization</th><th>bytes</th><th>gzip bytes</th>"
        "<th>top-1</th><th>sha256</th></tr>",
    ]
    for m in manifest["models"]:
        parts.append(
            f"<tr><td>{e(m['path'])}</td><td>{e(m['quantization'])}</td><td>{m['bytes']:,}</td>"
            f"<td>{m['gzip_bytes']:,}</td><td>{_acc(m['accuracy'])}</td><td><code>{m['sha256']}</code></td></tr>"
        )
    parts.append(
        "</table><h2>Stages</h2><table><tr><th>stage</th><th>output</th><th>accuracy</th><th>facts</th>"
        "<th>seconds</th><th>reused</th></tr>"
    )
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _stage_rows(manifest)]
    parts.append("</table>")
    for title, png in figs:
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(
            f"<img alt='{e(title)}' src='data:image/png;base64,{png}'>" if png else "<p>no data in this run</p>"
        )
    parts.append("<h2>Gates</h2>")
    rows = _gate_rows(manifest)
    if rows:
        parts.append(
            "<table><tr><th>model</th><th>profile</th><th>gate</th><th>result</th><th>measured</th>"
            "<th>budget</th><th>detail</th></tr>"
        )
        for model, g in rows:
            cls = g["status"].split()[0]
            parts.append(
                f"<tr><td>{e(model)}</td><td>{e(g['profile'])}</td><td>{e(g['gate'])}</td>"
                f"<td class='{cls}'>{e(g['status'])}</td><td>{e(str(g.get('measured')))}</td>"
                f"<td>{e(str(g.get('budget')))}</td><td>{e(g['detail'])}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No validate step: no gate was evaluated.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
