"""Validated configuration: one pydantic model per stage, the pipeline file, str enums.

A wrong value fails at load time with the file (or flag), the key and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)


class Schedule(StrEnum):
    polynomial = "polynomial"
    constant = "constant"


class ClusterInit(StrEnum):
    kmeans_plus_plus = "kmeans++"
    linear = "linear"
    density = "density"
    random = "random"


class Quantization(StrEnum):
    float32 = "float32"
    dynamic = "dynamic"
    float16 = "float16"
    int8 = "int8"
    int16x8 = "int16x8"
    # through litert-quantizer (ai-edge-quantizer's successor) on the float32 .tflite (edgeopt.stages.aeq)
    weight_int8 = "weight-int8"  # int8 weights dequantized to float: smaller file, float compute
    int8_aeq = "int8-aeq"  # static int8 weights and activations, AEQ's calibration
    int4 = "int4"  # int4 weights (conv per channel, dense per tensor: TFLite Micro runs it), int8 activations


# Quantizations whose model computes in integers only (int8 activations; int8 or int4 weights): what a
# microcontroller runs and what a release ships when the pipeline makes one.
INTEGER_QUANTIZATIONS = frozenset({Quantization.int8, Quantization.int4, Quantization.int8_aeq})


class RangeEstimator(StrEnum):
    """How int8 activation ranges are set from the calibration images (edgeopt.quant.ranges)."""

    minmax = "minmax"  # the converter's own: smallest and largest value seen
    percentile = "percentile"  # [P(100 - p), P(p)] of the values
    mse = "mse"  # the range with the least 8-bit quantization error on the values


class WeightAlgorithm(StrEnum):
    """How litert-quantizer picks weight scales (edgeopt.stages.aeq): its algorithm keys."""

    min_max = "min_max"
    mse = "mse"  # the clipping with the least squared error, conv, depthwise and fully connected weights
    octav = "octav"  # optimal clipping (OCTAV) of conv, depthwise and fully connected weights
    gptq = "gptq"  # fully connected weights (Hessian-aware rounding); others min/max; weight-int8 only


class IOType(StrEnum):
    int8 = "int8"
    uint8 = "uint8"
    int16 = "int16"
    float32 = "float32"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Fields left out of the JSON while they hold their default: options added after releases recorded
    # their resolved config (and its hash), so an existing pipeline keeps the same config and bytes.
    omit_if_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for name in self.omit_if_default:
                if name in out and getattr(self, name) == type(self).model_fields[name].default:
                    del out[name]
        return out


class DataConfig(_Config):
    """A named dataset: ``fashion_mnist``, ``digits``, ``npz:PATH`` or ``image_dir:PATH``."""

    omit_if_default = frozenset({"val_fold"})

    name: str = Field("fashion_mnist", description="fashion_mnist, digits, npz:PATH or image_dir:PATH")
    seed: int = Field(0, description="seed for splits, initialisation and shuffling")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_train: int | None = Field(None, ge=1, description="use at most this many training examples")
    max_test: int | None = Field(None, ge=1, description="use at most this many test examples")
    val_fold: int = Field(
        0,
        ge=0,
        description="which block of val_fraction of the shuffled training data is the validation split: 0 the "
        "first (the usual split), 1 the next, ... (k-fold: a search re-measures its best candidates on other folds)",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v in ("fashion_mnist", "digits") or re.match(r"^(npz|image_dir):.+", v):
            return v
        raise ValueError(f"unknown dataset {v!r}; allowed: fashion_mnist, digits, npz:PATH, image_dir:PATH")


class LRSchedule(StrEnum):
    constant = "constant"
    cosine = "cosine"


class _Training(_Config):
    omit_if_default = frozenset({"min_steps", "lr_batch_size"})

    epochs: int = Field(2, ge=0, description="training epochs")
    batch_size: int = Field(128, ge=1, description="batch size")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: LRSchedule = Field(LRSchedule.constant, description="cosine: decay to 0 over all steps")
    min_steps: int = Field(
        0,
        ge=0,
        description="train for at least this many optimizer steps: more epochs when the data is small "
        "(0: the epochs as given)",
    )
    lr_batch_size: int = Field(
        128,
        ge=1,
        description="the batch size learning_rate is meant for: at another batch_size the rate scales by the "
        "square root of the ratio (Adam's scaling rule)",
    )


class KDConfig(_Config):
    """Knowledge distillation from the teacher while a stage fine-tunes (the distill stage's loss)."""

    temperature: float = Field(4.0, gt=0, description="softmax temperature T")
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the hard-label loss")


class _FineTuning(_Training):
    omit_if_default = _Training.omit_if_default | {"freeze_batchnorm"}

    freeze_batchnorm: bool = Field(
        True,
        description="keep BatchNormalization layers as trained (their statistics and scale) while fine-tuning: "
        "fine-tuning moves the other weights only, so the model does not drift with the last batches' statistics",
    )
    kd: KDConfig | None = Field(
        None,
        description="fine-tune against the teacher's softened outputs (temperature, alpha) instead of the "
        "labels alone; needs the teacher (a pipeline has it; the CLI takes --teacher)",
    )


class TrainConfig(_Training):
    zoo: str = Field("fashion_cnn", description="zoo model name (edgeopt.zoo)")
    epochs: int = Field(12, ge=1)


class PruneConfig(_FineTuning):
    omit_if_default = _FineTuning.omit_if_default | {"depthwise", "min_inputs"}

    final_sparsity: float = Field(0.8, ge=0.0, lt=1.0, description="fraction of kernel weights set to zero")
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="sparsity at the begin step")
    schedule: Schedule = Field(Schedule.polynomial, description="polynomial (decay) or constant")
    begin_step: int = Field(0, ge=0, description="first pruning step")
    end_step: int | None = Field(None, ge=1, description="last pruning step (default: 3/4 of training)")
    frequency: int = Field(
        100, ge=1, description="steps between mask updates, lowered when not given so at least 10 happen"
    )
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(5e-4, gt=0)
    m_by_n: str | None = Field(None, description="structured sparsity, e.g. 2:4")
    block: int = Field(
        1,
        ge=1,
        le=64,
        description="Dense kernels lose weights in runs of this many consecutive inputs of one unit (contiguous "
        "in the .tflite, so gzip sees runs of zeros); 1: weight by weight. Conv kernels stay weight by weight",
    )
    skip_layers: list[str] = Field(default_factory=list, description="leave this layer alone (repeatable)")
    dense_share: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="leave dense the smallest prunable layers that together hold at most this share of the "
        "model's prunable kernel weights (names not needed, so it transfers to any model)",
    )
    depthwise: bool = Field(False, description="prune DepthwiseConv2D kernels too (tfmot leaves them dense on its own)")
    min_inputs: int = Field(
        0,
        ge=0,
        description="every output unit (neuron or filter) keeps at least this many of its inputs: a layer with "
        "few inputs per unit is pruned less than final_sparsity, one with fewer than this not at all (0: no floor)",
    )

    @field_validator("m_by_n")
    @classmethod
    def _mn(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"(\d+):(\d+)", v)
        if not m or not 0 < int(m[1]) < int(m[2]):
            raise ValueError(f"expected M:N with 0 < M < N, like 2:4 (got {v!r})")
        return v

    @model_validator(mode="after")
    def _order(self) -> PruneConfig:
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity ({self.initial_sparsity}) must not exceed final_sparsity ({self.final_sparsity})"
            )
        if self.block > 1 and self.m_by_n:
            raise ValueError(f"block ({self.block}) and m_by_n ({self.m_by_n}) are two sparsity patterns; give one")
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must be after begin_step ({self.begin_step})")
        return self


