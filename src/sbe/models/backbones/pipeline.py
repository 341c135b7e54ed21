"""The decode-and-embed engine: decode in workers a bounded window ahead of the model.

Every path that turns encoded images into vectors runs on this module:

- :func:`run_ahead`, the core: jobs run on an executor (threads or spawned processes) at most a
  fixed number ahead of the consumer, results come back in submission order, and jobs not yet
  started are cancelled when the consumer stops.
- :func:`embed_stream` (the backbone stage): batches of input positions decoded by
  :func:`~sbe.data.preprocess.decode_batch`, with its throughput plans (decoder threads, lanes,
  decoder processes for a GPU).
- :func:`sbe.inference.pipeline.embed_chunks` (``sbe embed``, local and Ray) and
  :class:`sbe.models.published.embedder.Embedder` (the Python API, search, geo predict): images
  decoded one by one through ``run_ahead`` with :meth:`Embedder.decode_or_reason`, batched and
  embedded by ``Embedder.embed_uint8``.

All of them decode one image with :func:`~sbe.data.preprocess.decode_image`.

``embed_stream`` in detail:

Each image is decoded once, straight to the size the model needs (JPEG draft mode via
:func:`~sbe.data.images.decode_rgb` with ``min_side = preprocess.decode_side``), resized and
cropped by :meth:`Preprocess.apply`, and written into a preallocated uint8 batch. A bounded number
of batches (``workers + 1``) is prepared ahead of the one the model is running on, so decoding hides
behind compute and memory stays bounded. Pillow and ONNX Runtime/torch release the GIL, so plain
threads overlap. Bad images never stop the stream: they come back as :class:`Failure` records.

With ``lanes > 1`` each of ``lanes`` threads decodes *and* embeds whole batches, so several model
calls run at once. That is the better plan for a single-threaded CPU runtime (one ONNX Runtime
call per core): a decoder thread that preempts one thread of a multi-threaded call stalls the
call's other threads at the next barrier, while independent calls just take turns.

With ``processes > 0`` a pool of spawned worker processes decodes instead of threads: a GPU needs
more decoded images per second than threads sharing one interpreter deliver.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np

from sbe.data.preprocess import Failure, decode_batch
from sbe.data.tarstream import ImageReadError  # noqa: F401  (re-exported)
from sbe.models.backbones.base import Backbone


@dataclass
class EmbeddedBatch:
    """The result for one consecutive slice ``[start, stop)`` of the input.

    Attributes:
        start, stop: the slice of input positions this batch covers.
        indices: int64 (k,) input positions that were embedded, increasing.
        embeddings: float32 (k, dim), row i belongs to ``indices[i]``.
        failures: the images of the slice that were not embedded.
    """

    start: int
    stop: int
    indices: np.ndarray
    embeddings: np.ndarray
    failures: list[Failure] = field(default_factory=list)


R = TypeVar("R")

#: one job for :func:`run_ahead`: a picklable function (for process pools) and its arguments
Job = tuple[Callable[..., Any], tuple[Any, ...]]


def run_ahead(executor: Executor, jobs: Iterable[Job], ahead: int) -> Generator[Any, None, None]:
    """Run ``jobs`` on ``executor`` at most ``ahead + 1`` at a time; yield results in order.

    ``jobs`` is consumed lazily (one new job is taken as each result is handed out), so a long
    or unbounded job list costs memory only for the window. When the consumer stops early (or a
    job raises), jobs not yet started are cancelled; the executor itself is the caller's.

    Args:
        executor: where jobs run (a thread pool, or a process pool for picklable jobs).
        jobs: ``(function, args)`` pairs.
        ahead: jobs submitted beyond the one whose result is awaited (>= 0).

    Yields:
        ``function(*args)`` of each job, in the order of ``jobs``.
    """
    it = iter(jobs)
    pending: deque[Future[Any]] = deque()

    def submit() -> None:
        job = next(it, None)
        if job is not None:
            pending.append(executor.submit(job[0], *job[1]))

    try:
        for _ in range(max(0, ahead) + 1):
            submit()
        while pending:
            result = pending.popleft().result()
            submit()
            yield result
    finally:
        for fut in pending:
            fut.cancel()


_PROCESS_POOLS: dict[int, ProcessPoolExecutor] = {}


def decode_process_pool(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` decoder processes, started once and reused by every stream.

    Spawned, not forked: the parent may hold CUDA state and threads that a fork would copy.
    """
    pool = _PROCESS_POOLS.get(processes)
    if pool is None:
        for old in _PROCESS_POOLS.values():
            old.shutdown(wait=False, cancel_futures=True)
        _PROCESS_POOLS.clear()
        pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        _PROCESS_POOLS[processes] = pool
    return pool


