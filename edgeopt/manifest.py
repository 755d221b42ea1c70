"""The manifests edgeopt writes, as typed records.

- ``RunManifest``: ``build/<pipeline>/manifest.json``, written by ``edgeopt.pipeline.run``.
- ``BundleManifest``: ``dist/<pipeline>/manifest.json``, written by ``edgeopt.export``.
- ``EmbeddedManifest``: the ``edgeopt_manifest`` metadata entry inside the Android ``.tflite``.
- ``ManifestRef``: the ``edgeopt_manifest_ref`` entry inside the MCU image (a few hundred bytes).

They share sub-records: ``Versions``, ``DataInfo``, ``StageRecord``, ``ArtifactRecord``,
``BaselineRecord``, ``ModelRecord``, ``FileRecord`` and ``ValidationSummary``.

The JSON is the contract: field names and order are those of the files written before these types
existed, so ``RunManifest.model_validate(old).model_dump(mode="json") == old``. Keys a record does
not know are kept and written back (``extra="allow"``): a manifest written by a newer edgeopt still
reads. Validation results (gates, latency, per-artifact validation metrics) and stage metrics stay
plain JSON dicts, as ``ValidationResult.to_dict()`` and the stages make them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from edgeopt.config import INTEGER_QUANTIZATIONS

RUN_SCHEMA = "edgeopt.manifest/1"
BUNDLE_SCHEMA = "edgeopt.bundle/1"
EMBEDDED_SCHEMA = "edgeopt.embedded-manifest/1"
REF_SCHEMA = "edgeopt.manifest-ref/1"

JSON = dict[str, Any]

# The name of the run's first stage record: the model the pipeline starts from (not a registered stage).
TEACHER = "teacher"


class Record(BaseModel):
    """Base of every manifest record: unknown keys are kept, JSON keys are the aliases, and the fields
    in ``omit_if_none`` are left out of the JSON when they are None (keys older files only have sometimes)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if not isinstance(out, dict):
            return out
        aliases = {n: f.alias for n, f in type(self).model_fields.items() if f.alias}
        drop = {aliases.get(n, n) for n in self.omit_if_none} | self.omit_if_none
        # Rebuilt in order, so the renamed keys keep their place.
        return {aliases.get(k, k): v for k, v in out.items() if not (k in drop and v is None)}

    def to_json(self) -> JSON:
        """The record as the JSON dict written to disk."""
        return self.model_dump(mode="json")


class Versions(Record):
    """Versions of the packages that decide the output bytes (PyPI names as JSON keys)."""

    edgeopt: str
    tensorflow: str
    tf_keras: str = Field(alias="tf-keras")
    tfmot: str = Field(alias="tensorflow-model-optimization")
    ai_edge_litert: str = Field(alias="ai-edge-litert")


class DataInfo(Record):
    """The dataset a run trained and evaluated on (``Dataset.summary()`` plus the class names)."""

    name: str
    source: str
    seed: int
    input_shape: list[int]
    classes: int
    train: int
    val: int
    test: int
    class_names: list[str] = Field(default_factory=list)


class TensorRecord(Record):
    """An input or output of a .tflite; ``real = scale * (q - zero_point)`` for integer tensors."""

    name: str
    dtype: str
    shape: list[int]
    scale: float
    zero_point: int


class HostInfo(Record):
    """The host latencies were measured on (``edgeopt.hostinfo.host()``): the ISA flags decide which
    kernels XNNPACK runs, so host figures compare only between hosts with the same fingerprint."""

    cpu: str
    machine: str
    isa: list[str] = Field(default_factory=list)
    cpus: int | None = None
    vnni: bool
    fingerprint: str


class GuardVerdict(Record):
    """The stage guard's verdict on a training step (``edgeopt.pipeline.guard``): validation top-1 before
    and after, the examples lost and gained (McNemar's test), and what the run did about it."""

    policy: str  # keep_best, fail or continue
    tolerance_points: float
    val_accuracy_before: float
    val_accuracy_after: float
    drop_points: float
    examples_lost: int
    examples_gained: int
    detectable_points: float | None = None  # the smallest drop these examples could tell from chance
    regressed: bool
    action: str  # "none", "kept the input", "failed" or "continued"
    detail: str


