"""GaussianRetriever end to end: a tiny random Gaussian encoder for mechanics, real MiniLM for sense,
real scifact passages as documents."""

from __future__ import annotations

import json
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ragcun.retrieval import (
    DimensionMismatchError,
    GaussianRetriever,
    IndexCorruptError,
    ModelMismatchError,
    SearchResult,
)
from tests.conftest import SCIFACT_QUERIES as QUERIES


@pytest.fixture(scope="module")
def scifact_docs(scifact_passages):
    """The first 60 real scifact passages."""
    return scifact_passages[:60]


@pytest.fixture(scope="module")
def encoder(tiny_model_path):
    import torch

    from ragcun.modeling import IsotropicGaussianEncoder

    torch.manual_seed(0)
    return IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=64, device="cpu")


@pytest.fixture(scope="module")
def encoder_dir(encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "model"
    encoder.save(path)
    return str(path)


def _build(encoder, docs, index="flat", **kw):
    r = GaussianRetriever(encoder, index=index, **kw)
    r.add_documents([d["text"] for d in docs], ids=[d["id"] for d in docs],
                    metadata=[d["metadata"] for d in docs])
    return r


def _flat(results):
    return [[(h.id, round(h.distance, 5)) for h in hits] for hits in results]


def test_distances_are_true_l2_and_norms(encoder, scifact_docs):
    r = _build(encoder, scifact_docs)
    assert len(r) == 60
    doc_x = encoder.encode_document([d["text"] for d in scifact_docs], convert_to_numpy=True)
    q_x = encoder.encode_query(QUERIES, convert_to_numpy=True)
    ref = np.sqrt(((q_x[:, None, :].astype(np.float64) - doc_x[None]) ** 2).sum(-1))
    results = r.retrieve_batch(QUERIES, top_k=10)
    for qi, hits in enumerate(results):
        assert len(hits) == 10 and [h.rank for h in hits] == list(range(1, 11))
        order = np.argsort(ref[qi], kind="stable")[:10]
        assert [h.id for h in hits] == [scifact_docs[j]["id"] for j in order]
        np.testing.assert_allclose([h.distance for h in hits], ref[qi][order], rtol=1e-4, atol=1e-4)
        for h in hits:
            j = next(i for i, d in enumerate(scifact_docs) if d["id"] == h.id)
            assert h.norm == pytest.approx(float(np.linalg.norm(doc_x[j])), rel=1e-5)
            assert h.text == scifact_docs[j]["text"]
            assert h.metadata["title"] == scifact_docs[j]["metadata"]["title"]
    single = r.retrieve(QUERIES[0], top_k=3)
    assert isinstance(single[0], SearchResult)
    assert _flat([single]) == _flat([results[0][:3]])


def test_generated_ids_duplicates_and_bad_input(encoder):
    r = GaussianRetriever(encoder)
    ids = r.add_documents(["alpha", "beta"])
    assert ids == ["doc-0", "doc-1"]
    assert r.add_documents(["gamma"], ids=["g"]) == ["g"]
    assert r.add_documents(["delta"]) == ["doc-3"]  # counts every document ever added
    with pytest.raises(ValueError, match="already in the index: 'g'"):
        r.add_documents(["again"], ids=["g"])
    with pytest.raises(ValueError, match="duplicate document ids in this call: 'x'"):
        r.add_documents(["a", "b"], ids=["x", "x"])
    with pytest.raises(ValueError, match="2 texts but 1 ids"):
        r.add_documents(["a", "b"], ids=["y"])
    with pytest.raises(ValueError, match=r"metadata\[0\]"):
        r.add_documents(["a"], metadata=["not a dict"])
    with pytest.raises(ValueError, match="JSON-serialisable"):
        r.add_documents(["a"], metadata=[{"x": object()}])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        r.add_documents(["a", 3])
    assert len(r) == 4  # failed calls changed nothing
    assert r.get("g")["text"] == "gamma" and "doc-0" in r and "nope" not in r


def test_remove(encoder, scifact_docs):
    for kind in ("flat", "ivf", "hnsw"):
        params = {"nlist": 2} if kind == "ivf" else {}
        r = _build(encoder, scifact_docs, index=kind, **params)
        before = r.retrieve_batch(QUERIES, top_k=5)
        gone = {hits[0].id for hits in before}
        assert r.remove(sorted(gone)) == len(gone)
        assert len(r) == 60 - len(gone)
        after = r.retrieve_batch(QUERIES, top_k=5)
        assert all(h.id not in gone for hits in after for h in hits)
        assert all(len(hits) == 5 for hits in after)
        with pytest.raises(KeyError, match="unknown document ids"):
            r.remove(["no-such-id"])
        assert r.remove(["no-such-id"], missing="ignore") == 0
        # a removed id can be added again
        r.add_documents(["back again"], ids=[sorted(gone)[0]])
        assert sorted(gone)[0] in r


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "numpy"])
def test_save_load_round_trip_identical(encoder, scifact_docs, tmp_path, kind):
    if kind == "numpy":
        r = _build(encoder, scifact_docs, engine="numpy")
    elif kind == "ivf":
        r = _build(encoder, scifact_docs, index="ivf", nlist=4, nprobe=2)
    else:
        r = _build(encoder, scifact_docs, index=kind)
    r.remove([scifact_docs[3]["id"]])
    before = r.retrieve_batch(QUERIES, top_k=8)
    r.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["dimension"] == 64
    assert manifest["counts"]["documents"] == 59
    assert manifest["index"]["type"] == ("flat" if kind == "numpy" else kind)
    from ragcun.fingerprint import FINGERPRINT_METHOD, model_fingerprint

    assert manifest["model"]["fingerprint"] == model_fingerprint(encoder)
    assert manifest["model"]["fingerprint_method"] == FINGERPRINT_METHOD
    r2 = GaussianRetriever.load(tmp_path / "ix", model=encoder)
    after = r2.retrieve_batch(QUERIES, top_k=8)
    assert [[h.to_dict() for h in hits] for hits in after] == [[h.to_dict() for h in hits] for hits in before]
    assert r2.index.params == r.index.params
    # keeps working after loading: add, then save over the old one
    r2.add_documents(["new passage"], ids=["new"])
    r2.save(tmp_path / "ix")
    assert len(GaussianRetriever.load(tmp_path / "ix", model=encoder)) == 60


