"""``python -m sbe.service --index DIR [--model DIR] [--host H] [--port P] [--workers N]``.

The same as ``sbe serve``; used by the tests and the benchmark to start a real server process.
"""

from __future__ import annotations

import argparse
import sys

from sbe.errors import SbeError
from sbe.service.command import serve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sbe.service", description=__doc__)
    ap.add_argument("--index", required=True, help="index directory (sbe index build)")
    ap.add_argument("--model", default=None, help="published model folder (sbe publish)")
    ap.add_argument("--photos", default=None, help="parquet of photos for thumbnails")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args(argv)
    try:
        serve(
            a.index,
            a.model,
            a.host,
            a.port,
            a.workers,
            photos=a.photos,
            log_level=a.log_level,
        )
    except SbeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