class StageRecord(Record):
    """One stage of a run (the teacher first). ``seconds`` is how long it took when it ran, in an
    earlier run when ``reused``; ``content_sha256`` (the teacher only) hashes its layers and weights;
    ``val_accuracy`` (model-making steps) is top-1 on the validation split, ``guard`` the stage guard's
    verdict. A validation step's ``metrics`` hold ``artifacts`` (file name -> validation result) and the
    ``failed``, ``not_evaluated`` and ``crashed`` gate lists."""

    omit_if_none = frozenset({"content_sha256", "val_accuracy", "guard"})

    name: str
    output: str
    sha256: str
    content_sha256: str | None = None
    seconds: float
    reused: bool
    metrics: JSON = Field(default_factory=dict)
    val_accuracy: float | None = None
    guard: GuardVerdict | None = None

    @property
    def is_validation(self) -> bool:
        """A validation step: its metrics are validation results, not a model's figures."""
        return is_validation(self.metrics)

    @property
    def validation_results(self) -> dict[str, JSON]:
        """File name -> validation result (``ValidationResult.to_dict()``) when this is a validation step."""
        return self.metrics["artifacts"] if self.is_validation else {}


class BaselineRecord(Record):
    """The teacher converted to a reference .tflite (float32 by default)."""

    path: str
    quantization: str
    bytes: int
    gzip_bytes: int
    sha256: str
    accuracy: float | None = None
    latency: JSON = Field(default_factory=dict)  # thread count -> LiteRT latency summary (no raw times)


class ArtifactRecord(Record):
    """A .tflite a convert step made, with what validation measured; the ``*_vs_baseline`` figures
    exist when the run has a baseline (and, for the speed-up, host latencies of both)."""

    omit_if_none = frozenset(
        {"gzip_ratio_vs_baseline", "speedup_vs_baseline_p50_1thread", "accuracy_drop_vs_baseline", "firmware"}
    )

    path: str
    quantization: str
    sha256: str
    bytes: int
    gzip_bytes: int
    accuracy: float | None = None
    latency: JSON = Field(default_factory=dict)
    gates: list[JSON] = Field(default_factory=list)
    source_stage: str
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    ops: dict[str, int]  # op name -> count
    gzip_ratio_vs_baseline: float | None = None
    speedup_vs_baseline_p50_1thread: float | None = None
    accuracy_drop_vs_baseline: float | None = None  # baseline top-1 minus this one's (a fraction, not points)
    firmware: dict[str, FirmwareRecord] | None = None  # profile -> the firmware check (profiles with firmware:)

    @property
    def name(self) -> str:
        """The file name, which keys this artifact's validation results."""
        return self.path.rsplit("/", 1)[-1]


class RunManifest(Record):
    """``build/<pipeline>/manifest.json``: every stage, every artifact, and whether the gates passed.

    ``strict`` (a not-evaluated gate fails the run), ``not_evaluated`` and ``host`` are absent from
    manifests written before they existed, and stay absent when such a manifest is written back."""

    omit_if_none = frozenset({"strict", "not_evaluated", "host"})

    schema_: str = Field(RUN_SCHEMA, alias="schema")
    pipeline: str
    seed: int
    versions: Versions
    data: DataInfo
    config: JSON  # the resolved pipeline config (PipelineConfig.model_dump(mode="json"))
    baseline: BaselineRecord | None = None
    stages: list[StageRecord]
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    seconds: float
    reused: list[str] = Field(default_factory=list)  # stage folders taken from the cache
    passed: bool
    strict: bool | None = None
    failed_gates: list[str] = Field(default_factory=list)
    not_evaluated: list[str] | None = None  # gates that could not be judged, e.g. without a calibration
    crashed: list[str] = Field(default_factory=list)
    host: HostInfo | None = None

    @property
    def teacher(self) -> StageRecord:
        return self.stages[0]

    def validations(self) -> dict[str, JSON]:
        """Validation results per artifact file name (``ValidationResult.to_dict()``), from the last
        validation step that saw it."""
        return validations(self.stages)

    def shipped(self) -> tuple[ArtifactRecord | None, ArtifactRecord | None]:
        """(the model a release ships, the model for microcontrollers); see ``shipped``."""
        return shipped(self.artifacts)

    def stage_accuracy(self, folder: str) -> float | None:
        """Keras top-1 (test split) of the model a stage folder (e.g. ``04_qat``) or ``teacher`` produced."""
        for s in self.stages:
            if s.output.split("/", 1)[0] == folder or (folder == TEACHER and s.name == TEACHER):
                acc = s.metrics.get("accuracy")
                return float(acc) if isinstance(acc, int | float) else None
        return None


def is_validation(metrics: JSON) -> bool:
    """Whether a stage's metrics are a validation step's: ``artifacts`` (file name -> result) and ``failed``."""
    return isinstance(metrics.get("artifacts"), dict) and "failed" in metrics


def validations(stages: list[StageRecord]) -> dict[str, JSON]:
    """Validation results per artifact file name, from the last validation step that saw it."""
    out: dict[str, JSON] = {}
    for s in stages:
        out.update(s.validation_results)
    return out


