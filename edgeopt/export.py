"""``edgeopt export``: run a pipeline, then write a release bundle for Android and microcontrollers.

    dist/<pipeline>/
      android/assets/<name>.tflite        the shipped model, edgeopt manifest embedded as metadata
      android/assets/<name>.labels.txt    class names, one a line
      android/README.md                   the Gradle lines the app needs
      mcu/<name>_model.h, mcu/<name>_model.c   the int8 model as a C array, sha256, arena size, scales
      manifest.json                       everything (schema edgeopt.bundle/1)
      model_card.md, report.html, junit.xml

The bundle is written into a temporary folder next to the target and renamed into place at the
end. When a gate fails it goes to ``<target>.failed`` instead, with ``"status": "failed"``, and the
previous good bundle stays where it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt import metadata
from edgeopt.artifacts import gzip_size, sha256_bytes, write_bytes, write_json
from edgeopt.config import PipelineConfig
from edgeopt.errors import EdgeoptError, GateFailed, RuntimeCrash

BUNDLE_SCHEMA = "edgeopt.bundle/1"
EMBEDDED_SCHEMA = "edgeopt.embedded-manifest/1"

# Keys left out of the manifest embedded in the .tflite: they change from run to run (timings) or
# are long training logs; the bundle's manifest.json keeps them.
_VOLATILE = {"seconds", "history", "times_ms", "latency", "init_ms", "trained", "reused"}

HASHES = {
    "models[].sha256": "sha256 of the shipped .tflite file (with the embedded edgeopt manifest)",
    "models[].sha256_before_embedding": "sha256 of the .tflite as the converter wrote it (build/ artifact); "
    "the embedded manifest records this one, as a file cannot contain its own hash",
    "files[].sha256": "sha256 of each bundle file as written (manifest.json itself excluded)",
    "config_sha256": "sha256 of the resolved pipeline config as canonical JSON (sorted keys, no spaces)",
    "source_model.sha256": "sha256 of the teacher file (a .keras file includes its save time)",
    "source_model.content_sha256": "hash of the teacher's layer classes and weights (stable across saves)",
}


@dataclass
class ExportResult:
    bundle: Path
    manifest: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.manifest["status"] == "passed"


def c_identifier(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return ident if not ident[:1].isdigit() else "m_" + ident


def export(
    config: PipelineConfig,
    out: str | Path | None = None,
    *,
    build_dir: str | Path | None = None,
    force: bool = False,
) -> ExportResult:
    """Run ``config`` (stages cached in ``build_dir``, default ``build/<name>``) and write the bundle to
    ``out`` (default ``dist/<name>``). Raises GateFailed / RuntimeCrash after writing the failed bundle
    to ``<out>.failed`` when a gate failed or a runtime crashed; any other error leaves no bundle."""
    from edgeopt import pipeline

    target = Path(out) if out is not None else Path("dist") / config.name
    build_root = Path(build_dir) if build_dir is not None else Path("build") / config.name
    error: EdgeoptError | None = None
    try:
        run_manifest = pipeline.run(config, build_root, force=force).manifest
    except (GateFailed, RuntimeCrash) as e:
        mpath = build_root / "manifest.json"
        if not mpath.is_file():
            raise
        run_manifest, error = json.loads(mpath.read_text()), e
    status = "passed" if error is None else "failed"
    final = target if error is None else target.with_name(target.name + ".failed")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=final.parent))
    try:
        manifest = write_bundle(tmp, config, run_manifest, build_root, status)
        _swap(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if error is None:
        stale = target.with_name(target.name + ".failed")
        if stale.is_dir():  # an older failure is no longer news
            shutil.rmtree(stale)
    else:
        raise type(error)(f"{error}; the bundle for inspection is in {final}")
    return ExportResult(final, manifest)


def _swap(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` into ``final``; an existing ``final`` is moved aside first and removed after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---- the bundle ------------------------------------------------------------------------------------


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _VOLATILE and not k.endswith("_ms")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _config_sha256(config: dict[str, Any]) -> str:
    return sha256_bytes(metadata.manifest_bytes(config))


def _validations(run_manifest: dict[str, Any]) -> dict[str, Any]:
    """Validation metrics per artifact file name, from the last validate stage that saw it."""
    out: dict[str, Any] = {}
    for s in run_manifest["stages"]:
        if s["name"] == "validate":
            out.update(s["metrics"].get("artifacts", {}))
    return out


def _pick(artifacts: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the model for Android, the int8 model for microcontrollers): the last int8 artifact for both,
    else the last artifact for Android and none for microcontrollers."""
    int8 = [a for a in artifacts if a["quantization"] == "int8"]
    mcu = int8[-1] if int8 else None
    return (mcu or (artifacts[-1] if artifacts else None)), mcu


