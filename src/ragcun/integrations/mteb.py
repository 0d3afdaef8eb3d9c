"""Evaluating a ragcun model with MTEB (``pip install mteb``), named and ranked as ragcun ranks it.

``mteb.get_model(path)`` cannot load a local directory (MTEB looks names up in its registry and on
the Hub: "No model implementation is available"), and a plain ``SentenceTransformer(path)`` has no
model name, so MTEB files every arm's results under ``no_model_name/available`` and the arms
overwrite each other. :func:`get_model` gives MTEB what it needs::

    import mteb
    from ragcun.integrations.mteb import get_model

    model = get_model("runs/demo/arms/isotropy/best")    # name "ragcun/demo-isotropy", L2 similarity
    mteb.evaluate(model, mteb.get_tasks(tasks=["NFCorpus"]), encode_kwargs={"batch_size": 32})

The name comes from the run the model records (``ragcun_config.json``), the revision is ragcun's
model fingerprint, and the similarity is the model's own (Euclidean for a ragcun model: MTEB ranks
by −L2 through ``model.similarity``). :func:`beir_task` makes an MTEB retrieval task from a local
BEIR folder, for offline use (the Hub's task data unreachable) or for a slice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

try:
    import mteb  # noqa: F401
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models import SentenceTransformerEncoderWrapper
except ImportError as e:  # pragma: no cover - exercised only without the package
    raise ImportError("the MTEB adapter needs mteb: pip install 'ragcun[mteb]'") from e

from ragcun.fingerprint import model_fingerprint

__all__ = ["beir_task", "get_model", "mteb_name"]


def mteb_name(model_dir: str | os.PathLike) -> str:
    """``ragcun/<experiment>-<arm>`` from the run a model records, else from its folder names."""
    from ragcun.modeling import run_info

    run = run_info(model_dir)
    if run:
        return "ragcun/" + str(run["name"]).replace("/", "-")
    p = Path(model_dir).resolve()
    name = p.parent.name if p.name in ("best", "final") or p.name.startswith("checkpoint-") else p.name
    return f"ragcun/{name}"


def get_model(model: Any, *, device: str | None = None,
              name: str | None = None) -> SentenceTransformerEncoderWrapper:
    """An MTEB encoder over a ragcun (or any sentence-transformers) model: a path, an alias or a loaded
    model."""
    from ragcun.encoding.models import open_model

    path = model if isinstance(model, str | os.PathLike) else None
    st = open_model(model, device=device) if path is not None else model
    wrapper = SentenceTransformerEncoderWrapper(st)
    if name:
        label = name
    elif path is not None and Path(path).exists():
        label = mteb_name(path)
    else:  # an alias or Hub id names itself; a loaded model gets its card's name, if it has one
        from ragcun.resolve import hub_id

        card = getattr(st, "model_card_data", None)
        label = ((hub_id(path) if path is not None else None) or getattr(card, "model_name", None)
                 or "ragcun/unnamed")
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(
        update={"name": label, "revision": model_fingerprint(st), **_facts(st, path)})
    return wrapper


def _facts(st: Any, path: Any) -> dict[str, Any]:
    """What MTEB's leaderboard asks of a model: parameters, license, open weights, the base it adapts."""
    from ragcun.modeling import parameter_counts, run_info
    from ragcun.resolve import base_card, hub_id

    card = getattr(st, "model_card_data", None)
    run = (run_info(path) if path is not None and Path(path).exists() else None) or {}
    base = getattr(card, "base_model", None) or hub_id(run.get("base_model") or "") or (
        hub_id(path) if path is not None else None)
    license = getattr(card, "license", None) or base_card(base or run.get("base_model")).get("license")
    return {"n_parameters": parameter_counts(st)["total"], "license": license or "not specified",
            "open_weights": True, "adapted_from": base if base and base != hub_id(path or "") else None}


def beir_task(dataset: str | os.PathLike, split: str = "test", *, data_dir: str | None = None,
              name: str | None = None) -> AbsTaskRetrieval:
    """An MTEB retrieval task (NDCG@10 main score) over a local BEIR folder, read by ragcun's reader."""
    from datasets import Dataset

    from ragcun.data.beir import find_split, load_beir

    path = find_split(str(dataset), split, data_dir)
    task_name = name or f"ragcun-{path.name}"

    class LocalBeirRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task_name, type="Retrieval", main_score="ndcg_at_10", category="t2t", eval_splits=[split],
            eval_langs=["eng-Latn"], description=f"BEIR {path.name} read from {path}", reference=None,
            dataset={"path": str(path), "revision": "local"}, date=None, dialect=[], domains=[],
            task_subtypes=[], license="not specified", annotations_creators="derived", modalities=["text"],
            sample_creation="found", bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            data = load_beir(str(path), split=split)
            corpus = Dataset.from_list([{"id": d, "title": v.get("title", ""), "text": v.get("text", "")}
                                        for d, v in data.corpus.items()])
            queries = Dataset.from_list([{"id": q, "text": t} for q, t in data.queries.items()])
            split_data = {"corpus": corpus, "queries": queries, "relevant_docs": data.qrels,
                          "top_ranked": None}
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    return LocalBeirRetrieval()