def shipped(artifacts: list[ArtifactRecord]) -> tuple[ArtifactRecord | None, ArtifactRecord | None]:
    """The one rule for which artifact ships (bundle, bench and search alike): (the model a release ships,
    the model for microcontrollers). Both are the last artifact that computes in integers
    (``INTEGER_QUANTIZATIONS``: int8, or int4 weights with int8 activations); without one, the release
    ships the last artifact and microcontrollers get none."""
    integer = [a for a in artifacts if a.quantization in INTEGER_QUANTIZATIONS]
    mcu = integer[-1] if integer else None
    return (mcu or (artifacts[-1] if artifacts else None)), mcu


# ---- the bundle --------------------------------------------------------------------------------------


class SourceModel(Record):
    path: str
    sha256: str
    content_sha256: str | None = None


class ArenaRecord(Record):
    """The TFLite Micro tensor arena; ``bytes`` is None when it could not be measured (``method`` says why)."""

    bytes: int | None
    method: str


class DietRecord(Record):
    """The flatbuffer diet of the MCU image (edgeopt.tflite_diet): the converter's bytes before, the
    image's bytes before its reference entry was added, and what each cut saved."""

    bytes_before: int
    bytes_after: int
    saved: int
    cuts: list[str]
    saved_by_cut: dict[str, int]
    metadata_removed: list[str] = Field(default_factory=list)
    sha256_after: str  # the dieted bytes (the image minus the edgeopt_manifest_ref entry)


class ModelRecord(Record):
    """A model file shipped in the bundle. ``sha256`` and ``bytes`` are those of the shipped bytes (the
    Android asset, or the MCU C array's content); ``*_before_embedding`` those of the converter's file."""

    omit_if_none = frozenset({"arena", "metadata_entry", "firmware", "diet"})

    path: str
    role: str  # "android" or "mcu"
    build_artifact: str
    quantization: str
    sha256: str
    sha256_before_embedding: str
    bytes: int
    gzip_bytes: int
    bytes_before_embedding: int
    accuracy: float | None = None
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    ops: list[str]  # in graph order
    op_counts: dict[str, int]
    custom_ops: list[str] = Field(default_factory=list)
    macs: int
    params: int
    validation: dict[str, list[JSON]] = Field(default_factory=dict)  # profile -> its gates
    arena: ArenaRecord | None = None  # MCU only
    metadata_entry: str | None = None  # the edgeopt metadata entry in these bytes
    firmware: dict[str, FirmwareRecord] | None = None  # MCU only: profile -> the firmware check (firmware: profiles)
    diet: DietRecord | None = None  # MCU only: the flatbuffer diet applied before the entry was added


class FileRecord(Record):
    path: str  # relative to the bundle folder
    sha256: str
    bytes: int


class ValidationSummary(Record):
    omit_if_none = frozenset({"strict", "not_evaluated"})

    passed: bool
    strict: bool | None = None
    failed_gates: list[str] = Field(default_factory=list)
    not_evaluated: list[str] | None = None
    crashed: list[str] = Field(default_factory=list)
    per_profile: dict[str, dict[str, list[JSON]]] = Field(default_factory=dict)  # bundle path -> profile -> gates


class BundleStatus(StrEnum):
    passed = "passed"
    failed = "failed"


class BundleManifest(Record):
    """``dist/<pipeline>/manifest.json``: the run manifest's facts plus the shipped models and every file."""

    omit_if_none = frozenset({"host"})

    schema_: str = Field(BUNDLE_SCHEMA, alias="schema")
    status: BundleStatus
    pipeline: str
    seed: int
    versions: Versions
    config: JSON
    config_sha256: str
    source_model: SourceModel
    data: DataInfo
    hashes: dict[str, str]  # which sha256 is of which bytes
    models: list[ModelRecord]
    baseline: BaselineRecord | None = None
    artifacts: list[ArtifactRecord]
    stages: list[StageRecord]
    reused: list[str] = Field(default_factory=list)
    validation: ValidationSummary
    build_dir: str
    pipeline_seconds: float
    host: HostInfo | None = None  # where the host latencies were measured
    files: list[FileRecord] = Field(default_factory=list)  # every bundle file but manifest.json

    @property
    def passed(self) -> bool:
        return self.status == BundleStatus.passed

    def model(self, role: str) -> ModelRecord | None:
        return next((m for m in self.models if m.role == role), None)


# ---- inside the .tflite files ------------------------------------------------------------------------


class EmbeddedModel(Record):
    quantization: str
    source_stage: str
    sha256_before_embedding: str
    bytes_before_embedding: int
    accuracy: float | None = None
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    ops: dict[str, int]


class EmbeddedStage(Record):
    name: str
    metrics: JSON


