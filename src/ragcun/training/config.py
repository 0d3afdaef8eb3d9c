"""Training configuration: one dataclass, read from TOML, every key overridable from the command line.

A config file may be flat (``base_model = "..."``) or group its keys in tables
(``[model]``, ``[data]``, ``[optim]``, ``[loss]``, ``[output]``, ``[validation]``); the tables are
flattened, so ``--set lambda_isotropy=0`` overrides a key wherever the file put it. The experiment's
tables (``[experiment]``, ``[triplets]``, ``[evaluation]``, ``[sweep]``, ``[arms.*]``) are read by
:mod:`ragcun.experiment`, through the same coercion (:mod:`ragcun.config`).
Unknown keys are errors that name the file and suggest the closest key: a typo must never
silently fall back to a default in a run that takes hours.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragcun.config import (
    ConfigError,
    choice_problems,
    non_negative,
    parse_override,
    positive,
    read_toml,
    unknown_key,
)
from ragcun.config import coerce as _coerce

MixedPrecision = Literal["no", "fp16", "bf16"]
GROUP_TABLES = ("model", "data", "optim", "loss", "teacher", "output", "validation")
FOREIGN_TABLES = ("experiment", "evaluation", "arms", "triplets", "sweep", "whitening")


@dataclass
class TrainConfig:
    """Everything ``ragcun train`` needs. Defaults follow the paper setting where one exists."""

    # data
    # `ragcun data triplets` output dir, a save_to_disk dir, or .jsonl/.parquet/.csv
    train_data: str | None = None
    # mini-BEIR dir or BEIR name; default: <train_data>/validation if present
    validation_data: str | None = None
    validation_split: str = "dev"
    validation_max_queries: int | None = None
    validate_during_training: bool = True  # false: no validation (e.g. preflight, quick smoke runs)
    num_negatives: int | None = None  # use at most this many negative_* columns (None: all)
    max_train_samples: int | None = None
    data_dir: str | None = None
    # model
    base_model: str = "all-MiniLM-L6-v2"
    # chosen on NFCorpus dev (docs/isotropy.md); <= the base dimension keeps the head full-rank
    output_dim: int = 128
    head: Literal["mlp", "linear"] = "mlp"
    hidden_dim: int = 1024
    freeze_base: bool = False
    freeze_layers: int = 0
    max_seq_length: int = 256
    normalize_base: bool = True  # keep the base's own Normalize before the head (the base's cosine geometry)
    # warm: start at the base's ranking (see docs/method.md)
    head_init: Literal["warm", "calibrated", "default"] = "warm"
    # warm start's whitening power: 0 = the base's geometry, 1 = whitened (N(0, I) covariance)
    head_init_power: float = 0.5
    calibration_samples: int = 1024  # training texts (documents, for warm) the head is initialised on
    fast_frozen: bool = True  # with freeze_base: train the head on cached base features
    # with freeze_layers > 0 (base not frozen): cache the frozen layers' output once, train the layers above
    # on it (ragcun.training.prefix; BERT-family bases)
    fast_prefix: bool = True
    # cached-prefix training: every training text cut to this many tokens (queries are short: in effect the
    # documents; None: max_seq_length); evaluation always sees max_seq_length
    train_max_seq_length: int | None = None
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
    loss_form: Literal["sum", "convex"] = "sum"  # sum: c + λ·SIGReg; convex: LeJEPA's (1 − λ)·c + λ·SIGReg
    sigreg_on: Literal["joint", "separate"] = "joint"  # one test on queries + documents, or one each
    lambda_reg: float = 0.0
    num_slices: int = 1024
    slice_policy: Literal["random", "pca"] = "pca"  # pca: random slices + the data's extreme principal axes
    # (random slices alone missed an 8-of-256 anisotropy the pca policy detects: docs/isotropy.md)
    principal_slices: int = 32  # pca: this many largest- and smallest-variance axes
    slice_refresh: int = 1  # pca: recompute the axes every this many SIGReg calls (from the previous sample)
    # test the batch together with this many recent detached embeddings (global under DDP)
    sigreg_queue: int = 0
    # test a fresh uniform sample of this many training documents per step, through the head
    # (on the base's cached features: exact for a frozen base, the base before fine-tuning otherwise)
    sigreg_sample: int = 0
    # with a cached prefix (fast_prefix): the sample's features go through the layers being trained,
    # recomputed every this many steps
    sigreg_refresh: int = 50
    # squared distances grow with output_dim (≈ 2·D apart); 5 measured best at 128-d
    temperature: float = 5.0
    distance: Literal["squared", "l2"] = "squared"
    gather_across_devices: bool = True
    # teacher: its scores over each query's candidates as the training signal (ragcun.training.teacher)
    teacher: Literal["none", "hybrid", "dense", "bm25"] = "none"
    teacher_model: str | None = None  # the dense scorer (default: base_model)
    teacher_fusion: Literal["zscore", "convex", "rrf"] = "zscore"
    teacher_bm25_weight: float = 0.5  # BM25's weight beside the dense score's 1 (convex: BM25's share)
    teacher_candidates: int = 8  # the teacher's top documents per training example, beside its positive
    teacher_temperature: float = 1.0  # T in softmax(teacher / T)
    teacher_max_seq_length: int | None = None  # the dense scorer's (default: max_seq_length)
    # the BEIR dataset (name or folder) whose train split the triplets came from (default: their manifest's
    # source and split)
    teacher_data: str | None = None
    distill_loss: Literal["kl", "margin_mse"] = "kl"
    lambda_distill: float = 1.0
    lambda_contrastive: float = 1.0  # InfoNCE on the labels (0: the teacher alone)
    # the peer: the plain base (its own cosine, no head, no SIGReg) trained with sentence-transformers' own
    # loss instead of ragcun's objective, on the same data, teacher and budget: mnrl
    # (MultipleNegativesRankingLoss on the labels) or distill_kl (DistillKLDivLoss on the teacher's scores)
    st_loss: Literal["none", "mnrl", "distill_kl"] = "none"
    st_temperature: float = 0.05  # the cosine student's temperature (MNRL's scale is its inverse: 20)
    # output, logging, checkpoints
    output_dir: str = "runs/train"
    # the model's name in its card, results and run files (default: from output_dir)
    run_name: str | None = None
    resume: bool = False
    logging_steps: int = 10
    eval_steps: int = 0  # 0: evaluate at the end of every epoch
    eval_on_start: bool = True  # validate the warm-started model at step 0 too (logged; never chosen as best)
    save_steps: int = 0  # 0: checkpoint at the end of every epoch
    save_total_limit: int | None = 2
    metric_for_best_model: str = "ndcg@10"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    ddp_backend: str | None = None  # None: nccl on GPU, gloo on CPU
    use_cpu: bool = False

    # ------------------------------------------------------------------ validation
    def check(self) -> list[str]:
        """What is wrong with the values (empty when nothing): the contract of every config section."""
        problems = choice_problems(self)
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.gradient_accumulation_steps < 1:
            problems.append("gradient_accumulation_steps must be >= 1")
        problems += positive(self, "base_learning_rate", "projection_learning_rate", "temperature",
                             "max_seq_length", "output_dim", "hidden_dim", "num_slices", "feature_batch_size",
                             "logging_steps", "max_grad_norm", "validation_max_queries", "max_train_samples",
                             "num_negatives", "principal_slices", "slice_refresh", "teacher_candidates",
                             "sigreg_refresh",
                             "teacher_temperature", "teacher_max_seq_length", "train_max_seq_length",
                             "st_temperature")
        problems += non_negative(self, "lambda_isotropy", "lambda_reg", "weight_decay", "warmup_ratio",
                                 "freeze_layers", "warmup_steps", "eval_steps", "save_steps",
                                 "dataloader_num_workers", "epochs", "sigreg_queue", "sigreg_sample",
                                 "teacher_bm25_weight", "lambda_distill", "lambda_contrastive")
        if self.calibration_samples < 2:
            problems.append(f"calibration_samples must be >= 2 (got {self.calibration_samples})")
        if not 0.0 <= self.head_init_power <= 1.0:
            problems.append(f"head_init_power must be in [0, 1] (got {self.head_init_power})")
        if self.head_init_power > 0 and self.head_init != "warm":
            problems.append(f"head_init_power applies to head_init = 'warm' (got head_init = "
                            f"{self.head_init!r})")
        if self.sigreg_sample and self.sigreg_queue:
            problems.append("set sigreg_sample or sigreg_queue, not both")
        if self.warmup_ratio > 1:
            problems.append(f"warmup_ratio must be in [0, 1] (got {self.warmup_ratio})")
        if self.loss_form == "convex" and self.lambda_isotropy > 1:
            problems.append(f"loss_form = 'convex' needs lambda_isotropy in [0, 1] (got "
                            f"{self.lambda_isotropy})")
        if self.teacher == "none" and self.lambda_contrastive == 0:
            problems.append("lambda_contrastive = 0 without a teacher leaves nothing to learn from")
        if self.teacher_fusion == "convex" and self.teacher_bm25_weight > 1:
            problems.append(f"teacher_fusion = 'convex' needs teacher_bm25_weight in [0, 1] (got "
                            f"{self.teacher_bm25_weight})")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            problems.append(f"save_total_limit must be >= 1 or none (got {self.save_total_limit})")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("set epochs > 0 or max_steps > 0")
        return problems + self._st_problems()

    def _st_problems(self) -> list[str]:
        """The sentence-transformers peer trains the base as it is: nothing of ragcun's objective applies."""
        if self.st_loss == "none":
            return []
        what = f"st_loss = {self.st_loss!r} trains the plain base with sentence-transformers' own loss"
        problems = [f"{what}: set {key} = {want!r} (got {getattr(self, key)!r})"
                    for key, want in (("lambda_isotropy", 0.0), ("lambda_reg", 0.0), ("sigreg_sample", 0),
                                      ("sigreg_queue", 0), ("freeze_base", False))
                    if getattr(self, key) != want]
        if self.st_loss == "mnrl" and self.teacher != "none":
            problems.append(f"{what} on the labels: set teacher = 'none' (or st_loss = 'distill_kl')")
        if self.st_loss == "distill_kl" and self.teacher == "none":
            problems.append(f"{what} on a teacher's scores: set teacher (hybrid, dense or bm25)")
        return problems

    def validate(self) -> TrainConfig:
        """``self``, or a ConfigError listing every problem :meth:`check` finds."""
        problems = self.check()
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


