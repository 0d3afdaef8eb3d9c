"""Training configuration: one TOML table per object a run builds, each passed to it as keyword arguments.

- ``[model]``: :class:`~ragcun.modeling.IsotropicGaussianEncoder` ``(**model)``, its keyword arguments;
- ``[loss]``: :class:`~ragcun.losses.IsotropicGaussianLoss` ``(model, **loss)``, its keyword arguments;
- ``[teacher]``: :class:`~ragcun.training.teacher.TeacherArguments`, the teacher's scores;
- ``[data]``: :class:`~ragcun.training.data.DataArguments`, the triplets and the validation set;
- ``[training]``: :class:`~ragcun.training.args.RagcunTrainingArguments`, sentence-transformers' training
  arguments and ragcun's own.

The model and the loss check their own arguments (once, in their constructors; :func:`load_config` asks them
before anything loads), and sentence-transformers checks its training arguments. Key names are unique across
the tables, so ``--set lambda_isotropy=0`` (or ``--set loss.lambda_isotropy=0``) and an experiment's
``[arms.*]`` tables name a key without its table. Unknown keys are errors that name the file and suggest the
closest key; a key of the old flat format gets a one-line error naming its new table and name. The
experiment's tables (``[experiment]``, ``[triplets]``, ``[evaluation]``, ``[sweep]``, ``[whitening]``,
``[arms.*]``) are read by :mod:`ragcun.experiment`, through the same coercion (:mod:`ragcun.config`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ragcun.config import ConfigError, Schema, parse_override, read_toml, unknown_key
from ragcun.config import coerce as _coerce

TABLES = ("model", "loss", "teacher", "data", "training")
FOREIGN_TABLES = ("experiment", "evaluation", "arms", "triplets", "sweep", "whitening")

#: Keys of the old flat format: (their table now, their name there, how the value changes).
OLD_KEYS: dict[str, tuple[str, str, str]] = {
    "epochs": ("training", "num_train_epochs", ""),
    "batch_size": ("training", "per_device_train_batch_size", " (per process, as in sentence-transformers)"),
    "base_learning_rate": ("training", "learning_rate", ""),
    "projection_learning_rate": ("training", "head_learning_rate", ""),
    "lr_scheduler": ("training", "lr_scheduler_type", ""),
    "mixed_precision": ("training", "bf16", " (bf16 = true, or fp16 = true)"),
    "sigreg_queue": ("loss", "queue_size", ""),
}
OLD_TABLES = {"optim": "training", "output": "training", "validation": "data"}


@cache
def schemas() -> dict[str, Any]:
    """Each table's keys with their types and defaults: the constructors' keyword arguments and the
    arguments dataclasses (imported on first use: they pull in torch and sentence-transformers)."""
    from ragcun.losses import IsotropicGaussianLoss
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.training.args import RagcunTrainingArguments
    from ragcun.training.data import DataArguments
    from ragcun.training.teacher import TeacherArguments

    return {
        "model": Schema.of(IsotropicGaussianEncoder, exclude=("model_name_or_path", "prompts", "modules",
                                                              "device")),
        "loss": Schema.of(IsotropicGaussianLoss, exclude=("model", "corpus_sample", "distillation", "seed")),
        "teacher": TeacherArguments,
        "data": DataArguments,
        "training": RagcunTrainingArguments,
    }


def _keys(schema: Any) -> list[str]:
    return list(schema.hints) if isinstance(schema, Schema) else [f.name for f in dataclasses.fields(schema)]


@cache
def key_tables() -> dict[str, str]:
    """Every key -> its table. Names are unique across the tables (checked here), so a key alone is enough."""
    out: dict[str, str] = {}
    for table, schema in schemas().items():
        for key in _keys(schema):
            if key in out:
                raise RuntimeError(f"training key {key!r} is in both [{out[key]}] and [{table}]")
            out[key] = table
    return out


def _old_key_error(key: str, where: str) -> ConfigError:
    table, new, note = OLD_KEYS[key]
    return ConfigError(f"{where}: {key!r} is now {new!r} in [{table}]{note}; see "
                       "docs/training.md#configuration")


def locate(key: str, where: str, table: str | None = None) -> tuple[str, str]:
    """(table, key) for ``key`` as written in ``where`` (``loss.lambda_isotropy`` or ``lambda_isotropy``)."""
    if "." in key:
        table, key = key.split(".", 1)
    tables = key_tables()
    if key in OLD_KEYS and key not in tables:
        raise _old_key_error(key, where)
    if key not in tables:
        if table in schemas():
            raise unknown_key(schemas()[table], key, where)
        raise unknown_key(Schema("training", dict.fromkeys(tables), {}), key, where, "training key")
    if table is not None and tables[key] != table:
        raise ConfigError(f"{where}: {key!r} belongs in [{tables[key]}], not [{table}]")
    return tables[key], key


@dataclass
class TrainConfig:
    """A training run: the values set in each table (a table's other keys keep their defaults); a key's value,
    wherever its table, is ``cfg.get(key)`` or ``cfg.<key>``."""

    tables: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in TABLES})

    def get(self, key: str) -> Any:
        """The value of ``key`` (set, or its default), wherever its table."""
        table = key_tables().get(key)
        if table is None:
            raise KeyError(key)
        values = self.tables[table]
        if key in values:
            return values[key]
        schema = schemas()[table]
        if isinstance(schema, Schema):
            return schema.defaults[key]
        f = {f.name: f for f in dataclasses.fields(schema)}[key]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]

    def __getattr__(self, key: str) -> Any:  # cfg.lambda_isotropy: a key's value, wherever its table
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self.get(key)
        except KeyError:
            raise AttributeError(key) from None

    def set(self, key: str, value: Any, where: str) -> None:
        """Set ``key`` (``table.key`` or a key alone) to ``value`` read as its type; errors name ``where``."""
        table, name = locate(key, where)
        self.tables[table][name] = _coerce(schemas()[table], name, value, where)

    def replace(self, **changes: Any) -> TrainConfig:
        cfg = TrainConfig({t: dict(v) for t, v in self.tables.items()})
        for key, value in changes.items():
            cfg.set(key, value, "replace()")
        return cfg

    # ------------------------------------------------------------------ validation
    def check(self) -> list[str]:
        """What is wrong with the values (empty when nothing): the model's and the loss's own checks, and the
        rules that join tables."""
        from ragcun.losses import IsotropicGaussianLoss
        from ragcun.modeling import IsotropicGaussianEncoder
        from ragcun.training.data import DataArguments
        from ragcun.training.teacher import TeacherArguments

        t = self.tables
        problems = [f"[model] {p}" for p in IsotropicGaussianEncoder.argument_problems(**t["model"])]
        problems += [f"[loss] {p}" for p in IsotropicGaussianLoss.argument_problems(**t["loss"])]
        problems += [f"[teacher] {p}" for p in TeacherArguments(**t["teacher"]).check()]
        problems += [f"[data] {p}" for p in DataArguments(**t["data"]).check()]
        problems += self._training_problems()
        if self.get("head_init_power") > 0 and self.get("head_init") != "warm":
            problems.append(f"head_init_power applies to head_init = 'warm' (got head_init = "
                            f"{self.get('head_init')!r})")
        if self.get("sigreg_sample") and self.get("queue_size"):
            problems.append("set sigreg_sample or queue_size, not both")
        if self.get("train_side") == "query" and self.get("st_loss") != "none":
            problems.append("train_side = 'query' trains a ragcun query tower: st_loss must be 'none'")
        if self.get("teacher") == "none" and self.get("lambda_contrastive") == 0:
            problems.append("lambda_contrastive = 0 without a teacher leaves nothing to learn from")
        return problems + self._st_problems()

    def _training_problems(self) -> list[str]:
        """ragcun's own training keys (sentence-transformers checks its own when the run builds them)."""
        from ragcun.config import non_negative, positive
        from ragcun.training.args import RagcunTrainingArguments

        view = {f.name: self.get(f.name) for f in dataclasses.fields(RagcunTrainingArguments)
                if f.name in RAGCUN_KEYS or f.name in ("learning_rate", "per_device_train_batch_size",
                                                        "gradient_accumulation_steps")}
        problems = positive(view, "learning_rate", "head_learning_rate", "feature_batch_size",
                             "train_max_seq_length", "sigreg_refresh", "st_temperature",
                             "per_device_train_batch_size", "gradient_accumulation_steps")
        problems += non_negative(view, "sigreg_sample")
        if self.get("calibration_samples") < 2:
            problems.append(f"calibration_samples must be >= 2 (got {self.get('calibration_samples')})")
        if not 0.0 <= self.get("head_init_power") <= 1.0:
            problems.append(f"head_init_power must be in [0, 1] (got {self.get('head_init_power')})")
        if self.get("num_train_epochs") <= 0 and self.get("max_steps") <= 0:
            problems.append("set num_train_epochs > 0 or max_steps > 0")
        if (self.get("save_total_limit") or 1) < 1:
            problems.append(f"save_total_limit must be >= 1 or none (got {self.get('save_total_limit')})")
        return problems + self._reporting_problems() + self._mapping_problems()

    def _reporting_problems(self) -> list[str]:
        """``report_to`` names transformers knows (it would refuse them only once the trainer is built)."""
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        value = self.get("report_to")
        names = value if isinstance(value, list) else str(value or "").split(",")
        unknown = [n for n in (str(n).strip() for n in names)
                   if n and n not in ("all", "none") and n not in INTEGRATION_TO_CALLBACK]
        return [f"report_to: unknown integration {n!r} (transformers knows "
                f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}, all or none)" for n in unknown]

    def _mapping_problems(self) -> list[str]:
        """``learning_rate_mapping``: parameter patterns to finite, positive learning rates (a table, or its
        JSON as sentence-transformers reads it)."""
        import json
        import math

        value = self.get("learning_rate_mapping")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return [f"learning_rate_mapping must be a table of pattern = learning rate (got {value!r})"]
        if value is None:
            return []
        if not isinstance(value, dict):
            return [f"learning_rate_mapping must be a table of pattern = learning rate (got {value!r})"]
        return [f"learning_rate_mapping[{k!r}] must be a finite learning rate > 0 (got {v!r})"
                for k, v in value.items()
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0]

    def _st_problems(self) -> list[str]:
        """The sentence-transformers peer trains the base as it is: nothing of ragcun's objective applies."""
        st = self.get("st_loss")
        if st == "none":
            return []
        what = f"st_loss = {st!r} trains the plain base with sentence-transformers' own loss"
        problems = [f"{what}: set {key} = {want!r} (got {self.get(key)!r})"
                    for key, want in (("lambda_isotropy", 0.0), ("lambda_reg", 0.0), ("sigreg_sample", 0),
                                      ("queue_size", 0), ("freeze_base", False))
                    if self.get(key) != want]
        if st == "mnrl" and self.get("teacher") != "none":
            problems.append(f"{what} on the labels: set teacher = 'none' (or st_loss = 'distill_kl')")
        if st == "distill_kl" and self.get("teacher") == "none":
            problems.append(f"{what} on a teacher's scores: set teacher (hybrid, dense or bm25)")
        return problems

    def validate(self) -> TrainConfig:
        """``self``, or a ConfigError listing every problem :meth:`check` finds."""
        problems = self.check()
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The values set, table by table (what a config file with these tables would hold)."""
        return {t: dict(v) for t, v in self.tables.items()}

    def record(self) -> dict[str, Any]:
        """What a saved model and its summary record: the model's and the loss's keyword arguments (defaults
        included), the teacher and data tables as set, and the training keys set plus ragcun's own and the
        budget (learning rate, batch, epochs, steps, seed) even at their defaults."""
        training = [*BUDGET_KEYS, *RAGCUN_KEYS, *(k for k in self.tables["training"]
                                                  if k not in BUDGET_KEYS + RAGCUN_KEYS)]
        return {"model": {k: _plain(self.get(k)) for k in schemas()["model"].hints},
                "loss": {k: _plain(self.get(k)) for k in schemas()["loss"].hints},
                "teacher": {k: _plain(v) for k, v in self.tables["teacher"].items()},
                "data": {k: _plain(v) for k, v in self.tables["data"].items()},
                "training": {k: _plain(self.get(k)) for k in training}}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """From tables (``{"loss": {...}}``) or keys alone (``{"lambda_isotropy": 0}``)."""
        cfg = cls()
        for key, value in values.items():
            if isinstance(value, dict) and key in schemas():
                for sub, sub_value in value.items():
                    cfg.set(f"{key}.{sub}", sub_value, f"{source} [{key}]")
            else:
                cfg.set(key, value, source)
        return cfg


def run_name(cfg: TrainConfig) -> str:
    """``cfg.run_name``, else the output directory's path below ``runs/`` without ``arms``
    (``runs/demo/arms/isotropy`` → ``demo/isotropy``, ``runs/my-model`` → ``my-model``), else its folder name:
    never the folders around the run, which mean nothing on the Hub or in MTEB."""
    if cfg.run_name:
        return cfg.run_name
    parts = Path(cfg.output_dir).resolve().parts
    if "runs" in parts:
        below = [p for p in parts[len(parts) - parts[::-1].index("runs"):] if p != "arms"]
        if below:
            return "/".join(below[-2:])
    return parts[-1] if parts else str(cfg.output_dir)


def run_record(cfg: TrainConfig, train_examples: int) -> dict[str, Any]:
    """What a trained model records about its run (``ragcun_config.json``'s ``run``, its card): its name,
    base, data and the tables it was built from (the data table's local paths are left out: the record
    travels with the model to the Hub)."""
    record = cfg.record()
    record.pop("data")
    return {"name": run_name(cfg), "base_model": cfg.base_model, "train_data": Path(str(cfg.train_data)).name,
            "train_examples": int(train_examples), **record}


def _plain(value: Any) -> Any:
    """A JSON value (an enum as its value, a class as its name)."""
    if isinstance(value, type):
        return value.__name__
    return getattr(value, "value", value)


#: sentence-transformers' training keys that say what budget a model had, recorded even at their defaults.
BUDGET_KEYS = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "max_steps", "seed")
#: ragcun's own training keys (the rest of [training] is sentence-transformers').
RAGCUN_KEYS = ("head_learning_rate", "head_init", "head_init_power", "calibration_samples", "fast_frozen",
               "fast_prefix", "train_max_seq_length", "feature_batch_size", "sigreg_sample", "sigreg_refresh",
               "st_loss", "st_temperature", "train_side", "resume")


def coerce(key: str, value: Any, source: str = "config") -> Any:
    """``value`` read as the type of training key ``key`` (``table.key`` or a key alone)."""
    table, name = locate(key, source)
    return _coerce(schemas()[table], name, value, source)


def read_tables(data: dict[str, Any], source: str) -> TrainConfig:
    """The training tables of a parsed TOML file; other commands' tables are skipped. A key outside its
    table, or a table or key of the old flat format, is an error naming the file, table and key."""
    cfg = TrainConfig()
    for name, value in data.items():
        if not isinstance(value, dict):
            if name in OLD_KEYS and name not in key_tables():
                raise _old_key_error(name, source)
            table, key = locate(name, source)
            raise ConfigError(f"{source}: {key!r} goes in the [{table}] table (training keys are grouped "
                              f"by the object they build; see docs/training.md#configuration)")
        if name in FOREIGN_TABLES:
            continue
        if name in OLD_TABLES:
            first = next(iter(value), None)
            hint = ""
            if first is not None:
                try:
                    table, key = locate(first, f"{source} [{name}]")
                    hint = f" ({first!r} goes in [{table}])"
                except ConfigError as exc:
                    hint = f" ({str(exc).split(': ', 1)[1].split('; see ')[0]})"
            raise ConfigError(f"{source}: the [{name}] table is gone{hint}; tables are [model], [loss], "
                              "[teacher], [data] and [training]; see docs/training.md#configuration")
        if name not in schemas():
            raise ConfigError(f"{source}: unknown table [{name}] (training tables: "
                              f"{', '.join(f'[{t}]' for t in schemas())}; experiment tables: "
                              f"{', '.join(f'[{t}]' for t in FOREIGN_TABLES)})")
        for key, sub in value.items():
            table, key = locate(key, f"{source} [{name}]", table=name)
            cfg.tables[table][key] = _coerce(schemas()[table], key, sub, f"{source} [{name}]")
    return cfg


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
        cfg = read_tables(read_toml(p), str(p))
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
        for key, value in items:
            cfg.set(key, value, f"--set {key}")
    return cfg.validate()


__all__ = ["ConfigError", "TrainConfig", "coerce", "load_config", "parse_override", "read_tables",
           "read_toml"]
