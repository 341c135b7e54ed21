"""Scale-out entry points on Ray.

- :func:`ray_map`: one Ray task per item (per tar) running a stage's pure per-item function; what
  ``sbe ingest --engine ray`` and ``sbe backbone --engine ray`` use.
- :func:`ray_session`: connect to ``$RAY_ADDRESS`` / an address, or start a local Ray.
- ``sbe.distributed.embed``: ``sbe embed --engine ray`` on Ray Data (actor pool, one model each).

Ray is imported lazily, so sbe works without it.
"""

from sbe.distributed.tasks import cluster_gpus, ray_map, ray_session

__all__ = ["cluster_gpus", "ray_map", "ray_session"]
