"""The release bundle: ``export(config)`` runs a pipeline and writes ``dist/<name>/``.

    dist/<pipeline>/
      android/assets/<name>.tflite        the shipped model, edgeopt manifest embedded as metadata
      android/assets/<name>.labels.txt    class names, one a line
      android/README.md                   the Gradle lines the app needs
      mcu/<name>_model.h, mcu/<name>_model.c   the int8 model as a C array (converter bytes plus a
                                          manifest reference), sha256, arena size, scales
      manifest.json                       everything (``edgeopt.manifest.BundleManifest``)
      model_card.md, report.html, junit.xml

Modules: ``bundle`` (orchestration, atomic swap, ``.failed`` bundles, files list, manifest last),
``android``, ``mcu`` (C sources, arena) and ``embedded`` (what goes inside the .tflite bytes).
"""

from __future__ import annotations

from edgeopt.export.android import android_readme
from edgeopt.export.bundle import HASHES, ExportResult, export, write_bundle
from edgeopt.export.embedded import config_sha256, embedded_manifest, manifest_ref, strip
from edgeopt.export.mcu import c_float, c_identifier, mcu_sources
from edgeopt.manifest import BUNDLE_SCHEMA, EMBEDDED_SCHEMA

__all__ = [
    "BUNDLE_SCHEMA",
    "EMBEDDED_SCHEMA",
    "HASHES",
    "ExportResult",
    "android_readme",
    "c_float",
    "c_identifier",
    "config_sha256",
    "embedded_manifest",
    "export",
    "manifest_ref",
    "mcu_sources",
    "strip",
    "write_bundle",
]
