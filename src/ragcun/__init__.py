"""ragcun: isotropic Gaussian embeddings for dense retrieval.

A sentence-transformers encoder with an unnormalised Gaussian projection head, trained with a
Euclidean contrastive loss plus SIGReg (LeJEPA's sliced Epps–Pulley test toward N(0, I)),
evaluated on BEIR with L2 ranking, and served through FAISS.
"""

from __future__ import annotations

from typing import Any

from ragcun.version import __version__

__all__ = ["IsotropicGaussianEncoder", "GaussianRetriever", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: importing ragcun must not pull torch/sentence-transformers/faiss until they are used.
    if name == "IsotropicGaussianEncoder":
        from ragcun.modeling import IsotropicGaussianEncoder

        return IsotropicGaussianEncoder
    if name == "GaussianRetriever":
        from ragcun.retrieval import GaussianRetriever

        return GaussianRetriever
    raise AttributeError(f"module 'ragcun' has no attribute {name!r}")
