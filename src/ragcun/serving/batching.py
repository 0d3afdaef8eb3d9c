"""Micro-batching of concurrent queries: one encoder pass and one index search for every query that arrives
within a few milliseconds of another.

Why: a transformer encodes 16 queries in little more time than one on a CPU thread pool, and the exact
search is one matrix product either way, so a server that handles each request alone spends its cores on
per-call overhead. The batcher collects requests for up to ``max_wait_ms`` (or until ``max_batch`` are
waiting), runs the batch in a worker thread (the event loop keeps accepting requests) and answers each
request with its own slice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class MicroBatcher:
    """Collects ``(query, k)`` requests and runs ``search(queries, k)`` once per batch.

    ``search`` takes a list of query strings and the largest ``k`` of the batch and returns one ranked list
    per query; each request gets the first ``k`` of its own list. An exception in ``search`` fails every
    request of that batch with the same exception (the batch shares one encoder call).
    """

    def __init__(self, search: Callable[[list[str], int], list[list[Any]]], max_batch: int = 32,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.search = search
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

    async def submit(self, query: str, k: int) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((query, k, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            queries = [q for q, _, _ in batch]
            k = max(k for _, k, _ in batch)
            try:
                results = await loop.run_in_executor(None, self.search, queries, k)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.requests += len(batch)
            for (_, k_i, fut), hits in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(hits[:k_i])
