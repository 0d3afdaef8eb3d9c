"""The experiment's TOML: ``[experiment]``, ``[triplets]``, ``[evaluation]``, ``[sweep]``, ``[whitening]`` and
``[arms.<name>]``.

Every table is a dataclass read through :func:`ragcun.config.from_table` (the coercion training
keys use), so a typo such as ``num_negativs`` is a one-line error naming the file, the table and
the key, with a "did you mean" hint. Arm tables hold training keys and are checked against
:class:`~ragcun.training.config.TrainConfig` the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragcun.config import (
    ConfigError,
    choice_problems,
    from_table,
    non_negative,
    parse_override,
    positive,
    read_toml,
)
from ragcun.data.triplets import TripletOptions

DEFAULT_ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"lambda_isotropy": 0.0, "freeze_base": False},
    "isotropy": {"lambda_isotropy": 1.0, "freeze_base": False},
    "frozen": {"lambda_isotropy": 1.0, "freeze_base": True},
}
SWEEP_LAMBDAS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0]
WHITENING_POWERS = [0.0, 0.25, 0.5, 0.75, 1.0]
#: an arm-table key (not a training key): start from another arm's trained model, its body as the base
BASE_ARM = "base_arm"


class ExperimentError(ConfigError):
    """The experiment config is wrong; the message names the file, the table and the key."""


@dataclass
class ExperimentSection:
    name: str | None = None
    output_dir: str | None = None
    arms: list[str] | None = None
    # arms defined under [arms.<name>] but run only when asked for (`ragcun experiment run --with NAME`):
    # peers that would push a run past its time budget
    optional_arms: list[str] = field(default_factory=list)
    reference: str | None = None  # the untouched base model (default: the training base_model)
    baseline: str = "baseline"  # the arm the others are also tested against (besides the reference)


@dataclass(kw_only=True)
class TripletsSection(TripletOptions):
    """The options of :func:`ragcun.data.triplets.build_triplets` and its sources: one set of triplets for
    every arm."""

    sources: list[str]

    def check(self) -> list[str]:
        problems = super().check()
        if not self.sources:
            problems.append("sources must name at least one BEIR dataset or MS MARCO folder")
        return problems


@dataclass
class EvaluationSection:
    datasets: list[str]
    split: str = "test"
    batch_size: int = 32
    max_seq_length: int | None = None
    views: bool = True  # also each arm's head output by cosine and its base (pre-head) output by cosine
    isotropy_max_docs: int = 0  # 0: the whole corpus
    isotropy_num_slices: int = 1024
    approximate_search: bool = True  # recall@10 of the retriever's HNSW and IVF defaults against exact search
    runtime: str = "auto"  # the encoding runtime (ragcun.runtime): torch | onnx
    precision: str = "auto"  # fp32 | bf16 | int8
    # hybrid rows: BM25 alone, and the reference and each arm fused with BM25 (ragcun.encoding.fusion)
    hybrid: bool = False
    hybrid_fusion: Literal["zscore", "convex", "rrf"] = "zscore"
    bm25_weight: float = 0.5  # BM25's weight beside the dense score's 1 (convex: BM25's share)

    RENAMED_KEYS = {"backend": "runtime"}  # one word per meaning: the engine is where vectors live

    def fusion(self, dense: bool = True) -> Any:
        """The hybrid rows' fusion (``dense=False``: BM25 alone)."""
        from ragcun.encoding.fusion import Fusion

        if not dense:
            return Fusion(self.hybrid_fusion, {"bm25": 1.0})
        return Fusion.hybrid(self.hybrid_fusion, self.bm25_weight)

    def check(self) -> list[str]:
        from ragcun.runtime import BACKENDS, PRECISIONS

        problems = choice_problems(self)
        problems += positive(self, "batch_size", "max_seq_length", "isotropy_num_slices")
        problems += non_negative(self, "bm25_weight")
        if self.hybrid_fusion == "convex" and self.bm25_weight > 1:
            problems.append(f"hybrid_fusion = 'convex' needs bm25_weight in [0, 1] (got {self.bm25_weight})")
        problems += non_negative(self, "isotropy_max_docs")
        for key, allowed in (("runtime", BACKENDS), ("precision", PRECISIONS)):
            if getattr(self, key) not in (*allowed, "auto"):
                problems.append(f"{key} must be auto, {', '.join(allowed)} (got {getattr(self, key)!r})")
        if not self.datasets:
            problems.append("datasets must name at least one BEIR dataset")
        return problems

    def encode_settings(self, data_dir: str | None = None) -> Any:
        """This section as the :class:`~ragcun.encoding.settings.EncodeSettings` every stage encodes with (the
        models come loaded and truncated to ``max_seq_length`` by the run, so it is theirs)."""
        from ragcun.encoding.settings import EncodeSettings

        return EncodeSettings(split=self.split, batch_size=self.batch_size, data_dir=data_dir,
                              backend=self.runtime, precision=self.precision)


