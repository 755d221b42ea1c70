"""`edgeopt export` on a tiny digits pipeline: the bundle, the C sources (compiled with gcc), the
embedded manifest, reproducibility, the stage cache, atomicity and failed gates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgeopt import metadata, stages, tflite
from edgeopt.artifacts import load_model, sha256_bytes
from edgeopt.cli import app
from edgeopt.data import load_dataset
from edgeopt.manifest import BundleManifest, RunManifest

PIPELINE = {
    "name": "tiny",
    "seed": 7,
    "data": {"name": "digits", "max_train": 600},
    "teacher": {"path": None, "train": {"zoo": "tiny_cnn", "epochs": 3, "learning_rate": 0.003}},
    "steps": [
        {"stage": "prune", "final_sparsity": 0.5, "epochs": 1},
        {"stage": "cluster", "clusters": 8, "epochs": 1},
        {"stage": "convert", "quantization": "int8"},
        {"stage": "validate", "min_accuracy": 0.3, "profiles": ["my-board"]},
    ],
    "profiles": [{"name": "my-board", "runtime": "tflm", "budgets": {"arena_bytes": 65536, "model_bytes": 65536}}],
}


def _write_pipeline(folder: Path, teacher: Path, **step_updates: dict) -> Path:
    raw = json.loads(json.dumps(PIPELINE))
    raw["teacher"]["path"] = str(teacher)
    for step in raw["steps"]:
        step.update(step_updates.get(step["stage"], {}))
    p = folder / "tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _export(pipeline: Path, out: Path, build: Path, *extra: str):
    return CliRunner().invoke(app, ["export", str(pipeline), "--out", str(out), "--build", str(build), "-q", *extra])


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export1")
    p = _write_pipeline(tmp, tmp / "teacher.keras")
    r = _export(p, tmp / "dist" / "tiny", tmp / "build")
    assert r.exit_code == 0, r.output
    return tmp, json.loads((tmp / "dist" / "tiny" / "manifest.json").read_text())


@pytest.fixture
def copy(first, tmp_path):
    """The first export's teacher, build cache and bundle, copied so a test may change them."""
    src, _ = first
    for name in ("teacher.keras", "build", "dist"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def calls(monkeypatch):
    """How often each stage function really ran (the pipeline calls them through edgeopt.stages)."""
    counts = {n: 0 for n in ("train", "distill", "prune", "cluster", "convert", "validate")}
    for name in counts:
        orig = getattr(stages, name)

        def wrapper(*a, _orig=orig, _name=name, **k):
            counts[_name] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(stages, name, wrapper)
    return counts


def _c_array(c_file: Path) -> bytes:
    """The bytes of the model array in a generated ``<name>_model.c``."""
    body = c_file.read_text().split("{", 1)[1].split("}", 1)[0]
    return bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", body))


def _bundle_state(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_bytes(p.read_bytes()) for p in sorted(d.rglob("*")) if p.is_file()}


# ---- the bundle -------------------------------------------------------------------------------------


def test_bundle_layout_and_manifest(first):
    tmp, m = first
    b = tmp / "dist" / "tiny"
    for f in (
        "android/assets/tiny.tflite",
        "android/assets/tiny.labels.txt",
        "android/README.md",
        "mcu/tiny_model.h",
        "mcu/tiny_model.c",
        "manifest.json",
        "model_card.md",
        "report.html",
        "junit.xml",
    ):
        assert (b / f).is_file(), f
    assert (b / "android/assets/tiny.labels.txt").read_text().splitlines() == [str(i) for i in range(10)]
    readme = (b / "android/README.md").read_text()
    assert 'noCompress += "tflite"' in readme and "com.google.ai.edge.litert:litert:2.3" in readme
    assert "builtin ops only" in readme

    assert m["schema"] == "edgeopt.bundle/1" and m["status"] == "passed" and m["seed"] == 7
    assert {"edgeopt", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert"} <= set(
        m["versions"]
    )
    assert len(m["config_sha256"]) == 64 and m["config"]["name"] == "tiny"
    assert len(m["source_model"]["sha256"]) == 64 and len(m["source_model"]["content_sha256"]) == 64
    assert [s["name"] for s in m["stages"]] == ["teacher", "baseline", "prune", "cluster", "convert", "validate"]
    assert all("seconds" in s and "metrics" in s and s["reused"] is False for s in m["stages"][1:])

    build_art = m["artifacts"][-1]
    built = (tmp / "build" / build_art["path"]).read_bytes()
    # int8 input: the data's range (widened to hold 0) over 255 steps; digits pixels are 0..16 scaled by 1/16
    pixels = load_dataset("digits").x_train
    lo, hi = min(float(pixels.min()), 0.0), max(float(pixels.max()), 0.0)
    assert (lo, hi) == (0.0, 1.0)
    # MACs at batch 1 counted from the Keras teacher's layers (pruning and clustering keep the shapes)
    teacher = load_model(tmp / "teacher.keras")
    keras_macs = sum(
        int(np.prod(layer.output_shape[1:])) * int(np.prod(layer.kernel.shape[:-1]))
        if type(layer).__name__ == "Conv2D"
        else int(np.prod(layer.kernel.shape))
        for layer in teacher.layers
        if type(layer).__name__ in ("Conv2D", "Dense")
    )
    shipped = {"android": (b / "android/assets/tiny.tflite").read_bytes(), "mcu": _c_array(b / "mcu/tiny_model.c")}
    assert [x["role"] for x in m["models"]] == ["android", "mcu"]
    for model in m["models"]:
        assert model["sha256"] == sha256_bytes(shipped[model["role"]]) and model["bytes"] == len(shipped[model["role"]])
        assert model["sha256_before_embedding"] == sha256_bytes(built) == build_art["sha256"]
        inp = model["inputs"][0]
        assert inp["dtype"] == "int8" and inp["scale"] == pytest.approx((hi - lo) / 255, rel=1e-6)
        assert inp["zero_point"] == round(-128 - lo / inp["scale"])
        assert "CONV_2D" in model["ops"] and model["macs"] == tflite.inspect(built)["macs"] == keras_macs
        assert model["params"] == tflite.inspect(built)["params"]
        assert {g["gate"] for g in model["validation"]["my-board"]} >= {"arena_bytes", "model_bytes", "tflm_runs"}
    files = {f["path"]: f for f in m["files"]}
    assert "manifest.json" not in files
    assert set(files) == set(_bundle_state(b)) - {"manifest.json"}
    for path, f in files.items():
        assert f["sha256"] == sha256_bytes((b / path).read_bytes())

    # The typed schemas read both manifests back to the same JSON, text included.
    for cls, path in ((RunManifest, tmp / "build" / "manifest.json"), (BundleManifest, b / "manifest.json")):
        text = path.read_text()
        assert json.dumps(cls.model_validate_json(text).model_dump(mode="json"), indent=2) + "\n" == text

    junit = (b / "junit.xml").read_text()
    assert 'name="arena_bytes"' in junit and "<failure" not in junit
    card = (b / "model_card.md").read_text()
    assert "## Known limits" in card and "arena_bytes" in card and "digits" in card


def test_report_html_has_real_figures(first):
    import base64
    import re

    tmp, _ = first
    html = (tmp / "dist" / "tiny" / "report.html").read_text()
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) == 4  # accuracy vs size, latency, per-layer sparsity, distinct weights
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" and len(p) > 2000 for p in pngs)
    assert "<h2>Gates</h2>" in html and "arena_bytes" in html and "no data in this run" not in html


