"""``ragcun preflight`` on an experiment config: the checks of a training preflight, for what the
experiment will really do.

An experiment builds its own triplets, so it has no ``train_data`` to check. Instead: every
triplet source and evaluation dataset is found with the split it needs (cheap, before any model
loads), the base model loads, a few triplets are built from the sources exactly as the run builds
them (same negatives, same exclusions), and every arm runs real training steps on them with its own
settings (frozen or not, its λ), into a temporary folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from ragcun.config import read_toml
from ragcun.experiment.config import ExperimentConfig
from ragcun.training.preflight import (
    Check,
    _timed,
    check_data,
    check_dependencies,
    check_disk,
    check_gpu,
    check_model,
    check_training,
)


def is_experiment_config(path: str | Path) -> bool:
    """Whether a TOML file is an experiment config (it has ``[triplets]`` or ``[experiment]``)."""

    raw = read_toml(path)
    return "triplets" in raw or "experiment" in raw


def _find(source: str, split: str, data_dir: str | None) -> str:
    from ragcun.data.beir import find_split
    from ragcun.data.msmarco import is_msmarco_dir, msmarco_split_files

    if is_msmarco_dir(source):
        msmarco_split_files(source, split)
        return f"{source} (MS MARCO, {split})"
    if ("/" in source or source.startswith(".")) and not Path(source).expanduser().is_dir():
        raise FileNotFoundError(f"{source}: no such folder (`ragcun data triplets --msmarco-download "
                                "--out DIR` fetches MS MARCO into <data dir>/msmarco/passage; a BEIR folder "
                                "holds corpus.jsonl)")
    find_split(source, split, data_dir)
    return f"{Path(source).name} ({split})"


def _find_all(names: list[str], split: str, data_dir: str | None) -> tuple[str, str]:
    found, missing = [], []
    for name in names:
        try:
            found.append(_find(name, split, data_dir))
        except (OSError, ValueError) as exc:
            missing.append((name, str(exc)))
    if not missing:
        return "pass", f"{len(found)} found: " + ", ".join(found)
    if len(missing) == 1:
        return "fail", missing[0][1]
    return "fail", (f"{len(missing)} of {len(names)} not found: {', '.join(n for n, _ in missing)} "
                    f"(first: {missing[0][1]})")


def check_sources(exp: ExperimentConfig, data_dir: str | None = None) -> tuple[str, str]:
    return _find_all([str(s) for s in exp.triplets.sources], exp.triplets.split, data_dir)


def check_eval_datasets(exp: ExperimentConfig, data_dir: str | None = None) -> tuple[str, str]:
    return _find_all(list(exp.evaluation.datasets), exp.evaluation.split, data_dir)


def build_sample(exp: ExperimentConfig, out: Path, n: int, data_dir: str | None = None) -> tuple[str, str]:
    """A few triplets built as the run builds them (``[triplets]`` with a small sample size)."""
    from ragcun.data.triplets import build_triplets

    opts = dataclasses.asdict(exp.triplets)
    sources = opts.pop("sources")
    opts.update(max_train_samples=n, val_size=min(opts["val_size"], 4),
                val_corpus_size=min(opts["val_corpus_size"], 50))
    manifest = build_triplets(sources, out, data_dir=data_dir, show_progress=False, **opts)
    c = manifest["counts"]
    return "pass", (f"{c['train_examples']} triplets ({exp.triplets.negatives} negatives), "
                    f"{c['validation_queries']} validation queries, built as the run builds them")


def run_experiment_preflight(exp: ExperimentConfig, steps: int = 2, overrides: list[str] | None = None,
                             data_dir: str | None = None) -> list[Check]:
    """Every check, cheap ones first; the training steps run only when nothing before them failed."""
    from ragcun.experiment.config import BASE_ARM, arm_config

    arms = {arm: arm_config(exp, arm, overrides, data_dir) for arm in exp.arms}
    first = next(iter(arms.values()))
    results = [
        _timed("GPU", lambda: check_gpu(first)),
        _timed("disk", lambda: check_disk(first)),
        _timed("dependencies", check_dependencies),
        _timed("triplet sources", lambda: check_sources(exp, data_dir)),
        _timed("evaluation datasets", lambda: check_eval_datasets(exp, data_dir)),
    ]
    if any(r.status == "fail" for r in results[2:]):
        return results + [Check("model and training steps", "fail", "skipped: fix the failures above first")]
    results.append(_timed("model", lambda: check_model(first)))
    with tempfile.TemporaryDirectory(prefix="ragcun-preflight-data-") as tmp:
        sample = Path(tmp) / "triplets"
        rows = max(first.per_device_train_batch_size, 4) * steps
        results.append(_timed("triplets", lambda: build_sample(exp, sample, rows, data_dir)))
        if any(r.status == "fail" for r in results[2:]):
            return results + [Check("training steps", "fail", "skipped: fix the failures above first")]
        for arm, cfg in arms.items():
            cfg = cfg.replace(train_data=str(sample))
            if BASE_ARM in exp.arms[arm]:  # its base arm is not trained yet: the same steps on the base
                cfg = cfg.replace(base_model=first.base_model)
            results.append(_timed(f"arm {arm}: data", lambda cfg=cfg: check_data(cfg)))
            results.append(_timed(f"arm {arm}: {steps} steps", lambda cfg=cfg: check_training(cfg, steps)))
    return results