@dataclass
class SweepSection:
    arm: str = "frozen"  # the arm whose λ is swept (its other keys are kept)
    lambdas: list[float] = field(default_factory=lambda: list(SWEEP_LAMBDAS))

    def check(self) -> list[str]:
        bad = [v for v in self.lambdas if v < 0]
        return ([f"lambdas must be >= 0 (got {bad})"] if bad
                else ([] if self.lambdas else ["lambdas is empty"]))


@dataclass
class WhiteningSection:
    """The post-hoc whitening reference (:mod:`ragcun.experiment.whitening`): the untouched base whitened
    at each power, fitted on the training documents. An empty ``powers`` list leaves it out."""

    powers: list[float] = field(default_factory=lambda: list(WHITENING_POWERS))
    kind: Literal["pca", "zca"] = "pca"
    output_dim: int | None = None  # default: the arms' output_dim
    max_documents: int = 20_000  # distinct training documents the whitening is fitted on
    # the training-free corrections beside it (arXiv 2511.11041): the base centred on the training documents'
    # mean, and centred with its top principal direction removed; ranked by cosine, as the base is
    corrections: bool = True

    def check(self) -> list[str]:
        problems = choice_problems(self) + positive(self, "output_dim", "max_documents")
        bad = [p for p in self.powers if not 0.0 <= p <= 1.0]
        if bad:
            problems.append(f"powers must be in [0, 1] (got {bad})")
        if len(set(self.powers)) != len(self.powers):
            problems.append(f"powers repeat a value (got {self.powers})")
        return problems


@dataclass
class ExperimentConfig:
    path: Path
    name: str
    output_dir: Path
    arms: dict[str, dict[str, Any]]
    reference: str | None
    baseline: str | None
    triplets: TripletsSection
    evaluation: EvaluationSection
    sweep: SweepSection
    whitening: WhiteningSection = field(default_factory=WhiteningSection)

    @property
    def data_dir(self) -> Path:
        return self.output_dir / "data"

    def arm_dir(self, arm: str) -> Path:
        return self.output_dir / "arms" / arm

    def in_domain(self, dataset: str) -> bool:
        """Whether ``dataset`` is one the arms were trained on (else it measures transfer)."""
        names = {Path(s).name for s in self.triplets.sources} | set(self.triplets.sources)
        return dataset in names or Path(dataset).name in names


def _train_value(raw: dict[str, Any], key: str) -> Any:
    if key in raw:
        return raw[key]
    for value in raw.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def _section(cls: type, raw: dict[str, Any], table: str, source: str, required: bool = False) -> Any:
    if table not in raw:
        if required:
            raise ExperimentError(f"{source}: the [{table}] table is missing")
        return cls()
    try:
        return from_table(cls, raw[table], source, table)
    except ConfigError as exc:
        raise ExperimentError(str(exc)) from None


def _arm_table(arm: str, values: Any, source: str) -> dict[str, Any]:
    from ragcun.training.config import coerce as training_coerce

    where = f"{source} [arms.{arm}]"
    if not isinstance(values, dict):
        raise ExperimentError(f"{source}: [arms.{arm}] must be a table of training keys")
    try:
        out = {k: training_coerce(k, v, where) for k, v in values.items() if k != BASE_ARM}
    except ConfigError as exc:
        raise ExperimentError(str(exc)) from None
    if BASE_ARM in values:
        if not isinstance(values[BASE_ARM], str) or not values[BASE_ARM]:
            raise ExperimentError(f"{where}: {BASE_ARM} must name another arm (got {values[BASE_ARM]!r})")
        out[BASE_ARM] = values[BASE_ARM]
    return out


