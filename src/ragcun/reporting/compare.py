"""The comparison report across models and datasets: tables (Markdown, LaTeX, CSV), paired
significance on per-query scores, the isotropy table, and bar charts (``ragcun report``).

Input: result JSON files written by ``ragcun evaluate`` / :func:`ragcun.evaluation.beir_eval.evaluate_model`
(one model each, any number of datasets) and optionally isotropy JSON files from ``ragcun isotropy``.

Significance is paired per query, model vs the baseline, on the queries both evaluated:

* paired t-test (``scipy.stats.ttest_rel``, two-sided) and the t-based 95% confidence interval
  of the mean per-query difference;
* a paired randomisation test (random sign flips of the per-query differences, two-sided,
  ``n_permutations`` draws, seeded, with the +1 correction of Phipson & Smyth 2010), the test
  IR papers usually report (Smucker, Allan & Carterette 2007).

Tables mark ``†`` where the randomisation test gives p < ``alpha`` against the baseline, and
bold the best model per dataset.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.files import write_json, write_text
from ragcun.reporting.stats import compare, mean_ci
from ragcun.reporting.tables import _csv, _fmt, _latex_escape, fmt_p, latex_table, markdown_table

logger = logging.getLogger(__name__)

DEFAULT_REPORT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read one results JSON, checking the fields the report needs (errors name the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"results file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"{path}: not a ragcun results file (no 'results' object); "
                         "write one with `ragcun evaluate`")
    for ds, vals in data["results"].items():
        if not isinstance(vals, dict):
            raise ValueError(f"{path}: results[{ds!r}] must be an object of metric -> value")
    data.setdefault("per_query", {})
    data.setdefault("model", path.stem)
    data["_file"] = str(path)
    return data


def _labels(results: list[dict[str, Any]]) -> list[str]:
    """Short unique labels: the model's last path component, disambiguated by score or file name."""
    base = [Path(str(r["model"]).rstrip("/")).name or str(r["model"]) for r in results]
    labels = []
    for i, b in enumerate(base):
        if base.count(b) > 1:
            cand = f"{b} ({r_score})" if (r_score := results[i].get("score")) else b
            if [f"{x} ({results[j].get('score')})" for j, x in enumerate(base)].count(cand) > 1:
                cand = f"{b} [{Path(results[i]['_file']).stem}]"
            labels.append(cand)
        else:
            labels.append(b)
    return labels