def test_numpy_fallback_equals_faiss_flat(encoder, scifact_docs):
    faiss_r = _build(encoder, scifact_docs, engine="faiss")
    numpy_r = _build(encoder, scifact_docs, engine="numpy")
    a = faiss_r.retrieve_batch(QUERIES, top_k=20)
    b = numpy_r.retrieve_batch(QUERIES, top_k=20)
    assert [[h.id for h in hits] for hits in a] == [[h.id for h in hits] for hits in b]
    np.testing.assert_allclose([[h.distance for h in hits] for hits in a],
                               [[h.distance for h in hits] for hits in b], rtol=1e-4, atol=1e-4)


def test_old_argument_names_still_work_with_a_warning(encoder, tmp_path):
    """``engine`` (where vectors live) and ``runtime`` (how texts are encoded) replaced ``backend`` and
    ``encode_backend``; the old names work for one release, with a FutureWarning, and never beside the new."""
    with pytest.warns(FutureWarning, match="backend= is deprecated: use engine="):
        r = GaussianRetriever(encoder, backend="numpy")
    assert r.index.backend == "numpy"
    with pytest.warns(FutureWarning, match="encode_backend= is deprecated: use runtime="):
        r = GaussianRetriever(encoder, encode_backend="torch", precision="fp32")
    assert r.runtime.tag == GaussianRetriever(encoder, runtime="torch", precision="fp32").runtime.tag
    r.add_documents(["a passage"], ids=["a"])
    r.save(tmp_path / "ix")
    with pytest.warns(FutureWarning, match="encode_backend="):
        GaussianRetriever.load(tmp_path / "ix", model=encoder, encode_backend="torch")
    with pytest.raises(TypeError, match="pass engine= only"):
        GaussianRetriever(encoder, engine="faiss", backend="numpy")


