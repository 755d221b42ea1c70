"""The bundle's ``android/`` folder: the model with its embedded manifest, the labels, and a README
with the Gradle lines the app needs (the LiteRT version the model was validated with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.artifacts import write_bytes
from edgeopt.runtimes import litert


def write_android(
    root: Path, name: str, asset: bytes, info: dict[str, Any], quantization: str, labels: list[str]
) -> str:
    """Write ``android/assets/<name>.tflite``, ``<name>.labels.txt`` and ``android/README.md`` under
    ``root``; return the bundle path of the model."""
    write_bytes(root / "android" / "assets" / f"{name}.tflite", asset)
    write_bytes(root / "android" / "assets" / f"{name}.labels.txt", "".join(f"{c}\n" for c in labels).encode())
    write_bytes(root / "android" / "README.md", android_readme(name, info, quantization).encode())
    return f"android/assets/{name}.tflite"


def android_readme(name: str, info: dict[str, Any], quantization: str) -> str:
    """The README: asset facts, Gradle lines, which LiteRT artifact the model's ops need, and its I/O."""

    ver = litert.version()
    flex = sorted(o for o in info["custom_ops"] if o.startswith("CUSTOM:Flex"))
    custom = sorted(o for o in info["custom_ops"] if not o.startswith("CUSTOM:Flex"))
    ops = ", ".join(sorted(info["op_counts"]))
    deps = f'    implementation("com.google.ai.edge.litert:litert:{ver}")'
    if not info["custom_ops"]:
        why = (
            f"The model uses builtin ops only ({ops}), so the plain `litert` artifact is all it needs: no"
            " select-TF-ops or custom-op library."
        )
    else:
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

`assets/{name}.tflite` ({info["bytes"]:,} bytes, sha256 `{info["sha256"]}`, {quantization}) and
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