def _paired_tests(results: list[dict[str, Any]], labels: list[str], b_idx: int, datasets: list[str],
                  metric: str, n_permutations: int, seed: int, warn: bool = False
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """The paired test of every model against the baseline on per-query ``metric``, over the queries both
    evaluated: ``{ds: {label: test}}`` (``warn``: log when the two share only some of their queries)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    base = results[b_idx]
    for i, r in enumerate(results):
        for ds in datasets if i != b_idx else ():
            test = compare(r, base, ds, metric, n_permutations, seed)
            if test is None:
                continue
            n_a, n_b = (len(x.get("per_query", {}).get(ds) or {}) for x in (r, base))
            if warn and test["n"] < max(n_a, n_b):
                logger.warning("%s: %s and %s share %d of %d/%d queries; testing on the shared ones",
                               ds, labels[i], labels[b_idx], test["n"], n_a, n_b)
            out.setdefault(ds, {})[labels[i]] = test
    return out


def _ci_half_widths(results: list[dict[str, Any]], labels: list[str], datasets: list[str], metric: str
                    ) -> dict[str, dict[str, float]]:
    """Half-width of the 95% CI of each model's mean per-query ``metric`` (for the charts' error bars)."""
    out: dict[str, dict[str, float]] = {}
    for lab, r in zip(labels, results, strict=True):
        for ds in datasets:
            per_q = [v[metric] for v in r.get("per_query", {}).get(ds, {}).values() if metric in v]
            if len(per_q) > 1:
                mean, low, _ = mean_ci(per_q)
                out.setdefault(ds, {})[lab] = mean - low
    return out


#: The isotropy table's columns: key -> readable name with the direction that is closer to N(0, I).
ISOTROPY_COLUMNS = {
    "isoscore": "IsoScore ↑", "isoscore_reference": "IsoScore of N(0, I), same n",
    "cov_error_rel": "cov. error ↓", "top_eigenvalue_ratio": "top eigenvalue / mean ↓",
    "empty_directions": "empty directions ↓", "effective_rank_ratio": "eff. rank / dim ↑",
    "mean_abs_offdiag_corr": "mean abs. corr. ↓", "sigreg_ratio": "SIGReg ratio ↓",
    "sigreg_ratio_fixed": "SIGReg ratio, n = 1,024 ↓", "norm_mean": "mean norm", "is_isotropic": "isotropic",
}
ISOTROPY_DIRECTIONS = ("↑: higher is closer to N(0, I) (IsoScore and effective rank ratio reach 1; a finite "
                       "N(0, I) sample's IsoScore is about 1 − dim/n, given beside it); ↓: lower is closer "
                       "(covariance error ‖C − I‖/‖I‖, the mean absolute off-diagonal correlation and the "
                       "empty directions reach 0; the top eigenvalue over the mean and the SIGReg ratios "
                       "reach 1); an N(0, I) sample's mean norm is √dim.")


def load_isotropy(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of an isotropy JSON written by ``ragcun isotropy`` (or a single metrics dict)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    rows = data.get("results") if isinstance(data, dict) and "results" in data else [data]
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "isoscore" in r for r in rows):
        raise ValueError(f"{path}: not a ragcun isotropy file (rows with 'isoscore' expected)")
    return rows


def build_report(
    result_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    baseline: str | None = None,
    isotropy_files: Sequence[str | os.PathLike] | None = None,
    metrics: Sequence[str] = DEFAULT_REPORT_METRICS,
    significance_metric: str = "ndcg@10",
    n_permutations: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
    plots: bool = True,
) -> dict[str, Any]:
    """Build the comparison report in ``out_dir``; returns a summary dict whose ``"markdown"`` is the main
    table.

    ``baseline`` is a model label, a model name as stored in the results, or a result file path;
    default: the first file. Files written: ``report.md``, ``<metric>.tex`` and ``<metric>.md``
    per metric, ``results.csv`` (long format), ``significance.csv``, ``isotropy.csv``/``.md``
    (if isotropy files are given), ``<metric>.png`` bar charts and ``report.json``.
    """
    if not result_files:
        raise ValueError("no result files given")
    results = [load_result(f) for f in result_files]
    labels = _labels(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    b_idx = 0
    if baseline is not None:
        matches = [i for i, (lab, r) in enumerate(zip(labels, results, strict=True))
                   if baseline in (lab, str(r["model"]), r["_file"])
                   or Path(r["_file"]).resolve() == Path(baseline).resolve()]
        if not matches:
            raise ValueError(f"baseline {baseline!r} matches none of the models: {', '.join(labels)}")
        b_idx = matches[0]
    base_label = labels[b_idx]

    datasets: list[str] = []
    for r in results:
        datasets += [d for d in r["results"] if d not in datasets]

    # significance of every model vs the baseline, per dataset
    sig = _paired_tests(results, labels, b_idx, datasets, significance_metric, n_permutations, seed,
                        warn=True)
    sig_rows = [{"dataset": ds, "model": lab, "baseline": base_label, "metric": significance_metric,
                 **sig[ds][lab]} for lab in labels for ds in datasets if lab in sig.get(ds, {})]

    files: dict[str, str] = {}
    long_rows: list[dict[str, Any]] = []
    for lab, r in zip(labels, results, strict=True):
        for ds, vals in r["results"].items():
            for m, v in vals.items():
                long_rows.append({"model": lab, "model_name": r["model"], "score": r.get("score"),
                                  "dataset": ds, "metric": m, "value": v})
    files["results.csv"] = str(write_text(out / "results.csv", _csv(long_rows)))
    files["significance.csv"] = str(write_text(out / "significance.csv", _csv(sig_rows)))

    sections: list[str] = ["# ragcun comparison report", "",
                           f"Models: {', '.join(labels)}. Baseline: **{base_label}**. Values ×100. "
                           f"**bold** = best per dataset; † = randomisation test p < {alpha} vs the baseline "
                           f"on that table's per-query metric ({n_permutations} sign flips).", ""]
    tables: dict[str, str] = {}
    summary_values: dict[str, dict[str, dict[str, float]]] = {}
    for metric in metrics:
        have = [ds for ds in datasets if any(metric in r["results"].get(ds, {}) for r in results)]
        if not have:
            continue
        several = len(have) > 1  # an average of one dataset is that dataset again
        # † in every metric table: the same paired randomisation test on that metric's per-query values
        tests = sig if metric == significance_metric else _paired_tests(results, labels, b_idx, have, metric,
                                                                        n_permutations, seed)
        marks = {ds: {lab: t["perm_p"] for lab, t in by_lab.items()} for ds, by_lab in tests.items()}
        header = ["Model", *have,
                  *(["Avg", f"Δ Avg vs {base_label}"] if several else [f"Δ vs {base_label}"])]
        vals = {lab: {ds: r["results"].get(ds, {}).get(metric) for ds in have}
                for lab, r in zip(labels, results, strict=True)}
        summary_values[metric] = vals
        best = {ds: max((v[ds] for v in vals.values() if v[ds] is not None), default=None) for ds in have}
        avgs = {lab: (float(np.mean(list(v.values()))) if all(x is not None for x in v.values()) else None)
                for lab, v in vals.items()}
        rows = []
        for lab in labels:
            cells = [lab]
            for ds in have:
                v = vals[lab][ds]
                c = _fmt(v)
                if v is not None and best[ds] is not None and v == best[ds] and len(labels) > 1:
                    c = f"**{c}**"
                if marks.get(ds, {}).get(lab, 1.0) < alpha:
                    c += "†"
                cells.append(c)
            if several:
                cells.append(_fmt(avgs[lab]))
            d = None if avgs[lab] is None or avgs[labels[b_idx]] is None else avgs[lab] - avgs[labels[b_idx]]
            cells.append("–" if lab == base_label else (f"{d * 100:+.2f}" if d is not None else "–"))
            rows.append(cells)
        md = markdown_table(header, rows)
        tables[metric] = md
        safe = metric.replace("@", "_at_")
        files[f"{safe}.md"] = str(write_text(out / f"{safe}.md", md + "\n"))
        files[f"{safe}.tex"] = str(write_text(
            out / f"{safe}.tex",
            latex_table(header, rows, f"{metric.upper()} ($\\times$100). $^\\dagger$: p < {alpha} "
                        f"vs {_latex_escape(base_label)} (paired randomisation test).", f"tab:{safe}"),
        ))
        sections += [f"## {metric.upper()}", "", md, ""]
        if plots:
            from ragcun.evaluation.plots import metric_bar_chart

            by_ds = {ds: {lab: vals[lab][ds] for lab in labels if vals[lab][ds] is not None} for ds in have}
            files[f"{safe}.png"] = str(metric_bar_chart(
                by_ds, out / f"{safe}.png", metric, errors=_ci_half_widths(results, labels, have, metric)))
            sections += [f"![{metric}]({safe}.png)", ""]

    if sig_rows:
        header = ["Dataset", "Model", f"Δ {significance_metric.upper()}", "95% CI", "t-test p", "rand. p",
                  "W/T/L"]
        rows = [[s["dataset"], s["model"], f"{s['mean_diff'] * 100:+.2f}",
                 f"[{s['ci_low'] * 100:+.2f}, {s['ci_high'] * 100:+.2f}]", fmt_p(s["t_p"]),
                 fmt_p(s["perm_p"]), f"{s['wins']}/{s['ties']}/{s['losses']}"] for s in sig_rows]
        md = markdown_table(header, rows)
        tables["significance"] = md
        files["significance.tex"] = str(write_text(out / "significance.tex", latex_table(
            header, rows, f"Paired significance vs {_latex_escape(base_label)} on per-query "
            f"{significance_metric.upper()}.", "tab:significance")))
        sections += [f"## Significance vs {base_label} (per-query {significance_metric.upper()}, ×100)",
                     "", md, ""]

    iso_rows: list[dict[str, Any]] = []
    for f in isotropy_files or []:
        iso_rows += load_isotropy(f)
    if iso_rows:
        keys = list(ISOTROPY_COLUMNS)
        header = ["Model", "Data", *ISOTROPY_COLUMNS.values()]
        rows = []
        for r in iso_rows:
            data = str(r.get("dataset") or "")
            if r.get("kind"):
                data = f"{data} {r['kind']}".strip()
            rows.append([str(r.get("label", r.get("model", "?"))), data,
                         *[("yes" if r.get(k) else "no") if k == "is_isotropic" else
                           (str(r[k]) if isinstance(r.get(k), int) and not isinstance(r.get(k), bool) else
                            f"{r[k]:.3f}" if isinstance(r.get(k), int | float) else "–") for k in keys]])
        md = markdown_table(header, rows)
        tables["isotropy"] = md
        files["isotropy.md"] = str(write_text(out / "isotropy.md", md + "\n"))
        files["isotropy.tex"] = str(write_text(out / "isotropy.tex", latex_table(
            header, rows, f"Isotropy of the embeddings against N(0, I). {ISOTROPY_DIRECTIONS}",
            "tab:isotropy")))
        files["isotropy.csv"] = str(write_text(out / "isotropy.csv", _csv(
            [{k: r.get(k) for k in ["label", "model", "dataset", "kind", "n", "dim", *keys]}
             for r in iso_rows])))
        sections += ["## Isotropy", "", ISOTROPY_DIRECTIONS, "", md, ""]

    report_md = "\n".join(sections)
    files["report.md"] = str(write_text(out / "report.md", report_md))
    main = tables.get(significance_metric) or next(iter(tables.values()), "")
    summary = {
        "models": labels,
        "baseline": base_label,
        "datasets": datasets,
        "values": summary_values,
        "significance": sig,
        "isotropy": iso_rows,
        "files": files,
        "markdown": main,
        "tables": tables,
        "report_markdown": report_md,
    }
    files["report.json"] = str(out / "report.json")
    write_json(out / "report.json", {k: v for k, v in summary.items() if k != "report_markdown"})
    return summary


def isotropy_by_label(isotropy_files: dict[str, Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(dataset, label, kind) -> isotropy row, over isotropy reports by dataset."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ds, f in isotropy_files.items():
        if Path(f).exists():
            for row in load_isotropy(f):
                out[(Path(ds).name, str(row.get("label")), str(row.get("kind")))] = row
    return out
