"""``ragcun serve``: saved :class:`~ragcun.retrieval.GaussianRetriever` indexes behind an HTTP service.

FastAPI + uvicorn (extra ``ragcun[serve]``): search, OpenAI- and TEI-style embeddings, durable writes
(:class:`~ragcun.serving.live.LiveIndex`), Prometheus metrics. Concurrent queries are encoded and searched
together (:class:`~ragcun.serving.batching.MicroBatcher`), bad requests get a 4xx with a one-line reason, and
Swagger UI is at ``/docs``. See :func:`ragcun.serving.app.create_app`.
"""

from ragcun.serving.app import ServeSettings, create_app
from ragcun.serving.live import LiveIndex

__all__ = ["LiveIndex", "ServeSettings", "create_app"]
