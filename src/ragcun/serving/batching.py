"""Micro-batching of concurrent queries: one encoder pass and one index search for every query that queued
while the previous batch ran.

Why: a transformer encodes 16 queries in little more time than one on a CPU thread pool, and the exact
search is one matrix product either way, so a server that handles each request alone spends its cores on
per-call overhead. The batcher runs a batch in a worker thread (the event loop keeps accepting requests);
the next batch is every request that arrived meanwhile (up to ``max_batch``), so a lone request never
waits and a busy server batches by itself, as text-embeddings-inference does. ``max_wait_ms`` > 0 also
holds a batch open that long for more requests (a fixed delay, as Triton's). Requests with different search
options (dense or hybrid, which fusion) share a batch's turn but are searched as separate groups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

logger = logging.getLogger(__name__)


class MicroBatcher:
    """Collects ``(query, k, option)`` requests and runs ``search(queries, k, option)`` once per batch and
    option.

    ``search`` takes a list of query strings, the largest ``k`` of the group and the group's option (any
    object; requests are grouped by its ``repr``) and returns one ranked list per query; each request gets
    the first ``k`` of its own list. When a batch fails, each of its requests runs again alone, so one bad
    request fails only itself (the service also refuses what it can see is bad before a request joins a
    batch). ``on_batch`` is called with each batch's size (the metrics).
    ``executor`` runs the batches: one long-lived thread keeps the OpenMP team of torch warm (measured here:
    a query's encoding takes 3 ms less than on asyncio's pool of short-lived threads).
    """

    def __init__(self, search: Callable[[list[str], int, Any], list[list[Any]]], max_batch: int = 32,
                 max_wait_ms: float = 0.0, on_batch: Callable[[int], None] | None = None,
                 executor: Executor | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.search = search
        self.executor = executor  # where batches run (the app's one model thread; None: asyncio's pool)
        self.on_batch = on_batch
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # how many search calls ran (reported by /health: the batching is visible)
        self.requests = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, query: str, k: int, option: Any = None) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((query, k, option, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():  # what queued meanwhile
                batch.append(self._queue.get_nowait())
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            groups: dict[str, list[tuple[str, int, Any, asyncio.Future]]] = {}
            for item in batch:
                groups.setdefault(repr(item[2]), []).append(item)
            for group in groups.values():
                await self._answer(group)

    async def _answer(self, batch: list[tuple[str, int, Any, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        queries = [q for q, _, _, _ in batch]
        k = max(k for _, k, _, _ in batch)
        try:
            results = await loop.run_in_executor(self.executor, self.search, queries, k, batch[0][2])
        except Exception as exc:  # noqa: BLE001 - isolated below, or handed to its one request
            if len(batch) > 1:
                logger.warning("a batch of %d failed (%s); answering its requests one by one", len(batch),
                               type(exc).__name__)
                for item in batch:
                    await self._answer([item])
            elif not batch[0][3].done():
                batch[0][3].set_exception(exc)
            return
        self.batches += 1
        self.requests += len(batch)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for (_, k_i, _, fut), hits in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(hits[:k_i])
