"""Crash consistency, counted: every stage stopped after each of its file commits, then rerun.

Runs the fault-injection suites (``tests/test_crash_*.py``, see ``tests/faults.py``) and prints,
per stage, how many commit points a clean run has, how many crash points were tried with the same
and with changed settings, and that every one recovered to the clean output (the tests assert it;
a failure fails this script).

    python benchmarks/crash_consistency.py [-k STAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="pytest -k expression (e.g. a stage name)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "crashes.jsonl"
        env = {**os.environ, "SBE_CRASH_REPORT": str(report)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += sorted(str(p) for p in (ROOT / "tests").glob("test_crash_*.py"))
        if args.k:
            cmd += ["-k", args.k]
        result = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
        lines = report.read_text().splitlines() if report.is_file() else []
    per_stage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in lines:
        row = json.loads(line)
        s = per_stage[row["stage"]]
        s["matrices"] += 1
        s["commit_points"] = max(s["commit_points"], row["commit_points"])
        s["same"] += row["crash_points"].get("same", 0)
        s["changed"] += row["crash_points"].get("changed", 0)
    print(f"{'stage':<10} {'matrices':>8} {'commits':>8} {'same':>6} {'changed':>8} {'runs':>6}")
    total = 0
    for stage, s in sorted(per_stage.items()):
        runs = s["same"] + s["changed"]
        total += runs
        print(
            f"{stage:<10} {s['matrices']:>8} {s['commit_points']:>8} {s['same']:>6} "
            f"{s['changed']:>8} {runs:>6}"
        )
    status = "all recovered to the clean output" if result.returncode == 0 else "FAILURES"
    print(f"{len(per_stage)} stages, {total} crash-and-rerun cases: {status}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
