"""``ragcun serve`` as the embedding server and live index of a RAG stack: a real server process on
127.0.0.1 per test module, called over HTTP (raw sockets for the malformed cases)."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from tests.serving.server import start, stop  # noqa: E402
from tests.serving.test_serve import DOCS  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tiny_model_path, tmp_path_factory) -> Path:
    from ragcun.modeling import IsotropicGaussianEncoder

    root = tmp_path_factory.mktemp("stack")
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16).save(root / "model")
    return root / "model"


def build(model_dir: Path, out: Path, backend: str = "auto") -> Path:
    from ragcun.retrieval import GaussianRetriever

    r = GaussianRetriever(str(model_dir), engine=backend)
    r.add_documents(DOCS, ids=[f"d{i}" for i in range(len(DOCS))],
                    metadata=[{"topic": "geo" if i in (0, 2, 4) else "bio"} for i in range(len(DOCS))])
    r.save(out)
    return out


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    build(model_dir, root / "science")
    log = root / "server.log"
    proc, base = start([str(root / "science"), "--body-timeout", "1", "--max-k", "50"], log)
    yield base, root, log
    stop(proc)


def test_embeddings_are_the_models_own_vectors(server, model_dir):
    from ragcun.retrieval import GaussianRetriever

    base, root, _ = server
    r = GaussianRetriever.load(root / "science")
    texts = ["capital of France", "what do enzymes do"]
    res = httpx.post(f"{base}/v1/embeddings", json={"input": texts, "model": "science"})
    assert res.status_code == 200, res.text
    body = res.json()
    got = np.asarray([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])
    assert body["object"] == "list" and body["usage"]["total_tokens"] > 0
    np.testing.assert_allclose(got, r.encode_documents(texts), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)  # unnormalised
    q = httpx.post(f"{base}/v1/embeddings", json={"input": texts[0], "input_type": "query"}).json()
    want = r.encode_queries(texts[:1])[0]
    np.testing.assert_allclose(q["data"][0]["embedding"], want, rtol=1e-5, atol=1e-6)
    tei = httpx.post(f"{base}/embed", json={"inputs": texts})
    np.testing.assert_allclose(np.asarray(tei.json()), r.encode_documents(texts), rtol=1e-5, atol=1e-6)
    unit = np.asarray(httpx.post(f"{base}/embed", json={"inputs": texts, "normalize": True}).json())
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    models = httpx.get(f"{base}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["science"] and models["data"][0]["dimension"] == 16
    for body, fragment in (({"input": []}, "input is empty"), ({"input": "x", "dimensions": 8}, "dimensions"),
                           ({"input": "x", "encoding_format": "base64"}, "encoding_format"),
                           ({"inputs": "x", "truncate": False}, "truncate=false")):
        url = f"{base}/embed" if "inputs" in body else f"{base}/v1/embeddings"
        res = httpx.post(url, json=body)
        assert 400 <= res.status_code < 500 and fragment in res.json()["error"], res.text


def test_one_bad_query_fails_only_itself(server):
    base, *_ = server
    valid = [f"capital question {i}" for i in range(15)]
    bad = b'{"query": "\\ud800 cells", "k": 3}'

    def ask(i: int) -> int:
        if i == 15:
            return httpx.post(f"{base}/search", content=bad, headers={"content-type": "application/json"},
                              timeout=60).status_code
        return httpx.post(f"{base}/search", json={"query": valid[i], "k": 3}, timeout=60).status_code

    for _ in range(3):
        codes = list(ThreadPoolExecutor(16).map(ask, range(16)))
        assert codes[:15] == [200] * 15 and 400 <= codes[15] < 500, codes
    for body, fragment in ((bad, "query holds a lone surrogate (U+D800"), (b'{"query": "a\\u0000b"}', "NUL")):
        res = httpx.post(f"{base}/search", content=body, headers={"content-type": "application/json"})
        assert res.status_code == 400 and fragment in res.json()["error"], res.text


@pytest.mark.parametrize(("body", "fragment"), [
    ({"query": "x", "k": True}, "k:"), ({"query": "x", "k": "5"}, "k:"), ({"query": "x", "k": 2.0}, "k:"),
    ({"query": "x", "index": ""}, "index:"), ({"queries": [], "k": 2}, "queries"),
    ({"query": "x", "filters": {"a": float("nan")}}, "filters"),
    ({"query": "x", "filters": {"a": float("inf")}}, "filters"),
    ({"query": "x", "hybrid": "yes"}, "hybrid"), ({"query": "x", "bm25_weight": -1}, "bm25_weight"),
    ({"query": "x", "bm25_weight": float("nan")}, "bm25_weight"),
])
def test_types_are_strict(server, body, fragment):
    base, *_ = server
    url = f"{base}/search/batch" if "queries" in body else f"{base}/search"
    res = httpx.post(url, content=json.dumps(body).encode(),  # json.dumps writes NaN and Infinity
                     headers={"content-type": "application/json"})
    assert res.status_code == 422 and fragment in res.json()["error"], res.text


def test_hybrid_search_is_a_request_option(server):
    from ragcun.encoding.fusion import Fusion
    from ragcun.retrieval import GaussianRetriever

    base, root, _ = server
    r = GaussianRetriever.load(root / "science")
    qs = ["the Seine in Paris", "chemical energy from light"]
    heavy = Fusion("zscore", {"dense": 1.0, "bm25": 3.0})
    for body, fusion in (({"hybrid": True}, Fusion()), ({"bm25_weight": 3.0}, heavy)):
        want = r.retrieve_batch(qs, top_k=3, hybrid=fusion)
        one = httpx.post(f"{base}/search", json={"query": qs[0], "k": 3, **body}).json()["hits"]
        assert [h["id"] for h in one] == [h.id for h in want[0]]
        assert [h["hybrid_score"] for h in one] == pytest.approx([h.hybrid_score for h in want[0]], abs=1e-4)
        batch = httpx.post(f"{base}/search/batch", json={"queries": qs, "k": 3, **body}).json()["results"]
        assert [[h["id"] for h in hits] for hits in batch] == [[h.id for h in w] for w in want]
    dense = httpx.post(f"{base}/search", json={"query": qs[0], "k": 3}).json()["hits"]
    assert all(h["hybrid_score"] is None for h in dense)
    res = httpx.post(f"{base}/search", json={"query": "x", "hybrid": False, "bm25_weight": 1.0})
    assert res.status_code == 400 and "bm25_weight is for hybrid search" in res.json()["error"]


def test_every_error_is_one_line_of_json(server):
    base, *_ = server
    json_type = {"content-type": "application/json"}
    not_utf8 = httpx.post(f"{base}/search", content=b"\xff\xfe{", headers=json_type)
    for res, status in ((httpx.get(f"{base}/nope"), 404), (httpx.get(f"{base}/search"), 405), (not_utf8, 4),
                        (httpx.put(f"{base}/documents", json={}), 405)):
        assert res.status_code == status or (status == 4 and 400 <= res.status_code < 500), res.text
        assert set(res.json()) == {"error"} and "\n" not in res.json()["error"]


def test_a_stalled_body_gets_408(server):
    base, *_ = server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"query\":")
        t0 = time.time()
        reply = b""
        while chunk := s.recv(4096):  # the server closes the connection after the 408
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and '"error"' in reply and time.time() - t0 < 5


def test_batch_search_metrics_docs_and_access_log(server):
    from ragcun.retrieval import GaussianRetriever

    base, root, log = server
    r = GaussianRetriever.load(root / "science")
    qs = ["capital of France", "chemistry"]
    res = httpx.post(f"{base}/search/batch", json={"queries": qs, "k": 2, "filters": {"topic": "bio"}})
    assert res.status_code == 200, res.text
    want = r.retrieve_batch(qs, top_k=2, filter={"topic": "bio"})
    assert [[h["id"] for h in hits] for hits in res.json()["results"]] == [[h.id for h in w] for w in want]
    text = httpx.get(f"{base}/metrics").text
    assert re.search(r'ragcun_requests_total\{method="POST",route="/search/batch",status="200"\} [1-9]', text)
    assert "ragcun_request_seconds_bucket" in text and 'ragcun_documents{index="science"} 6.0' in text
    # /docs: Swagger UI whose every asset comes from this server (no CDN), each answering 200
    html = httpx.get(f"{base}/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    assert all(httpx.get(f"{base}{a}").status_code == 200 for a in assets)
    assert "/search" in httpx.get(f"{base}/openapi.json").json()["paths"]
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert any(x["route"] == "/search/batch" and x["status"] == 200 and x["ms"] >= 0 for x in lines)


def test_api_key(model_dir, tmp_path):
    build(model_dir, tmp_path / "idx")
    proc, base = start([str(tmp_path / "idx"), "--no-access-log"], tmp_path / "log",
                       env={"RAGCUN_API_KEY": "s3cret"})
    try:
        assert httpx.post(f"{base}/search", json={"query": "x"}).status_code == 401
        assert httpx.post(f"{base}/search", json={"query": "x"},
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{base}/search", json={"query": "x"},
                          headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "x"},
                          headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        stop(proc)


ENGINES = ["faiss", pytest.param("qdrant", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("qdrant_client"), reason="qdrant-client not installed")),
    pytest.param("lancedb", marks=pytest.mark.skipif(
        not __import__("importlib").util.find_spec("lancedb"), reason="lancedb not installed"))]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_acknowledged_write_survives_kill_9(engine, model_dir, tmp_path):
    idx = build(model_dir, tmp_path / "live", backend=engine)
    log = tmp_path / "log"
    proc, base = start([str(idx)], log)
    new = {"ids": ["n1", "d1"], "texts": ["Volcanoes erupt molten rock.", "Cells divide by mitosis."],
           "metadata": [{"topic": "geo"}, {"topic": "bio"}]}
    res = httpx.post(f"{base}/documents", json=new)
    assert res.status_code == 200 and res.json()["upserted"] == 2 and res.json()["documents"] == 7, res.text
    gone = httpx.request("DELETE", f"{base}/documents", json={"ids": ["d5", "unknown"]})
    assert gone.json()["deleted"] == 1
    bad = httpx.post(f"{base}/documents", json={"ids": ["x"], "texts": ["a", "b"]})
    assert bad.status_code == 400 and "1 ids but 2 texts" in bad.json()["error"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc, base = start([str(idx)], log)  # replays the log over the snapshot
    try:
        res = httpx.post(f"{base}/search", json={"query": "Volcanoes erupt molten rock.", "k": 1})
        hits = res.json()["hits"]
        assert hits[0]["id"] == "n1" and hits[0]["metadata"] == {"topic": "geo"}
        health = httpx.get(f"{base}/health").json()["indexes"]["live"]
        assert health["documents"] == 6 and health["writable"]
        ids = {h["id"] for h in httpx.post(f"{base}/search", json={"query": "cells", "k": 6}).json()["hits"]}
        assert "d5" not in ids and "d1" in ids
        # hybrid search sees the replayed writes: BM25 is over the documents as they are now
        fused = httpx.post(f"{base}/search", json={"query": "volcanoes mitosis", "k": 6, "bm25_weight": 4.0})
        hits = fused.json()["hits"]
        assert {h["id"] for h in hits[:2]} == {"n1", "d1"} and "d5" not in {h["id"] for h in hits}
        assert all(h["hybrid_score"] is not None for h in hits)
    finally:
        stop(proc)  # a clean stop snapshots and empties the log
    from ragcun.retrieval import GaussianRetriever
    from ragcun.serving.live import wal_path

    assert wal_path(idx).read_text() == "" and len(GaussianRetriever.load(idx)) == 6
    assert GaussianRetriever.load(idx).get("d1")["text"] == "Cells divide by mitosis."


def test_read_only_refuses_writes(model_dir, tmp_path):
    idx = build(model_dir, tmp_path / "ro")
    proc, base = start([str(idx), "--read-only"], tmp_path / "log")
    try:
        res = httpx.post(f"{base}/documents", json={"ids": ["a"], "texts": ["b"]})
        assert res.status_code == 403 and "read-only" in res.json()["error"]
    finally:
        stop(proc)


async def test_a_failing_batch_is_answered_request_by_request():
    """What the service cannot see as bad before batching (here: a query the search itself rejects) fails only
    its own request: the batch is re-run one request at a time."""
    import asyncio

    from ragcun.serving.batching import MicroBatcher

    calls: list[int] = []

    def search(queries: list[str], k: int, option: object) -> list[list[str]]:
        calls.append(len(queries))
        if any("boom" in q for q in queries):
            raise ValueError("boom")
        return [[f"{q}-{i}" for i in range(k)] for q in queries]

    b = MicroBatcher(search, max_batch=16, max_wait_ms=50)
    await b.start()
    try:
        queries = [f"q{i}" for i in range(7)] + ["boom"]
        out = await asyncio.gather(*(b.submit(q, 2) for q in queries), return_exceptions=True)
    finally:
        await b.stop()
    assert out[:7] == [[f"q{i}-0", f"q{i}-1"] for i in range(7)]
    assert isinstance(out[7], ValueError) and calls[0] == 8 and calls[1:] == [1] * 8


def test_the_log_replays_whole_writes_drops_a_torn_one_and_names_a_bad_line(model_dir, tmp_path):
    from ragcun.retrieval import GaussianRetriever
    from ragcun.serving.live import LiveIndex, wal_path

    idx = build(model_dir, tmp_path / "w")
    live = LiveIndex(GaussianRetriever.load(idx), idx)
    live.upsert(["n1"], ["Volcanoes erupt molten rock."], [{"topic": "geo"}])
    live.delete(["d0"])
    log = wal_path(idx)
    whole = log.read_text()
    log.write_text(whole + '{"op": "upsert", "ids": ["n2"], "te')  # a crash mid-append
    again = LiveIndex(GaussianRetriever.load(idx), idx)
    assert again.replayed == 2 and "n1" in again.retriever and "d0" not in again.retriever
    assert "n2" not in again.retriever and log.read_text() == whole
    log.write_text('{"op": "upsert"}\n' + whole)
    with pytest.raises(ValueError, match=r"\.wal\.jsonl:1: unreadable log entry"):
        LiveIndex(GaussianRetriever.load(idx), idx)
    log.write_text(whole)
    again.snapshot()
    assert log.read_text() == "" and len(GaussianRetriever.load(idx)) == 6
