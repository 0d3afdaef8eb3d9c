"""``ragcun serve``: a saved :class:`~ragcun.retrieval.GaussianRetriever` index behind an HTTP service.

FastAPI + uvicorn (extra ``ragcun[serve]``). Concurrent queries are encoded and searched together
(:class:`~ragcun.serving.batching.MicroBatcher`), bad requests get a 4xx with a one-line reason, and the
OpenAPI page is at ``/docs``. See :func:`ragcun.serving.app.create_app`.
"""

from ragcun.serving.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
