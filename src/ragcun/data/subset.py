"""A small BEIR dataset cut from a real one: for smoke tests, examples, benchmarks and the test suite.

The subset keeps the first ``n`` queries (in file order) of each split that have qrels, every
document judged for them, and ``extra_docs`` other documents drawn with a seed, so retrieval over it
is still a real search among unrelated documents. It is written in the official layout (qrels with
the header and CRLF line endings), so every ragcun reader takes it as it takes the original.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ragcun.data.beir import load_qrels, resolve_dataset, write_beir
from ragcun.data.readers import iter_jsonl


def write_subset(source: str | os.PathLike, out: str | os.PathLike, queries: dict[str, int],
                 extra_docs: int = 100, seed: int = 0, max_chars: int | None = None,
                 data_dir: str | os.PathLike | None = None) -> Path:
    """Write a subset of BEIR dataset ``source`` to ``out``; ``queries`` maps split -> number of queries
    kept."""
    src = resolve_dataset(source, data_dir)
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split, n in queries.items():
        full = load_qrels(src / "qrels" / f"{split}.tsv")
        qrels[split] = {q: full[q] for q in list(full)[:n]}
    kept_q = {q for split in qrels.values() for q in split}
    judged = {d for split in qrels.values() for docs in split.values() for d in docs}
    docs = [obj for _, obj in iter_jsonl(src / "corpus.jsonl")]
    others = [d for d in docs if str(d["_id"]) not in judged]
    pick = {str(d["_id"]) for d in random.Random(seed).sample(others, min(extra_docs, len(others)))}
    kept = ({**d, "text": d["text"][:max_chars]} if max_chars else d for d in docs
            if str(d["_id"]) in judged or str(d["_id"]) in pick)
    asked = (q for _, q in iter_jsonl(src / "queries.jsonl") if str(q["_id"]) in kept_q)
    return write_beir(out, kept, asked, qrels)
