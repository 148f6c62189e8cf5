"""Where the project's YAML parameter files live, and typed loading of one section into a dataclass.

Every tunable number lives in exactly one YAML file under ``config/``. Code declares a dataclass with the
same field names and reads it with :func:`load_section`; unknown or missing keys are errors, not silently
ignored, so the YAML and the code cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter file is missing, malformed, or does not match the dataclass it configures."""


PACKAGE = "dexwm"  # the ROS 2 package name (package.xml)


def source_root() -> Path:
    """The checkout this code runs from (its ``config/``, ``urdf/``, ``checkpoints/``, ``src/``), when it does;
    in an installed package this folder holds none of them."""
    return Path(__file__).resolve().parents[2]


def installed_prefix(package: str = PACKAGE) -> Path | None:
    """The install prefix of ROS package ``package``: from the ament index (a colcon workspace's
    ``install/<package>`` once its ``setup.bash`` is sourced), else the Python prefix when pip installed the
    package's data there (``share/<package>``)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        pass
    else:
        try:
            prefix = Path(get_package_prefix(package))
            if (prefix / "share" / package).is_dir():
                return prefix
        except (PackageNotFoundError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH not set
            pass
    prefix = Path(sys.prefix)
    return prefix if (prefix / "share" / package).is_dir() else None


def project_dir_candidates(name: str) -> list[Path]:
    """Where folder ``name`` of this project (config, urdf, checkpoints) is looked for, in order: the source
    checkout's, then the installed ``share/dexwm/<name>``."""
    candidates = [source_root() / name]
    prefix = installed_prefix()
    if prefix is not None:
        candidates.append(prefix / "share" / PACKAGE / name)
    return candidates


def project_dir(name: str, override: str | None = None) -> Path:
    """Folder ``name`` of this project: ``override`` (an environment variable's value) if given, else the first of
    :func:`project_dir_candidates` that exists. The one lookup of the project's data folders."""
    if override:
        candidates = [Path(override)]
    else:
        source = source_root() / name
        if source.is_dir():  # a checkout: no need to ask the ament index
            return source
        candidates = project_dir_candidates(name)
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"no {name} folder found (looked in {', '.join(map(str, candidates))})")


def config_dir() -> Path:
    """``$DEXWM_CONFIG_DIR``, else the source checkout's ``config/``, else the installed ``share/dexwm/config``.
    Beside it: ``checkpoints/`` (the embedded weights); inside it ``suites/``."""
    try:
        return project_dir("config", os.environ.get("DEXWM_CONFIG_DIR"))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = config_dir() / p
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"parameter file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at top level, found {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields (also optional ones,
    ``Config | None``); exact key match."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    needed = sorted(name for name, f in fields.items() if f.init and f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
    missing = [name for name in needed if name not in data]
    if missing:
        raise ConfigError(f"{where or cls.__name__}: missing key(s) {missing}; required: {needed}")
    kwargs = {}
    hints = _type_hints(cls)
    for name, value in data.items():
        ftype = _dataclass_of(hints.get(name))
        if ftype is not None and isinstance(value, dict):
            value = from_dict(ftype, value, f"{where}.{name}" if where else name)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds: ``C`` for a hint ``C`` or ``C | None`` (``Optional[C]``), else None."""
    import typing

    if dataclasses.is_dataclass(hint):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and dataclasses.is_dataclass(args[0]) and type(None) in typing.get_args(hint):
        return args[0]
    return None


def _type_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # forward references that cannot be resolved: fall back to raw annotations
        return dict(getattr(cls, "__annotations__", {}))


def load_section(cls: type[T], file: str | Path, section: str | None = None) -> T:
    data = load_yaml(file)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{file}: missing section '{section}'")
        data = data[section]
    return from_dict(cls, data, f"{Path(file).name}:{section}" if section else Path(file).name)
