"""Request counters and latency percentiles over a bounded window (for ``/stats``)."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

#: latencies kept per route: memory stays bounded however long the server runs
WINDOW = 4096


class RequestStats:
    """Latencies (ms) of the last :data:`WINDOW` requests of each route, and status counts."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._lat: dict[str, deque[float]] = {}
        self._status: Counter[int] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def record(self, route: str, status: int, ms: float) -> None:
        """Count one finished request of ``route`` (a route template, never a raw path)."""
        with self._lock:
            self._total += 1
            self._status[status] += 1
            if route not in self._lat:
                self._lat[route] = deque(maxlen=self._window)
            self._lat[route].append(ms)

    def snapshot(self) -> dict[str, object]:
        """``{"requests", "by_status", "latency_ms": {route: {count, p50, p90, p99, max}}}``."""
        with self._lock:
            lat = {k: np.fromiter(v, dtype=np.float64) for k, v in self._lat.items()}
            status = dict(sorted(self._status.items()))
            total = self._total
        out: dict[str, dict[str, float]] = {}
        for route, x in sorted(lat.items()):
            if len(x) == 0:
                continue
            p50, p90, p99 = np.percentile(x, [50, 90, 99])
            out[route] = {
                "window": len(x),
                "p50": round(float(p50), 3),
                "p90": round(float(p90), 3),
                "p99": round(float(p99), 3),
                "max": round(float(x.max()), 3),
            }
        return {
            "requests": total,
            "by_status": {str(k): v for k, v in status.items()},
            "latency_ms": out,
        }