class ClusterConfig(_FineTuning):
    omit_if_default = _FineTuning.omit_if_default | {"depthwise"}

    clusters: int = Field(16, ge=2, description="distinct values per kernel")
    init: ClusterInit = Field(ClusterInit.kmeans_plus_plus, description="centroid initialisation")
    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(1e-4, gt=0)
    preserve_sparsity: bool | None = Field(None, description="default: on when the input model is sparse")
    skip_layers: list[str] = Field(default_factory=list, description="leave this layer alone (repeatable)")
    dense_share: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="leave unclustered the smallest clusterable layers that together hold at most this share "
        "of the model's clusterable kernel weights",
    )
    depthwise: bool = Field(
        False, description="cluster DepthwiseConv2D kernels too (tfmot leaves them as they are on its own)"
    )


class DistillConfig(_Training):
    omit_if_default = _Training.omit_if_default | {"min_steps_per_layer"}

    student: str | None = Field(None, description="a zoo model name")
    student_file: Path | None = Field(None, description="student architecture from a model file")
    width: float | None = Field(
        None, gt=0.0, le=1.0, description="student = teacher with this fraction of filters/units"
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature T")
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the hard-label loss")
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="rate of every Dropout layer of the student (default: as built; a smaller student "
        "often fits better with less)",
    )
    epochs: int = Field(10, ge=1)
    min_steps_per_layer: int = Field(
        0,
        ge=0,
        description="train for at least this many optimizer steps per weight layer on the student's deepest "
        "path, when that is more than min_steps: a deeper student needs more steps (0: min_steps alone)",
    )
    compare_scratch: bool = Field(False, description="also train the student without the teacher")
    hint_layer: str | None = Field(
        None,
        description="feature distillation (FitNets): a teacher layer whose output the student also learns to "
        "predict, through a 1x1 convolution or Dense regressor that is dropped afterwards",
    )
    student_hint_layer: str | None = Field(
        None, description="the student layer that predicts the hint (default: the layer named like hint_layer)"
    )
    hint_weight: float = Field(1.0, gt=0, description="weight of the hint loss (mean squared error) in the total")

    @model_validator(mode="after")
    def _hint(self) -> DistillConfig:
        if self.student_hint_layer is not None and self.hint_layer is None:
            raise ValueError("student_hint_layer needs hint_layer (the teacher layer to predict)")
        return self

    @model_validator(mode="after")
    def _one_student(self) -> DistillConfig:
        given = [k for k in ("student", "student_file", "width") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of student (zoo name), student_file or width"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class QATPreserve(StrEnum):
    auto = "auto"
    cluster = "cluster"
    sparsity = "sparsity"
    none = "none"


class WeightFormat(StrEnum):
    """The kernels QAT trains for (edgeopt.quant.lowbit): int8, or stored as int4 in the .tflite."""

    int8 = "int8"
    int4 = "int4"  # 15 levels, per channel in Conv2D, per tensor in Dense (what TFLite Micro runs)
    ternary = "ternary"  # {-a, 0, a}
    binary = "binary"  # {-a, a}


class QATConfig(_FineTuning):
    epochs: int = Field(1, ge=1)
    learning_rate: float = Field(1e-5, gt=0)
    preserve: QATPreserve = Field(QATPreserve.auto, description="what QAT keeps; auto: clusters, else zeros")
    calibrate_ranges: bool = Field(
        True,
        description="start the activation quantizers at the ranges of calibration data (as post-training "
        "quantization does) instead of [-6, 6], from where 0.1% a step moves them too slowly on small data",
    )

    weights: WeightFormat = Field(
        WeightFormat.int8,
        description="kernel format to train for: int8, or int4, ternary, binary (stored as int4 in the .tflite; "
        "Conv2D per channel, Dense per tensor, depthwise kernels stay int8)",
    )
    int8_share: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="with low-bit weights: keep int8 kernels in the smallest Conv2D/Dense layers that together "
        "hold at most this share of their kernel weights (the first conv and the classifier, usually)",
    )

    @model_validator(mode="after")
    def _low_bit(self) -> QATConfig:
        if self.weights is not WeightFormat.int8 and self.preserve in (QATPreserve.cluster, QATPreserve.sparsity):
            raise ValueError(f"weights {self.weights.value} cannot preserve {self.preserve.value}: use auto or none")
        return self