def test_several_add_calls_equal_one(encoder, scifact_docs):
    one = _build(encoder, scifact_docs)
    many = GaussianRetriever(encoder)
    for s in range(0, 60, 25):
        part = scifact_docs[s : s + 25]
        many.add_documents([d["text"] for d in part], ids=[d["id"] for d in part],
                           metadata=[d["metadata"] for d in part])
    assert _flat(one.retrieve_batch(QUERIES, 10)) == _flat(many.retrieve_batch(QUERIES, 10))


def test_a_stream_is_checked_as_add_documents_checks(encoder, scifact_docs):
    """add_stream goes through the same check as add_documents, each entry named by its place in the stream
    (it took empty texts and bad metadata before); an id left out is generated in either path."""
    records = [{"id": d["id"], "text": d["text"], "metadata": d["metadata"]} for d in scifact_docs[:7]]
    streamed = GaussianRetriever(encoder)
    assert streamed.add_stream(records, chunk_size=3) == 7
    assert (_flat(streamed.retrieve_batch(QUERIES, 5))
            == _flat(_build(encoder, scifact_docs[:7]).retrieve_batch(QUERIES, 5)))
    for bad, error, message in (({"text": "   "}, ValueError, r"texts\[8\] is empty"),
                                ({"text": None}, TypeError, r"texts\[8\] is NoneType"),
                                ({"text": "x", "metadata": "tag"}, ValueError, r"metadata\[8\]")):
        r = GaussianRetriever(encoder)
        with pytest.raises(error, match=message):
            r.add_stream([*({"text": f"doc {i}"} for i in range(8)), bad], chunk_size=4)
        assert len(r) == 8  # the chunks before the bad one were indexed, the bad chunk was not
    r = GaussianRetriever(encoder)
    assert r.add_documents(["a", "b", "c"], ids=["x", None, "z"]) == ["x", "doc-1", "z"]
    assert r.add_stream([{"text": "d"}, {"text": "e", "id": "e"}]) == 2 and "doc-3" in r and "e" in r
    assert r.retrieve_batch("a", 1)[0][0].id == "x"  # a single string is one query, not one per character


def test_load_reloads_model_from_manifest(encoder_dir, scifact_docs, tmp_path):
    r = _build(GaussianRetriever(encoder_dir).model, scifact_docs[:10], model_name=encoder_dir)
    r.save(tmp_path / "ix")
    r2 = GaussianRetriever.load(tmp_path / "ix")  # no model given: loads encoder_dir
    assert _flat(r2.retrieve_batch(QUERIES[:2], 3)) == _flat(r.retrieve_batch(QUERIES[:2], 3))


def test_wrong_model_and_dimension_are_refused(encoder, tiny_model_path, scifact_docs, tmp_path):
    import torch

    from ragcun.modeling import IsotropicGaussianEncoder

    r = _build(encoder, scifact_docs[:10])
    r.save(tmp_path / "ix")
    torch.manual_seed(1)
    other = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=64, device="cpu")
    with pytest.raises(ModelMismatchError, match="was built with model"):
        GaussianRetriever.load(tmp_path / "ix", model=other)
    # an index fingerprinted by an older ragcun cannot be checked: a clear error, or check_model=False
    path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["model"].update(fingerprint_method="weights", fingerprint="0" * 64)
    from ragcun.retrieval.persistence import MANIFEST_HASH, manifest_digest

    manifest[MANIFEST_HASH] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelMismatchError, match="saved by an older ragcun"):
        GaussianRetriever.load(tmp_path / "ix", model=encoder)
    assert len(GaussianRetriever.load(tmp_path / "ix", model=encoder, check_model=False)) == 10
    other32 = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=32, device="cpu")
    with pytest.raises(DimensionMismatchError, match="index dimension 64 but the model"):
        GaussianRetriever.load(tmp_path / "ix", model=other32)


