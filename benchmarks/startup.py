"""Start-up cost of the command line: wall time from process start to first useful work.

Rows (each the best of ``--repeats`` fresh processes, all rows interleaved so background load hits
them alike; the machine's load average is printed):
  import numpy     ``python -c "import numpy"``: the floor any numpy program pays.
  sbe --help       ``python -m sbe.cli --help``: parse and print the generated CLI.
  search --image   what ``sbe search --image`` does before the first query is embedded: import
                   the CLI command and the search path (faiss, the published-model loader, the
                   backbone runtime) and load the offline backbone's ONNX session from the warm
                   cache.
  embed            the same for ``sbe embed``: the stage module, the inference engine and the
                   backbone session.

The two model rows stop at a ready ONNX Runtime session (no published model or index is needed
to measure them); the projector head, a few kB of safetensors, loads in milliseconds on top.

Target: ``sbe --help`` / ``import numpy`` < 3.

Usage:
    .venv/bin/python benchmarks/startup.py [--repeats 5] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TARGET = 3.0

SEARCH = (
    "import sbe.cli.gen; from sbe.stages import search; import sbe.index.search; "
    "from sbe.models.published import load_embedder; "
    "from sbe.models.backbones import load_backbone; "
    "load_backbone('efficientnet-lite0', device='cpu')"
)
EMBED = (
    "import sbe.cli.gen; from sbe.stages import embed; "
    "from sbe.models.backbones import load_backbone; "
    "load_backbone('efficientnet-lite0', device='cpu')"
)

ROWS: dict[str, list[str]] = {
    "import numpy": ["-c", "import numpy"],
    "sbe --help": ["-m", "sbe.cli", "--help"],
    "search --image (to model ready)": ["-c", SEARCH],
    "embed (to model ready)": ["-c", EMBED],
}


def timed(args: list[str], src: str | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": src} if src else None
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def heaviest_imports(args: list[str], top: int = 8) -> list[tuple[float, str]]:
    """The ``top`` slowest imports (cumulative seconds) of one run, from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, check=True
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # top-level imports only (indent = nesting)
            rows.append((int(cum) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--importtime", action="store_true", help="also list the heaviest imports")
    ap.add_argument(
        "--compare-src",
        default=None,
        help="another checkout's src/ (e.g. before a change): its rows are timed alongside",
    )
    args = ap.parse_args()
    rows = {name: (a, None) for name, a in ROWS.items()}
    if args.compare_src:
        for name in ("sbe --help", "search --image (to model ready)"):
            rows[f"{name} [compare]"] = (ROWS[name], args.compare_src)
    for a, src in rows.values():  # warm the page cache and the backbone caches
        timed(a, src)
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    best = {name: float("inf") for name in rows}
    for _ in range(args.repeats):
        for name, (a, src) in rows.items():
            best[name] = min(best[name], timed(a, src))
    base = best["import numpy"]
    print(f"{'command':44s} {'seconds':>8s} {'x numpy':>8s}")
    for name, s in best.items():
        print(f"{name:44s} {s:8.3f} {s / base:8.2f}")
    ratio = best["sbe --help"] / base
    print(f"sbe --help / import numpy: {ratio:.2f} (target < {TARGET}): {ratio < TARGET}")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.importtime:
        for name in ("sbe --help", "search --image (to model ready)"):
            print(f"\nheaviest top-level imports of {name}:")
            for s, mod in heaviest_imports(ROWS[name]):
                print(f"  {s:6.3f} s  {mod}")


if __name__ == "__main__":
    main()