class ConvertConfig(_Config):
    quantization: Quantization = Field(Quantization.int8, description="post-training quantization")
    calibration_samples: int = Field(200, ge=1, description="representative examples for calibration")
    io_type: IOType | None = Field(None, description="default: int8 for int8, int16 for int16x8, else float32")
    allow_float_fallback: bool = Field(False, description="keep ops that cannot be quantized in float")
    # Post-training methods on the Keras model before conversion (edgeopt.quant); int8 and int16x8.
    equalize: bool = Field(
        False, description="cross-layer equalisation (Nagel et al. 2019) of the Keras model before conversion"
    )
    equalize_relu6: bool = Field(
        False,
        description="equalise across ReLU6 too, replacing those ReLU6 by ReLU (changes the float model where an "
        "activation exceeded 6; the metrics say how often)",
    )
    bias_correction: bool = Field(
        False, description="correct each layer's bias for the mean output shift of its int8 weights (empirical)"
    )
    adaround: bool = Field(False, description="AdaRound (Nagel et al. 2020): round each int8 weight up or down by "
                           "layer output error on the calibration images, not to nearest")  # fmt: skip
    adaround_iterations: int = Field(1000, ge=1, description="AdaRound optimisation steps per layer")
    activation_ranges: RangeEstimator = Field(
        RangeEstimator.minmax, description="int8 activation ranges: minmax (the converter's), percentile or mse"
    )
    percentile: float = Field(99.99, gt=50.0, le=100.0, description="the percentile of activation_ranges: percentile")
    shared_codebook: bool = Field(
        True,
        description="int8: every output channel of a clustered kernel on one integer codebook (its channel scales "
        "re-fit, biases re-scaled), so that gzip sees the clusters; off: the converter's per-channel grids",
    )
    weight_algorithm: WeightAlgorithm = Field(
        WeightAlgorithm.min_max,
        description="litert-quantizer's weight algorithm for weight-int8, int8-aeq and int4: min_max, mse, octav, "
        "gptq (each on the ops it supports, min/max on the others)",
    )

    @property
    def keras_methods(self) -> list[str]:
        """The post-training methods that rewrite the Keras model before conversion, in the order they run."""
        return [m for m in ("equalize", "adaround", "bias_correction") if getattr(self, m)]

    @model_validator(mode="after")
    def _methods(self) -> ConvertConfig:
        q = self.quantization
        if self.keras_methods and q not in (Quantization.int8, Quantization.int16x8):
            if self.keras_methods != ["equalize"] or q not in (Quantization.int8_aeq, Quantization.int4):
                raise ValueError(
                    f"{', '.join(self.keras_methods)}: post-training methods for int8 or int16x8 (equalize also for "
                    f"int8-aeq and int4), not {q.value}"
                )
        if self.equalize_relu6 and not self.equalize:
            raise ValueError("equalize_relu6 needs equalize")
        if self.activation_ranges is not RangeEstimator.minmax and q is not Quantization.int8:
            raise ValueError(f"activation_ranges {self.activation_ranges.value} needs int8 quantization, not {q.value}")
        if self.weight_algorithm is WeightAlgorithm.gptq and q is not Quantization.weight_int8:
            # measured on tiny_cnn/digits: int8-aeq fails inside the quantizer (a reshape), int4 gives 13% top-1
            # (min/max: 92.5%): litert-quantizer 0.11's GPTQ is written for weight-only recipes
            raise ValueError(
                f"weight_algorithm gptq works with weight-int8 only (litert-quantizer 0.11), not {q.value}"
            )
        if self.weight_algorithm is not WeightAlgorithm.min_max and q not in (
            Quantization.weight_int8,
            Quantization.int8_aeq,
            Quantization.int4,
        ):
            raise ValueError(
                f"weight_algorithm {self.weight_algorithm.value} is litert-quantizer's: it needs weight-int8, int8-aeq "
                f"or int4, not {q.value}"
            )
        return self

    @model_validator(mode="after")
    def _io(self) -> ConvertConfig:
        allowed = {
            Quantization.int8: {IOType.int8, IOType.uint8, IOType.float32},
            Quantization.int16x8: {IOType.int16, IOType.float32},
            Quantization.int8_aeq: {IOType.int8},  # AEQ's static recipes quantize inputs and outputs
            Quantization.int4: {IOType.int8},
        }.get(self.quantization, {IOType.float32})
        if self.io_type is not None and self.io_type not in allowed:
            names = ", ".join(sorted(a.value for a in allowed))
            raise ValueError(
                f"io_type {self.io_type.value} does not go with {self.quantization.value}; allowed: {names}"
            )
        return self

    @property
    def resolved_io_type(self) -> IOType:
        if self.io_type is not None:
            return self.io_type
        return {
            Quantization.int8: IOType.int8,
            Quantization.int16x8: IOType.int16,
            Quantization.int8_aeq: IOType.int8,
            Quantization.int4: IOType.int8,
        }.get(self.quantization, IOType.float32)


