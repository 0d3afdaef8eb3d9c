"""The λ sweep: one arm trained per SIGReg weight, evaluated beside the untouched reference.

``ragcun experiment sweep CONFIG --lambdas 0,0.01,0.1,1`` (or the config's ``[sweep]`` table) takes
one arm of the experiment (the frozen-base arm by default: on a CPU it trains on cached features and
its corpus vectors come from one shared pass of the base), trains it once per λ with everything else
unchanged, and writes ``<output_dir>/sweep/<arm>/``: the trained models, results, isotropy, and the
trade-off table and figure (NDCG@10 with 95% CIs against the corpus SIGReg ratio and IsoScore), with the
post-hoc whitening curve of the untouched base (``[whitening]``) beside the trained points.
Finished λ values are skipped, so a sweep resumes and can be extended.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ragcun.experiment.config import ExperimentConfig, ExperimentError, load_experiment
from ragcun.experiment.run import prepare_data, train_arm
from ragcun.experiment.stages import BeirStage, IsotropyStage, evaluate
from ragcun.experiment.views import View, ViewModels, whitening_views

logger = logging.getLogger(__name__)


def sweep_dir(exp: ExperimentConfig, arm: str) -> Path:
    return exp.output_dir / "sweep" / arm


def lambda_tag(lam: float) -> str:
    return f"lam{lam:g}".replace("-", "m")


def run_sweep(
    config: str | os.PathLike,
    lambdas: list[float] | None = None,
    arm: str | None = None,
    overrides: list[str] | None = None,
    data_dir: str | None = None,
    output_dir: str | None = None,
) -> dict[str, Any]:
    """Train ``arm`` once per λ, evaluate every one and the reference, and write the trade-off report."""
    from ragcun.experiment.sweep_report import write_sweep_report

    exp = load_experiment(config, output_dir)
    arm = arm or exp.sweep.arm
    if arm not in exp.arms:
        raise ExperimentError(f"{exp.path}: no arm {arm!r} to sweep (arms: {', '.join(exp.arms)})")
    lambdas = list(lambdas if lambdas is not None else exp.sweep.lambdas)
    if not lambdas or any(not (lam >= 0) for lam in lambdas):
        raise ExperimentError(f"--lambdas must be numbers >= 0, got {lambdas}")
    root = sweep_dir(exp, arm)
    t0 = time.perf_counter()
    prepare_data(exp, data_dir)
    from ragcun.training import load_config

    what = "head only" if load_config(exp.path).replace(**exp.arms[arm]).freeze_base else "full fine-tuning"
    points: dict[float, str] = {}
    views: list[View] = []
    if exp.reference:
        views.append(View("reference", str(exp.reference), "cos", description="untouched", role="reference"))
    for lam in lambdas:
        label = f"{arm}-{lambda_tag(lam)}"
        directory = root / "arms" / label
        train_arm(exp, arm, overrides, data_dir, output_dir=directory, lambda_isotropy=float(lam))
        points[float(lam)] = label
        views.append(View(label, str(directory / "best"), "l2", description=f"λ_iso = {lam:g}, {what}"))
    whitening: dict[float, str] = {}
    if exp.whitening.powers:  # the post-hoc whitening curve, drawn beside the trained arm's
        from ragcun.experiment.whitening import build_whitening

        build_whitening(exp, data_dir)
        curve = [v for v in whitening_views(exp) if v.role == "whitening"]
        for v, p in zip(curve, exp.whitening.powers, strict=True):
            views.append(v)
            whitening[float(p)] = v.label
    ev = exp.evaluation
    settings = ev.encode_settings(data_dir)
    out = evaluate(views, [BeirStage(ev, settings, root / "results"),
                           IsotropyStage(ev, settings, root / "isotropy",
                                         [v.label for v in views if v.measured])],
                   ViewModels(ev.max_seq_length, ev))  # each model loaded once, for both stages
    results, iso = out["evaluate"], out["isotropy"]
    title = f"{exp.name}, {arm} arm ({what})"
    summary = write_sweep_report(points, results, iso, exp.evaluation.datasets, root / "report", title,
                                 whitening)
    logger.info("sweep of %s over λ = %s done in %.0f s: %s", arm, ", ".join(f"{v:g}" for v in lambdas),
                time.perf_counter() - t0, summary["files"]["sweep.png"])
    return summary
