"""The λ trade-off: retrieval quality against isotropy as the SIGReg weight grows.

One point per λ: NDCG@10 with its 95% CI (t-interval over the per-query scores) and its paired
difference to the untouched reference (95% CI, randomisation p), against the corpus embeddings'
SIGReg ratio (1 = indistinguishable from N(0, I) along random slices; at the corpus size and on 1,024
vectors), IsoScore, the top eigenvalue over the mean and the effective rank. Beside them, one point per
power of the post-hoc whitening of the untouched base: the curve the trained arm has to lie above. A
table (Markdown, LaTeX, CSV) and a figure (the paired differences) per dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.files import write_json, write_text
from ragcun.reporting.compare import isotropy_by_label, load_result
from ragcun.reporting.stats import compare, mean_ci
from ragcun.reporting.tables import _csv, delta_cells, latex_table, markdown_table

ISOTROPY_KEYS = ("sigreg_ratio", "sigreg_ratio_fixed", "isoscore", "isoscore_reference",
                 "top_eigenvalue_ratio", "effective_rank_ratio", "empty_directions")


def sweep_points(points: dict[float, str], result_files: dict[str, Path], isotropy_files: dict[str, Path],
                 datasets: list[str], whitening: dict[float, str] | None = None) -> list[dict[str, Any]]:
    """One row per (λ or whitening power, dataset): NDCG@10 with CI, Δ vs reference with CI and p, and the
    corpus isotropy (:data:`ISOTROPY_KEYS`). Whitening rows have ``lambda`` None and ``power`` set."""
    results = {label: load_result(f) for label, f in result_files.items() if Path(f).exists()}
    iso = isotropy_by_label(isotropy_files)
    ref = results.get("reference")
    rows = []
    for ds in datasets:
        name = Path(ds).name
        entries: list[tuple[float | None, float | None, str]] = [(None, None, "reference")]
        entries += [(lam, None, label) for lam, label in sorted(points.items())]
        entries += [(None, p, label) for p, label in sorted((whitening or {}).items())]
        for lam, power, label in entries:
            r = results.get(label)
            if r is None or name not in r.get("per_query", {}):
                continue
            per_query = [v["ndcg@10"] for v in r["per_query"][name].values()]
            mean, low, high = mean_ci(per_query)
            test = compare(r, ref, name) if ref is not None and label != "reference" else None
            row_iso = iso.get((name, label, "corpus"), {})
            rows.append({"dataset": name, "lambda": lam, "power": power, "label": label, "ndcg@10": mean,
                         "ci_low": low, "ci_high": high,
                         "delta_vs_reference": None if test is None else test["mean_diff"],
                         "delta_ci_low": None if test is None else test["ci_low"],
                         "delta_ci_high": None if test is None else test["ci_high"],
                         "perm_p": None if test is None else test["perm_p"],
                         **{k: row_iso.get(k) for k in ISOTROPY_KEYS}, "queries": len(per_query)})
    return rows


def _point_name(r: dict[str, Any]) -> str:
    if r["lambda"] is not None:
        return f"λ_iso = {r['lambda']:g}"
    return "reference" if r.get("power") is None else f"whitening p = {r['power']:g}"


def _num(v: Any, digits: int) -> str:
    return "–" if not isinstance(v, int | float) else f"{v:.{digits}f}"


def sweep_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["Dataset", "Point", "NDCG@10 [95% CI]", "Δ vs reference [95% CI]", "p", "SIGReg ratio",
              "ratio, n = 1,024", "IsoScore [N(0, I)]", "top eig. / mean", "eff. rank / dim"]
    out = []
    for r in rows:
        test = None if r["perm_p"] is None else {"mean_diff": r["delta_vs_reference"],
                                                 "ci_low": r["delta_ci_low"], "ci_high": r["delta_ci_high"],
                                                 "perm_p": r["perm_p"]}
        delta, p = delta_cells(test)
        out.append([r["dataset"], _point_name(r),
                    f"{r['ndcg@10'] * 100:.2f} [{r['ci_low'] * 100:.2f}, {r['ci_high'] * 100:.2f}]", delta, p,
                    _num(r["sigreg_ratio"], 2), _num(r.get("sigreg_ratio_fixed"), 2),
                    f"{_num(r['isoscore'], 3)} [{_num(r.get('isoscore_reference'), 3)}]",
                    _num(r.get("top_eigenvalue_ratio"), 1), _num(r.get("effective_rank_ratio"), 3)])
    return header, out


def sweep_figure(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """ΔNDCG@10 against the untouched reference (paired 95% CI) versus the corpus SIGReg ratio and versus
    IsoScore: one row of panels per dataset, each point labelled by its λ.

    The paired difference is what the sweep is about; its CI is the per-query paired one (much tighter
    than the CI of each NDCG@10 on its own, which the table gives).
    """
    from ragcun.evaluation.plots import _plt, _save

    plt = _plt()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4.0 * len(datasets)), squeeze=False)
    for row_axes, ds in zip(axes, datasets, strict=True):
        arm = [r for r in rows if r["dataset"] == ds and r["lambda"] is not None
               and r["sigreg_ratio"] is not None and r["delta_vs_reference"] is not None]
        white = sorted((r for r in rows if r["dataset"] == ds and r.get("power") is not None
                        and r["sigreg_ratio"] is not None and r["delta_vs_reference"] is not None),
                       key=lambda r: r["power"])
        ref = next((r for r in rows if r["dataset"] == ds and r["lambda"] is None), None)
        for ax, key, label, log in ((row_axes[0], "sigreg_ratio",
                                     "corpus SIGReg ratio (1 = N(0, I); log scale, lower is better)", True),
                                    (row_axes[1], "isoscore",
                                     "corpus IsoScore (1 = isotropic; higher is better)", False)):
            labels: list[Any] = []
            points: list[tuple[float, float]] = []
            ax.axhline(0.0, color="0.35", ls="--", lw=1,
                       label=f"untouched reference ({ref['ndcg@10'] * 100:.2f})" if ref
                       else "untouched reference")
            if arm:
                x = np.array([r[key] for r in arm])
                y = np.array([r["delta_vs_reference"] for r in arm]) * 100
                err = np.array([[r["delta_vs_reference"] - r["delta_ci_low"],
                                 r["delta_ci_high"] - r["delta_vs_reference"]] for r in arm]).T * 100
                ax.errorbar(x, y, yerr=err, fmt="o", color="C0", ecolor="C0", elinewidth=1, capsize=3,
                            label="trained arm, one per λ_iso (paired 95% CI)")
                labels += [ax.text(xv, yv, f"λ={r['lambda']:g}", fontsize=7)
                           for r, xv, yv in zip(arm, x, y, strict=True)]
                points += list(zip(x, y, strict=True))
            if white:
                wx = np.array([r[key] for r in white])
                wy = np.array([r["delta_vs_reference"] for r in white]) * 100
                ax.plot(wx, wy, "s-", color="C1", ms=4, lw=1.2,
                        label="post-hoc whitening of the untouched base, one per power p")
                labels += [ax.text(xv, yv, f"p={r['power']:g}", fontsize=7, color="C1")
                           for r, xv, yv in zip(white, wx, wy, strict=True)]
                points += list(zip(wx, wy, strict=True))
            if log:
                from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

                ax.axvline(2.0, color="C3", ls=":", lw=1, label="SIGReg ratio 2 (the target)")
                ax.set_xscale("log")
                xs = [r[key] for r in arm + white]
                ax.set_xlim(min([1.5, *xs]) / 1.3, max([2.0, *xs]) * 1.6)
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("ΔNDCG@10 vs reference, ×100", fontsize=8)
            ax.set_title(f"{ds}{': ' + title if title else ''}", fontsize=9)
            ax.margins(x=0.08, y=0.12)
            # move the λ / p labels off each other and off the points, with a leader line where moved
            if labels:
                from adjustText import adjust_text

                px, py = zip(*points, strict=True)
                adjust_text(labels, x=list(px), y=list(py), ax=ax, expand=(1.3, 1.6), ensure_inside_axes=True,
                            arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5})
        row_axes[0].legend(fontsize=7, loc="best", framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def write_sweep_report(points: dict[float, str], result_files: dict[str, Path],
                       isotropy_files: dict[str, Path], datasets: list[str], out_dir: str | os.PathLike,
                       title: str = "", whitening: dict[float, str] | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    rows = sweep_points(points, result_files, isotropy_files, datasets, whitening)
    header, table = sweep_table(rows)
    md = markdown_table(header, table)
    files = {
        "sweep.md": str(write_text(out / "sweep.md", md + "\n")),
        "sweep.tex": str(write_text(out / "sweep.tex", latex_table(
            header, table, f"The λ sweep{': ' + title if title else ''}.", "tab:sweep"))),
        "sweep.csv": str(write_text(out / "sweep.csv", _csv(rows))),
        "sweep.png": str(sweep_figure(rows, out / "sweep.png", title)),
    }
    summary = {"rows": rows, "markdown": md, "files": files}
    write_json(out / "sweep.json", summary)
    return summary
