"""The server-side batcher: concurrent callers share calls, each gets its own results,
a failing call fails only its batch, and stop() leaves no caller waiting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from persec.serve.batcher import Batcher


def test_concurrent_callers_share_calls_and_get_their_own_results():
    calls = []

    def work(items):
        calls.append(len(items))
        return [x * 10 for x in items]

    async def main():
        batcher = Batcher(work, max_batch=8, max_wait_ms=50)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(12)))
        await batcher.stop()
        return results, batcher

    results, batcher = asyncio.run(main())
    assert results == [[i * 10, (i + 100) * 10] for i in range(12)]
    assert max(calls) <= 8 and sum(calls) == 24 and len(calls) < 24
    assert (batcher.calls, batcher.items) == (len(calls), 24)


def test_a_failing_or_wrong_call_fails_its_batch_and_the_worker_goes_on():
    def work(items):
        if "boom" in items:
            raise ValueError("boom")
        if "short" in items:
            return []
        return [s.upper() for s in items]

    async def main():
        batcher = Batcher(work, max_batch=1, max_wait_ms=0)
        await batcher.start()
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit(["boom"])
        with pytest.raises(RuntimeError, match="0 results for 1 items"):
            await batcher.submit(["short"])
        ok = await batcher.submit(["fine"])
        await batcher.stop()
        return ok

    assert asyncio.run(main()) == ["FINE"]


def test_stop_fails_waiting_and_running_items_and_start_works_again():
    release = threading.Event()

    def slow(items):
        release.wait(5)
        return items

    async def main():
        batcher = Batcher(slow, max_batch=1, max_wait_ms=0)
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit(["a"]))
        waiting = asyncio.ensure_future(batcher.submit(["b"]))
        await asyncio.sleep(0.1)
        await batcher.stop()
        release.set()
        outcomes = await asyncio.gather(running, waiting, return_exceptions=True)
        await batcher.start()  # a second lifespan
        again = await batcher.submit(["c"])
        await batcher.stop()
        return outcomes, again

    outcomes, again = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) and "shutting down" in str(o) for o in outcomes)
    assert again == ["c"]
    with pytest.raises(ValueError):
        Batcher(lambda x: x, max_batch=0)
