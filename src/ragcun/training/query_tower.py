"""``train_side = "query"``: keep a trained model whole as the document encoder and train a query tower on it.

A head on a frozen base reaches N(0, I) at the corpus scale but only at post-hoc whitening's price in ranking,
and a CPU cannot fine-tune a base far enough to absorb a teacher. Queries are short (NFCorpus' train queries
are a few tokens), so the *query* side can train all of its layers on every training query for several epochs
on a CPU. The documents stay as ``base_model`` encodes them: their embeddings are computed once and cached, so
the corpus keeps exactly the isotropy it was measured to have, and every document is a negative in every step
(:class:`~ragcun.losses.corpus.FixedCorpusLoss`: InfoNCE over the corpus on the qrels, listwise KL over the
teacher's candidates).

The trained model is one sentence-transformers ``Router``
(:func:`ragcun.modeling.asymmetric.query_document_model`): ``encode_query`` runs the trained tower,
``encode_document`` the untouched document encoder; plain ``SentenceTransformer(path)`` loads it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragcun.files import write_json
from ragcun.training.config import ConfigError, TrainConfig, run_record

logger = logging.getLogger(__name__)


def _queries(cfg: TrainConfig) -> tuple[Any, list[str], list[str], list[list[int]], dict[str, Any]]:
    """The BEIR split the training triplets came from, its training queries (ids, texts) and each one's judged
    documents as rows of that corpus (the qrels' positives, plus the triplets' own)."""
    from ragcun.data.beir import load_beir
    from ragcun.training.data import load_train_dataset
    from ragcun.training.teacher import training_source

    ds, manifest = load_train_dataset(cfg.train_data, 0, cfg.max_train_samples, with_ids=True)
    path, split = training_source(cfg, manifest)
    data = load_beir(path, split=split, data_dir=cfg.data_dir)
    row = {d: i for i, d in enumerate(data.corpus)}
    texts: dict[str, str] = {}
    positives: dict[str, list[int]] = {}
    for q, p, text in zip(ds["query_id"], ds["positive_id"], ds["query"], strict=True):
        if p not in row:
            raise ConfigError(f"train_side = 'query': positive {p!r} of query {q!r} is not in {path}'s "
                              "corpus")
        texts.setdefault(q, text)
        positives.setdefault(q, [])
        judged = [row[d] for d, g in sorted((data.qrels.get(q) or {}).items()) if g > 0 and d in row]
        for r in [row[p], *judged]:
            if r not in positives[q]:
                positives[q].append(r)
    qids = list(texts)
    manifest.update(source=path, split=split, queries=len(qids),
                    positives=sum(len(positives[q]) for q in qids))
    return data, qids, [texts[q] for q in qids], [positives[q] for q in qids], manifest


def train_query_tower(cfg: TrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Train the query tower of ``cfg.base_model`` (see the module); writes ``output_dir/{final, best,
    checkpoint-N, tensorboard, train_summary.json}`` as :func:`~ragcun.training.trainer.train` does, which
    validates ``cfg`` and calls this for ``train_side = "query"``."""
    import datasets
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_utils import set_seed

    from ragcun.data.beir import doc_text
    from ragcun.encoding.corpus import encode_beir_corpus
    from ragcun.losses.corpus import FixedCorpusLoss
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.modeling.asymmetric import is_asymmetric, query_document_model
    from ragcun.modeling.card import describe_model
    from ragcun.training.data import column_prompts
    from ragcun.training.hf_trainer import RagcunTrainer
    from ragcun.training.session import (
        build_training_args,
        head_learning_rates,
        reporters,
        resume_checkpoint,
        versions,
    )

    if cfg.base_model is None:  # st_loss and the rest: TrainConfig.check, run by train() before it gets here
        raise ConfigError("train_side = 'query' needs [model] base_model: the trained model whose document "
                          "side is kept (an experiment arm's base_arm)")
    t0 = time.perf_counter()
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    data, qids, queries, positives, manifest = _queries(cfg)
    args = build_training_args(cfg, has_evaluator=False)
    documents = IsotropicGaussianEncoder.from_pretrained(cfg.base_model, max_seq_length=cfg.max_seq_length)
    if is_asymmetric(documents):
        raise ConfigError(f"train_side = 'query': base_model {cfg.base_model} is a query tower already; "
                          "start from the model whose documents it kept")
    doc_ids = list(data.corpus)
    texts = [doc_text(data.corpus[d]) for d in doc_ids]
    tf = time.perf_counter()
    with args.main_process_first(local=False, desc="document embeddings"):
        emb = encode_beir_corpus(documents, data, batch_size=cfg.feature_batch_size, show_progress_bar=True)
        table = emb.array()
    candidates: list[Any] | None = None
    scores: list[Any] | None = None
    if cfg.teacher != "none":
        from ragcun.training.teacher import spec_from_config, teacher_scores

        spec = spec_from_config(cfg)
        with args.main_process_first(local=False, desc="teacher scores"):
            result = teacher_scores(spec, doc_ids, texts, queries, positives, corpus_name=data.name)
        candidates, scores = [r.tolist() for r in result.rows], [s.tolist() for s in result.scores]
        manifest["teacher"] = {"teacher": spec.as_dict(), "label": spec.label(),
                               "cache": str(result.path) if result.path else None}
    feature_seconds = time.perf_counter() - tf
    set_seed(cfg.seed)
    query = IsotropicGaussianEncoder.from_pretrained(cfg.base_model, freeze_base=cfg.freeze_base,
                                                     freeze_layers=cfg.freeze_layers,
                                                     max_seq_length=cfg.max_seq_length)
    train_ds = datasets.Dataset.from_dict({"query": queries, "label": list(range(len(queries)))})
    args.prompts = column_prompts(query, ["query"])
    loss = FixedCorpusLoss(query, table, positives, candidates, scores, temperature=cfg.temperature,
                           teacher_temperature=cfg.teacher_temperature,
                           lambda_contrastive=cfg.lambda_contrastive,
                           lambda_distill=cfg.lambda_distill if candidates is not None else 0.0)
    head_rate = head_learning_rates(query, len(query.head_modules), cfg.head_learning_rate)
    args.learning_rate_mapping = {**args.learning_rate_mapping, **head_rate}
    cbs: list = list(callbacks or [])
    if "tensorboard" in reporters(cfg):
        tb = TensorBoardCallback()
        tb.logging_dir = str(out / "tensorboard")
        cbs.append(tb)
    resume_from = resume_checkpoint(cfg, args, out)
    trainer = RagcunTrainer(model=query, args=args, train_dataset=train_ds, loss=loss, callbacks=cbs,
                            encoder=query)
    tt = time.perf_counter()
    result_ = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - tt

    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        model = query_document_model(query, documents)
        describe_model(model, run_record(cfg, len(train_ds)))
        model.save(out / "final")
        model.save(out / "best")
        summary = {
            "config": cfg.record(),
            "data": manifest,
            "versions": versions(),
            "device": str(args.device),
            "world_size": args.world_size,
            "train_side": "query",
            "documents": {"model": str(cfg.base_model), "count": len(doc_ids), "dim": int(table.shape[1])},
            "parameters": query.parameter_counts(),
            "global_steps": int(trainer.state.global_step),
            "resumed_from": resume_from,
            "wall_time_s": time.perf_counter() - t0,
            "train_time_s": train_seconds,
            "feature_time_s": feature_seconds,
            "samples_per_second": float(result_.metrics.get("train_samples_per_second", 0.0)),
            "train_metrics": {k: float(v) for k, v in result_.metrics.items() if isinstance(v, (int, float))},
            "final_loss_stats": dict(loss.last_stats),
            "best": {"metric": None, "score": None, "step": None},
            "validation_curve": [],
            "best_model": str(out / "best"),
            "final_model": str(out / "final"),
        }
        write_json(out / "train_summary.json", summary)
        logger.info("query tower trained in %.1fs (%d steps)", summary["wall_time_s"],
                    summary["global_steps"])
    if args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
    return summary
