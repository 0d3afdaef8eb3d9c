"""Training configuration: one dataclass, read from TOML, every key overridable from the command line.

A config file may be flat (``base_model = "..."``) or group its keys in tables
(``[model]``, ``[data]``, ``[optim]``, ``[loss]``, ``[train]``, ``[output]``); the tables are
flattened, so ``--set lambda_isotropy=0`` overrides a key wherever the file put it. Tables that
belong to other commands (``[experiment]``, ``[evaluation]``, ``[arms.*]``) are ignored here.
Unknown keys are errors that name the file and suggest the closest key: a typo must never
silently fall back to a default in a run that takes hours.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MixedPrecision = Literal["no", "fp16", "bf16"]
GROUP_TABLES = ("model", "data", "optim", "optimizer", "loss", "train", "training", "output", "validation")
FOREIGN_TABLES = ("experiment", "evaluation", "evaluate", "arms", "arm", "benchmark", "data_prep", "triplets")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the source."""


@dataclass
class TrainConfig:
    """Everything ``ragcun train`` needs. Defaults follow the paper setting where one exists."""

    # data
    train_data: str | None = None  # `ragcun data triplets` output dir, a save_to_disk dir, or .jsonl/.parquet/.csv
    validation_data: str | None = None  # mini-BEIR dir or BEIR name; default: <train_data>/validation if present
    validation_split: str = "dev"
    validation_max_queries: int | None = None
    validate_during_training: bool = True  # false: no validation (e.g. preflight, quick smoke runs)
    num_negatives: int | None = None  # use at most this many negative_* columns (None: all)
    max_train_samples: int | None = None
    data_dir: str | None = None
    # model
    base_model: str = "all-MiniLM-L6-v2"
    output_dim: int = 512
    head: Literal["mlp", "linear"] = "mlp"
    hidden_dim: int = 1024
    freeze_base: bool = False
    freeze_layers: int = 0
    max_seq_length: int = 256
    head_init: Literal["calibrated", "default"] = "calibrated"  # calibrated: outputs start at zero mean, unit variance
    calibration_samples: int = 256  # training texts used to calibrate the head
    fast_frozen: bool = True  # with freeze_base: train the head on cached base features
    feature_batch_size: int = 64
    # optimisation
    base_learning_rate: float = 1e-5
    projection_learning_rate: float = 5e-4
    weight_decay: float = 0.05
    warmup_ratio: float = 0.1
    warmup_steps: int = 0  # > 0 overrides warmup_ratio
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16  # the GLOBAL batch per forward pass (split over devices under DDP)
    gradient_accumulation_steps: int = 1
    batch_sampler: Literal["no_duplicates", "batch_sampler"] = "no_duplicates"
    mixed_precision: MixedPrecision = "no"
    gradient_checkpointing: bool = False
    seed: int = 42
    dataloader_num_workers: int = 0
    # loss
    lambda_isotropy: float = 1.0
    lambda_reg: float = 0.0
    num_slices: int = 1024
    temperature: float = 50.0  # squared distances grow with output_dim (≈ 2·D apart for unrelated pairs)
    distance: Literal["squared", "l2"] = "squared"
    gather_across_devices: bool = True
    # output, logging, checkpoints
    output_dir: str = "runs/train"
    resume: bool = False
    logging_steps: int = 10
    eval_steps: int = 0  # 0: evaluate at the end of every epoch
    save_steps: int = 0  # 0: checkpoint at the end of every epoch
    save_total_limit: int | None = 2
    metric_for_best_model: str = "ndcg@10"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    ddp_backend: str | None = None  # None: nccl on GPU, gloo on CPU
    use_cpu: bool = False

    # ------------------------------------------------------------------ validation
    def validate(self) -> TrainConfig:
        """Check values that types alone cannot; returns self."""
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.gradient_accumulation_steps < 1:
            problems.append("gradient_accumulation_steps must be >= 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(f"mixed_precision must be no, fp16 or bf16 (got {self.mixed_precision!r})")
        if self.head not in ("mlp", "linear"):
            problems.append(f"head must be mlp or linear (got {self.head!r})")
        if self.distance not in ("squared", "l2"):
            problems.append(f"distance must be squared or l2 (got {self.distance!r})")
        if self.batch_sampler not in ("no_duplicates", "batch_sampler"):
            problems.append(f"batch_sampler must be no_duplicates or batch_sampler (got {self.batch_sampler!r})")
        for name in ("base_learning_rate", "projection_learning_rate", "temperature", "max_seq_length", "output_dim"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0 (got {getattr(self, name)})")
        for name in ("lambda_isotropy", "lambda_reg", "weight_decay", "warmup_ratio", "freeze_layers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("set epochs > 0 or max_steps > 0")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        cfg = cls()
        apply_values(cfg, values, source)
        return cfg

    def replace(self, **changes: Any) -> TrainConfig:
        cfg = dataclasses.replace(self)
        apply_values(cfg, changes, "replace()")
        return cfg


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _unknown(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{source}: unknown training key {key!r}{hint}")


def coerce(key: str, value: Any, source: str = "config") -> Any:
    """Convert ``value`` to the type of field ``key``; strings from the command line are parsed."""
    if key not in FIELDS:
        raise _unknown(key, source)
    hint = _HINTS[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null", ""):
        return None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be empty")
    base = [a for a in args if a is not type(None)] if (typing.get_origin(hint) in (typing.Union, types.UnionType)) else [hint]
    target = base[0]
    origin = typing.get_origin(target)
    try:
        if origin is Literal:
            allowed = typing.get_args(target)
            if value not in allowed:
                raise ConfigError(f"{source}: {key} must be one of {', '.join(map(str, allowed))} (got {value!r})")
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
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if target is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError(value)
            return [str(v) for v in value]
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} expects {_type_name(hint)}, got {value!r}") from None
    return value


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def apply_values(cfg: TrainConfig, values: dict[str, Any], source: str) -> None:
    for key, value in values.items():
        setattr(cfg, key, coerce(key, value, source))


def flatten_toml(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Flatten grouping tables; drop other commands' tables; a key set twice is an error."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key in FOREIGN_TABLES:
                continue
            if key not in GROUP_TABLES:
                raise ConfigError(
                    f"{source}: unknown table [{key}] (training keys go at the top level or in "
                    f"[{'], ['.join(GROUP_TABLES[:5])}] …)"
                )
            for sub, sub_value in value.items():
                if sub in flat:
                    raise ConfigError(f"{source}: key {sub!r} is set twice ([{key}] and elsewhere)")
                flat[sub] = sub_value
        else:
            if key in flat:
                raise ConfigError(f"{source}: key {key!r} is set twice")
            flat[key] = value
    return flat


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


def read_toml(path: str | os.PathLike, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML config file; a missing file or bad TOML raises ``error`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"config file {p} not found")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{p}: not valid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> TrainConfig:
    """Read a TOML config (or start from defaults) and apply command-line overrides.

    Relative data and output paths in the file are resolved against the current directory,
    as with any command-line tool; ``--set`` values win over the file.
    """
    cfg = TrainConfig()
    if path is not None:
        p = Path(path)
        data = read_toml(p)
        apply_values(cfg, flatten_toml(data, str(p)), str(p))
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
        for key, value in items:
            setattr(cfg, key, coerce(key, value, f"--set {key}"))
    return cfg.validate()
