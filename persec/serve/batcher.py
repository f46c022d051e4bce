"""Server-side batching: images from concurrent requests share model calls.

Every image of every request goes into one queue. A single worker task takes the first
waiting image, then whatever else arrives within ``max_wait_ms`` (up to ``max_batch``
images), runs the model on them in a worker thread (the event loop keeps accepting
requests meanwhile, and model calls never overlap), and hands each request its own
results. One image alone waits at most ``max_wait_ms``; under load the batches fill up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Collects items from concurrent callers into batches for ``work``.

    Args:
        work: ``items -> results`` (same length, same order), called in a worker thread
            with at most ``max_batch`` items.
        max_batch: items per call at most.
        max_wait_ms: how long the first item of a batch waits for company.

    Attributes:
        calls, items: how many calls ``work`` got and how many items they held (the
            mean batch is ``items / calls``).
    """

    def __init__(self, work: Callable[[list[T]], list[R]], max_batch: int = 32, max_wait_ms=5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(
                f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}"
            )
        self.work = work
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.calls = self.items = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: list[tuple[T, asyncio.Future]] = []

    async def start(self) -> None:
        """Start the worker task on the running event loop (again after :meth:`stop`)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persec-model")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; items waiting or being read fail with ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        pending = list(self._inflight)
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for _, future in pending:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._inflight = []
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """The results for ``items``, in order, computed with other callers' items."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures, strict=True):
            self._queue.put_nowait((item, future))
        return list(await asyncio.gather(*futures))

    async def _next_batch(self) -> list[tuple[T, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get_nowait()
                    if left <= 0
                    else await asyncio.wait_for(self._queue.get(), left)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._inflight = await self._next_batch()
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self.work, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{len(results)} results for {len(items)} items")
            except Exception as e:  # every caller of this batch learns of it; the worker goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                self._inflight = []
                continue
            self.calls += 1
            self.items += len(items)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            self._inflight = []
