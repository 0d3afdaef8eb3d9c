"""``train_side = "query"``: a query tower trained against a kept model's documents, through the real trainer
on real SciFact text, saved as one sentence-transformers model that plain ``SentenceTransformer`` loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from ragcun.config import ConfigError
from ragcun.training.trainer import train

from .test_trainer import tiny_cfg

TEXTS = ["Vitamin D supplementation and the risk of cancer", "statins and muscle pain",
         "The mitochondria produce most of the cell's energy."]


@pytest.fixture(scope="module")
def documents_model(triplets_dir, tiny_nodropout_path, tmp_path_factory):
    """A trained ragcun arm (two steps on the tiny BERT): the documents the query tower keeps."""
    out = tmp_path_factory.mktemp("docs-arm")
    train(tiny_cfg(triplets_dir, tiny_nodropout_path, out, "max_steps=2", "validate_during_training=false",
                   "save_steps=0"))
    return out / "best"


def query_cfg(triplets_dir, documents_model, tiny_nodropout_path, out, *extra):
    return tiny_cfg(triplets_dir, documents_model, out, "train_side=query", "teacher=hybrid",
                    f"teacher_model={tiny_nodropout_path}", "teacher_candidates=4", "temperature=20",
                    "learning_rate=1e-3", "head_learning_rate=1e-3", "per_device_train_batch_size=8",
                    "max_steps=3", "save_steps=0", *extra)


def test_the_query_tower_learns_and_the_documents_stay_exactly(triplets_dir, documents_model,
                                                               tiny_nodropout_path, tmp_path):
    from ragcun.encoding.cache import CacheLayout
    from ragcun.modeling.asymmetric import document_encoder, is_asymmetric

    summary = train(query_cfg(triplets_dir, documents_model, tiny_nodropout_path, tmp_path / "q"))
    assert summary["train_side"] == "query" and summary["global_steps"] == 3
    assert summary["data"]["queries"] > 8 and summary["data"]["teacher"]["teacher"]["kind"] == "hybrid"
    assert set(summary["final_loss_stats"]) == {"infonce", "distill"}
    assert summary["parameters"]["base_trainable"] > 0  # every layer of the tower trains

    docs = SentenceTransformer(str(documents_model), device="cpu")
    model = SentenceTransformer(str(tmp_path / "q" / "final"), device="cpu")
    assert is_asymmetric(model) and model.similarity_fn_name == "euclidean"
    card = (tmp_path / "q" / "final" / "README.md").read_text()
    assert f"a query tower on {documents_model}'s documents (kept)" in card
    # the documents are the kept model's, bit for bit; the queries are the trained tower's
    assert np.array_equal(model.encode_document(TEXTS), docs.encode_document(TEXTS))
    assert not np.allclose(model.encode_query(TEXTS), docs.encode_query(TEXTS), atol=1e-4)
    # so the corpus cache is shared: the tower's corpus key is its documents'
    ids = [str(i) for i in range(len(TEXTS))]
    assert (CacheLayout.of(model, "c", ids, TEXTS, 100, tmp_path).key
            == CacheLayout.of(docs, "c", ids, TEXTS, 100, tmp_path).key)
    assert list(document_encoder(model)) == list(model[0].sub_modules["document"])
    # distances rank: the model's own similarity is −L2 of its query and document vectors
    q, d = model.encode_query(TEXTS[:1]), model.encode_document(TEXTS)
    expected = -torch.cdist(torch.as_tensor(q), torch.as_tensor(d))
    torch.testing.assert_close(model.similarity(q, d), expected, rtol=1e-4, atol=1e-4)


def test_a_query_tower_retrieves_and_refuses_exporting_runtimes(triplets_dir, documents_model,
                                                                 tiny_nodropout_path, tmp_path):
    from ragcun import GaussianRetriever
    from ragcun.runtime import BackendUnavailableError, Runtime, prepare_model

    train(query_cfg(triplets_dir, documents_model, tiny_nodropout_path, tmp_path / "q", "max_steps=1"))
    path = str(tmp_path / "q" / "final")
    retriever = GaussianRetriever(path)
    retriever.add_documents(TEXTS, ids=["a", "b", "c"])
    model = SentenceTransformer(path, device="cpu")
    hits = retriever.retrieve(TEXTS[1], top_k=3)
    dist = np.linalg.norm(model.encode_document(TEXTS) - model.encode_query([TEXTS[1]]), axis=1)
    assert [h.id for h in hits] == ["abc"[i] for i in np.argsort(dist)]
    assert [h.distance for h in hits] == pytest.approx(sorted(dist.tolist()), rel=1e-4)
    for backend in ("onnx", "openvino"):
        with pytest.raises(BackendUnavailableError, match="query tower.*--backend torch"):
            prepare_model(model, Runtime(backend, "fp32"))
    assert prepare_model(model, Runtime("auto", "auto")) is model  # auto: torch fp32


def test_a_query_tower_directory_is_checked_route_by_route(triplets_dir, documents_model, tiny_nodropout_path,
                                                           tmp_path):
    import shutil

    from ragcun.resolve import ModelNotFoundError, check_model_dir

    train(query_cfg(triplets_dir, documents_model, tiny_nodropout_path, tmp_path / "q", "max_steps=1"))
    path = tmp_path / "q" / "final"
    check_model_dir(path)
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    (broken / "query_0_Transformer" / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="no config.json for its transformer query_0_Transformer"):
        check_model_dir(broken)


def test_the_query_tower_resumes(triplets_dir, documents_model, tiny_nodropout_path, tmp_path):
    out = tmp_path / "r"
    first = train(query_cfg(triplets_dir, documents_model, tiny_nodropout_path, out, "max_steps=2",
                            "save_steps=2"))
    assert first["global_steps"] == 2 and (out / "checkpoint-2").is_dir()
    again = train(query_cfg(triplets_dir, documents_model, tiny_nodropout_path, out, "max_steps=4",
                            "save_steps=2", "resume=true"))
    assert again["global_steps"] == 4 and again["resumed_from"].endswith("checkpoint-2")


def test_bad_query_tower_configs_are_one_line(triplets_dir, documents_model, tiny_nodropout_path, tmp_path):
    with pytest.raises(ConfigError, match="train_side = 'query' trains a ragcun query tower: st_loss"):
        query_cfg(triplets_dir, documents_model, tiny_nodropout_path, tmp_path / "a", "st_loss=mnrl")
    with pytest.raises(ConfigError, match=r"--set train_side: train_side must be one of both, query \(got "):
        query_cfg(triplets_dir, documents_model, tiny_nodropout_path, tmp_path / "b", "train_side=documents")
    train(query_cfg(triplets_dir, documents_model, tiny_nodropout_path, tmp_path / "c", "max_steps=1"))
    with pytest.raises(ConfigError, match="is a query tower already"):
        train(query_cfg(triplets_dir, tmp_path / "c" / "best", tiny_nodropout_path, tmp_path / "d"))