C_CHECK = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tiny_model.h"

static const uint32_t K[64] = {
  0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
  0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
  0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
  0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
  0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
  0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
  0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
  0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const unsigned char *p) {
  uint32_t w[64], a, b, c, d, e, f, g, hh;
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4*i] << 24 | (uint32_t)p[4*i+1] << 16 | (uint32_t)p[4*i+2] << 8 | p[4*i+3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i-15], 7) ^ ROR(w[i-15], 18) ^ (w[i-15] >> 3);
    uint32_t s1 = ROR(w[i-2], 17) ^ ROR(w[i-2], 19) ^ (w[i-2] >> 10);
    w[i] = w[i-16] + s0 + w[i-7] + s1;
  }
  a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256_hex(const unsigned char *data, size_t len, char out[65]) {
  uint32_t h[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
  unsigned char tail[128] = {0};
  size_t full = len / 64 * 64, rest = len - full, tail_len;
  for (size_t i = 0; i < full; i += 64) block(h, data + i);
  memcpy(tail, data + full, rest);
  tail[rest] = 0x80;
  tail_len = rest + 9 <= 64 ? 64 : 128;
  uint64_t bits = (uint64_t)len * 8;
  for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
  for (size_t i = 0; i < tail_len; i += 64) block(h, tail + i);
  for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", (unsigned)h[i]);
}

int main(void) {
  char hex[65];
  int bad = 0;
  sha256_hex((const unsigned char *)"abc", 3, hex); /* the FIPS 180-2 test vector checks the checker */
  if (strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")) { puts("sha256 impl"); bad = 1; }
  if (tiny_model_len != TINY_MODEL_LEN) { puts("length"); bad = 1; }
  if ((uintptr_t)tiny_model % 16 != 0) { puts("alignment"); bad = 1; }
  if (memcmp(tiny_model + 4, "TFL3", 4)) { puts("identifier"); bad = 1; }
  sha256_hex(tiny_model, tiny_model_len, hex);
  if (strcmp(hex, TINY_MODEL_SHA256)) { printf("sha256 %s\n", hex); bad = 1; }
  if (TINY_INPUT_ELEMENTS != 64u) { puts("constants"); bad = 1; }
  /* the other constants go back to the test, which compares them with the manifest */
  printf("%u %d %.9g %s\n", (unsigned)TINY_ARENA_BYTES, TINY_INPUT_ZERO_POINT, (double)TINY_INPUT_SCALE, hex);
  return bad;
}
"""


def _compile_and_run(mcu: Path, work: Path) -> subprocess.CompletedProcess:
    (work / "check.c").write_text(C_CHECK)
    exe = work / "check"
    subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Werror", "-I", str(mcu), str(work / "check.c"), str(mcu / "tiny_model.c")]
        + ["-o", str(exe)],
        check=True,
        capture_output=True,
        text=True,
    )
    return subprocess.run([str(exe)], capture_output=True, text=True)


def test_mcu_sources_compile_and_match(first, tmp_path):
    src, m = first
    mcu = src / "dist" / "tiny" / "mcu"
    r = _compile_and_run(mcu, tmp_path)
    assert r.returncode == 0, r.stdout
    arena, zp, scale, digest = r.stdout.split()
    model = next(x for x in m["models"] if x["role"] == "mcu")
    assert digest == model["sha256"] == sha256_bytes(_c_array(mcu / "tiny_model.c"))
    assert digest != sha256_bytes((src / "dist/tiny/android/assets/tiny.tflite").read_bytes())  # lean image
    gate = next(g for g in model["validation"]["my-board"] if g["gate"] == "arena_bytes")
    assert int(arena) == gate["measured"] == model["arena"]["bytes"]
    assert int(zp) == model["inputs"][0]["zero_point"]
    assert float(scale) == pytest.approx(model["inputs"][0]["scale"], rel=1e-7)  # float32 in C

    # The checker must notice one changed byte in the array (same length, so it still compiles).
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(mcu / "tiny_model.h", broken)
    c = (mcu / "tiny_model.c").read_text()
    i = c.index("0x", c.index("{"))
    first_byte = c[i : i + 4]
    (broken / "tiny_model.c").write_text(c[:i] + ("0x29" if first_byte != "0x29" else "0x2a") + c[i + 4 :])
    r = _compile_and_run(broken, tmp_path)
    assert r.returncode == 1 and "sha256" in r.stdout


def test_embedded_manifest_round_trips_and_model_computes_the_same(first):
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.export import embedded_manifest
    from edgeopt.runtimes import tflm

    tmp, m = first
    shipped = (tmp / "dist/tiny/android/assets/tiny.tflite").read_bytes()
    run_manifest = RunManifest.model_validate_json((tmp / "build" / "manifest.json").read_text())
    art = run_manifest.artifacts[-1]
    built = (tmp / "build" / art.path).read_bytes()
    assert shipped != built
    emb = metadata.read_manifest(shipped)
    assert emb == json.loads(metadata.manifest_bytes(embedded_manifest(run_manifest, art, built).to_json()))
    assert emb["model"]["sha256_before_embedding"] == sha256_bytes(built)
    assert emb["labels"] == [str(i) for i in range(10)] and emb["seed"] == 7
    assert "seconds" not in json.dumps(emb) and "times_ms" not in json.dumps(emb)
    assert metadata.read_manifest(built) is None
    assert set(metadata.read_all(built)) < set(metadata.read_all(shipped))  # the converter's entries are kept

    data = load_dataset("digits")
    outs = []
    for content in (built, shipped):
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        d, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zp = d["quantization"]
        res = []
        for x in data.x_test[:100]:
            it.set_tensor(d["index"], np.clip(np.round(x[None] / scale + zp), -128, 127).astype(np.int8))
            it.invoke()
            res.append(it.get_tensor(o["index"]).copy())
        outs.append(np.concatenate(res))
    assert np.array_equal(outs[0], outs[1]) and len(np.unique(outs[0].argmax(-1))) > 1
    # TFLite Micro runs the shipped bytes in the arena measured on the converter's bytes.
    arena = next(x for x in m["models"] if x["role"] == "mcu")["arena"]["bytes"]
    micro, _ = tflm.run(shipped, data.x_test[:20], arena)
    assert np.array_equal(micro.argmax(-1), outs[0][:20].argmax(-1))


# Growth of the MCU image over the converter's bytes allowed beyond the 512 bytes of metadata: the
# flatbuffer is re-packed to add the entry, and the re-pack places every buffer's data on a 16-byte
# boundary afresh, so each buffer can cost up to 16 bytes more (length prefix shift plus padding) than
# in the converter's layout. Measured: 56 to 88 bytes on the digits and Fashion-MNIST int8 models.
def _repack_slack(content: bytes) -> int:
    from edgeopt.tflite import parse

    return 16 * len(parse(content).buffers)


def test_mcu_image_is_the_converter_bytes_plus_a_small_reference(first):
    """Issue #11.6: the C array is not the Android asset; it carries a few hundred bytes of reference
    instead of the full manifest, and both interpreters compute exactly what the converter's bytes do."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.runtimes import tflm

    tmp, m = first
    b = tmp / "dist" / "tiny"
    image = _c_array(b / "mcu/tiny_model.c")
    run = RunManifest.model_validate_json((tmp / "build" / "manifest.json").read_text())
    built = (tmp / "build" / run.artifacts[-1].path).read_bytes()
    asset = (b / "android/assets/tiny.tflite").read_bytes()

    ref_payload = metadata.read_all(image)[metadata.MANIFEST_REF_ENTRY]
    assert len(ref_payload) < 400 and len(image) - len(built) < 512  # what it is on this model
    assert len(image) <= len(built) + 512 + _repack_slack(built)  # what it may be on any model
    assert len(asset) - len(built) > 2 * (len(image) - len(built))  # the asset still has the full manifest
    assert metadata.read_manifest(image) is None and metadata.read_manifest(asset)["pipeline"] == "tiny"
    ref = metadata.read_manifest_ref(image)
    assert ref == {
        "schema": "edgeopt.manifest-ref/1",
        "bundle_schema": m["schema"],
        "pipeline": "tiny",
        "edgeopt": m["versions"]["edgeopt"],
        "config_sha256": m["config_sha256"],
        "sha256_before_embedding": sha256_bytes(built),
    }
    # the flatbuffer diet (on by default) cut the converter's metadata, which no runtime reads
    assert set(metadata.read_all(image)) == {metadata.MANIFEST_REF_ENTRY} != set(metadata.read_all(built))
    diet = next(x for x in m["models"] if x["role"] == "mcu")["diet"]
    assert diet["bytes_before"] == len(built) and diet["saved"] > 0 and diet["bytes_after"] < len(built)
    # ... and embedding the reference keeps what it saved (the diet's bytes plus the reference and its entry)
    assert diet["bytes_after"] < len(image) <= diet["bytes_after"] + len(ref_payload) + 128

    data = load_dataset("digits")
    x = data.x_test[:60]
    outs = []
    for content in (built, image):
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        d, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zp = d["quantization"]
        res = []
        for xi in x:
            it.set_tensor(d["index"], np.clip(np.round(xi[None] / scale + zp), -128, 127).astype(np.int8))
            it.invoke()
            res.append(it.get_tensor(o["index"]).copy())
        outs.append(np.concatenate(res))
    assert np.array_equal(outs[0], outs[1]) and len(np.unique(outs[0].argmax(-1))) > 1
    arena = next(x for x in m["models"] if x["role"] == "mcu")["arena"]["bytes"]
    micro_built, _ = tflm.run(built, x, arena)
    micro_image, _ = tflm.run(image, x, arena)
    assert np.array_equal(micro_built, micro_image)


def test_inspect_reads_any_tflite(first):
    tmp, m = first
    shipped = tmp / "dist/tiny/android/assets/tiny.tflite"
    r = CliRunner().invoke(app, ["inspect", str(shipped), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["sha256"] == m["models"][0]["sha256"] and out["bytes"] == shipped.stat().st_size
    assert out["edgeopt_manifest"] == metadata.read_manifest(shipped.read_bytes())
    assert out["macs"] == m["models"][0]["macs"] and out["params"] == m["models"][0]["params"]
    assert out["inputs"] == m["models"][0]["inputs"] and out["outputs"] == m["models"][0]["outputs"]
    # A .tflite edgeopt did not embed anything into: structure, the converter's metadata, no manifest.
    r = CliRunner().invoke(app, ["inspect", str(tmp / "build" / m["artifacts"][-1]["path"]), "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["edgeopt_manifest"] is None and "min_runtime_version" in out["metadata_entries"]
    r = CliRunner().invoke(app, ["inspect", str(tmp / "tiny.yaml")])
    assert r.exit_code == 2


# ---- reproducibility and the cache ---------------------------------------------------------------


def test_second_export_reuses_every_stage(first, copy, calls):
    src, m1 = first
    # The same pipeline file content (the teacher path is part of the config and so of the manifest).
    r = _export(_write_pipeline(copy, src / "teacher.keras"), copy / "dist2", copy / "build")
    assert r.exit_code == 0, r.output
    m2 = json.loads((copy / "dist2" / "manifest.json").read_text())
    assert calls == {"train": 0, "distill": 0, "prune": 0, "cluster": 0, "convert": 0, "validate": 0}
    assert all(s["reused"] for s in m2["stages"]) and m2["reused"] == [
        "00_baseline",
        "01_prune",
        "02_cluster",
        "03_convert",
        "04_validate",
    ]
    assert [x["sha256"] for x in m2["models"]] == [x["sha256"] for x in m1["models"]]
    assert (copy / "dist2/android/assets/tiny.tflite").read_bytes() == (
        src / "dist/tiny/android/assets/tiny.tflite"
    ).read_bytes()


def test_force_reruns_and_gives_identical_bytes(first, copy, calls):
    """Reproducible: every stage run again with the same config and seed gives the same .tflite bytes."""
    src, m1 = first
    r = _export(_write_pipeline(copy, src / "teacher.keras"), copy / "dist2", copy / "build", "--force")
    assert r.exit_code == 0, r.output
    m2 = json.loads((copy / "dist2" / "manifest.json").read_text())
    assert calls["prune"] == 1 and calls["cluster"] == 1 and calls["convert"] == 2  # baseline + int8
    assert not any(s["reused"] for s in m2["stages"][1:]) and m2["reused"] == []
    assert [x["sha256"] for x in m2["models"]] == [x["sha256"] for x in m1["models"]]
    for f in ("android/assets/tiny.tflite", "mcu/tiny_model.c", "mcu/tiny_model.h"):
        assert (copy / "dist2" / f).read_bytes() == (src / "dist/tiny" / f).read_bytes(), f


def test_changing_only_convert_does_not_retrain(copy, calls):
    p = _write_pipeline(copy, copy / "teacher.keras", convert={"calibration_samples": 50})
    r = CliRunner().invoke(
        app, ["export", str(p), "--out", str(copy / "dist" / "tiny"), "--build", str(copy / "build")]
    )
    assert r.exit_code == 0, r.output
    assert "reused" in r.output and "01_prune" in r.output
    m = json.loads((copy / "dist" / "tiny" / "manifest.json").read_text())
    assert calls["prune"] == 0 and calls["cluster"] == 0 and calls["train"] == 0
    assert calls["convert"] == 1 and calls["validate"] >= 1
    reused = {s["name"]: s["reused"] for s in m["stages"]}
    assert reused == {
        "teacher": True,
        "baseline": True,
        "prune": True,
        "cluster": True,
        "convert": False,
        "validate": False,
    }
    assert m["config"]["steps"][2]["calibration_samples"] == 50


# ---- atomicity and gates -----------------------------------------------------------------------------


def test_export_interrupted_in_a_stage_keeps_previous_bundle(copy, monkeypatch):
    before = _bundle_state(copy / "dist" / "tiny")

    def boom(*a, **k):
        raise RuntimeError("interrupted mid-way")

    monkeypatch.setattr(stages, "convert", boom)
    p = _write_pipeline(copy, copy / "teacher.keras", convert={"calibration_samples": 60})
    r = _export(p, copy / "dist" / "tiny", copy / "build")
    assert r.exit_code == 3 and "interrupted mid-way" in r.output
    assert _bundle_state(copy / "dist" / "tiny") == before
    assert sorted(x.name for x in (copy / "dist").iterdir()) == ["tiny"]  # no temp folder, no .failed


def test_export_interrupted_while_writing_the_bundle_keeps_previous_bundle(copy, monkeypatch):
    from edgeopt import htmlreport

    before = _bundle_state(copy / "dist" / "tiny")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(htmlreport, "html_report", boom)
    r = _export(_write_pipeline(copy, copy / "teacher.keras"), copy / "dist" / "tiny", copy / "build")
    assert r.exit_code == 130
    assert _bundle_state(copy / "dist" / "tiny") == before
    assert sorted(x.name for x in (copy / "dist").iterdir()) == ["tiny"]


def test_failed_gate_exits_1_and_writes_failed_bundle(copy, calls):
    before = _bundle_state(copy / "dist" / "tiny")
    p = _write_pipeline(copy, copy / "teacher.keras", validate={"min_accuracy": 0.9999})
    r = _export(p, copy / "dist" / "tiny", copy / "build")
    assert r.exit_code == 1 and "min_accuracy" in r.output and "tiny.failed" in r.output
    assert calls["prune"] == calls["cluster"] == calls["convert"] == 0  # only validation ran again
    assert _bundle_state(copy / "dist" / "tiny") == before  # the good bundle is untouched
    failed = copy / "dist" / "tiny.failed"
    m = json.loads((failed / "manifest.json").read_text())
    assert m["status"] == "failed" and m["validation"]["passed"] is False and m["validation"]["failed_gates"]
    assert "<failure" in (failed / "junit.xml").read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", (failed / "report.html").read_text(), re.S)
    gate_row = next(r for r in rows if "<td>min_accuracy</td>" in r)
    assert "<td class='failed'>failed</td>" in gate_row
    assert "FAILED" in (failed / "model_card.md").read_text()
    # Fixed again: the next good export replaces the bundle and clears the stale failure.
    r = _export(_write_pipeline(copy, copy / "teacher.keras"), copy / "dist" / "tiny", copy / "build")
    assert r.exit_code == 0, r.output
    assert not failed.exists()
