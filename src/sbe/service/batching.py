"""Micro-batching: requests that arrive together share one model call.

Each request hands its preprocessed images to :meth:`MicroBatcher.submit` and awaits its rows of
the result. A single collector task takes the first waiting item, then whatever else arrives
within ``max_wait_s`` (up to ``max_batch`` images), and runs the model once on all of them in a
dedicated worker thread, so the event loop keeps accepting requests while the model runs. One
model call at a time: the backbone already uses every core, so running two batches side by side
would only make both slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BatchStats:
    """Running counters of the batcher (for ``/stats``).

    Attributes:
        batches: model calls made.
        images: images embedded.
        largest: largest batch, in images.
        model_seconds: time spent inside the model calls.
    """

    batches: int = 0
    images: int = 0
    largest: int = 0
    model_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "images": self.images,
            "largest_batch": self.largest,
            "mean_batch": round(self.images / self.batches, 3) if self.batches else 0.0,
            "model_seconds": round(self.model_seconds, 3),
        }


@dataclass
class _Job:
    images: np.ndarray  # uint8 (n, H, W, 3)
    future: asyncio.Future[np.ndarray] = field(repr=False)


class MicroBatcher:
    """Group concurrent embedding requests into one call of ``model``.

    Args:
        model: preprocessed uint8 (B, H, W, 3) -> float32 (B, D); called from one worker thread.
        max_batch: most images per model call (a request larger than this runs alone).
        max_wait_s: how long the first request of a batch waits for company, in seconds.
    """

    def __init__(
        self,
        model: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        max_wait_s: float = 0.002,
    ) -> None:
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sbe-model")

    async def start(self) -> None:
        """Start the collector task on the running loop (idempotent)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="sbe-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still queued fail with ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pool.shutdown(wait=True)

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Embed ``images`` (uint8 (n, H, W, 3)) in the next batch.

        Returns:
            float32 (n, D), the rows of this request only.
        """
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if len(images) == 0:
            raise ValueError("no images to embed")
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(images, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            jobs = [carry if carry is not None else await self._queue.get()]
            carry = None
            size = len(jobs[0].images)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                # Take what is already queued at once; wait only while the batch is still small.
                try:
                    if self._queue.empty():
                        timeout = deadline - loop.time()
                        if timeout <= 0:
                            break
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    else:
                        job = self._queue.get_nowait()
                except TimeoutError:
                    break
                if size + len(job.images) > self.max_batch:
                    carry = job  # it would overflow this batch: it opens the next one
                    break
                jobs.append(job)
                size += len(job.images)
            live = [j for j in jobs if not j.future.cancelled()]
            if not live:
                continue
            batch = np.concatenate([j.images for j in live]) if len(live) > 1 else live[0].images
            t0 = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._pool, self.model, batch)
            except Exception as e:  # the model failed: every request of the batch learns why
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.stats.batches += 1
            self.stats.images += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            self.stats.model_seconds += time.perf_counter() - t0
            start = 0
            for j in live:
                n = len(j.images)
                if not j.future.done():
                    j.future.set_result(out[start : start + n])
                start += n
