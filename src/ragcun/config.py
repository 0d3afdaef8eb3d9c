"""One way to read configuration: TOML files and ``--set key=value`` into typed dataclasses.

Training keys (:class:`ragcun.training.config.TrainConfig`) and the experiment's tables
(``[experiment]``, ``[triplets]``, ``[evaluation]``, ``[sweep]``) all go through :func:`coerce`:
the dataclass field's type decides how a value is read, a typo gets a "did you mean" hint, and NaN
or infinity is never accepted as a number. Errors name the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import inspect
import logging
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the source."""


def read_toml(path: str | os.PathLike, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML config file; a missing file or bad TOML raises ``error`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"config file {p} not found")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value); the value is read as TOML when it parses (numbers, bools,
    lists, quoted strings), else taken as a bare string (paths, names)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().split(".")[-1]  # allow "loss.lambda_isotropy=0"
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


@dataclasses.dataclass(frozen=True)
class Schema:
    """The keys a table may hold, each with its type and default: a callable's keyword arguments (a table
    passed straight to a constructor, such as ``[model]`` to ``IsotropicGaussianEncoder``)."""

    name: str
    hints: dict[str, Any]
    defaults: dict[str, Any]

    @classmethod
    @functools.cache
    def of(cls, fn: Any, exclude: tuple[str, ...] = ()) -> Schema:
        """The keyword arguments of ``fn`` (a class: its ``__init__``) with a default, less ``exclude``
        (read once per callable: a constructor checks its arguments on every call)."""
        init = fn.__init__ if isinstance(fn, type) else fn
        hints = typing.get_type_hints(init)
        params = [p for p in inspect.signature(init).parameters.values()
                  if p.name not in exclude and p.name != "self" and p.default is not inspect.Parameter.empty
                  and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return cls(getattr(fn, "__name__", str(fn)), {p.name: hints[p.name] for p in params},
                   {p.name: p.default for p in params})


def _fields(cls: Any) -> dict[str, Any]:
    if isinstance(cls, Schema):
        return cls.hints
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: Any) -> dict[str, Any]:
    return cls.hints if isinstance(cls, Schema) else typing.get_type_hints(cls)


def unknown_key(cls: Any, key: str, source: str, what: str = "key") -> ConfigError:
    close = difflib.get_close_matches(key, _fields(cls), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{source}: unknown {what} {key!r}{hint}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _scalar(target: Any, value: Any) -> Any:
    """``value`` as ``target`` (bool, int, float, str or a Literal); raises ValueError/TypeError."""
    if typing.get_origin(target) is Literal:
        allowed = typing.get_args(target)
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(map(str, allowed))} (got {value!r})")
        return value
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if target is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if target is float:
        if isinstance(value, bool) or isinstance(value, list | dict):
            raise ValueError(value)
        out = float(value)
        if not math.isfinite(out):
            raise ConfigError(f"must be a finite number (got {value!r})")
        return out
    if target is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(value)
        return str(value)
    return value


def _convert(target: Any, value: Any) -> Any:
    """``value`` as ``target``: a scalar, a Literal, a list, a dict, an enum or a union of these (the first
    member that takes the value, as in transformers' own argument types)."""
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in typing.get_args(target) if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # a name the enum must know (transformers converts it)
            choices = [m.value for m in enums[0]]
            if value not in choices:
                raise ConfigError(f"must be one of {', '.join(map(str, choices))} (got {value!r})")
            return value
        first: Exception | None = None
        for arm in typing.get_args(target):
            if arm is type(None):
                continue
            try:
                return _convert(arm, value)
            except (TypeError, ValueError) as exc:
                first = first or exc
        raise first or ValueError(value)
    if origin is list or target is list:
        (item,) = typing.get_args(target) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(value)
        return [_convert(item, v) for v in value]
    if origin is dict or target is dict:
        if not isinstance(value, dict):
            raise ValueError(value)
        return value
    if isinstance(target, type) and issubclass(target, enum.Enum):
        target(value)  # a valid member; the raw value is kept (the arguments' own class converts it)
        return value
    if target is type:
        if not isinstance(value, type):
            raise ValueError(value)
        return value
    return _scalar(target, value)


def coerce(cls: Any, key: str, value: Any, source: str = "config") -> Any:
    """Convert ``value`` to the type of ``cls``'s field ``key`` (``cls``: a dataclass or a :class:`Schema`);
    strings from the command line are parsed."""
    fields = _fields(cls)
    if key not in fields:
        raise unknown_key(cls, key, source)
    hint = _hints(cls)[key]
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null", ""):
        return None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be empty")
    try:
        return _convert(hint, value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {key} {exc}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} expects {_type_name(hint)}, got {value!r}") from None


def from_table(cls: type[T], table: Any, source: str, table_name: str) -> T:
    """Build dataclass ``cls`` from a TOML table; unknown keys and bad values name file, table and key."""
    where = f"{source} [{table_name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{table_name}] must be a table, got {type(table).__name__}")
    values = {}
    renamed: dict[str, str] = getattr(cls, "RENAMED_KEYS", {})  # old key -> new key, for one release
    for key, value in table.items():
        if key in renamed:
            if renamed[key] in table:
                raise ConfigError(f"{where}: set {renamed[key]!r} only ({key!r} is its deprecated old name)")
            logger.warning("%s: %r is deprecated, use %r (the old name goes in the next release)", where, key,
                           renamed[key])
            key = renamed[key]
        if key not in _fields(cls):
            raise unknown_key(cls, key, where)
        values[key] = coerce(cls, key, value, where)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if callable(check):
        problems = check()
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))
    return obj


def _value(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name)


def positive(obj: Any, *names: str) -> list[str]:
    """Messages for the named fields of ``obj`` (a dataclass or a dict) that are set but not > 0."""
    return [f"{n} must be > 0 (got {_value(obj, n)})" for n in names
            if _value(obj, n) is not None and not _value(obj, n) > 0]


def non_negative(obj: Any, *names: str) -> list[str]:
    return [f"{n} must be >= 0 (got {_value(obj, n)})" for n in names
            if _value(obj, n) is not None and not _value(obj, n) >= 0]


def choice_problems(obj: Any, values: dict[str, Any] | None = None) -> list[str]:
    """Messages for every ``Literal`` field of a config dataclass ``obj`` whose value is not one of its
    choices, or with ``values``, every keyword argument of the callable ``obj`` given a value outside its
    ``Literal`` (what a constructor called from Python checks): the same rule coercion applies to a file."""
    if values is None:
        hints = typing.get_type_hints(type(obj))
        values = {name: getattr(obj, name, None) for name in hints}
    else:
        hints = Schema.of(obj).hints
    out = []
    for name, value in values.items():
        hint = hints.get(name)
        args = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
        if args and value not in args:
            out.append(f"{name} must be {' or '.join(map(str, args))} (got {value!r})")
    return out
