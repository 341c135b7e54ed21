"""The search page in a real headless browser: upload a photo, see results, zoom the map and click
a building, all against a real server on 127.0.0.1, with no console error and no request leaving
the server (no CDN, no online tiles).

Uses the system Chromium (Debian ``chromium``) driven by Playwright; no browser is downloaded.
Outside CI a missing browser skips with the reason; with ``CI=true`` it is a failure.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from browser import LAUNCH_ARGS, chromium_and_playwright
from PIL import Image

from sbe.index import SearchIndex
from sbe.service.process import ServerProcess


def test_search_page_uploads_a_photo_and_clicks_the_map(tiny_pipeline, tmp_path: Path) -> None:
    executable, sync_playwright = chromium_and_playwright()
    cfg, _ = tiny_pipeline
    work = Path(cfg.workdir)
    index = SearchIndex.load(work / "index")
    ids = index.table.column("OSMID").to_pylist()
    photos = pq.read_table(work / "packaged_images.parquet", columns=["OSMID", "image_bytes"])
    query_id = ids[0]
    row = int(np.flatnonzero(photos.column("OSMID").to_numpy() == query_id)[0])
    photo = photos.column("image_bytes")[row].as_py()

    errors: list[str] = []
    outside: list[str] = []
    with (
        ServerProcess(work / "index", work / "model", start_timeout=240) as server,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on(
                "request",
                lambda r: (
                    outside.append(r.url)
                    if not r.url.startswith((server.url, "data:", "blob:", "about:"))
                    else None
                ),
            )
            page.goto(server.url + "/", wait_until="load")
            assert page.evaluate("window.sbeMap.ready") == len(ids)

            # upload a photo of a building: it comes first, with a thumbnail that loads
            page.set_input_files(
                "#file", files=[{"name": "query.jpg", "mimeType": "image/jpeg", "buffer": photo}]
            )
            page.wait_for_selector("#results li.hit")
            hits = page.locator("#results li.hit")
            assert hits.count() == min(8, len(ids))
            assert hits.first.get_attribute("data-id") == str(query_id)
            page.wait_for_function(
                "[...document.querySelectorAll('#results img.thumb')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            assert "results in" in page.locator("#status").inner_text()

            # zoom in on another building, then click its point: its photos and neighbours
            target = ids[3]
            where = page.evaluate(f"window.sbeMap.locate('{target}')")
            page.mouse.move(where["x"], where["y"])
            page.mouse.wheel(0, -300)
            page.wait_for_function("window.sbeMap.view().scale > 1")
            where = page.evaluate(f"window.sbeMap.locate('{target}')")
            page.mouse.click(where["x"], where["y"])
            page.wait_for_selector(f"#building h3:has-text('{target}')")
            page.wait_for_selector("#building .near li.hit")
            assert page.locator("#building .near li.hit").count() == min(5, len(ids) - 1)
            page.wait_for_function(
                "document.querySelectorAll('#building .photos img').length > 0 && "
                "[...document.querySelectorAll('#building .photos img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            # a neighbour's link opens that building
            nxt = page.locator("#building .near a.pick").first
            nxt_id = nxt.get_attribute("data-id")
            nxt.click()
            page.wait_for_selector(f"#building h3:has-text('{nxt_id}')")
            png = page.locator("#map").screenshot()
            page.screenshot(path=str(tmp_path / "service.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert outside == []
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 100 and pixels.std() > 10, "the map looks blank"