class Split(StrEnum):
    """The examples a validation scores: the test split (releases), or the validation split (the search
    selects on it and keeps the test split for the models it chose)."""

    test = "test"
    val = "val"


class ValidateConfig(_Config):
    omit_if_default = frozenset({"split", "outcomes"})

    split: Split = Field(Split.test, description="the examples scored: test (releases) or val (a search's trials)")
    profiles: list[str] = Field(default_factory=list, description="device profiles: shipped names or YAML paths")
    profiles_for: list[Quantization] | None = Field(
        None, description="pipeline: check profiles only for artifacts of these quantizations (default: all)"
    )
    latency: bool = Field(True, description="measure host latency (also without profiles)")
    cross_check: bool = Field(True, description="run the inputs through LiteRT's reference kernels too")
    phone_check: bool = Field(
        True,
        description="run phone profiles with an `arm:` core on LiteRT's own Arm kernels under QEMU "
        "(`edgeopt phone setup`; built on first use)",
    )
    max_step_diff: int | None = Field(
        None,
        ge=0,
        description="quantization steps two runtimes' integer outputs (or logits) may differ by; default: "
        "2 sqrt(requantizing ops before that tensor), so the bound grows with the network's depth",
    )
    timeout_s: float = Field(600.0, gt=0, description="seconds each runtime may take in its child process")
    max_samples: int | None = Field(None, ge=1, description="evaluate at most this many test examples")
    outcomes: bool = Field(
        False,
        description="keep which examples the .tflite got right (the result's correct field, packed bits), so two "
        "models can be compared on the same examples (a search's paired tests)",
    )
    batch_size: int = Field(256, ge=1)
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0, description="gate: fail below this top-1 accuracy")
    max_accuracy_drop: float | None = Field(
        None,
        ge=0.0,
        description="gate (the release budget): fail when top-1 on the test split in LiteRT is more than this "
        "many points below the teacher's (the pipeline's float32 baseline)",
    )


