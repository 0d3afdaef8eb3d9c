"""The labelled check that lets ``auto`` take a lossy runtime (OpenVINO int8) for one evaluation.

Why a labelled check and not a cosine gate: int8 moves every vector a little (cosine 0.985–0.995 to fp32), and
whether that moves the *ranking* depends on the corpus and the model; the only honest test is the metric
itself. So where ``ragcun evaluate`` has relevance labels at hand, ``auto`` scores int8 and torch fp32 on a
slice of the dataset being evaluated and takes int8 only if NDCG@10 drops by at most
:data:`ragcun.runtime.auto.MAX_NDCG_LOSS` (and int8 is faster). The verdict is cached per CPU, model and slice
(:mod:`ragcun.runtime.auto`), so it is paid once: about a minute for MiniLM on two cores.

The slice: queries in a seeded order until their judged documents reach :data:`JUDGED_DOCS` (at most
:data:`MAX_QUERIES`), every document judged for them, and seeded other documents up to :data:`SLICE_DOCS`,
so it is still a search among unrelated documents. int8 is calibrated on passages taken evenly across the
*whole* corpus (:func:`ragcun.runtime.openvino.calibration_sample`), the same sample the evaluation then
encodes with, so the graph checked is the graph used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ragcun.encoding.corpus import encode_texts, judged_queries
from ragcun.encoding.search import search
from ragcun.evaluation.metrics import evaluate_run
from ragcun.fingerprint import texts_fingerprint

SLICE_DOCS = 1000
JUDGED_DOCS = 700
MAX_QUERIES = 300
SEED = 0


@dataclass
class LabelledSlice:
    """A slice of a labelled dataset, scored by NDCG@10 (×100) under a model (:class:`LabelledCheck`)."""

    queries: dict[str, str]
    doc_ids: list[str]
    docs: list[str]
    qrels: dict[str, dict[str, int]]
    score: str
    batch_size: int
    calibration: Sequence[str]
    key: str = field(default="")

    def ndcg10(self, model: Any) -> float:
        qids = list(self.queries)
        q = encode_texts(model, [self.queries[i] for i in qids], "query", self.batch_size)
        d = encode_texts(model, self.docs, "document", self.batch_size)
        scores, idx = search(q, d, 11, self.score)
        run = {}
        for r, qid in enumerate(qids):  # BEIR's rule: a document with the query's own id is not a hit
            hits = [(self.doc_ids[int(i)], float(s)) for s, i in zip(scores[r], idx[r], strict=True)]
            run[qid] = dict([(doc, s) for doc, s in hits if doc != qid][:10])
        aggregate, _ = evaluate_run(self.qrels, run, metrics={"ndcg": (10,)})
        return 100.0 * float(aggregate["ndcg@10"])


def beir_check(data: Any, score: str, batch_size: int) -> LabelledSlice:
    """The labelled slice of a loaded BEIR split (see the module docstring)."""
    from ragcun.data.beir import doc_text
    from ragcun.runtime.openvino import calibration_sample

    queries = judged_queries(data)
    order = sorted(queries)
    random.Random(SEED).shuffle(order)
    kept: dict[str, str] = {}
    judged: list[str] = []
    for qid in order:
        if len(kept) >= MAX_QUERIES or len(judged) >= JUDGED_DOCS:
            break
        kept[qid] = queries[qid]
        judged += [d for d in data.qrels[qid] if d in data.corpus and d not in judged]
    judged_set = set(judged)
    others = sorted(d for d in data.corpus if d not in judged_set)
    extra = random.Random(SEED).sample(others, max(0, min(len(others), SLICE_DOCS - len(judged))))
    doc_ids = judged + extra
    docs = [doc_text(data.corpus[d]) for d in doc_ids]
    calibration = calibration_sample([doc_text(data.corpus[d]) for d in data.corpus])
    qrels = {q: data.qrels[q] for q in kept}
    key = texts_fingerprint(list(kept) + doc_ids, list(kept.values()) + docs,
                            extra={"score": score, "calibration": texts_fingerprint(
                                [str(i) for i in range(len(calibration))], calibration)})[:16]
    return LabelledSlice(kept, doc_ids, docs, qrels, score, batch_size, calibration, key)
