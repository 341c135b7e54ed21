"""Headless Debian chromium for the browser tests (Playwright drives the system browser).

Outside CI a missing browser or Playwright skips the test with the reason; with ``CI=true`` it
fails, so CI never passes without having run them.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing(reason: str) -> None:
    """Skip (or, in CI, fail) a browser test that cannot run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but the browser test cannot run: {reason}")
    pytest.skip(reason)


def chromium_and_playwright() -> tuple[str, Any]:
    """The chromium executable and ``playwright.sync_api.sync_playwright``."""
    executable = None
    for c in CHROMIUM_CANDIDATES:
        path = c if os.path.isabs(c) else shutil.which(c)
        if path and os.access(path, os.X_OK):
            executable = path
            break
    if executable is None:
        missing("no Chromium found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed")
    assert executable is not None
    return executable, sync_playwright
