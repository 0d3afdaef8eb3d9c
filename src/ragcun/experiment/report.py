"""The experiment's own tables: does training beat the untouched base, does isotropy help, where did
the change happen, and what does approximate search lose.

* **main** (one per dataset, in-domain ones first): every arm beside the reference, NDCG@10 with the
  paired difference against the reference and against the baseline arm (95% CI, randomisation p),
  Recall@100, MRR@10, and the corpus embeddings' SIGReg ratio and IsoScore;
* **views**: each arm's head output by L2 and by cosine, and its base's output before the head by
  cosine — if the head's cosine beats its L2, the norm hurts ranking; if the base view moved from the
  reference, fine-tuning changed the base;
* **isotropy** (one per dataset): the corpus embeddings' SIGReg ratio at the corpus size and at a fixed
  n = 1,024, IsoScore beside what a true N(0, I) sample of the same size reaches, the top eigenvalue over
  the mean, the effective rank and the empty directions;
* **whitening**: the post-hoc whitening curve (the untouched base whitened at each power), and each arm
  against it at its own isotropy: the curve's NDCG@10 interpolated at the arm's SIGReg ratio, and a paired
  test against the whitening point nearest to that ratio;
* **corrections**: the training-free mean removal of the base (and with its top principal direction) against
  the reference, with their isotropy;
* **approximate search**: recall@10 of the retriever's HNSW and IVF defaults against exact search;
* **the card section** of each trained arm (:func:`card_section`, written into its ``best/README.md``): its
  test metrics beside the reference with the paired test, its isotropy and how it was trained.

The generic comparison report (:func:`ragcun.reporting.build_report`: every metric, LaTeX, CSV,
charts) is written beside it; the statistics and table formats are :mod:`ragcun.reporting`'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ragcun.experiment.config import ExperimentConfig
from ragcun.experiment.whitening import whitening_label
from ragcun.files import write_json, write_text
from ragcun.modeling.card import END, START, flat
from ragcun.reporting.compare import build_report, isotropy_by_label, load_result
from ragcun.reporting.stats import compare
from ragcun.reporting.tables import delta_cells, fmt_p, latex_table, markdown_table

METRIC = "ndcg@10"
ISOTROPY_NOTE = ("The SIGReg test's power grows with the sample: a fixed deviation from N(0, I) adds about "
                 "n times a constant to the statistic, so the ratio at the corpus size grows with the "
                 "corpus, while the ratio on 1,024 vectors compares corpora of any size. IsoScore is "
                 "bounded by the sample too: a true N(0, I) sample of the same n and dimension reaches only "
                 "about 1 − dim/n (in brackets).")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f}"


def main_rows(exp: ExperimentConfig, results: dict[str, dict[str, Any]], iso: dict, ds: str
              ) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "NDCG@10", "Δ vs reference [95% CI]", "p",
              f"Δ vs {exp.baseline or 'baseline'} [95% CI]", "p", "R@100", "MRR@10", "SIGReg ratio",
              "IsoScore"]
    rows = []
    ref = results.get("reference")
    base = results.get(exp.baseline) if exp.baseline else None
    labels = ["reference", *[a for a in exp.arms if a in results]]
    for label in labels:
        r = results.get(label)
        if r is None or ds not in r["results"]:
            continue
        vals = r["results"][ds]
        d_ref = delta_cells(compare(r, ref, ds)) if ref is not None and label != "reference" else ("–", "–")
        d_base = (delta_cells(compare(r, base, ds))
                  if base is not None and label not in (exp.baseline, "reference") else ("–", "–"))
        row_iso = iso.get((Path(ds).name, label, "corpus"), {})
        ratio = row_iso.get("sigreg_ratio")
        isoscore = row_iso.get("isoscore")
        name = f"{label}: {r.get('description') or ''}".rstrip(": ")
        rows.append([name, _pct(vals.get(METRIC)), *d_ref, *d_base, _pct(vals.get("recall@100")),
                     _pct(vals.get("mrr@10")), "–" if ratio is None else f"{ratio:.2f}",
                     "–" if isoscore is None else f"{isoscore:.3f}"])
    return header, rows


def hybrid_rows(exp: ExperimentConfig, results: dict[str, dict[str, Any]], ds: str
                ) -> tuple[list[str], list[list[str]]]:
    """BM25 alone, and the reference and each arm fused with BM25, against the reference (dense alone)."""
    header = ["Model", "NDCG@10", "Δ vs reference [95% CI]", "p", "R@100", "MRR@10"]
    ref = results.get("reference")
    rows = []
    for label in ["bm25", "reference+bm25", *(f"{a}+bm25" for a in exp.arms)]:
        r = results.get(label)
        if r is None or ds not in r["results"]:
            continue
        vals = r["results"][ds]
        d_ref = delta_cells(compare(r, ref, ds)) if ref is not None else ("–", "–")
        name = f"{label}: {r.get('description') or ''}".rstrip(": ")
        rows.append([name, _pct(vals.get(METRIC)), *d_ref, _pct(vals.get("recall@100")),
                     _pct(vals.get("mrr@10"))])
    return header, rows


#: the training-free corrections beside the whitening curve (:mod:`ragcun.experiment.whitening`)
CORRECTION_LABELS = ("center", "center-pc1")


def correction_rows(exp: ExperimentConfig, results: dict[str, dict[str, Any]], iso: dict, ds: str
                    ) -> tuple[list[str], list[list[str]]]:
    """The training-free corrections of the base (mean removal, and the top principal direction too) against
    the reference, with their corpus isotropy."""
    header = ["Correction", "NDCG@10", "Δ vs reference [95% CI]", "p", "SIGReg ratio (corpus n)", "IsoScore"]
    ref = results.get("reference")
    rows = []
    for label in CORRECTION_LABELS:
        r, row = results.get(label), iso.get((Path(ds).name, label, "corpus"), {})
        if r is None or ds not in r["results"]:
            continue
        d_ref = delta_cells(compare(r, ref, ds)) if ref is not None else ("–", "–")
        name = f"{label}: {r.get('description') or ''}".rstrip(": ")
        rows.append([name, _pct(r["results"][ds].get(METRIC)), *d_ref, _f(row.get("sigreg_ratio")),
                     _f(row.get("isoscore"), 3)])
    return header, rows


def _f(v: Any, digits: int = 2) -> str:
    return "–" if not isinstance(v, int | float) else f"{v:.{digits}f}"


def isotropy_rows(labels: list[str], iso: dict, ds: str) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "SIGReg ratio (corpus n)", "SIGReg ratio (n = 1,024)",
              "IsoScore [N(0, I) sample, same n]", "top eigenvalue / mean", "effective rank / dim",
              "empty directions"]
    rows = []
    for label in labels:
        r = iso.get((Path(ds).name, label, "corpus"))
        if not r:
            continue
        empty = r.get("empty_directions")
        rows.append([label, _f(r.get("sigreg_ratio")), _f(r.get("sigreg_ratio_fixed")),
                     f"{_f(r.get('isoscore'), 3)} [{_f(r.get('isoscore_reference'), 3)}]",
                     _f(r.get("top_eigenvalue_ratio"), 1), _f(r.get("effective_rank_ratio"), 3),
                     "–" if empty is None else f"{empty} of {r.get('dim')}"])
    return header, rows


def whitening_points(exp: ExperimentConfig, results: dict[str, dict[str, Any]], iso: dict, ds: str
                     ) -> list[dict[str, Any]]:
    """The whitening curve on ``ds``: one point per power with its NDCG@10 and corpus SIGReg ratio, by
    ratio."""
    points = []
    for p in exp.whitening.powers:
        label = whitening_label(p)
        r, row = results.get(label), iso.get((Path(ds).name, label, "corpus"), {})
        if r is None or ds not in r["results"] or row.get("sigreg_ratio") is None:
            continue
        points.append({"label": label, "power": p, "ndcg": r["results"][ds][METRIC],
                       "ratio": row["sigreg_ratio"], "ratio_fixed": row.get("sigreg_ratio_fixed"),
                       "isoscore": row.get("isoscore")})
    return sorted(points, key=lambda q: q["ratio"])


def curve_at(points: list[dict[str, Any]], ratio: float) -> float | None:
    """The whitening curve's NDCG@10 at ``ratio``, linear in log ratio between its points (None outside
    them)."""
    if not points or not ratio > 0:
        return None
    xs = [math.log(q["ratio"]) for q in points]
    x = math.log(ratio)
    for (x0, q0), (x1, q1) in zip(zip(xs, points, strict=True), zip(xs[1:], points[1:], strict=True),
                                  strict=False):
        if x0 <= x <= x1:
            return q0["ndcg"] if x1 == x0 else q0["ndcg"] + (q1["ndcg"] - q0["ndcg"]) * (x - x0) / (x1 - x0)
    return None


def whitening_rows(exp: ExperimentConfig, results: dict[str, dict[str, Any]], iso: dict, ds: str
                   ) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The curve's own table, and each arm against the curve at the arm's SIGReg ratio."""
    points = whitening_points(exp, results, iso, ds)
    ref = results.get("reference")
    header = ["Whitening power p", "NDCG@10", "Δ vs reference [95% CI]", "p", "SIGReg ratio (corpus n)",
              "SIGReg ratio (n = 1,024)", "IsoScore"]
    rows = [[f"{q['power']:g}", _pct(q["ndcg"]),
             *(delta_cells(compare(results[q["label"]], ref, ds)) if ref else ("–", "–")), _f(q["ratio"]),
             _f(q["ratio_fixed"]), _f(q["isoscore"], 3)] for q in sorted(points, key=lambda q: q["power"])]
    arm_header = ["Arm", "SIGReg ratio", "NDCG@10", "whitening at this ratio (interpolated)",
                  "nearest whitening point", "Δ vs it [95% CI]", "p"]
    arm_rows = []
    for arm in exp.arms:
        r, row = results.get(arm), iso.get((Path(ds).name, arm, "corpus"), {})
        ratio = row.get("sigreg_ratio")
        if r is None or ds not in r["results"] or ratio is None or not points:
            continue
        near = min(points, key=lambda q: abs(math.log(q["ratio"]) - math.log(ratio)))
        at = curve_at(points, ratio)
        arm_rows.append([arm, _f(ratio), _pct(r["results"][ds][METRIC]),
                         _pct(at) if at is not None else "outside the curve",
                         f"p = {near['power']:g} (ratio {near['ratio']:.2f}, {near['ndcg'] * 100:.2f})",
                         *delta_cells(compare(r, results[near["label"]], ds))])
    return header, rows, arm_header, arm_rows


