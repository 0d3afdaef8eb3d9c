"""``ragcun evaluate``, ``ragcun isotropy``, ``ragcun evaluate-rag`` and ``ragcun report``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ragcun.cli.app import (
    USER_ERRORS,
    app,
    batch_size_option,
    bm25_weight_option,
    check_bounds,
    console,
    data_dir_option,
    dense_weight_option,
    device_option,
    fail,
    fusion_of,
    fusion_option,
    max_seq_length_option,
    no_cache_option,
    precision_option,
    runtime_option,
    split_option,
)

_SCORE_HELP = ("l2 (−‖q−d‖), cos or dot. Default: the model's own similarity (L2 for ragcun models, "
               "cosine otherwise).")
_SHOWN = ("ndcg@10", "recall@100", "recall@1000", "mrr@10", "map@100")


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="Model path, alias (all-MiniLM-L6-v2) or Hub id."),
    datasets: list[str] = typer.Option(
        ..., "--dataset", "--datasets", "-d",
        help="BEIR datasets or groups (quick, standard, all); repeat or comma-separate."
    ),
    split: str = split_option(),
    score: str = typer.Option(None, "--score", help=_SCORE_HELP),
    batch_size: int = batch_size_option(),
    backend: str = runtime_option(),
    precision: str = precision_option(),
    max_seq_length: int = max_seq_length_option(),
    output: Path = typer.Option(None, "--out", "--output", "-o",
                                help="Results JSON (aggregate + per-query)."),
    run_file: Path = typer.Option(None, "--run-file", help="TREC run file (one per dataset when several)."),
    top_k: int = typer.Option(1000, "--top-k", help="Documents retrieved per query."),
    data_dir: str = data_dir_option(),
    no_cache: bool = no_cache_option(),
    device: str = device_option(),
    chunk_size: int = typer.Option(10_000, "--chunk-size", help="Documents per cached chunk: the unit each "
                                                                "torchrun process encodes."),
    hybrid: bool = typer.Option(False, "--hybrid", metavar="",
                                help="Fuse the model's score with BM25 per query (see --fusion, "
                                     "--bm25-weight)."),
    fusion: str = fusion_option(),
    bm25_weight: float = bm25_weight_option(),
    dense_weight: float = dense_weight_option(),
) -> None:
    """Evaluate a model on BEIR with pytrec_eval metrics (NDCG, MAP, Recall, P, MRR).

    Under torchrun (one node or many) the processes share the corpus chunks and merge their top-k lists; the
    embedding cache must be on a file system every node sees ($RAGCUN_CACHE_DIR)."""
    from ragcun.distributed import init_from_env, is_main_process, local_device, shutdown
    from ragcun.encoding.models import MAX_BATCH_SIZE
    from ragcun.encoding.settings import EncodeSettings
    from ragcun.evaluation.beir_eval import evaluate_model

    check_bounds(batch_size=(batch_size, 1, MAX_BATCH_SIZE), top_k=(top_k, 1, 100_000),
                 chunk_size=(chunk_size, 1, None), max_seq_length=(max_seq_length, 1, None))

    fused = fusion_of(hybrid, fusion, bm25_weight, dense_weight)
    distributed = init_from_env()
    try:
        settings = EncodeSettings(split, batch_size, max_seq_length, data_dir, not no_cache,
                                  device or (local_device() if distributed else None), backend, precision)
        res = evaluate_model(model, datasets, score=score, settings=settings, output=output,
                             run_file=run_file, top_k=top_k, chunk_size=chunk_size, hybrid=fused)
    except USER_ERRORS as exc:
        shutdown(wait=False)
        raise fail(str(exc)) from None
    shutdown()
    if not is_main_process():
        return
    cfg = res["config"]
    how = res["score"] if fused is None else f"{res['score']} + BM25, {fused.label()}"
    table = Table(title=f"{res['model']} ({how}, {split}; {cfg['backend']} {cfg['precision']}, "
                        f"batch {cfg['batch_size']})")
    table.add_column("dataset")
    for m in _SHOWN:
        table.add_column(m.upper(), justify="right")
    table.add_column("time (s)", justify="right")
    for ds, vals in res["results"].items():
        table.add_row(ds, *[f"{vals[m] * 100:.2f}" if m in vals else "–" for m in _SHOWN],
                      f"{res['timing'][ds]['total_s']:.1f}")
    console.print(table)
    if output:
        console.print(f"results: {output}")


@app.command()
def isotropy(
    model: list[str] = typer.Option(None, "--model", "-m",
                                    help="Model(s) to encode the dataset with; repeat for several."),
    dataset: str = typer.Option(None, "--dataset", "-d",
                                help="BEIR dataset whose corpus and queries are encoded."),
    embeddings: list[Path] = typer.Option(None, "--embeddings", "-e",
                                          help="Saved (n, dim) .npy matrices; repeatable."),
    out: Path = typer.Option(Path("isotropy"), "--out", "-o", help="Output folder (JSON, CSV, PNG)."),
    label: list[str] = typer.Option(None, "--label",
                                    help="Display names, in the order embeddings then models."),
    split: str = split_option(),
    max_docs: int = typer.Option(10_000, "--max-docs", help="Sample this many corpus documents (0 = all)."),
    num_slices: int = typer.Option(1024, "--num-slices", help="Random slices for the SIGReg statistic."),
    seed: int = typer.Option(0, "--seed", help="Random seed (sampling)."),
    batch_size: int = batch_size_option(),
    backend: str = runtime_option(),
    precision: str = precision_option(),
    max_seq_length: int = max_seq_length_option(),
    data_dir: str = data_dir_option(),
    no_plots: bool = typer.Option(False, "--no-plots", metavar="", help="Write tables only, no PNG figures."),
) -> None:
    """How close embeddings are to N(0, I): covariance error, IsoScore, effective rank, SIGReg, norms."""
    from ragcun.encoding.models import MAX_BATCH_SIZE
    from ragcun.encoding.settings import EncodeSettings
    from ragcun.evaluation.isotropy import analyze

    check_bounds(batch_size=(batch_size, 1, MAX_BATCH_SIZE), max_docs=(max_docs, 0, None),
                 num_slices=(num_slices, 1, 1 << 16), max_seq_length=(max_seq_length, 1, None))

    try:
        settings = EncodeSettings(split, batch_size, max_seq_length, data_dir, backend=backend,
                                  precision=precision)
        res = analyze(model or [], dataset, embeddings or [], out, max_docs=max_docs or None,
                      num_slices=num_slices, seed=seed, plots=not no_plots, labels=label or None,
                      settings=settings)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    cols = ["n", "dim", "mean_norm", "cov_error_rel", "mean_abs_offdiag_corr", "eigenvalue_score", "isoscore",
            "isoscore_reference", "top_eigenvalue_ratio", "empty_directions", "effective_rank", "sigreg",
            "sigreg_reference", "sigreg_ratio", "sigreg_ratio_fixed", "norm_mean", "norm_expected"]
    table = Table(title="isotropy vs N(0, I)")  # one column per model × kind: fits a terminal
    table.add_column("metric")
    for r in res["results"]:
        table.add_column(f"{r['label']}\n{r['kind']}", justify="right")
    for c in cols:
        table.add_row(c, *[str(r[c]) if isinstance(r[c], int) else f"{r[c]:.4g}" for r in res["results"]])
    table.add_row("is_isotropic",
                  *["[green]yes[/]" if r["is_isotropic"] else "[red]no[/]" for r in res["results"]])
    console.print(table)
    console.print(f"written to {out}/ (isotropy.json, isotropy.csv{', *.png' if not no_plots else ''})")


@app.command("evaluate-rag")
def evaluate_rag_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model: a local directory, an alias or a Hub id."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="BEIR dataset name or folder."),
    split: str = split_option(),
    score: str = typer.Option(None, "--score", help=_SCORE_HELP),
    negatives: int = typer.Option(100, "--negatives", help="Random negatives sampled per query."),
    seed: int = typer.Option(0, "--seed", help="Random seed (sampling)."),
    batch_size: int = batch_size_option(),
    backend: str = runtime_option(),
    precision: str = precision_option(),
    max_seq_length: int = max_seq_length_option(),
    output: Path = typer.Option(None, "--out", "--output", "-o", help="Results JSON."),
    plot: Path = typer.Option(None, "--plot", help="Reliability diagram (PNG)."),
    data_dir: str = data_dir_option(),
    no_cache: bool = no_cache_option(),
) -> None:
    """RAG diagnostics: Recall@10, MRR, score separation, ROC-AUC, calibration (ECE), norm vs success."""
    from ragcun.encoding.models import MAX_BATCH_SIZE
    from ragcun.encoding.settings import EncodeSettings
    from ragcun.evaluation.rag import evaluate_rag

    check_bounds(batch_size=(batch_size, 1, MAX_BATCH_SIZE), negatives=(negatives, 1, 1_000_000),
                 max_seq_length=(max_seq_length, 1, None))

    try:
        settings = EncodeSettings(split, batch_size, max_seq_length, data_dir, not no_cache, backend=backend,
                                  precision=precision)
        r = evaluate_rag(model, dataset, score=score, negatives_per_query=negatives, seed=seed, output=output,
                         plot=plot, settings=settings)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"{r['model']} on {dataset} ({r['score']}; {r['queries']} queries, "
                        f"{negatives} negatives each)", show_header=False)
    for k in ("pool_recall@10", "pool_mrr"):  # retrieval metrics on ragcun's one scale, ×100
        table.add_row(f"{k} (×100, within the pool)", f"{100 * r[k]:.2f}")
    for k in ("separation", "separation_std", "roc_auc", "ece", "brier"):
        table.add_row(k, f"{r[k]:.4f}")
    nv = r.get("norm_vs_ndcg@10", {})
    table.add_row("corr(query norm, NDCG@10)", f"pearson {nv.get('pearson', float('nan')):.3f}, "
                  f"spearman {nv.get('spearman', float('nan')):.3f}")
    console.print(table)


@app.command()
def report(
    results: list[Path] = typer.Argument(..., help="Result JSON files from `ragcun evaluate`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    baseline: str = typer.Option(None, "--baseline",
                                 help="Model label, name or result file (default: the first)."),
    isotropy_files: list[Path] = typer.Option(None, "--isotropy",
                                              help="isotropy.json files to tabulate beside."),
    metrics: str = typer.Option("ndcg@10,recall@100,mrr@10,map@100", "--metrics",
                                help="Comma-separated metrics."),
    permutations: int = typer.Option(10_000, "--permutations", help="Sign flips for the randomisation test."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level for the † marks."),
    no_plots: bool = typer.Option(False, "--no-plots", metavar="", help="Write tables only, no PNG figures."),
    as_json: bool = typer.Option(False, "--json", metavar="",
                                 help="Print the summary as JSON instead of the table."),
) -> None:
    """Comparison tables (Markdown, LaTeX, CSV), paired significance, isotropy table and bar charts."""
    from ragcun.reporting import build_report

    try:
        summary = build_report([str(r) for r in results], out, baseline,
                               [str(f) for f in isotropy_files or []],
                               metrics=[m.strip().lower() for m in metrics.split(",") if m.strip()],
                               n_permutations=permutations, alpha=alpha, plots=not no_plots)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps({k: v for k, v in summary.items() if k != "report_markdown"}, indent=2, default=str))
        return
    console.print(summary["report_markdown"], markup=False, highlight=False)
    console.print(f"\nreport written to {out}/report.md")
