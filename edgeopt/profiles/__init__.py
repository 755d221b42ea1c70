"""Device profiles: shipped YAML files in this folder, user YAML files, or a pipeline's ``profiles:``."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import ValidationError

from edgeopt.config import DeviceProfile, format_validation_error
from edgeopt.errors import BadInput

HERE = Path(__file__).parent


def shipped() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load_profile(spec: str | Path, extra: list[DeviceProfile] | None = None) -> DeviceProfile:
    """A profile by shipped name, by name from ``extra``, or from a YAML file path. A file is read once per
    process while its size and modification time stay the same."""
    for p in extra or []:
        if p.name == str(spec):
            return p
    path = HERE / f"{spec}.yaml"
    if not path.is_file():
        path = Path(spec)
        if not path.is_file():
            known = ", ".join(shipped() + [p.name for p in extra or []])
            raise BadInput(f"unknown device profile {str(spec)!r}; shipped: {known} (or give a YAML file path)")
    st = path.stat()
    return _read(str(path), str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read(shown: str, resolved: str, size: int, mtime_ns: int) -> DeviceProfile:
    """The profile in a YAML file (keyed by its size and mtime too, so an edited file is read again);
    errors name the file as the user gave it (``shown``)."""
    path = Path(shown)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML: {e}") from None
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as e:
        raise BadInput(format_validation_error(e, str(path))) from None