def views_rows(exp: ExperimentConfig, results: dict[str, dict[str, Any]], ds: str
               ) -> tuple[list[str], list[list[str]]]:
    header = ["Arm", "head, L2", "head, cosine", "base (before the head), cosine", "reference, cosine"]
    ref = results.get("reference", {}).get("results", {}).get(ds, {}).get(METRIC)
    rows = []
    for arm in exp.arms:
        cells = [results.get(label, {}).get("results", {}).get(ds, {}).get(METRIC)
                 for label in (arm, f"{arm}.cos", f"{arm}.base")]
        if cells[2] is None:  # not evaluated, or a peer without a head
            continue
        rows.append([arm, *[_pct(c) for c in cells], _pct(ref)])
    return header, rows


def ann_rows(ann_file: Path | None) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "Dataset", "HNSW recall@10", "IVF recall@10", "IVF cells / probed"]
    if ann_file is None or not Path(ann_file).exists():
        return header, []
    data = json.loads(Path(ann_file).read_text())
    rows = []
    for r in data["rows"]:
        ix = r["indexes"]
        ivf = ix.get("ivf", {})
        rows.append([r["model"], r["dataset"], f"{ix.get('hnsw', {}).get('recall', float('nan')):.3f}",
                     f"{ivf.get('recall', float('nan')):.3f}",
                     f"{ivf.get('nlist')} / {ivf.get('nprobe') or 1}"])
    return header, rows


