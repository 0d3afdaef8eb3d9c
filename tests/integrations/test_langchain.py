"""The LangChain adapter against the real langchain-core: the same hits as GaussianRetriever."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SCIFACT_QUERIES as QUERIES

pytest.importorskip("langchain_core")

from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from ragcun.integrations.langchain import GaussianEmbeddings, GaussianVectorStore  # noqa: E402
from ragcun.retrieval.results import relevance_score  # noqa: E402


def test_store_ranks_exactly_as_the_retriever(retriever):
    store, annotated = GaussianVectorStore(retriever), GaussianVectorStore(retriever, annotate=True)
    for q in QUERIES:
        want = retriever.retrieve(q, top_k=10)
        got = store.similarity_search_with_score(q, k=10)
        assert [d.id for d, _ in got] == [h.id for h in want]
        assert [s for _, s in got] == pytest.approx([h.distance for h in want])
        # by default exactly the caller's metadata (a round trip returns what was added)
        assert [d.metadata for d, _ in got] == [h.metadata or {} for h in want]
        extra = annotated.similarity_search(q, k=10)[0].metadata
        assert extra["ragcun"]["rank"] == 1 and extra["ragcun"]["norm"] == pytest.approx(want[0].norm)
        assert {k: v for k, v in extra.items() if k != "ragcun"} == (want[0].metadata or {})


def test_relevance_in_unit_interval_and_threshold_retriever_works(retriever):
    store = GaussianVectorStore(retriever)
    scored = store.similarity_search_with_relevance_scores(QUERIES[0], k=10)
    rel = [s for _, s in scored]
    assert all(0.0 <= s <= 1.0 for s in rel) and rel == sorted(rel, reverse=True)
    hits = retriever.retrieve(QUERIES[0], top_k=10)
    m = float(np.mean(np.square([retriever.get(i)["norm"] for i in retriever.store.ids()])))
    # calibrated on the index
    assert rel == pytest.approx([max(0.0, 1 - h.distance ** 2 / (2 * m)) for h in hits])
    explicit = GaussianVectorStore(retriever, distance_scale=10.0).similarity_search_with_relevance_scores(
        QUERIES[0], k=3)
    assert [s for _, s in explicit] == pytest.approx([1 / (1 + h.distance / 10.0) for h in hits[:3]])
    # LangChain's own score-threshold retriever: keeps exactly the hits at or above the threshold
    cut = rel[4]
    lc = store.as_retriever(search_type="similarity_score_threshold",
                            search_kwargs={"score_threshold": cut, "k": 10})
    docs = lc.invoke(QUERIES[0])
    assert [x.id for x in docs] == [x.id for x, s in scored if s >= cut] and len(docs) >= 5


def test_add_get_delete_and_from_texts_round_trip(gaussian_minilm, scifact_passages, tmp_path):
    texts = [d["text"] for d in scifact_passages[:20]]
    store = GaussianVectorStore.from_texts(texts[:10], GaussianEmbeddings(gaussian_minilm),
                                           metadatas=[{"n": i} for i in range(10)],
                                           ids=[f"a{i}" for i in range(10)])
    new = store.add_texts(texts[10:12])  # no ids: LangChain-style UUIDs
    assert len(new) == 2 and all(len(i) == 32 for i in new)
    assert [d.metadata for d in store.get_by_ids(["a3", "missing"])] == [{"n": 3}]
    store.delete(["a3"])
    assert store.get_by_ids(["a3"]) == [] and len(store.retriever) == 11
    store.save(tmp_path / "idx")
    back = GaussianVectorStore.load(tmp_path / "idx")
    q = QUERIES[1]
    assert [d.id for d in back.similarity_search(q, k=5)] == [d.id for d in store.similarity_search(q, k=5)]
    back.delete()
    assert len(back.retriever) == 0
    store.delete(["nope", "a4"])  # unknown ids are skipped, the known one goes
    assert len(store.retriever) == 10 and store.get_by_ids(["a4"]) == []
    # an existing id is replaced (upsert): text, metadata and vector
    store.add_texts([texts[15]], [{"n": 99}], ids=["a5"])
    assert len(store.retriever) == 10 and store.get_by_ids(["a5"])[0].metadata == {"n": 99}
    assert store.similarity_search(texts[15][:300], k=1)[0].id == "a5"
    with pytest.raises(TypeError, match="unsupported option"):
        store.similarity_search(q, k=2, where={"n": 1})


def test_embeddings_keep_the_norm_and_search_by_vector(retriever):
    emb = GaussianVectorStore(retriever).embeddings
    v = np.asarray(emb.embed_query(QUERIES[2]))
    assert v.shape == (retriever.dimension,) and not np.isclose(np.linalg.norm(v), 1.0, atol=1e-2)
    by_vec = GaussianVectorStore(retriever).similarity_search_by_vector(v.tolist(), k=5)
    assert [d.id for d in by_vec] == [h.id for h in retriever.retrieve(QUERIES[2], top_k=5)]


def test_cosine_store_ranks_differently_which_is_why_the_adapter_exists(retriever, scifact_passages):
    """LangChain's InMemoryVectorStore ranks by cosine: with the same (unnormalised) vectors its top-5
    differs from the L2 top-5 on at least one of these queries."""
    emb = GaussianEmbeddings(retriever.model)
    mem = InMemoryVectorStore(emb)
    mem.add_texts([d["text"] for d in scifact_passages], ids=[d["id"] for d in scifact_passages])
    differs = [q for q in QUERIES
               if [d.id for d in mem.similarity_search(q, k=5)]
               != [h.id for h in retriever.retrieve(q, top_k=5)]]
    assert differs


def test_bad_scale_is_refused(retriever):
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        GaussianVectorStore(retriever, distance_scale=float("nan"))
    with pytest.raises(ValueError, match="distance must be a finite number"):
        relevance_score(-1.0, 8)


def test_the_readme_threshold_example_returns_the_close_hits(minilm_path, scifact_passages):
    """The README's `score_threshold: 0.6` on a demo-style model (128-d, warm start at power 0.5) keeps the
    close hits and drops the rest; on plain unit-norm MiniLM the relevance is exactly the cosine."""
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.retrieval import GaussianRetriever

    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=128, device="cpu")
    enc.max_seq_length = 128
    enc.warm_start_head(enc.base_features([d["text"] for d in scifact_passages]), power=0.5)
    texts = [d["text"] for d in scifact_passages]
    store = GaussianVectorStore(GaussianRetriever(enc, batch_size=32))
    store.add_texts(texts, ids=[d["id"] for d in scifact_passages])
    kept = (store.as_retriever(search_type="similarity_score_threshold",
                               search_kwargs={"score_threshold": 0.6})
            .invoke(scifact_passages[0]["text"][:200]))
    assert 1 <= len(kept) < len(texts) and kept[0].id == scifact_passages[0]["id"]
    plain = GaussianRetriever(minilm_path, batch_size=32)
    plain.add_documents(texts[:30], ids=[d["id"] for d in scifact_passages[:30]])
    q = plain.encode_queries([QUERIES[0]])[0]
    for hit in plain.retrieve(QUERIES[0], top_k=5):
        d = plain.encode_documents([hit.text])[0]
        cos = float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d)))
        assert plain.relevance(hit.distance) == pytest.approx(max(cos, 0.0), abs=2e-3)
