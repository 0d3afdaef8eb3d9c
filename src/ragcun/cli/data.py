"""``ragcun data ...``: download BEIR, dataset statistics, BM25 triplets, Wikipedia passages, pairs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ragcun.cli.app import (
    USER_ERRORS,
    app,
    console,
    data_dir_option,
    fail,
)
from ragcun.paths import data_dir as resolve_data_dir

data_app = typer.Typer(help="Download, inspect and build datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("download")
def download(
    names: list[str] = typer.Argument(..., help="BEIR datasets or groups: quick, standard, all."),
    dest: Path = typer.Option(None, "--dest", help="Target folder (default <data-dir>/beir)."),
    data_dir: str = data_dir_option(),
    force: bool = typer.Option(False, "--force", metavar="", help="Download again even if present."),
    keep_zip: bool = typer.Option(False, "--keep-zip", metavar="", help="Keep the downloaded zip files."),
    base_url: str = typer.Option(None, "--base-url",
                                 help="Mirror serving <name>.zip (else $RAGCUN_BEIR_URL)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Network timeout in seconds."),
) -> None:
    """Download BEIR datasets from the official server (MD5-checked, unzipped atomically)."""
    from ragcun.data.download import download_beir

    target = dest or resolve_data_dir(data_dir) / "beir"
    try:
        got = download_beir(names, target, base_url=base_url, force=force, keep_zip=keep_zip, timeout=timeout,
                           data_dir_=data_dir)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    for name, path in got.items():
        console.print(f"[green]✓[/] {name}: {path}")


@data_app.command("stats")
def stats(
    name: str = typer.Argument(..., help="BEIR dataset name or folder."),
    data_dir: str = data_dir_option(),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print JSON."),
) -> None:
    """Document, query and qrels counts per split, and length statistics (words)."""
    from ragcun.data.beir import dataset_stats

    try:
        st = dataset_stats(name, data_dir)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(st, indent=2))
        return
    dw = st["doc_words"]
    console.print(f"[bold]{st['name']}[/] ({st['path']}): {st['documents']:,} documents, "
                  f"{dw['mean']:.1f} words on average (median {dw['median']:.0f}, max {dw['max']:,})")
    table = Table("split", "queries", "qrels", "relevant", "qrels/query", "query words (mean)",
                  "missing docs")
    for split, s in st["splits"].items():
        table.add_row(split, f"{s['queries']:,}", f"{s['qrels']:,}", f"{s['relevant']:,}",
                      f"{s['qrels_per_query']}", f"{s['query_words']['mean']:.1f}", str(s["missing_docs"]))
    console.print(table)


@data_app.command("triplets")
def triplets(
    sources: list[str] = typer.Argument(None,
                                        help="BEIR dataset names/folders or MS MARCO folders (combined)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (train/, validation/, manifest.json)."),
    split: str = typer.Option("train", "--split", help="Split whose queries and qrels are used."),
    max_train_samples: int = typer.Option(None, "--max-train-samples",
                                          help="Cap on (query, positive) examples."),
    split_ratio: float = typer.Option(1.0, "--split-ratio", help="Fraction of the training queries to use."),
    val_size: int = typer.Option(0, "--val-size", help="Held-out validation queries."),
    negatives: str = typer.Option("bm25", "--negatives", help="bm25 or random."),
    num_negatives: int = typer.Option(1, "--num-negatives", help="Negatives per example."),
    bm25_top_k: int = typer.Option(100, "--bm25-top-k",
                                   help="Sample negatives from this many BM25 candidates."),
    val_candidates: int = typer.Option(30, "--val-candidates",
                                       help="BM25 top docs per validation query kept."),
    val_corpus_size: int = typer.Option(2000, "--val-corpus-size",
                                        help="Validation corpus size (random padding)."),
    seed: int = typer.Option(42, "--seed", help="Random seed (sampling, negatives, validation split)."),
    fmt: str = typer.Option("hf", "--format", help="hf (datasets save_to_disk) or jsonl."),
    threads: int = typer.Option(0, "--threads", help="bm25s retrieval threads (0 = in the main thread)."),
    data_dir: str = data_dir_option(),
    msmarco_download: bool = typer.Option(False, "--msmarco-download", metavar="",
                                          help="Fetch the official MS MARCO passage files and use them as a "
                                               "source."),
) -> None:
    """Build (query, positive, negatives) training data with BM25 hard negatives."""
    from ragcun.data.download import download_msmarco
    from ragcun.data.triplets import build_triplets

    srcs = list(sources or [])
    try:
        if msmarco_download:
            srcs.append(str(download_msmarco(resolve_data_dir(data_dir) / "msmarco" / "passage")))
        if not srcs:
            raise fail("give at least one source (a BEIR dataset, an MS MARCO folder) or --msmarco-download")
        manifest = build_triplets(
            srcs if len(srcs) > 1 else srcs[0], out, split=split, max_train_samples=max_train_samples,
            split_ratio=split_ratio, val_size=val_size, negatives=negatives, num_negatives=num_negatives,
            bm25_top_k=bm25_top_k, seed=seed, data_dir=data_dir, val_candidates=val_candidates,
            val_corpus_size=val_corpus_size, format=fmt, n_threads=threads,
        )
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    c = manifest["counts"]
    rate = manifest["bm25"]["queries_per_second"]
    console.print(f"[green]✓[/] {out}: {c['train_examples']:,} training examples from "
                  f"{c['train_queries']:,} queries, {c['validation_queries']:,} validation queries"
                  + (f"; BM25 mining {rate:,.0f} queries/s" if rate else ""))


@data_app.command("wiki")
def wiki(
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL of passages."),
    source: Path = typer.Option(None, "--source",
                                help="Local article file (JSONL/.gz/Parquet); else the HF dump."),
    language: str = typer.Option("en", "--language",
                                 help="Wikipedia language (HF config <date>.<language>)."),
    date: str = typer.Option("20231101", "--date", help="HF wikimedia/wikipedia dump date."),
    max_words: int = typer.Option(100, "--max-words", help="Words per passage."),
    min_words: int = typer.Option(20, "--min-words", help="Drop shorter passages."),
    num_passages: int = typer.Option(None, "--num-passages", help="Stop after this many passages."),
) -> None:
    """Turn a Wikipedia dump into clean passages."""
    from ragcun.data.wiki import build_wiki_passages

    try:
        m = build_wiki_passages(out, source=source, language=language, date=date, max_words=max_words,
                                min_words=min_words, num_passages=num_passages)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # the Hub being unreachable surfaces as many exception types
        if source is None:
            raise fail(f"cannot stream the Wikipedia dump from the Hugging Face Hub ({exc}); "
                       "pass a local article file with --source") from None
        raise
    console.print(f"[green]✓[/] {out}: {m['passages']:,} passages from {m['articles']:,} articles")


@data_app.command("pairs")
def pairs(
    passages: Path = typer.Argument(..., help="Passage file: JSONL (text, optional title/id) or .txt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (train/, validation/, manifest.json)."),
    mode: str = typer.Option("both", "--mode",
                             help="crop (two random crops), title (title->passage) or both."),
    val_size: int = typer.Option(1000, "--val-size", help="Held-out passages for validation pairs."),
    max_pairs: int = typer.Option(None, "--max-pairs", help="Cap on training pairs."),
    crop_min: float = typer.Option(0.1, "--crop-min", help="Smallest crop, as a fraction of the passage."),
    crop_max: float = typer.Option(0.5, "--crop-max", help="Largest crop, as a fraction of the passage."),
    min_words: int = typer.Option(10, "--min-words", help="Skip passages shorter than this."),
    seed: int = typer.Option(42, "--seed", help="Random seed (sampling, negatives, validation split)."),
    fmt: str = typer.Option("hf", "--format", help="hf or jsonl."),
) -> None:
    """Make unsupervised (anchor, positive) pairs from passages (Contriever crops, title->passage)."""
    from ragcun.data.pairs import build_pairs

    try:
        m = build_pairs(passages, out, mode=mode, val_size=val_size, max_pairs=max_pairs, crop_min=crop_min,
                        crop_max=crop_max, min_words=min_words, seed=seed, format=fmt)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    c = m["counts"]
    console.print(f"[green]✓[/] {out}: {c['train_pairs']:,} training and {c['validation_pairs']:,} "
                  "validation pairs")