class _SubTables:
    """A dataset's sub-tables: each kept in the summary, written as Markdown and added to the report."""

    def __init__(self, out: Path, name: str, tables: dict[str, str], sections: list[str]) -> None:
        self.out, self.name, self.tables, self.sections = out, name, tables, sections

    def add(self, kind: str, title: str, header: list[str], rows: list[list[str]]) -> None:
        if rows:
            md = markdown_table(header, rows)
            self.tables[f"{kind}:{self.name}"] = md
            write_text(self.out / f"{kind}_{self.name}.md", md + "\n")
            self.sections.extend([f"### {title}", "", md, ""])


def build_experiment_report(exp: ExperimentConfig, result_files: dict[str, Path],
                            isotropy_files: dict[str, Path],
                            ann_file: Path | None = None) -> dict[str, Any]:
    """Write ``<output_dir>/report/`` (experiment tables + the generic comparison report) and return its
    summary."""
    out = exp.output_dir / "report"
    results = {label: load_result(f) for label, f in result_files.items() if Path(f).exists()}
    iso = isotropy_by_label(isotropy_files)
    main_labels = ["reference", *exp.arms]
    generic = build_report([str(result_files[lab]) for lab in main_labels if lab in results], out,
                           baseline="reference" if "reference" in results else None,
                           isotropy_files=[str(p) for p in isotropy_files.values() if Path(p).exists()])
    tables: dict[str, str] = {}
    sections = [f"# Experiment {exp.name}", "",
                "NDCG@10 and the other metrics ×100. Δ: mean per-query difference with its 95% CI; p: "
                "paired randomisation test (10,000 sign flips). SIGReg ratio: the corpus embeddings' "
                "SIGReg statistic over that of true N(0, I) samples of the same size (1 = Gaussian; lower "
                "is better); IsoScore: 1 = isotropic (higher is better).", ""]
    datasets = sorted(exp.evaluation.datasets, key=lambda d: not exp.in_domain(d))
    for ds in datasets:
        name = Path(ds).name
        kind = "in-domain" if exp.in_domain(ds) else "transfer: not trained on"
        header, rows = main_rows(exp, results, iso, name)
        if rows:
            md = markdown_table(header, rows)
            tables[f"main:{name}"] = md
            write_text(out / f"main_{name}.md", md + "\n")
            write_text(out / f"main_{name}.tex", latex_table(header, rows, f"{name} ({kind}), NDCG@10 ×100.",
                                                             f"tab:main-{name}"))
            sections += [f"## {name} ({kind})", "", md, ""]
        labels = ["reference", *exp.arms, *(whitening_label(p) for p in exp.whitening.powers),
                  *CORRECTION_LABELS]
        header, rows = isotropy_rows([lab for lab in labels if lab in results], iso, name)
        if rows:
            md = markdown_table(header, rows)
            tables[f"isotropy:{name}"] = md
            write_text(out / f"isotropy_{name}.md", md + "\n")
            write_text(out / f"isotropy_{name}.tex", latex_table(
                header, rows, f"{name}: isotropy of the corpus embeddings.", f"tab:isotropy-{name}"))
            sections += [f"### Isotropy of the corpus embeddings ({name})", "", ISOTROPY_NOTE, "", md, ""]
        sub = _SubTables(out, name, tables, sections)
        sub.add("hybrid", f"Fused with BM25 per query ({name}; the reference's fusion is the training "
                "teacher when it is hybrid)", *hybrid_rows(exp, results, name))
        header, rows, arm_header, arm_rows = whitening_rows(exp, results, iso, name)
        sub.add("whitening", f"Post-hoc whitening of the untouched base ({name}, fitted on the training "
                "documents)", header, rows)
        sub.add("vs_whitening", f"Each arm against whitening at its own isotropy ({name}, NDCG@10 ×100)",
                arm_header, arm_rows)
        sub.add("corrections", f"Training-free corrections of the untouched base ({name}, fitted on the "
                "training documents; arXiv 2511.11041)", *correction_rows(exp, results, iso, name))
        sub.add("views", f"Where the change lives ({name}, NDCG@10)", *views_rows(exp, results, name))
    header, rows = ann_rows(ann_file)
    if rows:
        md = markdown_table(header, rows)
        tables["approximate_search"] = md
        sections += ["## Approximate search on the real embeddings (recall@10 against exact L2 search)",
                     "", md, ""]
    if "isotropy" in generic["tables"]:
        sections += ["## Isotropy", "", generic["tables"]["isotropy"], ""]
    sections += ["The generic comparison report (every metric, LaTeX, CSV, charts): "
                 "[comparison.md](report.md)", ""]
    text = "\n".join(sections)
    write_text(out / "experiment.md", text)
    summary = {**{k: v for k, v in generic.items() if k != "report_markdown"}, "experiment_tables": tables,
               "experiment_markdown": text}
    write_json(out / "experiment.json", {k: v for k, v in summary.items() if k != "experiment_markdown"})
    return summary


