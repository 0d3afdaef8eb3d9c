"""The three-arm ablation: baseline (λ_iso = 0), isotropy (λ_iso > 0), frozen base (head only),
plus the untouched base model as a reference — trained, evaluated, measured and reported.

This module only orchestrates: triplets come from :mod:`ragcun.data.triplets`, training from
:mod:`ragcun.training`, what is evaluated from :mod:`ragcun.experiment.views`, the one evaluation loop
from :mod:`ragcun.experiment.stages`, tables from :mod:`ragcun.reporting`. Every step writes its result
atomically and is skipped when that result exists, so a re-run picks up where a killed one stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ragcun.experiment.config import (
    BASE_ARM,
    ExperimentConfig,
    ExperimentError,
    arm_config,
    load_experiment,
)
from ragcun.experiment.stages import ApproximateSearchStage, BeirStage, IsotropyStage, evaluate
from ragcun.experiment.views import ViewModels, describe_arm, evaluation_views
from ragcun.files import write_json

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data and training
def prepare_data(exp: ExperimentConfig, data_dir: str | None = None) -> dict[str, Any]:
    """Build the triplets once (BM25 negatives, held-out validation)."""
    manifest = exp.data_dir / "manifest.json"
    if manifest.exists():
        logger.info("data: %s exists, reusing", exp.data_dir)
        return json.loads(manifest.read_text())
    from ragcun.data.triplets import build_triplets

    opts = dataclasses.asdict(exp.triplets)
    sources = opts.pop("sources")
    logger.info("data: building triplets from %s", ", ".join(map(str, sources)))
    return build_triplets(sources, exp.data_dir, data_dir=data_dir, show_progress=False, **opts)


def arm_done(directory: Path) -> bool:
    return (directory / "train_summary.json").exists() and (directory / "best").is_dir()


def train_arm(exp: ExperimentConfig, arm: str, overrides: list[str] | None = None,
              data_dir: str | None = None, output_dir: Path | None = None, **changes: Any) -> dict[str, Any]:
    out = output_dir or exp.arm_dir(arm)
    if arm_done(out):
        logger.info("arm %s: finished before, skipping training", out.name)
        return json.loads((out / "train_summary.json").read_text())
    from ragcun.training import train

    cfg = arm_config(exp, arm, overrides, data_dir, out, **changes)
    cfg.set("resume", out.exists(), "the experiment")  # a killed run continues from its last checkpoint
    logger.info("arm %s: training (%s)", out.name, describe_arm(exp, arm, cfg))
    return train(cfg)


def _train_arm_process(config: str, output_dir: str, arm: str, overrides: list[str], data_dir: str | None,
                       gpu: int | None) -> None:
    """One arm, in a fresh interpreter (spawned): its GPU chosen before anything touches CUDA."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import logging as _logging

    # env (quiet libs) inherited
    _logging.basicConfig(level=_logging.INFO, format=f"[arm {arm}] %(message)s", force=True)
    exp = load_experiment(config, output_dir=output_dir)
    train_arm(exp, arm, overrides, data_dir)


def train_arms_parallel(exp: ExperimentConfig, arms: list[str], overrides: list[str],
                        data_dir: str | None) -> None:
    """One spawned process per arm, each on its own GPU (round-robin over the visible ones), running
    :func:`train_arm` itself: the same code path as a sequential run, without a command line in between."""
    import multiprocessing as mp

    import torch

    n_gpu = torch.cuda.device_count()
    ctx = mp.get_context("spawn")  # CUDA cannot be forked; each arm gets a clean interpreter
    procs = []
    for i, arm in enumerate(arms):
        if arm_done(exp.arm_dir(arm)):
            continue
        gpu = i % n_gpu if n_gpu else None
        logger.info("arm %s: training in its own process%s", arm, f" on GPU {gpu}" if gpu is not None else "")
        proc = ctx.Process(target=_train_arm_process, name=f"ragcun-arm-{arm}",
                           args=(str(exp.path), str(exp.output_dir), arm, list(overrides), data_dir, gpu))
        proc.start()
        procs.append((arm, proc))
    for _, proc in procs:
        proc.join()
    failed = [arm for arm, proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"arms failed: {', '.join(failed)} (see their logs above)")


