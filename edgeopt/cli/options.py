"""Options shared by several commands, and the bridge from a command's parameters to a stage config.

A flag that fills a config field takes its help from that field's ``description`` (``opt``), so it is
documented once, in ``edgeopt/config.py``, for the CLI, the pipeline files and the library alike.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from edgeopt.artifacts import metrics_path, save_model, write_bytes, write_json
from edgeopt.config import DataConfig, KDConfig, LRSchedule, PruneConfig, format_validation_error
from edgeopt.data import load_dataset
from edgeopt.errors import BadInput

F = TypeVar("F", bound=Callable[..., Any])

# Options whose name differs from the config field they fill (a repeatable --skip-layer fills skip_layers).
OPTION_FIELDS = {"skip_layer": "skip_layers", "profile": "profiles", "timeout": "timeout_s"}


def field_help(cls: type[BaseModel], name: str, *, config_default: bool = True) -> str:
    """The field's ``description``, and (``config_default``) the config's default when it has one worth
    showing: the flags that fill a config default to None, so Typer has no default of its own to show.

    A subclass that overrides a field (``PruneConfig.epochs``) inherits the description of the base
    class's field of that name, so common training fields are described once in ``_Training``.
    """
    description = ""
    for klass in cls.__mro__:
        fields = getattr(klass, "model_fields", None) or {}
        if name in fields and fields[name].description:
            description = fields[name].description
            break
    field = cls.model_fields[name]
    default = field.default
    if not config_default or default in (PydanticUndefined, None) or field.default_factory is not None:
        return description
    shown = default.value if isinstance(default, Enum) else default
    if isinstance(shown, bool):  # Typer shows a boolean flag's own default
        return description
    return f"{description} (default: {shown})" if description else f"default: {shown}"


def opt(cls: type[BaseModel], name: str, *param_decls: str, config_default: bool = True, **kwargs: Any) -> Any:
    """``typer.Option`` for the flag that fills ``cls.<name>``, with the field's description as help.
    ``config_default=False`` for a flag with a default of its own (Typer shows that one)."""
    return typer.Option(*param_decls, help=field_help(cls, name, config_default=config_default), **kwargs)


DataOpt = Annotated[str, opt(DataConfig, "name", "--data", config_default=False)]
SeedOpt = Annotated[int, opt(DataConfig, "seed", config_default=False)]
MaxTrainOpt = Annotated[int | None, opt(DataConfig, "max_train")]
MaxTestOpt = Annotated[int | None, opt(DataConfig, "max_test")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="warnings and errors only: no progress bars, info lines or summary tables")
]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict/--no-strict", help="a gate that could not be evaluated fails too, with how to evaluate it"),
]
UnsafeOpt = Annotated[
    bool, typer.Option("--unsafe", help="allow layers that carry Python code (Lambda); loading them runs that code")
]
ModelArg = Annotated[Path, typer.Argument(help="input model (.keras or .h5; Keras 3 files are translated)")]


TeacherOpt = Annotated[
    Path | None,
    typer.Option(
        "--teacher",
        help="fine-tune against this model's softened outputs (knowledge distillation) instead of the labels alone",
    ),
]
KDTemperatureOpt = Annotated[float | None, opt(KDConfig, "temperature", "--kd-temperature")]
KDAlphaOpt = Annotated[float | None, opt(KDConfig, "alpha", "--kd-alpha")]


def option(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    """One keyword parameter of a command: ``annotation`` is ``Annotated[type, typer.Option(...)]``."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def training_options(cls: type[BaseModel]) -> list[inspect.Parameter]:
    """The training flags every training command has, documented by ``cls``'s fields."""
    return [
        option("epochs", Annotated[int | None, opt(cls, "epochs")]),
        option("batch_size", Annotated[int | None, opt(cls, "batch_size")]),
        option("learning_rate", Annotated[float | None, opt(cls, "learning_rate")]),
        option("lr_schedule", Annotated[LRSchedule | None, opt(cls, "lr_schedule")]),
        option("min_steps", Annotated[int | None, opt(cls, "min_steps")]),
        option("lr_batch_size", Annotated[int | None, opt(cls, "lr_batch_size")]),
    ]