#: The metrics of the card's results table.
CARD_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def card_section(arm: str, report: dict[str, Any], reference: str, in_domain: dict[str, bool],
                 run: dict[str, Any] | None, model_path: str) -> str:
    """The Markdown section for one arm, from the experiment report
    (:func:`ragcun.experiment.report.build_experiment_report`)."""
    values, sig = report["values"], report.get("significance", {})
    lines = [START, "", f"## ragcun evaluation: `{run['name'] if run else arm}` (test split, ×100)", ""]
    head = " | ".join(CARD_METRICS)
    lines += [f"| dataset | model | {head} | Δ NDCG@10 vs {reference} (95% CI) | p |",
              "|---|---|" + "---:|" * (len(CARD_METRICS) + 2)]
    for ds in report["datasets"]:
        s = sig.get(ds, {}).get(arm, {})
        delta = (f"{100 * s['mean_diff']:+.2f} [{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]"
                 if s else "–")
        where = "in-domain" if in_domain.get(ds) else "transfer"
        for label in (arm, reference):
            cells = " | ".join(f"{100 * values[m][label][ds]:.2f}" if ds in values.get(m, {}).get(label, {})
                               else "–" for m in CARD_METRICS)
            tail = f"{delta} | {fmt_p(s.get('perm_p'))}" if label == arm else "– | –"
            lines.append(f"| {ds} ({where}) | {label} | {cells} | {tail} |")
    iso = [r for r in report.get("isotropy", []) if r.get("label") == arm and r.get("kind") == "corpus"]
    if iso:
        lines += ["", "Isotropy of the corpus embeddings (N(0, I) gives SIGReg ratio 1, IsoScore 1; lower "
                  "ratio and higher IsoScore are closer):", "",
                  "| dataset | SIGReg ratio | IsoScore | mean norm | √dim |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['dataset']} | {r['sigreg_ratio']:.2f} | {r['isoscore']:.3f} | "
                  f"{r['norm_mean']:.2f} | {r['dim'] ** 0.5:.2f} |" for r in iso]
    if run:
        r = flat(run)
        base_lr, head_lr = (r.get("learning_rate", r.get("base_learning_rate")),
                            r.get("head_learning_rate", r.get("projection_learning_rate")))
        lines += ["", f"Trained from `{r['base_model']}` on {r['train_examples']:,} examples of "
                  f"`{r['train_data']}`: λ_iso = {r['lambda_isotropy']:g} ({r['loss_form']} form, "
                  f"SIGReg on {r['sigreg_on']} sets, {r['num_slices']} slices), Euclidean InfoNCE "
                  f"τ = {r['temperature']:g} ({r['distance']} distance), "
                  f"{'frozen base' if r['freeze_base'] else 'full fine-tuning'}, "
                  f"head init {r['head_init']}, learning rates {base_lr:g} (base) / "
                  f"{head_lr if head_lr is not None else base_lr:g} (head), batch "
                  f"{r.get('per_device_train_batch_size', r.get('batch_size'))}, sequence length "
                  f"{r['max_seq_length'] or 'the base model’s'}, seed {r['seed']}."]
    lines += ["", "Rank by L2 distance (the embeddings are not normalised; the norm is part of the model):",
              "", "```python", "from sentence_transformers import SentenceTransformer", "",
              f'model = SentenceTransformer("{model_path}")',
              'q = model.encode_query(["what causes vitamin D deficiency?"])',
              'd = model.encode_document(["Vitamin D deficiency is common ...", "Statins lower LDL ..."])',
              "model.similarity(q, d)  # −‖q − d‖: higher is nearer", "",
              "from ragcun import GaussianRetriever  # FAISS L2 index with persistence",
              f'r = GaussianRetriever("{model_path}"); r.add_documents(docs); r.retrieve("query", top_k=10)',
              "```", "", END]
    return "\n".join(lines) + "\n"
