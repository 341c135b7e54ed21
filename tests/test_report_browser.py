"""The report in a real headless browser: it loads offline, without errors, and shows the gallery.

Uses the system Chromium (Debian ``chromium``; CI installs it with apt-get) driven by Playwright;
no browser is ever downloaded. Outside CI a missing browser skips with the reason; with
``CI=true`` it is a failure.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from browser import LAUNCH_ARGS, chromium_and_playwright
from PIL import Image


def test_report_renders_in_chromium_with_the_gallery(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    report = cfg.workdir / "report" / "report.html"
    assert report.is_file()
    executable, sync_playwright = chromium_and_playwright()
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
            _use_the_gallery_controls(page)
            _toggle_the_buildings_layer(page)
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert errors == []
    assert remote == []
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 100 and pixels.std() > 20, "the gallery screenshot looks blank"


VISIBLE_ROWS = """[...document.querySelectorAll('#gallery-rows .gallery-query')]
  .filter(r => r.offsetParent !== null)
  .map(r => ({place: r.dataset.place, correct: r.dataset.correct, sim: +r.dataset.sim,
              rank: +r.dataset.rank, order: +r.dataset.order}))"""


def _use_the_gallery_controls(page) -> None:
    """Filter by place and by right/wrong, sort by similarity and rank: what is shown follows."""
    everything = page.evaluate(VISIBLE_ROWS)
    assert len(everything) == 8
    places = page.locator("#gallery-place option").evaluate_all("os => os.map(o => o.value)")
    assert places[0] == "" and sorted(places[1:]) == sorted({r["place"] for r in everything})
    for place in places[1:]:
        page.select_option("#gallery-place", place)
        shown = page.evaluate(VISIBLE_ROWS)
        assert shown and {r["place"] for r in shown} == {place}
        assert len(shown) == sum(r["place"] == place for r in everything)
        assert page.locator("#gallery-count").inner_text().startswith(f"{len(shown)} of 8")
    page.select_option("#gallery-place", "")
    for outcome in ("correct", "incorrect"):
        page.select_option("#gallery-outcome", outcome)
        shown = page.evaluate(VISIBLE_ROWS)
        assert len(shown) == sum(r["correct"] == outcome for r in everything)
        assert all(r["correct"] == outcome for r in shown)
    page.select_option("#gallery-outcome", "")
    page.select_option("#gallery-sort", "sim-desc")
    sims = [r["sim"] for r in page.evaluate(VISIBLE_ROWS)]
    assert len(sims) == 8 and sims == sorted(sims, reverse=True)
    page.select_option("#gallery-sort", "sim-asc")
    assert [r["sim"] for r in page.evaluate(VISIBLE_ROWS)] == sorted(sims)
    page.select_option("#gallery-sort", "rank")
    ranks = [r["rank"] for r in page.evaluate(VISIBLE_ROWS)]
    assert ranks == sorted(ranks)
    page.select_option("#gallery-sort", "seed")
    assert [r["order"] for r in page.evaluate(VISIBLE_ROWS)] == list(range(8))


def _toggle_the_buildings_layer(page) -> None:
    """The aggregate's buildings are drawn on the map; their checkbox hides and shows them."""
    dots = page.locator('#geolocation svg.worldmap g[data-layer="buildings"] circle.building-pt')
    assert dots.count() >= 1
    page.locator("#geolocation svg.worldmap").scroll_into_view_if_needed()
    assert dots.first.is_visible()
    predictions = page.locator('#geolocation svg.worldmap g[data-layer="predictions"]')
    box = page.locator('#map-layers input[data-layer="buildings"]')
    box.uncheck()
    assert not dots.first.is_visible() and predictions.is_visible()
    box.check()
    assert dots.first.is_visible()