# Fine-tuning (prune, cluster, qat): BatchNorm kept as trained, and against a teacher.
KD_OPTIONS = [
    option(
        "freeze_batchnorm",
        Annotated[bool | None, opt(PruneConfig, "freeze_batchnorm", "--freeze-batchnorm/--no-freeze-batchnorm")],
    ),
    option("teacher", TeacherOpt),
    option("kd_temperature", KDTemperatureOpt),
    option("kd_alpha", KDAlphaOpt),
]
# Where the data comes from, then the run's switches (every training command).
DATA_OPTIONS = [
    option("seed", SeedOpt, 0),
    option("max_train", MaxTrainOpt),
    option("max_test", MaxTestOpt),
]
UNSAFE_OPTION = [option("unsafe", UnsafeOpt, False)]
QUIET_OPTION = [option("quiet", QuietOpt, False)]


def with_options(*groups: list[inspect.Parameter]) -> Callable[[F], F]:
    """Append the parameters of ``groups`` to a command's signature, after its own: options several
    commands share are declared once, here, and the command receives them as keyword arguments
    (``**shared``). Typer reads the signature this sets."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [p for group in groups for p in group]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def kd_flags(teacher: Path | None, temperature: float | None, alpha: float | None) -> KDConfig | None:
    """The ``kd`` config of a fine-tuning command: set by --teacher, tuned by --kd-temperature/--kd-alpha."""
    if teacher is None:
        if temperature is not None or alpha is not None:
            raise BadInput("--kd-temperature and --kd-alpha need --teacher (the model to distill from)")
        return None
    flags = {"temperature": temperature, "alpha": alpha}
    return build_config(KDConfig, flags, flag_names={"temperature": "kd_temperature", "alpha": "kd_alpha"})


def build_config(cls: type[BaseModel], flags: dict[str, Any], *, flag_names: dict[str, str] | None = None) -> Any:
    """Let pydantic build a config from a command's parameters (``locals()``): every one that names a
    field of ``cls`` and was given, so no option is copied into a config by hand. A value out of range
    is BadInput naming the flag."""
    values = {}
    for name, value in flags.items():
        field = OPTION_FIELDS.get(name, name)
        if field in cls.model_fields and value is not None:
            values[field] = value
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        names = {f: o for o, f in OPTION_FIELDS.items()} | (flag_names or {})
        raise BadInput(
            format_validation_error(e, "options", flags=True, flag_names=names).replace("options: ", "")
        ) from None


def load_data(name: str, seed: int, max_train: int | None = None, max_test: int | None = None) -> Any:
    """The dataset a command's --data/--seed/--max-train/--max-test name."""

    flags = {"name": name, "seed": seed, "max_train": max_train, "max_test": max_test}
    return load_dataset(build_config(DataConfig, flags))


def check_out(out: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse an --out path of the wrong kind before any work is done."""
    if out.suffix not in suffixes:
        raise BadInput(f"--out {out}: must end in {' or '.join(suffixes)}")


def write_stage_output(result: Any, out: Path) -> None:
    """A stage's model or .tflite at ``out`` and its metrics next to it (``OUT.json``)."""

    if result.tflite is not None:
        write_bytes(out, result.tflite)
    else:
        save_model(result.model, out)
    write_json(metrics_path(out), {"stage": result.stage, "seconds": result.seconds, **result.metrics})


def read_tflite(path: Path) -> bytes:
    """A .tflite's bytes, refusing a missing, empty or non-TFLite file with one line."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    content = path.read_bytes()
    if not content:
        raise BadInput(f"{path}: empty file")
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise BadInput(f"{path}: not a TFLite model (the flatbuffer identifier TFL3 is missing)")
    return content
