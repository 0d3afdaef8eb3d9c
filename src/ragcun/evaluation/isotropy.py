"""How close a set of embeddings is to the isotropic Gaussian N(0, I).

All metrics are measured against N(0, I) itself — not "isotropic up to scale" — because that
is what SIGReg trains toward and what makes L2 distances comparable across models:

* ``mean_norm``: ‖μ‖, the norm of the mean vector (N(0, I) sample: about √(d/n));
* ``per_dim_mean`` / ``per_dim_var``: the d means and variances (targets 0 and 1);
* ``cov_error_fro``: ‖C − I‖_F of the sample covariance C; ``cov_error_rel`` divides by ‖I‖_F = √d
  (an N(0, I) sample of size n has about √((d + 1)/n) from sampling noise alone);
* ``mean_abs_offdiag_corr``: mean |corr(i, j)| over i ≠ j (scale-free);
* ``eigenvalue_score``: 1 − std(λ)/mean(λ) over the covariance eigenvalues (1 when all equal);
* ``isoscore``: IsoScore (Rudman, Gillman, Rayne & Eickhoff, ACL Findings 2022), in [0, 1],
  the fraction of dimensions used uniformly (scale-free, rotation-invariant);
* ``effective_rank``: Roy & Vetterli (2007), exp of the entropy of the normalised singular
  values of the centred data (d for isotropic data, 1 for a line);
* ``isoscore_reference``: the IsoScore of a true N(0, I) sample of the same n and d — the most a
  Gaussian sample reaches at that size (about 1 − d/n: 0.88 for 3,633 vectors of 512 dimensions);
* ``top_eigenvalue_ratio``: the largest covariance eigenvalue over their mean (1 for N(0, I));
  ``empty_directions``: eigenvalues below 1e-4 of the mean (directions the embeddings never use);
* ``sigreg``: the SIGReg Epps–Pulley statistic over random unit slices (``ragcun.losses.sigreg``),
  beside the same statistic for true N(0, I) samples of the same size (``sigreg_reference``);
  ``sigreg_ratio`` is their quotient (about 1 for a Gaussian sample). The test's power grows with n —
  a fixed deviation from N(0, I) adds about n times a constant to the statistic — so a ratio is only
  comparable at equal n: ``sigreg_ratio_fixed`` is the ratio on a seeded subsample of ``fixed_n``
  (1,024) vectors, comparable across corpora of any size;
* ``norms``: the distribution of ‖x‖ (N(0, I): concentrated around √d).

Verdict (see :data:`THRESHOLDS`): ``is_isotropic`` when the covariance is within
``max(0.2, 3·√((d+1)/n))`` of I in relative Frobenius norm, the mean is within
``max(0.1, 3/√n)`` per dimension (RMS), and IsoScore ≥ 0.9. ``is_gaussian`` additionally asks
``sigreg_ratio ≤ 2`` (the slices look like N(0, 1), not only their covariance).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.encoding.settings import EncodeSettings
from ragcun.files import write_json, write_text
from ragcun.fingerprint import model_fingerprint

logger = logging.getLogger(__name__)

#: The documented thresholds of the verdict (n = samples, d = dimension).
THRESHOLDS: dict[str, str] = {
    "cov_error_rel": "<= max(0.2, 3*sqrt((d+1)/n))",
    "mean_rms": "<= max(0.1, 3/sqrt(n))  (mean_rms = ||mean|| / sqrt(d))",
    "isoscore": ">= 0.9",
    "sigreg_ratio": "<= 2.0 (is_gaussian only)",
}

SCALAR_KEYS = (
    "n", "dim", "mean_norm", "mean_rms", "per_dim_mean_abs_max", "per_dim_var_mean", "per_dim_var_min",
    "per_dim_var_max", "cov_error_fro", "cov_error_rel", "cov_error_rel_expected", "mean_abs_offdiag_corr",
    "eigenvalue_score", "isoscore", "isoscore_reference", "top_eigenvalue_ratio", "empty_directions",
    "effective_rank", "effective_rank_ratio", "sigreg", "sigreg_reference", "sigreg_ratio",
    "sigreg_ratio_fixed", "fixed_n", "norm_mean", "norm_std", "norm_expected", "is_isotropic", "is_gaussian",
)
#: The sample size of the size-independent SIGReg ratio.
FIXED_N = 1024
#: An eigenvalue below this fraction of the mean is an empty direction.
EMPTY_FRACTION = 1e-4


def isoscore(emb: np.ndarray | None = None, eigenvalues: np.ndarray | None = None) -> float:
    """IsoScore (Rudman et al. 2022) from the data or from its covariance eigenvalues.

    1. PCA-reorient and take the variances along the principal axes (the eigenvalues λ);
    2. normalise: λ̂ = √d · λ / ‖λ‖₂;  3. isotropy defect δ = ‖λ̂ − 1‖₂ / √(2(d − √d));
    4. dimensions used k = (d − δ²(d − √d))² / d²;  5. IsoScore = (d·k − 1) / (d − 1).
    """
    if eigenvalues is None:
        if emb is None:
            raise ValueError("pass emb or eigenvalues")
        eigenvalues = np.linalg.eigvalsh(np.cov(np.asarray(emb, dtype=np.float64), rowvar=False))
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    d = lam.shape[0]
    if d < 2:
        raise ValueError("IsoScore needs at least 2 dimensions")
    norm = np.linalg.norm(lam)
    if norm == 0:
        return 0.0
    lam_hat = math.sqrt(d) * lam / norm
    defect = np.linalg.norm(lam_hat - 1.0) / math.sqrt(2.0 * (d - math.sqrt(d)))
    k = (d - defect**2 * (d - math.sqrt(d))) ** 2 / d**2
    return float(np.clip((d * k - 1.0) / (d - 1.0), 0.0, 1.0))


def effective_rank(emb: np.ndarray | None = None, singular_values: np.ndarray | None = None) -> float:
    """Roy & Vetterli's effective rank: exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσ over the centred data's singular
    values."""
    if singular_values is None:
        x = np.asarray(emb, dtype=np.float64)
        singular_values = np.linalg.svd(x - x.mean(0), compute_uv=False)
    s = np.asarray(singular_values, dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def sigreg_statistic(emb: np.ndarray, num_slices: int = 1024, seed: int = 0,
                     max_samples: int | None = 20_000) -> float:
    """Mean Epps–Pulley statistic over ``num_slices`` random unit slices (ragcun.losses.sigreg.SIGReg, eval
    mode)."""
    import torch

    from ragcun.losses.sigreg import SIGReg

    x = np.asarray(emb, dtype=np.float32)
    if max_samples is not None and x.shape[0] > max_samples:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)]
    reg = SIGReg(num_slices=num_slices, seed=seed).eval()
    with torch.no_grad():
        return float(reg(torch.from_numpy(x), distributed=False))


def sigreg_reference(n: int, dim: int, num_slices: int = 1024, seed: int = 0, repeats: int = 3,
                     max_samples: int | None = 20_000) -> tuple[float, float]:
    """Mean and std of the SIGReg statistic for ``repeats`` true N(0, I) samples of shape (n, dim)."""
    n = min(n, max_samples) if max_samples else n
    rng = np.random.default_rng(seed + 12345)
    vals = [sigreg_statistic(rng.standard_normal((n, dim)).astype(np.float32), num_slices, seed, None)
            for _ in range(repeats)]
    return float(np.mean(vals)), float(np.std(vals))


def isotropy_metrics(
    emb: np.ndarray,
    num_slices: int = 1024,
    seed: int = 0,
    include_arrays: bool = True,
    reference_repeats: int = 3,
    fixed_n: int = FIXED_N,
) -> dict[str, Any]:
    """Every isotropy metric of ``emb`` (n, d) against N(0, I), plus the ``is_isotropic`` verdict.

    With ``include_arrays`` the result also holds the per-dimension means/variances, the
    eigenvalue spectrum and norm histogram data (for plots and JSON; drop them for CSV).
    """
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {x.shape}")
    n, d = x.shape
    if n < 2 or d < 2:
        raise ValueError(f"need at least 2 vectors of at least 2 dimensions, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    mean = x.mean(0)
    var = x.var(0, ddof=1)
    cov = np.cov(x, rowvar=False)
    eye = np.eye(d)
    cov_err = float(np.linalg.norm(cov - eye))
    std = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(std, std)
    off = ~np.eye(d, dtype=bool)
    off_vals = np.abs(corr[off])
    mean_abs_corr = float(np.nanmean(off_vals)) if np.isfinite(off_vals).any() else float("nan")
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    eig_score = float(1.0 - lam.std() / lam.mean()) if lam.mean() > 0 else 0.0
    norms = np.linalg.norm(x, axis=1)

    sig = sigreg_statistic(x, num_slices, seed)
    ref_mean, ref_std = sigreg_reference(n, d, num_slices, seed, reference_repeats)
    m = min(int(fixed_n), n)
    sub = x if m == n else x[np.sort(np.random.default_rng(seed + 1).choice(n, m, replace=False))]
    fixed_ref = ref_mean if m == n else sigreg_reference(m, d, num_slices, seed, reference_repeats)[0]
    ratio_fixed = sigreg_statistic(sub, num_slices, seed, None) / fixed_ref if fixed_ref > 0 else float("inf")
    iso_ref = isoscore(np.random.default_rng(seed + 2).standard_normal((n, d)))
    mean_rms = float(np.linalg.norm(mean) / math.sqrt(d))
    cov_rel = cov_err / math.sqrt(d)
    cov_expected = math.sqrt((d + 1) / n)
    checks = {
        "cov_error_rel": cov_rel <= max(0.2, 3.0 * cov_expected),
        "mean_rms": mean_rms <= max(0.1, 3.0 / math.sqrt(n)),
        "isoscore": None,
        "sigreg_ratio": None,
    }
    iso = isoscore(eigenvalues=lam)
    checks["isoscore"] = iso >= 0.9
    ratio = sig / ref_mean if ref_mean > 0 else float("inf")
    checks["sigreg_ratio"] = ratio <= 2.0
    is_iso = bool(checks["cov_error_rel"] and checks["mean_rms"] and checks["isoscore"])

    out: dict[str, Any] = {
        "n": int(n),
        "dim": int(d),
        "mean_norm": float(np.linalg.norm(mean)),
        "mean_rms": mean_rms,
        "per_dim_mean_abs_max": float(np.abs(mean).max()),
        "per_dim_var_mean": float(var.mean()),
        "per_dim_var_min": float(var.min()),
        "per_dim_var_max": float(var.max()),
        "cov_error_fro": cov_err,
        "cov_error_rel": cov_rel,
        "cov_error_rel_expected": cov_expected,
        "mean_abs_offdiag_corr": mean_abs_corr,
        "eigenvalue_score": eig_score,
        "isoscore": iso,
        "isoscore_reference": iso_ref,
        "top_eigenvalue_ratio": float(lam[0] / lam.mean()) if lam.mean() > 0 else float("inf"),
        "empty_directions": int((lam < EMPTY_FRACTION * lam.mean()).sum()),
        "effective_rank": effective_rank(singular_values=np.sqrt(lam * (n - 1))),
        "effective_rank_ratio": effective_rank(singular_values=np.sqrt(lam * (n - 1))) / d,
        "sigreg": sig,
        "sigreg_reference": ref_mean,
        "sigreg_reference_std": ref_std,
        "sigreg_ratio": float(ratio),
        "sigreg_ratio_fixed": float(ratio_fixed),
        "fixed_n": int(m),
        "sigreg_num_slices": int(num_slices),
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "norm_expected": float(math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))),
        "norm_percentiles": {str(p): float(v) for p, v in zip(
            (1, 5, 25, 50, 75, 95, 99), np.percentile(norms, [1, 5, 25, 50, 75, 95, 99]), strict=True)},
        "checks": {k: bool(v) for k, v in checks.items()},
        "thresholds": dict(THRESHOLDS),
        "is_isotropic": is_iso,
        "is_gaussian": bool(is_iso and checks["sigreg_ratio"]),
    }
    if include_arrays:
        out["per_dim_mean"] = mean.astype(np.float32).tolist()
        out["per_dim_var"] = var.astype(np.float32).tolist()
        out["eigenvalues"] = lam.astype(np.float32).tolist()
    return out


class IsotropyEvaluator:
    """Isotropy of a model's corpus and query embeddings on one BEIR dataset, in the spirit of
    sentence-transformers' evaluators: built with the dataset and settings (the documents sampled once,
    seeded, down to ``max_docs``), called with a model, returning one metrics row per kind (``corpus``,
    ``queries``). The corpus vectors of each model it saw stay in :attr:`corpus_embeddings` for side-by-side
    figures."""

    def __init__(self, dataset: str, *, settings: EncodeSettings | None = None, max_docs: int | None = 10_000,
                 num_slices: int = 1024, seed: int = 0) -> None:
        from ragcun.data.beir import load_beir
        from ragcun.encoding.corpus import judged_queries

        self.settings, self.dataset, self.num_slices, self.seed = (settings or EncodeSettings(), dataset,
                                                                   num_slices, seed)
        self.data = load_beir(dataset, split=self.settings.split, data_dir=self.settings.data_dir)
        self.queries = judged_queries(self.data)
        doc_ids = list(self.data.corpus)
        self.cache_name = self.data.name  # the whole corpus: the same cache entry as `ragcun evaluate`
        if max_docs and len(doc_ids) > max_docs:
            rng = np.random.default_rng(seed)
            doc_ids = [doc_ids[i] for i in sorted(rng.choice(len(doc_ids), max_docs, replace=False))]
            self.cache_name = f"{self.data.name}-sample{max_docs}-seed{seed}"
        self.doc_ids = doc_ids
        self.corpus_embeddings: dict[str, np.ndarray] = {}

    def __call__(self, model: Any, label: str | None = None) -> list[dict[str, Any]]:
        from ragcun.encoding.corpus import encode_beir_corpus, encode_texts

        model, name, _, batch_size = self.settings.load(model)
        label = label or Path(str(name).rstrip("/")).name
        emb = encode_beir_corpus(model, self.data, batch_size, self.settings.cache, doc_ids=self.doc_ids,
                                 cache_name=self.cache_name)
        try:
            docs = emb.array()
        finally:
            emb.cleanup()
        q = encode_texts(model, list(self.queries.values()), "query", batch_size)
        fp = model_fingerprint(model)
        rows = []
        for kind, x in (("corpus", docs), ("queries", q)):
            logger.info("isotropy of %s on %s %s %s", label, self.dataset, kind, x.shape)
            m = isotropy_metrics(x, self.num_slices, self.seed)
            rows.append({"label": label, "model": str(name), "model_fingerprint": fp, "dataset": self.dataset,
                         "kind": kind, **m})
        self.corpus_embeddings[label] = docs
        return rows


def analyze(
    models: Sequence[Any] = (),
    dataset: str | None = None,
    embeddings: Sequence[str | os.PathLike] = (),
    out_dir: str | os.PathLike | None = None,
    split: str = "test",
    max_docs: int | None = 10_000,
    num_slices: int = 1024,
    seed: int = 0,
    batch_size: int | None = None,
    max_seq_length: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    plots: bool = True,
    labels: Sequence[str] | None = None,
    backend: str | None = None,
    precision: str | None = None,
    settings: EncodeSettings | None = None,
) -> dict[str, Any]:
    """Isotropy of several models on one dataset (corpus and queries), and/or of saved ``.npy`` matrices.

    Corpus documents are sampled (seeded) down to ``max_docs`` before encoding. Writes
    ``isotropy.json`` (full metrics with arrays), ``isotropy.csv`` (scalar metrics, one row per
    model × kind) and the four figures (corpus embeddings of every model side by side) to ``out_dir``.
    ``backend``/``precision`` choose the encoding runtime (:mod:`ragcun.runtime`); the encoding settings may
    come as one :class:`~ragcun.encoding.settings.EncodeSettings` instead (``settings=``).
    """
    s = EncodeSettings.of(settings, split=split, batch_size=batch_size, max_seq_length=max_seq_length,
                          data_dir=data_dir, cache=cache, backend=backend, precision=precision)
    if not models and not embeddings:
        raise ValueError("give at least one model (with a dataset) or one embeddings .npy file")
    if models and not dataset:
        raise ValueError("a model needs --dataset to encode")
    rows: list[dict[str, Any]] = []
    figures: dict[str, np.ndarray] = {}
    names = list(labels) if labels else []

    for path in embeddings:
        p = Path(path)
        try:
            arr = np.load(p, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p}: cannot read as a .npy matrix ({exc})") from None
        if arr.ndim != 2:
            raise ValueError(f"{p}: expected a 2-D (n, dim) matrix, got shape {arr.shape}")
        label = names.pop(0) if names else p.stem
        logger.info("isotropy of %s %s", p, arr.shape)
        m = isotropy_metrics(np.asarray(arr, dtype=np.float32), num_slices, seed)
        rows.append({"label": label, "model": str(p), "dataset": None, "kind": "embeddings", **m})
        figures[label] = np.asarray(arr, dtype=np.float32)

    if models:
        evaluator = IsotropyEvaluator(dataset, settings=s, max_docs=max_docs, num_slices=num_slices,
                                      seed=seed)
        for spec in models:
            label = names.pop(0) if names else None
            new = evaluator(spec, label)
            rows += new
            figures[new[0]["label"]] = evaluator.corpus_embeddings[new[0]["label"]]

    return write_isotropy(rows, figures, out_dir, dataset=dataset, split=s.split, num_slices=num_slices,
                          seed=seed, plots=plots)


def write_isotropy(rows: list[dict[str, Any]], figures: dict[str, np.ndarray],
                   out_dir: str | os.PathLike | None, *, dataset: str | None, split: str, num_slices: int,
                   seed: int, plots: bool = True) -> dict[str, Any]:
    """The isotropy report of ``rows`` (one per model and kind): ``isotropy.json`` (full metrics with
    arrays), ``isotropy.csv`` (the scalar metrics) and, with ``plots``, the figures of the ``figures``
    embeddings side by side, in ``out_dir`` (nothing is written when it is None); returns the report."""

    result: dict[str, Any] = {"dataset": dataset, "split": split, "num_slices": num_slices, "seed": seed,
                              "thresholds": dict(THRESHOLDS), "results": rows}
    if out_dir is None:
        return result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "isotropy.json", result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["label", "model", "dataset", "kind", *SCALAR_KEYS],
                       extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "isotropy.csv", buf.getvalue())
    if plots:
        from ragcun.evaluation.plots import isotropy_plots

        spectra = {r["label"]: np.asarray(r["eigenvalues"]) for r in rows
                   if r["kind"] in ("corpus", "embeddings")}
        result["figures"] = {k: str(v) for k, v in isotropy_plots(figures, out, spectra).items()}
    return result
