"""Micro-batching: concurrent requests to one model share one forward pass.

Many chatbots each sending one utterance would otherwise cost one transformer pass each. Batching is
continuous: a pass takes every request that queued while the previous pass ran (up to ``max_batch``
texts), so a lone request waits for nothing and a crowd shares passes. ``max_wait_ms`` > 0 also holds
a pass back that long for more to join. The pass runs in a worker thread, never in the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

_WAKE: tuple = ((), None)  # put in the queue by ``close``: no request, it only wakes the waiting pass


class MicroBatcher:
    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        executor: Executor,
        max_batch: int = 96,
        max_wait_ms: float = 0.0,
        on_pass: Callable[[int], None] | None = None,
    ):
        self.encode = encode
        self.on_pass = on_pass  # told the size of each forward pass, for metrics
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.closing = False

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``, computed together with whatever else is waiting."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def close(self) -> None:
        """Stop once every request submitted so far has its answer (a model evicted or deleted while
        requests wait for it still answers them); a request submitted later starts it again."""
        self.closing = True
        if self.task and not self.task.done():
            self.queue.put_nowait(_WAKE)  # a pass waiting for requests looks at ``closing``

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.closing and self.queue.empty():
                return
            first = await self.queue.get()
            if first is _WAKE:
                continue
            waiting = [first]
            size = len(waiting[0][0])
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    if remaining > 0:
                        item = await asyncio.wait_for(self.queue.get(), remaining)
                    else:
                        item = self.queue.get_nowait()
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if item is _WAKE:
                    continue
                if size + len(item[0]) > self.max_batch:
                    self.queue.put_nowait(item)  # too big to join: it starts a later batch
                    break
                waiting.append(item)
                size += len(item[0])
            texts = [text for request, _ in waiting for text in request]
            try:
                vectors = await loop.run_in_executor(self.executor, self.encode, texts)
            except Exception as error:  # every waiting request learns why
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                continue
            if self.on_pass:
                self.on_pass(len(texts))
            start = 0
            for request, future in waiting:
                if not future.done():
                    future.set_result(vectors[start : start + len(request)])
                start += len(request)