def coerce(key: str, value: Any, source: str = "config") -> Any:
    """Convert ``value`` to the type of training key ``key`` (see :func:`ragcun.config.coerce`)."""
    if key not in FIELDS:
        raise unknown_key(TrainConfig, key, source, "training key")
    return _coerce(TrainConfig, key, value, source)


def apply_values(cfg: TrainConfig, values: dict[str, Any], source: str) -> None:
    for key, value in values.items():
        setattr(cfg, key, coerce(key, value, source))


def flatten_toml(data: dict[str, Any], source: str, where: dict[str, str] | None = None) -> dict[str, Any]:
    """Flatten grouping tables; drop other commands' tables; a key set twice is an error.

    ``where`` (if given) receives, for each key, the source and table it came from (for error messages).
    """
    flat: dict[str, Any] = {}
    where = where if where is not None else {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key in FOREIGN_TABLES:
                continue
            if key not in GROUP_TABLES:
                raise ConfigError(
                    f"{source}: unknown table [{key}] (training keys go at the top level or in one of "
                    f"{', '.join(f'[{t}]' for t in GROUP_TABLES)}; experiment tables: "
                    f"{', '.join(f'[{t}]' for t in FOREIGN_TABLES)})"
                )
            for sub, sub_value in value.items():
                if sub in flat:
                    raise ConfigError(f"{source} [{key}]: key {sub!r} is set twice ([{key}] and elsewhere)")
                flat[sub] = sub_value
                where[sub] = f"{source} [{key}]"
        else:
            if key in flat:
                raise ConfigError(f"{source}: key {key!r} is set twice")
            flat[key] = value
            where[key] = source
    return flat


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
        where: dict[str, str] = {}
        for key, value in flatten_toml(read_toml(p), str(p), where).items():
            setattr(cfg, key, coerce(key, value, where[key]))
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
        for key, value in items:
            setattr(cfg, key, coerce(key, value, f"--set {key}"))
    return cfg.validate()


__all__ = ["ConfigError", "TrainConfig", "coerce", "flatten_toml", "load_config", "parse_override",
           "read_toml"]
