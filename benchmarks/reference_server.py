"""The reference of the ``serve`` suite: the plain FastAPI + sentence-transformers search endpoint a RAG
engineer writes in twenty lines (``model.encode``, ``util.semantic_search`` over the corpus embeddings,
cosine; the hits' texts returned, as a RAG endpoint must).

``python benchmarks/reference_server.py MODEL VECTORS.npy DOCS.json PORT`` (DOCS: ``[[id, text], ...]``):
serves ``POST /search`` ``{"query", "k"}`` → ``{"hits": [{"id", "score", "text"}]}`` and ``GET /ready`` on
127.0.0.1:PORT.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer, util


class Query(BaseModel):
    query: str
    k: int = 10


def main() -> None:
    model_path, vectors, docs_file, port = sys.argv[1:5]
    model = SentenceTransformer(model_path, device="cpu")
    corpus = torch.from_numpy(np.load(vectors))
    docs = json.loads(open(docs_file, encoding="utf-8").read())
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/search")
    def search(q: Query) -> dict:  # a sync endpoint: FastAPI runs it in its thread pool
        emb = model.encode(q.query, convert_to_tensor=True)
        hits = util.semantic_search(emb, corpus, top_k=q.k)[0]
        return {"hits": [{"id": docs[h["corpus_id"]][0], "score": h["score"], "text": docs[h["corpus_id"]][1]}
                         for h in hits]}

    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
