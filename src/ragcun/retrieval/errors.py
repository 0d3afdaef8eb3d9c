"""What can go wrong with a saved index or a search, as exception types (all ``ValueError``s, so generic
handlers still catch them)."""

from __future__ import annotations


class RetrieverError(ValueError):
    """Base class for index errors."""


class IndexCorruptError(RetrieverError):
    """A saved index has a missing, truncated or altered file."""


class ModelMismatchError(RetrieverError):
    """The model given to ``load`` is not the one the index was built with."""


class DimensionMismatchError(RetrieverError):
    """Embedding dimensions disagree (model vs index vs manifest)."""