def load_experiment(path: str | os.PathLike, output_dir: str | None = None,
                    with_arms: list[str] | None = None) -> ExperimentConfig:
    """Read and check an experiment TOML (arms, data, evaluation, sweep); errors name file, table and key.
    ``with_arms``: optional arms ([experiment] optional_arms) to run after the others."""
    p = Path(path)
    raw = read_toml(p, ExperimentError)
    source = str(p)
    exp = _section(ExperimentSection, raw, "experiment", source)
    triplets = _section(TripletsSection, raw, "triplets", source, required=True)
    evaluation = _section(EvaluationSection, raw, "evaluation", source, required=True)
    sweep = _section(SweepSection, raw, "sweep", source)
    whitening = _section(WhiteningSection, raw, "whitening", source)
    from ragcun.data.beir import expand_dataset_names

    evaluation.datasets = expand_dataset_names(evaluation.datasets)
    arm_tables = raw.get("arms", {})
    if not isinstance(arm_tables, dict):
        raise ExperimentError(f"{source}: [arms] must hold one table per arm ([arms.baseline], ...)")
    optional = list(exp.optional_arms)
    for arm in optional:
        if arm not in arm_tables:
            raise ExperimentError(f"{source} [experiment]: optional arm {arm!r} has no [arms.{arm}] table")
    for arm in with_arms or []:
        if arm not in optional:
            raise ExperimentError(f"{source}: --with {arm!r} is not an optional arm (optional_arms: "
                                  f"{', '.join(optional) or 'none'})")
    order = exp.arms or [a for a in arm_tables if a not in optional] or list(DEFAULT_ARMS)
    order = [*order, *(a for a in optional if a in (with_arms or []) and a not in order)]
    for arm in optional:  # checked even when not run, so a broken optional arm is found early
        _arm_table(arm, arm_tables[arm], source)
    arms: dict[str, dict[str, Any]] = {}
    for arm in order:
        if arm not in arm_tables and arm not in DEFAULT_ARMS:
            raise ExperimentError(f"{source} [experiment]: arm {arm!r} has no [arms.{arm}] table")
        arms[arm] = {**DEFAULT_ARMS.get(arm, {}), **_arm_table(arm, arm_tables.get(arm, {}), source)}
    for arm, table in arms.items():
        before = list(arms)[: list(arms).index(arm)]
        if BASE_ARM in table and table[BASE_ARM] not in before:
            raise ExperimentError(f"{source} [arms.{arm}]: {BASE_ARM} {table[BASE_ARM]!r} must be an arm "
                                  f"trained before it ({', '.join(before) or 'none'})")
    for arm in arm_tables:
        if arm not in arms and arm not in optional:
            raise ExperimentError(f"{source}: [arms.{arm}] is not in [experiment] arms ({', '.join(arms)})")
    if exp.baseline not in arms:
        if "baseline" in raw.get("experiment", {}):
            raise ExperimentError(f"{source} [experiment]: baseline {exp.baseline!r} is not an arm "
                                  f"({', '.join(arms)})")
        exp.baseline = None
    if sweep.arm not in arms and "sweep" in raw:
        raise ExperimentError(f"{source} [sweep]: arm {sweep.arm!r} is not an arm ({', '.join(arms)})")
    name = exp.name or p.stem
    return ExperimentConfig(
        path=p, name=name, output_dir=Path(output_dir or exp.output_dir or f"runs/{name}"), arms=arms,
        reference=exp.reference or _train_value(raw, "base_model"), baseline=exp.baseline,
        triplets=triplets, evaluation=evaluation, sweep=sweep, whitening=whitening,
    )


def arm_config(exp: ExperimentConfig, arm: str, overrides: list[str] | None = None,
               data_dir: str | None = None, output_dir: Path | None = None, **changes: Any):
    """The training config of one arm: the file's training keys, then the arm's table, then ``--set`` (the
    command line wins over the file), then what the caller changes (a sweep's λ) and the arm's paths."""
    from ragcun.training import load_config

    table = dict(exp.arms[arm])
    base_arm = table.pop(BASE_ARM, None)
    cfg = load_config(exp.path).replace(**table)
    for text in overrides or []:
        key, value = parse_override(text)
        cfg.set(key, value, f"--set {key}")
    out = Path(output_dir or exp.arm_dir(arm))
    values = {"run_name": f"{exp.name}/{out.name}", **changes, "train_data": str(exp.data_dir),
              "output_dir": str(out)}
    if base_arm:  # the other arm's trained model (its body; the head is this arm's own)
        values["base_model"] = str(exp.arm_dir(base_arm) / "best")
    if data_dir:
        values["data_dir"] = data_dir
    return cfg.replace(**values).validate()