def test_missing_and_corrupt_files_are_clear_errors(encoder, scifact_docs, tmp_path):
    src = tmp_path / "good"
    _build(encoder, scifact_docs[:10]).save(src)

    def fresh(name):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    with pytest.raises(FileNotFoundError, match="no such index directory"):
        GaussianRetriever.load(tmp_path / "absent", model=encoder)
    d = fresh("no-manifest")
    (d / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError, match="manifest.json missing"):
        GaussianRetriever.load(d, model=encoder)
    d = fresh("bad-manifest")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match="corrupt manifest"):
        GaussianRetriever.load(d, model=encoder)
    d = fresh("no-index")
    (d / "index.faiss").unlink()
    with pytest.raises(IndexCorruptError, match="index.faiss missing"):
        GaussianRetriever.load(d, model=encoder)
    d = fresh("truncated")
    data = (d / "index.faiss").read_bytes()
    (d / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptError, match="index.faiss: .* bytes, the manifest says"):
        GaussianRetriever.load(d, model=encoder)
    d = fresh("flipped")
    data = bytearray((d / "docs.sqlite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "docs.sqlite").write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="docs.sqlite: sha256 does not match"):
        GaussianRetriever.load(d, model=encoder)
    # without checksum verification the parsers still refuse garbage, naming the file
    d = fresh("garbage")
    size = (d / "index.faiss").stat().st_size
    (d / "index.faiss").write_bytes(b"\0" * size)
    with pytest.raises(IndexCorruptError, match="index.faiss: not a readable FAISS index"):
        GaussianRetriever.load(d, model=encoder, verify=False)
    d = fresh("garbage-db")
    size = (d / "docs.sqlite").stat().st_size
    (d / "docs.sqlite").write_bytes(b"x" * size)
    with pytest.raises(IndexCorruptError, match="docs.sqlite"):
        GaussianRetriever.load(d, model=encoder, verify=False)
    # a store whose rows disagree with the index is caught by the counts check
    d = fresh("counts")
    con = sqlite3.connect(d / "docs.sqlite")
    con.execute("DELETE FROM documents WHERE iid = 0")
    con.commit()
    con.close()
    with pytest.raises(IndexCorruptError, match="counts disagree"):
        GaussianRetriever.load(d, model=encoder, verify=False)


def test_crash_mid_save_keeps_previous_index(encoder, scifact_docs, tmp_path, monkeypatch):
    r = _build(encoder, scifact_docs[:10])
    r.save(tmp_path / "ix")
    expected = _flat(r.retrieve_batch(QUERIES, 5))
    r.add_documents(["one more"], ids=["extra"])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(r.store, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        r.save(tmp_path / "ix")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temp folder left behind
    old = GaussianRetriever.load(tmp_path / "ix", model=encoder)
    assert len(old) == 10 and _flat(old.retrieve_batch(QUERIES, 5)) == expected


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_queries_match_sequential(encoder, scifact_docs, kind):
    r = _build(encoder, scifact_docs, index=kind)
    r.remove([scifact_docs[0]["id"]])
    queries = QUERIES * 8
    sequential = [_flat([r.retrieve(q, top_k=7)])[0] for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda q: _flat([r.retrieve(q, top_k=7)])[0], queries))
    assert concurrent == sequential


def test_queries_during_writes_stay_consistent(encoder, scifact_docs):
    """Searches running while documents are added never see half-added documents."""
    r = _build(encoder, scifact_docs[:20])
    extra = scifact_docs[20:]

    def writer():
        for d in extra:
            r.add_documents([d["text"]], ids=[d["id"]])
        return True

    def reader(q):
        for _ in range(5):
            for hits in r.retrieve_batch([q], top_k=30):
                assert all(isinstance(h.text, str) and h.distance >= 0 for h in hits)
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(writer)] + [pool.submit(reader, q) for q in QUERIES[:3]]
        assert all(f.result(timeout=120) for f in futures)
    assert len(r) == 60


def test_real_minilm_ranks_the_relevant_passage_first(minilm_path, tmp_path):
    docs = [
        "Paris is the capital and most populous city of France.",
        "The mitochondrion is the powerhouse of the cell, producing ATP.",
        "Python is a high-level programming language.",
        "The Great Barrier Reef is the world's largest coral reef system.",
    ]
    r = GaussianRetriever(minilm_path)
    r.add_documents(docs, ids=["paris", "mito", "python", "reef"])
    assert r.retrieve("What is the capital of France?", top_k=1)[0].id == "paris"
    assert r.retrieve("Which organelle makes ATP?", top_k=1)[0].id == "mito"
    hits = r.retrieve("coral reefs in Australia", top_k=4)
    assert hits[0].id == "reef"
    # MiniLM normalises: unit norms, distances in [0, 2], L2 ranking == cosine ranking
    assert all(h.norm == pytest.approx(1.0, abs=1e-4) for h in hits)
    q = r.encode_queries(["coral reefs in Australia"])[0]
    d = r.encode_documents(docs)
    cos_order = [["paris", "mito", "python", "reef"][i] for i in np.argsort(-(d @ q))]
    assert [h.id for h in hits] == cos_order
    r.save(tmp_path / "ix")
    assert GaussianRetriever.read_manifest(tmp_path / "ix")["model"]["normalized"] is True


def test_an_index_loads_by_itself_after_a_move_or_with_an_unsaved_model(
        encoder, encoder_dir, scifact_docs, tmp_path):
    """A model never saved travels inside the index; a saved model is found relative to the index, so the
    pair can be moved together (the absolute path recorded at build time no longer exists)."""
    q = QUERIES[0]
    inside = _build(encoder, scifact_docs[:20])  # the in-memory encoder: no directory anywhere
    inside.save(tmp_path / "ix-inside")
    assert (tmp_path / "ix-inside" / "model" / "modules.json").exists()
    back = GaussianRetriever.load(tmp_path / "ix-inside")
    assert [h.id for h in back.retrieve(q, top_k=5)] == [h.id for h in inside.retrieve(q, top_k=5)]

    project = tmp_path / "project"
    shutil.copytree(encoder_dir, project / "model")
    # by path: the manifest records it, relative to the index too
    built = GaussianRetriever(str(project / "model"))
    built.add_documents([d["text"] for d in scifact_docs[:20]], ids=[d["id"] for d in scifact_docs[:20]])
    built.save(project / "index")
    moved = tmp_path / "moved"
    shutil.move(str(project), moved)
    again = GaussianRetriever.load(moved / "index")
    assert Path(again.model_location).resolve() == (moved / "model").resolve()
    assert [h.id for h in again.retrieve(q, top_k=5)] == [h.id for h in built.retrieve(q, top_k=5)]


def test_normalized_means_the_output_is_unit_norm(tiny_model_path, minilm_path):
    """A Gaussian encoder keeps its base's Normalize before the head: its output is not normalised."""
    from sentence_transformers import SentenceTransformer

    from ragcun.encoding.models import is_normalized
    from ragcun.modeling import IsotropicGaussianEncoder

    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=8, device="cpu")
    assert any(type(m).__name__ == "Normalize" for m in enc) and not is_normalized(enc)
    assert is_normalized(SentenceTransformer(minilm_path, device="cpu"))
    assert type(IsotropicGaussianEncoder.load(tiny_model_path)) is IsotropicGaussianEncoder