# ---- device profiles ---------------------------------------------------------------------------


class Runtime(StrEnum):
    litert = "litert"
    tflm = "tflm"


class Budget(_Config):
    """Limits a .tflite must meet on a device. A budget left out is not a gate."""

    latency_p90_ms: float | None = Field(None, gt=0)
    model_bytes: int | None = Field(None, gt=0)
    arena_bytes: int | None = Field(None, gt=0, description="MCU RAM for the TFLite Micro tensor arena")
    accuracy_drop_max: float | None = Field(None, ge=0, description="points of top-1 vs the Keras reference")
    min_agreement: float | None = Field(None, ge=0, le=1, description="top-1 agreement with the Keras model")
    flash_bytes: int | None = Field(None, gt=0, description="firmware flash: runtime + model (firmware: profiles)")
    ram_bytes: int | None = Field(None, gt=0, description="firmware RAM: arena, stack, .bss, .data, heap (firmware:)")


class DeviceReference(_Config):
    """A published latency of the calibration architecture on the device (ANCHORS.md)."""

    model: str = "mobilenet_1.0_224"
    float32_ms: float | None = Field(None, gt=0)
    int8_ms: float | None = Field(None, gt=0)
    threads: int = Field(1, ge=1)
    source: str


class VelaConfig(_Config):
    accelerator_config: str = "ethos-u55-128"
    system_config: str = "Ethos_U55_High_End_Embedded"
    memory_mode: str = "Shared_Sram"
    clock_hz: float = Field(500e6, gt=0, description="NPU clock used to turn Vela's cycles into time")
    sram_bytes: int | None = Field(None, gt=0, description="budget for the SRAM Vela plans to use")


class McuCore(StrEnum):
    """Cortex-M cores with a latency model (edgeopt.mcu_latency)."""

    cortex_m4 = "cortex-m4"
    cortex_m33 = "cortex-m33"
    cortex_m7 = "cortex-m7"


class McuEnergy(_Config):
    """A published energy figure of the board (MLPerf Tiny): microjoules and milliseconds of one
    inference; their ratio is the board's average power while inferring (edgeopt.firmware.estimate)."""

    benchmark: str = Field(description="which published run (e.g. MLPerf Tiny v1.3 image classification)")
    microjoules: float = Field(gt=0)
    latency_ms: float = Field(gt=0)
    source: str


class McuConfig(_Config):
    """The CPU of an MCU board: its latency gate is estimated from the model's MACs (edgeopt.mcu_latency)
    or from the instructions the firmware check counted (edgeopt.firmware.estimate)."""

    core: McuCore
    clock_hz: float = Field(gt=0, description="CPU clock the estimate's cycles are divided by")
    source: str = Field(description="where the core and clock come from (datasheet, board)")
    energy: list[McuEnergy] = Field(
        default_factory=list, description="published energy of the board, for energy estimates (averaged over them)"
    )