def embedded_manifest(
    config: PipelineConfig, run_manifest: dict[str, Any], art: dict[str, Any], content: bytes
) -> dict[str, Any]:
    """What goes inside the .tflite: deterministic for the same config, seed and inputs (no timings)."""
    cfg = run_manifest["config"]
    teacher = run_manifest["stages"][0]
    return {
        "schema": EMBEDDED_SCHEMA,
        "pipeline": run_manifest["pipeline"],
        "seed": run_manifest["seed"],
        "versions": run_manifest["versions"],
        "config": cfg,
        "config_sha256": _config_sha256(cfg),
        "source_model": {"path": teacher["output"], "content_sha256": teacher.get("content_sha256")},
        "data": run_manifest["data"],
        "labels": run_manifest["data"].get("class_names", []),
        "model": {
            "quantization": art["quantization"],
            "source_stage": art["source_stage"],
            "sha256_before_embedding": sha256_bytes(content),
            "bytes_before_embedding": len(content),
            "accuracy": art.get("accuracy"),
            "inputs": art["inputs"],
            "outputs": art["outputs"],
            "ops": art["ops"],
        },
        # The teacher's metrics exist only in the run that trained it, so they would make the bytes differ
        # between a first and a later run; its content hash identifies it.
        "stages": [
            {"name": s["name"], "metrics": _strip(s["metrics"])}
            for s in run_manifest["stages"]
            if s["name"] not in ("validate", "teacher")
        ],
        "note": "sha256_before_embedding is the hash of this model without its edgeopt_manifest metadata entry; "
        "host timings and validation results are in the bundle's manifest.json",
    }