class EmbeddedManifest(Record):
    """The ``edgeopt_manifest`` entry of the Android asset: deterministic for the same config, seed and
    inputs (no timings, no validation results), so the same run gives the same bytes."""

    schema_: str = Field(EMBEDDED_SCHEMA, alias="schema")
    pipeline: str
    seed: int
    versions: Versions
    config: JSON
    config_sha256: str
    source_model: JSON  # path and content_sha256 of the teacher
    data: DataInfo
    labels: list[str]
    model: EmbeddedModel
    stages: list[EmbeddedStage]
    note: str


class ManifestRef(Record):
    """The ``edgeopt_manifest_ref`` entry of the MCU image: enough to find the bundle manifest it belongs
    to and to check the image against it, in a few hundred bytes of flash."""

    schema_: str = Field(REF_SCHEMA, alias="schema")
    bundle_schema: str = BUNDLE_SCHEMA
    pipeline: str
    edgeopt: str  # the edgeopt version
    config_sha256: str
    sha256_before_embedding: str  # the converter's bytes (the image minus this entry, before the diet)


# ---- the firmware check (edgeopt.firmware) -----------------------------------------------------------

FIRMWARE_SCHEMA = "edgeopt.firmware/1"


class FirmwareFootprint(Record):
    """Flash and RAM of the firmware the check built. Flash is every section stored in flash (code,
    constants, ``.data``'s initial values) less the check's test inputs; ``flash_parts`` splits it (the
    model's C array, TFLite Micro, its kernels, CMSIS-NN, the C/C++ runtime, startup and main, padding).
    RAM: ``.data`` + ``.bss`` (the arena included) + the stack's high-water mark + the heap newlib took."""

    flash_bytes: int
    flash_parts: dict[str, int]
    test_inputs_bytes: int  # only in the check's build, not on the device
    ram_bytes: int
    arena_bytes: int  # the static arena the firmware was built with
    arena_used_bytes: int  # MicroInterpreter::arena_used_bytes() after AllocateTensors
    stack_bytes: int  # high-water mark (painted stack)
    stack_reserved_bytes: int
    bss_bytes: int  # .bss less the arena
    data_bytes: int
    heap_bytes: int
    sections: dict[str, int]  # the ELF's sections (arm-none-eabi-size -A) the figures come from


class FirmwareLatency(Record):
    """Latency of one Invoke() on a profile's core and clock: ``ms`` estimated from the instructions QEMU
    counted (``method`` and ``source`` say how), ``macs_ms`` by the MAC model (edgeopt.mcu_latency), and
    ``used``, the one the latency gate takes for this core (the better on published results)."""

    profile: str
    core: str
    clock_hz: float
    ms: float
    cycles_per_instruction: float
    macs_ms: float
    used: str  # "instructions" or "macs"
    method: str
    source: str

    @property
    def gate_ms(self) -> float:
        return self.ms if self.used == "instructions" else self.macs_ms


class FirmwareEnergy(Record):
    """Energy of one inference on a board with published MLPerf Tiny energy: the board's average power
    while inferring times the latency estimate. An estimate, with its source."""

    profile: str
    microjoules: float
    milliwatts: float
    method: str
    source: str


class FirmwareRecord(Record):
    """One run of the firmware check: the model built into TFLite Micro firmware for a Cortex-M core,
    run in QEMU on N inputs, its outputs compared byte for byte with TFLite Micro's Python interpreter."""

    omit_if_none = frozenset({"first_difference", "footprint", "instructions"})

    schema_: str = Field(FIRMWARE_SCHEMA, alias="schema")
    passed: bool
    failures: list[str] = Field(default_factory=list)
    model: str  # what was checked (bundle or .tflite path)
    model_sha256: str  # of the C array's bytes
    reference: str  # the bytes TFLite Micro's Python interpreter ran, and why those
    cpu: str
    board: str
    kernels: str
    op_counts: dict[str, int] = Field(default_factory=dict)
    kernel_sources: list[str] = Field(default_factory=list)
    inputs: int
    inputs_source: str
    bit_exact: bool
    differences: int = 0  # output bytes that differ, over all inputs
    first_difference: str | None = None
    instructions: JSON | None = None  # min, median, max per Invoke(), and how they were counted
    footprint: FirmwareFootprint | None = None
    latency: list[FirmwareLatency] = Field(default_factory=list)
    energy: list[FirmwareEnergy] = Field(default_factory=list)
    tflm_src: str
    tflm_fingerprint: str
    toolchain: str
    qemu: str
    build_seconds: float
    compiled_sources: int  # 0: the library came from the cache
    run_seconds: float


ArtifactRecord.model_rebuild()
RunManifest.model_rebuild()
ModelRecord.model_rebuild()
BundleManifest.model_rebuild()
