"""``ragcun serve``: the real server process on 127.0.0.1, called over HTTP, concurrent clients included."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.serving.server import start, stop  # noqa: E402

DOCS = ["Paris is the capital of France.", "The mitochondria is the powerhouse of the cell.",
        "Berlin is the capital of Germany.", "Photosynthesis turns light into chemical energy.",
        "The Seine flows through Paris.", "Enzymes speed up chemical reactions."]


@pytest.fixture(scope="module")
def indexes(tiny_model_path, tmp_path_factory):
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.retrieval import GaussianRetriever

    root = tmp_path_factory.mktemp("serve")
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16).save(root / "model")
    r = GaussianRetriever(str(root / "model"))
    r.add_documents(DOCS, ids=[f"d{i}" for i in range(len(DOCS))],
                    metadata=[{"lang": "en", "topic": "geo" if i in (0, 2, 4) else "bio"}
                              for i in range(len(DOCS))])
    r.save(root / "science")
    small = GaussianRetriever(str(root / "model"))
    small.add_documents(DOCS[:2], ids=["a", "b"])
    small.save(root / "small")
    return root


@pytest.fixture(scope="module")
def server(indexes):
    proc, base = start([str(indexes / "science"), str(indexes / "small"), "--max-wait-ms", "20",
                        "--max-body-kb", "4", "--max-k", "50"], indexes / "server.log")
    yield base
    stop(proc)


def test_search_returns_the_retrievers_own_hits(server, indexes):
    from ragcun.retrieval import GaussianRetriever

    r = GaussianRetriever.load(indexes / "science")
    expected = r.retrieve("capital of France", top_k=3)
    res = httpx.post(f"{server}/search", json={"query": "capital of France", "k": 3, "index": "science"})
    assert res.status_code == 200, res.text
    hits = res.json()["hits"]
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["distance"] for h in hits] == pytest.approx([h.distance for h in expected], rel=1e-5)
    assert all(0 < h["relevance"] <= 1 and h["metadata"]["lang"] == "en" for h in hits)
    assert [h["rank"] for h in hits] == [1, 2, 3]


def test_filters_keep_only_matching_documents_in_exact_order(server, indexes):
    from ragcun.retrieval import GaussianRetriever

    ranked = [h for h in GaussianRetriever.load(indexes / "science").retrieve("chemistry", top_k=6)
              if h.metadata["topic"] == "geo"]
    res = httpx.post(f"{server}/search",
                     json={"query": "chemistry", "k": 2, "index": "science", "filters": {"topic": "geo"}})
    assert [h["id"] for h in res.json()["hits"]] == [h.id for h in ranked[:2]]


BAD_REQUESTS = [
    ({"query": "", "index": "science"}, 400, "query is empty"),
    ({"query": "x", "k": 0, "index": "science"}, 400, "k must be between 1 and 50, got 0"),
    ({"query": "x", "k": 51, "index": "science"}, 400, "k must be between 1 and 50"),
    ({"query": "x", "k": -3, "index": "science"}, 400, "k must be between"),
    ({"k": 3, "index": "science"}, 422, "field 'query' is required"),
    ({"query": "x", "kk": 1, "index": "science"}, 422, "unknown field 'kk'"),
    ({"query": "x", "k": "many", "index": "science"}, 422, "k:"),
    ({"query": 5, "index": "science"}, 422, "query:"),
    ({"query": "x", "index": "nope"}, 404, "unknown index 'nope'"),
    ({"query": "x"}, 400, "field 'index' is required when several indexes are served"),
    ({"query": "x", "index": "science", "filters": {"a": [1]}}, 422, "filters"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_with_one_line(server, body, status, fragment):
    res = httpx.post(f"{server}/search", json=body)
    assert res.status_code == status, res.text
    message = res.json()["error"]
    assert fragment in message and "\n" not in message and "Traceback" not in res.text
    assert httpx.get(f"{server}/health").status_code == 200  # and it keeps serving


@pytest.mark.parametrize(("content", "status", "fragment"), [
    (b"{not json", 422, "not valid JSON"),
    (b'{"query": "' + b"x" * 5000 + b'", "index": "science"}', 413, "over 4,096 bytes"),
])
def test_bad_bodies(server, content, status, fragment):
    res = httpx.post(f"{server}/search", content=content, headers={"content-type": "application/json"})
    assert res.status_code == status and fragment in res.json()["error"]


def test_concurrent_clients_are_batched_and_answered_correctly(server):
    queries = [f"{word} question {i}" for i, word in enumerate(["capital", "cell", "energy", "river"] * 8)]
    with httpx.Client() as c:
        alone = {q: [h["id"] for h in c.post(f"{server}/search",
                                             json={"query": q, "k": 3, "index": "science"}).json()["hits"]]
                 for q in queries[:4]}
        before = c.get(f"{server}/health").json()["indexes"]["science"]

    def ask(q: str) -> tuple[str, list[str]]:
        res = httpx.post(f"{server}/search", json={"query": q, "k": 3, "index": "science"}, timeout=60)
        assert res.status_code == 200, res.text
        return q, [h["id"] for h in res.json()["hits"]]

    with ThreadPoolExecutor(32) as pool:
        answers = dict(pool.map(ask, queries))
    assert all(answers[q] == ids for q, ids in alone.items())  # a batched query ranks as it does alone
    after = httpx.get(f"{server}/health").json()["indexes"]["science"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == len(queries) and batches < requests, (requests, batches)


def test_openapi_page(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    assert "/search" in spec["paths"] and "/health" in spec["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200


def test_serve_refuses_what_it_cannot_serve(tmp_path):
    from ragcun.cli import app

    res = CliRunner().invoke(app, ["serve", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "missing" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "70000"])
    assert res.exit_code == 1 and "--port must be between 1 and 65,535" in " ".join(res.output.split())
    for extra, fragment in ((["--host", ""], "--host is empty"),
                            (["--max-wait-ms", "nan"], "--max-wait-ms must be")):
        res = CliRunner().invoke(app, ["serve", str(tmp_path), *extra])
        assert (res.exit_code == 1 and fragment in " ".join(res.output.split())
                and "Traceback" not in res.output)
