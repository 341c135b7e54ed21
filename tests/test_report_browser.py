"""The report in a real headless browser: it loads offline, without errors, and shows the gallery.

Uses the system Chromium (Debian ``chromium``; CI installs it with apt-get) driven by Playwright;
no browser is ever downloaded. Outside CI a missing browser skips with the reason; with
``CI=true`` it is a failure.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but the browser test cannot run: {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    for c in CHROMIUM_CANDIDATES:
        path = c if os.path.isabs(c) else shutil.which(c)
        if path and os.access(path, os.X_OK):
            return path
    _missing("no Chromium found (apt-get install chromium)")
    raise AssertionError("unreachable")


def test_report_renders_in_chromium_with_the_gallery(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    report = cfg.workdir / "report" / "report.html"
    assert report.is_file()
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
        return
    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on(
                "request",
                lambda r: (
                    remote.append(r.url)
                    if not r.url.startswith(("file:", "data:", "about:"))
                    else None
                ),
            )
            page.goto(report.as_uri(), wait_until="load")
            imgs = page.locator("#gallery img")
            assert imgs.count() >= 5
            page.locator("#gallery").scroll_into_view_if_needed()
            boxes = [imgs.nth(i).bounding_box() for i in range(imgs.count())]
            assert all(b is not None and b["width"] > 10 and b["height"] > 10 for b in boxes)
            loaded = page.evaluate(
                "[...document.querySelectorAll('#gallery img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            assert loaded, "a gallery thumbnail did not decode"
            assert page.locator("#geolocation svg.worldmap").count() == 1
            png = page.locator("#gallery").screenshot()
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert errors == []
    assert remote == []
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 100 and pixels.std() > 20, "the gallery screenshot looks blank"