def embed_stream(
    backbone: Backbone,
    n: int,
    read: Callable[[int], bytes],
    *,
    batch_size: int,
    workers: int = 2,
    lanes: int = 1,
    processes: int = 0,
) -> Iterator[EmbeddedBatch]:
    """Embed images ``0 .. n-1`` in order, ``batch_size`` at a time.

    Args:
        backbone: the model (its ``preprocess`` says how to decode).
        n: number of images.
        read: ``read(i)`` returns the encoded bytes of image ``i``; it is called from worker
            threads, so it must be thread-safe (``os.pread`` on a shared descriptor is). It may
            raise ``OSError`` (e.g. :class:`ImageReadError`) for an unreadable image.
        batch_size: images per model call.
        workers: decoding threads; ``workers + 1`` batches are prepared ahead (``lanes == 1``).
        lanes: concurrent model calls; above 1, ``lanes`` threads each decode and embed whole
            batches (``workers`` is then unused), ``lanes + 1`` batches are in flight, and the
            batches are evened out (at most ``batch_size``) so that the lanes finish together.
        processes: above 0, decode in that many worker processes instead of threads (for a GPU,
            which needs more decoded images per second than threads sharing one interpreter
            deliver); ``read`` must then be picklable. ``processes + 1`` batches are in flight.

    Yields:
        One :class:`EmbeddedBatch` per slice, in input order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pool: Executor
    if processes > 0:  # decode in processes, embed here
        pool, ahead, lanes = decode_process_pool(processes), processes, 1
    elif lanes > 1:  # each lane decodes and embeds
        pool, ahead = ThreadPoolExecutor(lanes, thread_name_prefix="sbe-lane"), lanes
        if n > 0:
            # equal batches, a multiple of `lanes` of them: no lane is left alone with the tail
            count = lanes * -(-n // (lanes * batch_size))
            batch_size = -(-n // count)
    else:  # decode in threads, embed here
        workers = max(1, workers)
        pool, ahead = ThreadPoolExecutor(workers, thread_name_prefix="sbe-decode"), workers

    def prepare_and_embed(s: int, e: int) -> EmbeddedBatch:
        return _embed(backbone, s, e, *decode_batch(backbone.preprocess, read, s, e))

    job = prepare_and_embed if lanes > 1 else partial(decode_batch, backbone.preprocess, read)
    slices = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    try:
        with closing(run_ahead(pool, ((job, sl) for sl in slices), ahead)) as results:
            for (s, e), done in zip(slices, results, strict=True):
                yield done if lanes > 1 else _embed(backbone, s, e, *done)
    finally:
        # the process pool outlives the stream (run_ahead cancelled this stream's batches)
        if processes == 0:
            pool.shutdown(wait=True, cancel_futures=True)


def _embed(
    backbone: Backbone,
    start: int,
    stop: int,
    batch: np.ndarray,
    ok: list[int],
    failures: list[Failure],
) -> EmbeddedBatch:
    """Run the model on a prepared batch; rows with NaN/inf embeddings become failures."""
    if ok:
        emb = np.asarray(backbone.embed(batch), dtype=np.float32)
        finite = np.asarray(np.isfinite(emb).all(axis=1))  # (B,) bool
        if not finite.all():
            failures = failures + [
                Failure(ok[j], "non_finite_embedding", "the model returned NaN or inf")
                for j in np.flatnonzero(~finite)
            ]
            ok = [i for i, f in zip(ok, finite, strict=True) if f]
            emb = emb[finite]
    else:
        emb = np.empty((0, backbone.dim), dtype=np.float32)
    failures.sort(key=lambda f: f.index)
    return EmbeddedBatch(start, stop, np.asarray(ok, dtype=np.int64), emb, failures)
