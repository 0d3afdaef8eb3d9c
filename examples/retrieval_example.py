"""Index a handful of documents with a ragcun model and print ranked results with L2 distances.

    python examples/retrieval_example.py                      # a fresh Gaussian encoder on MiniLM
    python examples/retrieval_example.py --model path/to/trained-ragcun-model

A fresh encoder's head is warm-started on the documents (``warm_start_head``): untrained, it ranks by
L2 exactly as MiniLM ranks by cosine, with centred, unit-variance 512-d outputs. A trained model
(``ragcun train ...``) or any sentence-transformers model (``--model all-MiniLM-L6-v2``) works too.
"""

from __future__ import annotations

import argparse
import tempfile

from ragcun import GaussianRetriever, IsotropicGaussianEncoder

DOCUMENTS = [
    ("paris", "Paris is the capital and most populous city of France.", {"topic": "geography"}),
    ("mito", "The mitochondrion is the powerhouse of the cell: it produces most of its ATP.",
     {"topic": "biology"}),
    ("python", "Python is a high-level, general-purpose programming language.", {"topic": "computing"}),
    ("reef", "The Great Barrier Reef, off Queensland, is the world's largest coral reef system.",
     {"topic": "geography"}),
    ("dna", "DNA carries the genetic instructions of all known organisms.", {"topic": "biology"}),
    ("faiss", "FAISS is a library for efficient similarity search of dense vectors.", {"topic": "computing"}),
]
QUERIES = ["What is the capital of France?", "Which organelle makes ATP?", "vector search library"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="a ragcun model dir, a sentence-transformers model or alias")
    parser.add_argument("--index", default="flat", choices=["flat", "ivf", "hnsw"])
    parser.add_argument("-k", type=int, default=3)
    args = parser.parse_args()

    ids, texts, metadata = zip(*DOCUMENTS, strict=True)
    model = args.model
    if model is None:
        model = IsotropicGaussianEncoder(base_model="all-MiniLM-L6-v2", output_dim=512)
        model.warm_start_head(model.base_features(list(texts)))
    retriever = GaussianRetriever(model, index=args.index, **({"nlist": 1} if args.index == "ivf" else {}))
    retriever.add_documents(list(texts), ids=list(ids), metadata=list(metadata))
    print(retriever)

    for query in QUERIES:
        print(f"\n{query}")
        for hit in retriever.retrieve(query, top_k=args.k):
            print(f"  {hit.rank}. {hit.id:<7} distance={hit.distance:.4f}  norm={hit.norm:.3f}  {hit.text}")

    with tempfile.TemporaryDirectory() as tmp:  # save/load keeps identical results
        retriever.save(f"{tmp}/index")
        reloaded = GaussianRetriever.load(f"{tmp}/index", model=retriever.model)
        same = [h.id for h in reloaded.retrieve(QUERIES[0], top_k=args.k)] == \
               [h.id for h in retriever.retrieve(QUERIES[0], top_k=args.k)]
        print(f"\nsaved and reloaded: {len(reloaded)} documents, identical results: {same}")


if __name__ == "__main__":
    main()
