"""Run a stage's pure per-item function as one Ray task per item (e.g. one task per tar).

The stage keeps its local loop; only *where* the function runs changes::

    from sbe.distributed import ray_map

    for i, result in ray_map(process_tar, tars, kwargs={"cfg": cfg}, num_cpus=1):
        ...  # same handling as the local engine, results arrive as tasks finish

Each task writes its own outputs atomically (as the local engine does), so outputs are identical
to the local engine's and a killed run resumes the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sbe.errors import SbeError

T = TypeVar("T")
R = TypeVar("R")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SbeError(
            "the Ray engine needs ray: pip install 'sbe[ray]' (or 'ray[data]')"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[Any]:
    """Connect to a Ray cluster (``address`` or ``$RAY_ADDRESS``) or start a local one.

    Reuses an already initialised Ray; shuts down only a Ray this call started.

    Args:
        address: cluster address (``auto``, ``ray://host:10001``, ``host:6379``); ``None`` =
            ``$RAY_ADDRESS`` if set, else a local instance.
        num_cpus, num_gpus: resources of a *local* instance (ignored when connecting).

    Yields:
        The ``ray`` module.
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address is None:
        kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus)
    # sbe must be importable in the workers; the driver's working directory is not shipped.
    ray.init(address=address, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_gpus() -> float:
    """GPUs in the connected Ray cluster (0 when none)."""
    ray = _ray()
    return float(ray.cluster_resources().get("GPU", 0.0))


def _call(fn: Callable[..., R], item: Any, kwargs: dict[str, Any]) -> R:
    return fn(item, **kwargs)


def ray_map(
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    kwargs: dict[str, Any] | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_in_flight: int | None = None,
    address: str | None = None,
    max_retries: int = 1,
) -> Iterator[tuple[int, R]]:
    """Run ``fn(item, **kwargs)`` as one Ray task per item; yield ``(index, result)`` as they end.

    Args:
        fn: a module-level (picklable) pure function of one item, e.g. a stage's per-tar function.
        items: the work items (picklable; paths are fine on a shared filesystem).
        kwargs: extra keyword arguments passed to every call (e.g. the stage config).
        num_cpus, num_gpus: resources each task reserves.
        max_in_flight: tasks submitted at once (default: 2 x the cluster's CPUs / num_cpus), so a
            huge item list does not flood the scheduler.
        address: Ray cluster address (see :func:`ray_session`).
        max_retries: Ray retries of a task whose worker died.

    Yields:
        ``(index into items, result)`` in completion order.

    Raises:
        The first task's exception (its original type), after cancelling the rest.
    """
    kwargs = dict(kwargs or {})
    with ray_session(address) as ray:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(_call)
        fn_ref = ray.put(fn)
        kw_ref = ray.put(kwargs)
        if max_in_flight is None:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            max_in_flight = max(1, int(2 * cpus / max(num_cpus, 1e-3)))
        pending: dict[Any, int] = {}
        next_item = 0
        try:
            while next_item < len(items) or pending:
                while next_item < len(items) and len(pending) < max_in_flight:
                    ref = remote.remote(fn_ref, items[next_item], kw_ref)
                    pending[ref] = next_item
                    next_item += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        raise e.as_instanceof_cause() from None
                    yield index, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=False)
