"""Micro-batching: concurrent requests share forward passes and each gets its own rows back."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from intent_router.batching import MicroBatcher


def slow_encode(texts: list[str]) -> np.ndarray:
    time.sleep(0.02)  # a forward pass takes a while; requests arriving meanwhile queue up
    return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=float)


def run(coroutine):
    return asyncio.run(coroutine)


def test_requests_that_arrive_during_a_pass_share_the_next_one():
    passes: list[int] = []

    async def scenario():
        batcher = MicroBatcher(slow_encode, ThreadPoolExecutor(1), max_batch=96, on_pass=passes.append)
        texts = [["x" * (i + 1)] for i in range(20)]
        results = await asyncio.gather(*(batcher.submit(t) for t in texts))
        await batcher.close()
        return texts, results

    texts, results = run(scenario())
    assert [r[0, 0] for r in results] == [len(t[0]) for t in texts]  # each got its own row
    assert sum(passes) == 20 and len(passes) < 20


def test_a_batch_never_exceeds_max_batch():
    passes: list[int] = []

    async def scenario():
        batcher = MicroBatcher(slow_encode, ThreadPoolExecutor(1), max_batch=8, on_pass=passes.append)
        await asyncio.gather(*(batcher.submit(["a", "b", "c"]) for _ in range(10)))
        await batcher.close()

    run(scenario())
    assert max(passes) <= 8 and sum(passes) == 30


def test_a_failing_pass_fails_its_requests_and_the_batcher_goes_on():
    calls = {"n": 0}

    def flaky(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory")
        return np.zeros((len(texts), 2))

    async def scenario():
        batcher = MicroBatcher(flaky, ThreadPoolExecutor(1))
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit(["a"])
        second = await batcher.submit(["b", "c"])
        await batcher.close()
        return second

    assert run(scenario()).shape == (2, 2)


def test_closing_a_batcher_answers_every_request_it_holds_and_any_later_one():
    async def scenario():
        executor = ThreadPoolExecutor(1)
        batcher = MicroBatcher(slow_encode, executor)
        loop = asyncio.get_running_loop()
        busy = loop.run_in_executor(executor, time.sleep, 0.3)  # another model loading in the one thread
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(batcher.submit(["x" * n])) for n in (1, 2, 3)]
        await asyncio.sleep(0.05)  # the three are queued behind the load
        await busy
        await batcher.close()  # evicted meanwhile
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        late = await asyncio.wait_for(batcher.submit(["late"]), 5)  # a request that held the evicted model
        idle = MicroBatcher(slow_encode, executor)
        await idle.close()  # never used: nothing to stop
        return answers, late, batcher.task

    answers, late, task = run(scenario())
    assert [a[0, 0] for a in answers] == [1, 2, 3] and late[0, 0] == 4
    assert task.done()  # it stopped once its queue was empty