# ---------------------------------------------------------------------------- evaluation and report
def report(exp: ExperimentConfig, result_files: dict[str, Path], isotropy_files: dict[str, Path],
           ann_file: Path | None) -> dict[str, Any]:
    """The experiment's tables and figures; each arm's model card gets its own test results."""
    from ragcun.experiment.report import build_experiment_report, card_section
    from ragcun.modeling import run_info
    from ragcun.modeling.card import write_card_section

    rep = build_experiment_report(exp, result_files, isotropy_files, ann_file)
    reference = "reference" if "reference" in rep["models"] else rep["baseline"]
    in_domain = {ds: exp.in_domain(ds) for ds in rep["datasets"]}
    for arm in exp.arms:
        best = exp.arm_dir(arm) / "best"
        if best.is_dir() and arm in rep["models"]:
            write_card_section(best, card_section(arm, rep, reference, in_domain, run_info(best), str(best)))
    return rep


def run_experiment(
    config: str | os.PathLike,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
    parallel: bool = False,
    train_only: bool = False,
    data_dir: str | None = None,
    output_dir: str | None = None,
    with_arms: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole experiment, with the optional arms ``with_arms``; returns the report dict."""
    exp = load_experiment(config, output_dir, with_arms)
    overrides = list(overrides or [])
    selected = arms or list(exp.arms)
    for arm in selected:
        if arm not in exp.arms:
            raise ExperimentError(f"{exp.path}: no arm {arm!r} (arms: {', '.join(exp.arms)})")
    for arm in exp.arms:  # every arm's config is checked before anything runs
        arm_config(exp, arm, overrides, data_dir)
    t0 = time.perf_counter()
    exp.output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    prepare_data(exp, data_dir)
    timings["data_s"] = time.perf_counter() - t0
    later = [a for a in selected if BASE_ARM in exp.arms[a]]  # after the arm they start from
    if parallel and len(selected) - len(later) > 1:
        train_arms_parallel(exp, [a for a in selected if a not in later], overrides, data_dir)
        selected = later
    for arm in selected:
        ta = time.perf_counter()
        train_arm(exp, arm, overrides, data_dir)
        timings[f"train_{arm}_s"] = time.perf_counter() - ta
    if train_only:
        return {}
    if exp.whitening.powers or exp.whitening.corrections:
        from ragcun.experiment.whitening import build_whitening

        tw = time.perf_counter()
        build_whitening(exp, data_dir)
        timings["whitening_s"] = time.perf_counter() - tw
    views = evaluation_views(exp)
    ev = exp.evaluation
    settings = ev.encode_settings(data_dir)
    out = evaluate(views, [BeirStage(ev, settings, exp.output_dir / "results"),
                           IsotropyStage(ev, settings, exp.output_dir / "isotropy",
                                         [v.label for v in views if v.measured]),
                           ApproximateSearchStage(ev, settings,
                                                  exp.output_dir / "results" / "approximate_search.json")],
                   ViewModels(ev.max_seq_length, ev))  # each model loaded once, for every stage
    results, iso, ann = out["evaluate"], out["isotropy"], out["approximate_search"]
    timings.update({f"{name}_s": seconds for name, seconds in out["seconds"].items()})
    rep = report(exp, results, iso, ann)
    timings["total_s"] = time.perf_counter() - t0
    write_json(exp.output_dir / "experiment_summary.json",
               {"name": exp.name, "config": str(exp.path), "timings": timings,
                "views": [dataclasses.asdict(v) for v in views],
                "results": {k: str(v) for k, v in results.items()}})
    logger.info("experiment %s done in %.0f s", exp.name, timings["total_s"])
    return rep
