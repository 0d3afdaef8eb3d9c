"""Figures for papers: isotropy diagnostics, reliability diagrams and result bar charts (matplotlib, PNG).

Several models go side by side in one figure (same axes limits where it makes sense) so a base
model and its SIGReg-trained version can be compared at a glance. Every file is written
atomically; the Agg backend is used so no display is needed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.files import atomic_path

logger = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def _chi_pdf(r: np.ndarray, d: int) -> np.ndarray:
    """Density of ‖x‖ for x ~ N(0, I_d) (chi distribution), for the norm histogram's reference curve."""
    log_pdf = ((d - 1) * np.log(np.maximum(r, 1e-300)) - r**2 / 2 - (d / 2 - 1) * math.log(2)
               - math.lgamma(d / 2))
    return np.exp(log_pdf)


def norm_histogram(embeddings: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Histogram of ‖x‖ per model, with the N(0, I) chi density of the same dimension."""
    plt = _plt()
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (label, emb) in zip(axes[0], embeddings.items(), strict=True):
        norms = np.linalg.norm(np.asarray(emb, dtype=np.float64), axis=1)
        d = emb.shape[1]
        lo, hi = min(norms.min(), math.sqrt(d) - 4), max(norms.max(), math.sqrt(d) + 4)
        spread = float(np.ptp(norms))
        # counts on the left axis, the N(0, I) density on the right: a unit-norm model (a spike) stays visible
        bins = (50 if spread > 1e-3 * max(1.0, norms.max())
                else np.linspace(norms.min() - 0.05, norms.max() + 0.05, 3))
        ax.hist(norms, bins=bins, alpha=0.7, color="C0", label=f"embeddings (mean {norms.mean():.3g})")
        ax.set_ylabel("count")
        r = np.linspace(max(lo, 0), hi, 400)
        twin = ax.twinx()
        twin.plot(r, _chi_pdf(r, d), "k--", lw=1, label=f"N(0, I$_{{{d}}}$) density")
        twin.set_ylim(bottom=0)
        twin.set_yticks([])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("‖x‖")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7)
    fig.suptitle("Embedding norms", fontsize=10)
    return _save(fig, path)


def eigenvalue_spectrum(spectra: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Covariance eigenvalues (descending, log scale) for every model on one axis; N(0, I) is the
    line at 1."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, lam in spectra.items():
        lam = np.sort(np.asarray(lam, dtype=np.float64))[::-1]
        ax.plot(np.arange(1, len(lam) + 1), np.maximum(lam, 1e-12), label=label, lw=1.2)
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="N(0, I)")
    ax.set_yscale("log")
    ax.set_xlabel("component")
    ax.set_ylabel("eigenvalue of the covariance")
    ax.set_title("Eigenvalue spectrum", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def covariance_heatmap(embeddings: Mapping[str, np.ndarray], path: str | os.PathLike,
                       max_dims: int = 64) -> Path:
    """The covariance matrix (first ``max_dims`` dimensions) per model on one shared colour scale,
    symmetric around 0, so the panels compare directly (N(0, I) is 1 on the diagonal, 0 elsewhere)."""
    plt = _plt()
    n = len(embeddings)
    covs = {label: np.cov(np.asarray(emb, dtype=np.float64)[:, :max_dims], rowvar=False)
            for label, emb in embeddings.items()}
    lim = max((float(np.abs(c).max()) for c in covs.values()), default=1.0) or 1.0
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.8, 3.6), squeeze=False, constrained_layout=True)
    im = None
    for ax, (label, cov) in zip(axes[0], covs.items(), strict=True):
        im = ax.imshow(cov, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"{label} (first {cov.shape[0]} dims)", fontsize=8)
        ax.set_xlabel("dimension")
        ax.set_ylabel("dimension")
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), fraction=0.046, pad=0.02, label="covariance")
    fig.suptitle("Covariance of the embeddings (N(0, I): 1 on the diagonal, 0 elsewhere)", fontsize=10)
    return _save(fig, path)


def per_dimension_distributions(
    embeddings: Mapping[str, np.ndarray], path: str | os.PathLike, n_dims: int = 6, seed: int = 0
) -> Path:
    """Per-dimension value densities (a few random dimensions, and all pooled) against the N(0, 1) density."""
    plt = _plt()
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    grid = np.linspace(-4, 4, 400)
    gauss = np.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi)
    rng = np.random.default_rng(seed)
    for ax, (label, emb) in zip(axes[0], embeddings.items(), strict=True):
        x = np.asarray(emb, dtype=np.float64)
        dims = rng.choice(x.shape[1], size=min(n_dims, x.shape[1]), replace=False)
        lim = max(4.0, float(np.percentile(np.abs(x), 99.5)))
        bins = np.linspace(-lim, lim, 80)
        for j in dims:
            ax.hist(x[:, j], bins=bins, density=True, histtype="step", alpha=0.6, lw=0.8)
        ax.hist(x.reshape(-1), bins=bins, density=True, histtype="step", color="k", lw=1.4, label="all dims")
        ax.plot(grid, gauss, "r--", lw=1.2, label="N(0, 1)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("coordinate value")
        ax.legend(fontsize=7)
    fig.suptitle("Per-dimension distributions", fontsize=10)
    return _save(fig, path)


def isotropy_plots(
    embeddings: Mapping[str, np.ndarray], out_dir: str | os.PathLike,
    spectra: Mapping[str, np.ndarray] | None = None
) -> dict[str, Path]:
    """All four isotropy figures for the given models (label -> embeddings) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spectra is None:
        spectra = {k: np.linalg.eigvalsh(np.cov(np.asarray(v, dtype=np.float64), rowvar=False))
                   for k, v in embeddings.items()}
    return {
        "norm_histogram": norm_histogram(embeddings, out / "norm_histogram.png"),
        "eigenvalue_spectrum": eigenvalue_spectrum(spectra, out / "eigenvalue_spectrum.png"),
        "covariance_heatmap": covariance_heatmap(embeddings, out / "covariance_heatmap.png"),
        "per_dimension": per_dimension_distributions(embeddings, out / "per_dimension_distributions.png"),
    }


def reliability_plot(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Reliability diagram (predicted probability of relevance vs observed frequency) per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for label, res in results.items():
        bins = [b for b in res["reliability"] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", ms=3,
                label=f"{label} (ECE {res['ece']:.3f})")
    ax.set_xlabel("predicted P(relevant | score)")
    ax.set_ylabel("observed fraction relevant")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def metric_bar_chart(
    values: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    metric: str = "ndcg@10",
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """One group per dataset (outer key), one point per model (inner key) with its 95% CI (``errors``: the
    half-width) and its value printed beside it; the legend sits outside the axes.

    Points, not bars from zero: the arms differ by a point or less, which a bar's length from zero hides;
    the axis spans the data, with a grid line every half point when the span is small enough to show it.
    """
    from matplotlib.ticker import MultipleLocator

    plt = _plt()
    datasets = list(values)
    models: list[str] = []
    for ds in datasets:
        for m in values[ds]:
            if m not in models:
                models.append(m)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(datasets) * max(1, len(models)) * 0.6 + 2) + 1.6, 3.4),
                           constrained_layout=True)
    x = np.arange(len(datasets))
    lows, highs = [], []
    for j, m in enumerate(models):
        ys = np.array([values[ds].get(m, np.nan) * 100 for ds in datasets])
        err = (np.array([(errors or {}).get(ds, {}).get(m, np.nan) * 100 for ds in datasets])
               if errors else None)
        xs = x + (j - (len(models) - 1) / 2) * width
        ax.errorbar(xs, ys, yerr=err, fmt="o", ms=6, capsize=3, elinewidth=1.2, label=m, color=f"C{j % 10}")
        for xv, yv in zip(xs, ys, strict=True):
            if np.isfinite(yv):
                ax.annotate(f"{yv:.2f}", (xv, yv), textcoords="offset points", xytext=(5, 0), va="center",
                            fontsize=7)
        e = np.nan_to_num(err, nan=0.0) if err is not None else np.zeros_like(ys)
        lows += list(ys - e)
        highs += list(ys + e)
    lo, hi = np.nanmin(lows), np.nanmax(highs)
    pad = max(0.5, 0.08 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    if hi - lo + 2 * pad <= 12:
        ax.yaxis.set_major_locator(MultipleLocator(1.0))
        ax.yaxis.set_minor_locator(MultipleLocator(0.5))
        ax.grid(axis="y", which="both", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    ax.set_xticks(x, datasets, rotation=20 if len(datasets) > 4 else 0)
    ax.set_xlim(-0.5, len(datasets) - 0.5)
    ax.set_xlabel("dataset")
    ax.set_ylabel(f"{metric.upper()} (×100)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"{metric.upper()}" + (" (mean, 95% CI over queries; the axis does not start at 0)"
                                        if errors else " (the axis does not start at 0)"), fontsize=9)
    return _save(fig, path)