def write_bundle(
    root: Path, config: PipelineConfig, run_manifest: dict[str, Any], build_root: Path, status: str
) -> dict[str, Any]:
    from edgeopt import report
    from edgeopt.tflite import inspect

    name = config.name
    validations = _validations(run_manifest)
    android_art, mcu_art = _pick(run_manifest["artifacts"])
    models: list[dict[str, Any]] = []
    shipped: dict[str, bytes] = {}  # build artifact path -> bytes with the embedded manifest
    for art in [a for a in (android_art, mcu_art) if a is not None]:
        if art["path"] in shipped:
            continue
        content = (build_root / art["path"]).read_bytes()
        emb = embedded_manifest(config, run_manifest, art, content)
        shipped[art["path"]] = metadata.embed(content, metadata.MANIFEST_ENTRY, metadata.manifest_bytes(emb))

    labels = run_manifest["data"].get("class_names", [])
    if android_art is not None:
        final = shipped[android_art["path"]]
        write_bytes(root / "android" / "assets" / f"{name}.tflite", final)
        write_bytes(root / "android" / "assets" / f"{name}.labels.txt", "".join(f"{c}\n" for c in labels).encode())
        info = inspect(final)
        write_bytes(root / "android" / "README.md", android_readme(name, info, android_art).encode())
        models.append(_model_record(f"android/assets/{name}.tflite", "android", final, android_art, info, validations))
    mcu_info: dict[str, Any] | None = None
    if mcu_art is not None:
        final = shipped[mcu_art["path"]]
        mcu_info = inspect(final)
        arena = _arena(validations.get(Path(mcu_art["path"]).name), (build_root / mcu_art["path"]).read_bytes())
        h, c = mcu_sources(name, final, mcu_info, arena, run_manifest)
        write_bytes(root / "mcu" / f"{name}_model.h", h.encode())
        write_bytes(root / "mcu" / f"{name}_model.c", c.encode())
        rec = _model_record(f"mcu/{name}_model.c", "mcu", final, mcu_art, mcu_info, validations)
        rec["arena"] = arena
        models.append(rec)
    else:
        write_bytes(
            root / "mcu" / "README.md",
            b"No int8 model in this pipeline: microcontroller firmware needs a full-integer model "
            b"(add a `{stage: convert, quantization: int8}` step).\n",
        )

    validated = list(validations.values())
    report.write_junit(root / "junit.xml", validated)
    manifest: dict[str, Any] = {
        "schema": BUNDLE_SCHEMA,
        "status": status,
        "pipeline": run_manifest["pipeline"],
        "seed": run_manifest["seed"],
        "versions": run_manifest["versions"],
        "config": run_manifest["config"],
        "config_sha256": _config_sha256(run_manifest["config"]),
        "source_model": {
            "path": run_manifest["stages"][0]["output"],
            "sha256": run_manifest["stages"][0]["sha256"],
            "content_sha256": run_manifest["stages"][0].get("content_sha256"),
        },
        "data": run_manifest["data"],
        "hashes": HASHES,
        "models": models,
        "baseline": run_manifest.get("baseline"),
        "artifacts": run_manifest["artifacts"],
        "stages": run_manifest["stages"],
        "reused": run_manifest.get("reused", []),
        "validation": {
            "passed": run_manifest["passed"],
            "failed_gates": run_manifest["failed_gates"],
            "crashed": run_manifest["crashed"],
            "per_profile": {m["path"]: m["validation"] for m in models},
        },
        "build_dir": str(build_root),
        "pipeline_seconds": run_manifest["seconds"],
    }
    from edgeopt import htmlreport

    write_bytes(root / "model_card.md", htmlreport.model_card(manifest).encode())
    write_bytes(root / "report.html", htmlreport.html_report(manifest, build_root).encode())
    manifest["files"] = [
        {"path": str(p.relative_to(root)), "sha256": sha256_bytes(p.read_bytes()), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    write_json(root / "manifest.json", manifest)  # last: a bundle without it is not complete
    return manifest


def _model_record(
    path: str, role: str, final: bytes, art: dict[str, Any], info: dict[str, Any], validations: dict[str, Any]
) -> dict[str, Any]:
    v = validations.get(Path(art["path"]).name) or {}
    per_profile: dict[str, list[dict[str, Any]]] = {}
    for g in v.get("gates", []):
        per_profile.setdefault(g["profile"], []).append(g)
    return {
        "path": path,
        "role": role,
        "build_artifact": art["path"],
        "quantization": art["quantization"],
        "sha256": sha256_bytes(final),
        "sha256_before_embedding": art["sha256"],
        "bytes": len(final),
        "gzip_bytes": gzip_size(final),
        "bytes_before_embedding": art["bytes"],
        "accuracy": art.get("accuracy"),
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "ops": info["ops"],
        "op_counts": info["op_counts"],
        "custom_ops": info["custom_ops"],
        "macs": info["macs"],
        "params": info["params"],
        "validation": per_profile,
    }


def _arena(validation: dict[str, Any] | None, content: bytes) -> dict[str, Any]:
    """The TFLite Micro arena: from validation when a tflm profile ran, else measured here."""
    from edgeopt.runtimes import tflm

    t = (validation or {}).get("tflm")
    if t and t.get("arena_bytes"):
        return {"bytes": int(t["arena_bytes"]), "method": f"validation: {t['method']}"}
    import numpy as np

    from edgeopt.runtimes.isolate import ChildFailed, run_task
    from edgeopt.tflite import inspect

    shape = [d if d > 0 else 1 for d in inspect(content)["inputs"][0]["shape"]]
    try:
        r, _ = run_task("tflm_eval", "tflm", content, np.zeros(shape, np.float32), timeout=300)
    except ChildFailed as e:
        return {"bytes": None, "method": f"not measured: {e}"}
    return {
        "bytes": int(r["arena_bytes"]),
        "method": "measured at export (no tflm profile ran): smallest arena that allocates and runs one input,"
        f" binary search to 16 bytes, tflite-micro {tflm.version()}",
    }


def _c_float(v: float) -> str:
    s = f"{v:.9g}"
    return (s if any(ch in s for ch in ".en") else s + ".0") + "f"


def mcu_sources(
    name: str, content: bytes, info: dict[str, Any], arena: dict[str, Any], run_manifest: dict[str, Any]
) -> tuple[str, str]:
    """``<name>_model.h`` and ``<name>_model.c``: the model bytes as an aligned C array and its facts."""
    import math

    ident = c_identifier(name)
    up = ident.upper()
    digest = sha256_bytes(content)
    ver = run_manifest["versions"].get("edgeopt", "?")
    lines = [
        f"/* {name}_model.h: generated by edgeopt {ver} from pipeline {run_manifest['pipeline']}"
        f" (seed {run_manifest['seed']}). Do not edit. */",
        f"#ifndef EDGEOPT_{up}_MODEL_H",
        f"#define EDGEOPT_{up}_MODEL_H",
        "",
        "#include <stddef.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        "/* The .tflite flatbuffer (TFLite Micro reads it in place), 16-byte aligned. It carries the edgeopt",
        "   manifest as a metadata entry (edgeopt_manifest), which interpreters ignore. */",
        f"extern const unsigned char {ident}_model[];",
        f"extern const size_t {ident}_model_len;",
        "",
        f"#define {up}_MODEL_LEN {len(content)}u",
        f"/* SHA-256 of the {len(content)} bytes of {ident}_model */",
        f'#define {up}_MODEL_SHA256 "{digest}"',
        "",
    ]
    if arena.get("bytes"):
        lines += [
            f"/* Tensor arena: {arena['method']}. Add headroom for your TFLite Micro build and kernels. */",
            f"#define {up}_ARENA_BYTES {arena['bytes']}u",
        ]
    else:
        lines += [f"/* Tensor arena: {arena['method']}; {up}_ARENA_BYTES is deliberately not defined. */"]
    for kind, tensors in (("INPUT", info["inputs"]), ("OUTPUT", info["outputs"])):
        t = tensors[0]
        n = math.prod(d if d > 0 else 1 for d in t["shape"])
        lines += [
            "",
            f"/* {kind.lower()} {t['name']}: {t['dtype']} {t['shape']}; real = scale * (q - zero_point) */",
            f"#define {up}_{kind}_SCALE {_c_float(t['scale'])}",
            f"#define {up}_{kind}_ZERO_POINT ({t['zero_point']})",
            f"#define {up}_{kind}_ELEMENTS {n}u",
        ]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* EDGEOPT_{up}_MODEL_H */", ""]
    header = "\n".join(lines)

    rows = [", ".join(f"0x{b:02x}" for b in content[i : i + 12]) for i in range(0, len(content), 12)]
    body = ",\n  ".join(rows)
    source = (
        f"/* {name}_model.c: generated by edgeopt {ver}. Do not edit. sha256 {digest} */\n"
        f'#include "{name}_model.h"\n\n'
        "#include <stdalign.h>\n\n"
        f"alignas(16) const unsigned char {ident}_model[] = {{\n  {body}\n}};\n\n"
        f"const size_t {ident}_model_len = sizeof({ident}_model);\n\n"
        f'_Static_assert(sizeof({ident}_model) == {up}_MODEL_LEN, "model length does not match the header");\n'
    )
    return header, source


def android_readme(name: str, info: dict[str, Any], art: dict[str, Any]) -> str:
    from edgeopt.runtimes import litert

    ver = litert.version()
    flex = sorted(o for o in info["custom_ops"] if o.startswith("CUSTOM:Flex"))
    custom = sorted(o for o in info["custom_ops"] if not o.startswith("CUSTOM:Flex"))
    ops = ", ".join(sorted(info["op_counts"]))
    if not info["custom_ops"]:
        deps = f'    implementation("com.google.ai.edge.litert:litert:{ver}")'
        why = (
            f"The model uses builtin ops only ({ops}), so the plain `litert` artifact is all it needs: no"
            " select-TF-ops or custom-op library."
        )
    else:
        deps = f'    implementation("com.google.ai.edge.litert:litert:{ver}")'
        why = f"Builtin ops: {ops}."
        if flex:
            why += (
                f" It also uses TensorFlow ops ({', '.join(flex)}): plain `litert` cannot run them; add LiteRT's"
                " select-TF-ops library (`litert-select-tf-ops`) in the version matching `litert`."
            )
        if custom:
            why += f" Custom ops ({', '.join(custom)}) need your own kernels registered with the interpreter."
    inp, out = info["inputs"][0], info["outputs"][0]
    return f"""# {name} for Android

`assets/{name}.tflite` ({info["bytes"]:,} bytes, sha256 `{info["sha256"]}`, {art["quantization"]}) and
`assets/{name}.labels.txt` (one class name a line, in output order). Copy `assets/` into
`app/src/main/assets/`.

## Gradle (`app/build.gradle.kts`)

```kotlin
android {{
    // Keep the model uncompressed in the APK so it can be memory-mapped.
    androidResources {{ noCompress += "tflite" }}          // AGP 8 and later
    // aaptOptions {{ noCompress("tflite") }}              // older Android Gradle Plugin
}}

dependencies {{
{deps}
}}
```

{why} `{ver}` is the LiteRT version this model was validated with (`ai-edge-litert` {ver} on the
build host).

## Input and output

- input `{inp["name"]}`: {inp["dtype"]} {inp["shape"]}, scale {inp["scale"]:.9g}, zero point {inp["zero_point"]}
- output `{out["name"]}`: {out["dtype"]} {out["shape"]}, scale {out["scale"]:.9g}, zero point {out["zero_point"]}

For integer tensors: `q = round(x / scale) + zero_point` (clamped to the type's range) and
`x = scale * (q - zero_point)`. Feed inputs preprocessed as edgeopt's dataset loader does for
training (see `model_card.md`).
"""