class FirmwareKernels(StrEnum):
    cmsis_nn = "cmsis-nn"
    reference = "reference"


class FirmwareConfig(_Config):
    """The firmware check as a gate (edgeopt.firmware): the model built into TFLite Micro firmware for the
    profile's ``mcu.core``, run in QEMU, bit-exact against TFLite Micro's Python interpreter, measured."""

    kernels: FirmwareKernels = FirmwareKernels.cmsis_nn
    inputs: int = Field(10, ge=1, description="test inputs run through the firmware and compared byte for byte")
    timeout_s: float = Field(300.0, gt=0, description="seconds QEMU may run before the firmware counts as hung")
    tflm_src: str | None = Field(
        None, description="TFLite Micro tree (default: $EDGEOPT_TFLM_SRC, else ../shared/third_party/tflm/tflite-micro)"
    )


class LatencyEstimate(StrEnum):
    """How a phone profile's latency gate estimates the device latency."""

    arm = "arm"  # instructions counted on the profile's core model x a fitted CPI / clock (edgeopt.arm.latency)
    host_factor = "host-factor"  # host p90 x a host-to-device factor (edgeopt.calibrate)


class ArmCore(StrEnum):
    """The Arm core models the phone check emulates; edgeopt.arm.cores says what each one is (its QEMU
    CPU model and the MIDR XNNPACK sees)."""

    cortex_a53 = "cortex-a53"
    cortex_a55 = "cortex-a55"
    cortex_a72 = "cortex-a72"
    cortex_a76 = "cortex-a76"
    kryo_280_gold = "kryo-280-gold"
    kryo_385_gold = "kryo-385-gold"
    kryo_485_gold = "kryo-485-gold"
    armv9_i8mm = "armv9-i8mm"
    armv9_sme = "armv9-sme"


class ArmConfig(_Config):
    """A phone's CPU for the phone check (edgeopt.arm): LiteRT's aarch64 build runs on this core model
    under QEMU, and its instruction counts are divided by this clock."""

    core: ArmCore = Field(description="core model the phone check emulates (edgeopt.arm.cores)")
    clock_hz: float = Field(gt=0, description="clock of the cores the profile's threads run on")
    source: str = Field(description="where the core and clock come from")
    latency: LatencyEstimate = Field(
        LatencyEstimate.host_factor,
        description="the estimate the latency gate uses; the other is shown beside it (see `edgeopt phone fit`)",
    )


class DeviceProfile(_Config):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    runtime: Runtime
    threads: int = Field(1, ge=1)
    budgets: Budget = Field(default_factory=Budget)
    input_dtype: IOType | None = None
    output_dtype: IOType | None = None
    builtin_ops_only: bool = True
    reference: DeviceReference | None = None
    vela: VelaConfig | None = None
    mcu: McuConfig | None = None
    firmware: FirmwareConfig | None = None  # needs mcu: (the core to build for)
    arm: ArmConfig | None = None  # a phone's CPU: the phone check (edgeopt.arm)

    @model_validator(mode="after")
    def _firmware_needs_a_core(self) -> DeviceProfile:
        if self.firmware is not None and self.mcu is None:
            raise ValueError("firmware: needs an mcu: section (the core the firmware is built for)")
        return self


def format_validation_error(
    err: ValidationError,
    source: str,
    *,
    flags: bool = False,
    flag_names: dict[str, str] | None = None,
    tags: Sequence[str] = (),
) -> str:
    """One line per problem: ``source: key: message``. With ``flags`` keys are shown as ``--option``
    (``flag_names`` maps a field to its option's name where they differ). ``tags`` are the values of a
    discriminated union's tag (the stage names of a pipeline's ``steps:``): dropped from the key after a
    list index (``steps[0].prune.key`` reads ``steps[0].key``) and listed when a tag is unknown."""
    lines = []
    for e in err.errors():
        loc = [p for i, p in enumerate(e["loc"]) if not (i and isinstance(e["loc"][i - 1], int) and p in tags)]
        if flags:
            names = flag_names or {}
            key = " ".join("--" + names.get(p, p).replace("_", "-") for p in loc if isinstance(p, str)) or "options"
        else:
            key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown stage; allowed: {', '.join(tags)}"
        got = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and isinstance(got, str | int | float | bool):
            msg += f" (got {got!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)
