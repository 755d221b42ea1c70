"""The bundle's human-readable files: ``model_card.md`` and ``report.html`` (one file, plots as base64 PNG).

Every figure is drawn from numbers measured by the run (the bundle manifest and the stage folders).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from edgeopt.artifacts import gzip_size, load_model
from edgeopt.manifest import TEACHER, BundleManifest, is_validation


def _json(manifest: BundleManifest | dict[str, Any]) -> dict[str, Any]:
    """The manifest as its JSON dict: the figures read stage metrics, which are plain dicts anyway."""
    return manifest.to_json() if isinstance(manifest, BundleManifest) else manifest


def _acc(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else "n/a"


def _points(v: Any) -> str:
    """A drop in accuracy (a fraction) as signed percentage points; a gain shows as negative."""
    return f"{100 * v:+.2f}" if isinstance(v, int | float) else "n/a"


DROP_NOTE = (
    "Top-1 on the test split through ai_edge_litert. Drop vs converted model: the top-1 of the Keras model"
    " the .tflite was converted from minus the .tflite's (what conversion and quantization cost). Drop vs"
    " teacher: the float32 teacher .tflite's top-1 (the baseline) minus the .tflite's (what the whole"
    " pipeline cost). In percentage points; negative is a gain."
)


def _artifact_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """One row per .tflite (the baseline first): path, bytes, gzip bytes, top-1, drop vs the converted
    Keras model (validation's ``accuracy_drop_vs_keras``), drop vs the teacher (the baseline)."""
    validations: dict[str, Any] = {}
    for s in manifest["stages"]:
        if is_validation(s["metrics"]):
            validations.update(s["metrics"]["artifacts"])
    b = manifest.get("baseline")
    rows = []
    for a in ([b] if b else []) + manifest["artifacts"]:
        v = validations.get(a["path"].rsplit("/", 1)[-1]) or {}
        vs_keras = v.get("accuracy_drop_vs_keras")
        if vs_keras is None and isinstance(v.get("keras_accuracy"), int | float) and a.get("accuracy") is not None:
            vs_keras = v["keras_accuracy"] - a["accuracy"]
        vs_teacher = 0.0 if a is b else a.get("accuracy_drop_vs_baseline")
        rows.append(
            [
                f"{a['path']} ({a['quantization']})",
                f"{a['bytes']:,}",
                f"{a['gzip_bytes']:,}",
                _acc(a.get("accuracy")),
                _points(vs_keras),
                _points(vs_teacher) if b else "n/a (no baseline)",
            ]
        )
    return rows


ARTIFACT_HEADER = ["artifact", "bytes", "gzip bytes", "top-1", "drop vs converted model", "drop vs teacher"]


def _gate_rows(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for s in manifest["stages"]:
        if is_validation(s["metrics"]):
            for model, v in s["metrics"]["artifacts"].items():
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
        acc = m.get("accuracy") if not is_validation(m) else None
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


FIRMWARE_HEADER = [
    "model", "profile", "core / board / kernels", "bit-exact", "instructions / Invoke()", "flash (runtime + model)",
    "RAM (arena used of built; stack; .bss + .data; heap)", "latency estimate", "energy estimate",
]  # fmt: skip


def _firmware_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """One row per MCU model and profile with a firmware check (edgeopt.firmware)."""
    rows = []
    for m in manifest["models"]:
        for profile, r in (m.get("firmware") or {}).items():
            fp, ins = r.get("footprint") or {}, r.get("instructions") or {}
            model = (fp.get("flash_parts") or {}).get("model", 0)
            lat = next((x for x in r.get("latency", []) if x["profile"] == profile), None)
            en = next((x for x in r.get("energy", []) if x["profile"] == profile), None)
            rows.append(
                [
                    m["path"],
                    profile,
                    f"{r['cpu']} / {r['board']} / {r['kernels']}",
                    ("yes" if r["bit_exact"] else "NO") + f" ({r['inputs']} inputs)"
                    + ("" if r["passed"] else "; " + "; ".join(r["failures"])),
                    f"{ins['median']:,}" if ins else "-",
                    f"{fp['flash_bytes']:,} B = {fp['flash_bytes'] - model:,} + {model:,}" if fp else "-",
                    f"{fp['arena_used_bytes']:,} of {fp['arena_bytes']:,}; {fp['stack_bytes']:,}; "
                    f"{fp['bss_bytes'] + fp['data_bytes']:,}; {fp['heap_bytes']:,} B" if fp else "-",
                    f"{lat['ms']:.3g} ms from instructions, {lat['macs_ms']:.3g} ms from MACs ({lat['used']} used)"
                    if lat else "-",
                    f"{en['microjoules']:,.0f} uJ at {en['milliwatts']:.1f} mW (estimate)" if en else "-",
                ]
            )  # fmt: skip
    return rows


def model_card(manifest: BundleManifest | dict[str, Any]) -> str:
    """``model_card.md``: what the model is, its data, metrics per stage, budgets and gates, known limits."""
    manifest = _json(manifest)
    d = manifest["data"]
    cfg = manifest["config"]
    steps = " → ".join(
        s["stage"]
        + "("
        + ", ".join(f"{k}={v}" for k, v in s.items() if k != "stage" and v is not None and v != [] and v is not False)
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
    lines += ["", DROP_NOTE, "", "| " + " | ".join(ARTIFACT_HEADER) + " |", "|---|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in _artifact_rows(manifest)]
    b = manifest.get("baseline")
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
    problems = v["failed_gates"] + v["crashed"]
    if v.get("strict"):  # a strict run fails on gates it could not evaluate
        problems += [f"not evaluated: {g}" for g in v.get("not_evaluated") or []]
    lines += ["", f"Overall: {'all gates passed' if v['passed'] else 'FAILED: ' + '; '.join(problems)}."]
    fw = _firmware_rows(manifest)
    if fw:
        lines += ["", "## Firmware check", "",
                  "The MCU model built into TFLite Micro firmware for the profile's core, run in QEMU and compared "
                  "byte for byte with TFLite Micro's Python interpreter (edgeopt firmware); latency and energy are "
                  "estimates for the profile's board.", "",
                  "| " + " | ".join(FIRMWARE_HEADER) + " |", "|" + "---|" * len(FIRMWARE_HEADER)]  # fmt: skip
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in fw]
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

        model = load_model(path)
        return gzip_size(b"".join(np.asarray(w, np.float32).tobytes() for w in model.get_weights()))
    except Exception:  # noqa: BLE001 - a plot point, never a reason to fail the export
        return None


KERAS_KIND = "Keras: float32 weights, gzip-9 bytes"
TFLITE_KIND = ".tflite: file gzip-9 bytes (LiteRT accuracy)"


def _accuracy_points(manifest: dict[str, Any], build_root: Path) -> list[tuple[str, int, float, str]]:
    """(label, size, top-1, kind) of every Keras stage output and every .tflite, the baseline first."""
    pts = []
    for s in manifest["stages"]:
        if s["output"].endswith(".keras") and s["metrics"].get("accuracy") is not None:
            p = build_root / s["output"] if s["name"] != TEACHER else Path(s["output"])
            size = _weights_gzip(p)
            if size:
                pts.append((s["name"], size, s["metrics"]["accuracy"], KERAS_KIND))
    b = manifest.get("baseline")
    for a in ([b] if b else []) + manifest["artifacts"]:
        if a.get("accuracy") is not None:
            label = "baseline (teacher .tflite)" if a is b else f"{a['quantization']} (from {a['source_stage']})"
            pts.append((label, a["gzip_bytes"], a["accuracy"], TFLITE_KIND))
    return pts


def place_labels(ax: Any, xy: list[tuple[float, float]], labels: list[str], *, fontsize: int = 8) -> list[Any]:
    """Annotate each point without labels overlapping each other, the markers or the axes' edges.

    A small repel in the manner of adjustText, deterministic: each label takes the first free spot
    among eight directions around its point, at growing distances; a label pushed away from its point
    gets a leader line. Points are handled left to right, so close points fan out."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    dpi_scale = fig.dpi / 72.0  # offset points -> pixels
    markers = []
    for x, y in xy:
        px, py = to_px((x, y))
        markers.append((px - 5, py - 5, px + 5, py + 5))
    placed: list[tuple[float, float, float, float]] = []
    out: list[Any] = [None] * len(xy)

    def free(box: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = box
        if x0 < frame.x0 or x1 > frame.x1 or y0 < frame.y0 or y1 > frame.y1:
            return False
        return not any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed + markers)

    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0)]
    for i in sorted(range(len(xy)), key=lambda k: xy[k]):
        ann = None
        for dist in (6, 14, 24, 36, 50, 66):
            for dx, dy in directions:
                if ann is not None:
                    ann.remove()
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                ann = ax.annotate(
                    labels[i],
                    xy[i],
                    xytext=(dx * dist, dy * dist),
                    textcoords="offset points",
                    ha=ha,
                    va=va,
                    fontsize=fontsize,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if dist > 14 else None,
                )
                bb = ann.get_window_extent(renderer)
                box = (bb.x0 - 2 * dpi_scale, bb.y0 - dpi_scale, bb.x1 + 2 * dpi_scale, bb.y1 + dpi_scale)
                if free(box):
                    placed.append(box)
                    out[i] = ann
                    break
            if out[i] is not None:
                break
        if out[i] is None:  # no free spot: keep the last try, which is far out and has a leader line
            out[i] = ann
            bb = ann.get_window_extent(renderer)
            placed.append((bb.x0, bb.y0, bb.x1, bb.y1))
    return out


def _fig_accuracy_size(pts: list[tuple[str, int, float, str]]) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    # Keras points as larger rings, so a .tflite square at the same spot (teacher and baseline) shows inside.
    styles = (
        (KERAS_KIND, {"marker": "o", "s": 70, "facecolors": "none", "edgecolors": "C0"}),
        (TFLITE_KIND, {"marker": "s", "color": "C1"}),
    )
    for kind, style in styles:
        sel = [p for p in pts if p[3] == kind]
        if sel:
            ax.scatter([p[1] for p in sel], [p[2] for p in sel], label=kind, zorder=3, **style)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis overlap
    # Room around the points so labels can sit beside the outermost ones.
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    ax.set_xlim(min(xs) / 1.8, max(xs) * 2.5)
    span = max(max(ys) - min(ys), 0.01)
    ax.set_ylim(min(ys) - 0.35 * span, max(ys) + 0.35 * span)
    ax.set_xlabel("size (bytes, gzip -9, log scale)")
    ax.set_ylabel("top-1 accuracy (test split)")
    ax.set_title("accuracy vs size, every stage and the baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    # Numbers on the plot, names in the table under it: a label never hides another point's.
    place_labels(ax, [(p[1], p[2]) for p in pts], [str(i) for i in range(1, len(pts) + 1)], fontsize=9)
    return _png(fig)


def _legend_table(pts: list[tuple[str, int, float, str]], baseline_acc: float | None) -> str:
    e = html.escape
    rows = [
        "<table><tr><th>#</th><th>model</th><th>what the size is</th><th>size (gzip -9 bytes)</th>"
        "<th>top-1</th><th>drop vs teacher (points)</th></tr>"
    ]
    for i, (label, size, acc, kind) in enumerate(pts, start=1):
        drop = _points(baseline_acc - acc) if baseline_acc is not None else "n/a (no baseline)"
        rows.append(
            f"<tr><td>{i}</td><td>{e(label)}</td><td>{e(kind)}</td><td>{size:,}</td><td>{_acc(acc)}</td>"
            f"<td>{drop}</td></tr>"
        )
    return "".join(rows) + "</table>"


def _fig_latency(manifest: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    series = []
    for s in manifest["stages"]:
        if is_validation(s["metrics"]):
            for model, v in s["metrics"]["artifacts"].items():
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


def _fig_layers(manifest: dict[str, Any], key: str, label: str) -> tuple[str, str | None]:
    """(the figure's title, the figure): ``key`` per layer from the first stage whose per-layer metrics
    have it (pruning's sparsity, clustering's distinct values), whichever stage that is."""
    import matplotlib.pyplot as plt

    stage, layers = next(
        (
            (s["name"], s["metrics"]["layers"])
            for s in manifest["stages"]
            if isinstance(s["metrics"].get("layers"), dict)
            and any(isinstance(v, dict) and key in v for v in s["metrics"]["layers"].values())
        ),
        ("", None),
    )
    title = f"{label.capitalize()} per layer" + (f" ({stage})" if stage else "")
    if not layers:
        return title, None
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
    return title, _png(fig)


def html_report(manifest: BundleManifest | dict[str, Any], build_root: Path) -> str:
    """``report.html``: one self-contained file, figures as base64 PNG."""
    manifest = _json(manifest)
    import matplotlib

    matplotlib.use("Agg")
    e = html.escape
    pts = _accuracy_points(manifest, build_root)
    base_acc = (manifest.get("baseline") or {}).get("accuracy")
    figs = [
        ("Accuracy vs size", _fig_accuracy_size(pts)),
        ("Latency distribution", _fig_latency(manifest)),
        _fig_layers(manifest, "sparsity", "sparsity"),
        _fig_layers(manifest, "distinct_values", "distinct weight values"),
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
    parts.append(f"<h2>Artifacts</h2><p>{e(DROP_NOTE)}</p><table><tr>")
    parts += [f"<th>{e(h)}</th>" for h in ARTIFACT_HEADER] + ["</tr>"]
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _artifact_rows(manifest)]
    parts.append("</table>")
    for title, png in figs:
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(
            f"<img alt='{e(title)}' src='data:image/png;base64,{png}'>" if png else "<p>no data in this run</p>"
        )
        if title == "Accuracy vs size" and png:
            parts.append(_legend_table(pts, base_acc))
    fw = _firmware_rows(manifest)
    if fw:
        parts.append(
            "<h2>Firmware check</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in FIRMWARE_HEADER) + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in fw]
        parts.append("</table>")
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
