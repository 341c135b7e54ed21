// sbe search page. Written for this project (no third-party code); no network beyond this server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const calibrated = document.body.dataset.calibrated === "yes";

  function setStatus(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.appendChild(c);
    return e;
  }

  async function getJSON(url, options) {
    const r = await fetch(url, options);
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
    return body;
  }

  function thumb(url) {
    if (!url) return el("span", { class: "thumb nothumb", title: "no photo" });
    return el("img", { class: "thumb", src: url, alt: "photo", loading: "lazy" });
  }

  function hitItem(hit, showSame) {
    const text = el("div", {}, [
      el("div", {}, [
        el("span", { class: "sim", text: hit.similarity.toFixed(3) }),
        document.createTextNode(" "),
        el("a", { class: "pick", "data-id": String(hit.id), text: `#${hit.id}` }),
      ]),
      el("div", {
        class: "hint",
        text: hit.lat == null ? "no location" : `${hit.lat.toFixed(4)}, ${hit.lon.toFixed(4)}`,
      }),
    ]);
    if (showSame && hit.same_building != null) {
      text.firstChild.appendChild(document.createTextNode(" "));
      text.firstChild.appendChild(
        el("span", {
          class: hit.same_building ? "same" : "other",
          text: hit.same_building ? "same building" : "not the same",
        })
      );
    }
    return el("li", { class: "hit", "data-id": String(hit.id) }, [thumb(hit.photos && hit.photos[0]), text]);
  }

  // ---- photo query ----
  async function searchFile(file) {
    if (!file) return;
    const k = Math.max(1, Math.min(+$("k").value || 8, +document.body.dataset.maxK));
    $("preview").replaceChildren(el("img", { src: URL.createObjectURL(file), alt: "your photo" }));
    $("results").replaceChildren();
    setStatus("searching...");
    const form = new FormData();
    form.append("images", file, file.name || "photo.jpg");
    form.append("k", String(k));
    try {
      const t0 = performance.now();
      const body = await getJSON("/search", { method: "POST", body: form });
      const hits = body.queries[0].hits;
      $("results").replaceChildren(...hits.map((h) => hitItem(h, calibrated)));
      setStatus(`${hits.length} results in ${(performance.now() - t0).toFixed(0)} ms`);
      map.highlight(hits.map((h) => String(h.id)));
    } catch (e) {
      setStatus(e.message, true);
    }
  }

  const drop = $("drop");
  $("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    searchFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a.pick");
    if (a) { e.preventDefault(); showBuilding(a.dataset.id); }
  });

  // ---- one building ----
  async function showBuilding(id) {
    const panel = $("building");
    panel.replaceChildren(el("p", { text: `building ${id}...` }));
    try {
      const [b, near] = await Promise.all([
        getJSON(`/buildings/${encodeURIComponent(id)}`),
        getJSON(`/search?id=${encodeURIComponent(id)}&k=5`),
      ]);
      const photos = b.photos.map((u) => el("img", { src: u, alt: `photo of ${id}` }));
      panel.replaceChildren(
        el("h3", { text: `${b.id_column} ${b.id}` }),
        el("p", {
          class: "hint",
          text: `${b.lat == null ? "no location" : b.lat.toFixed(5) + ", " + b.lon.toFixed(5)}; ` +
            `${b.image_count} image(s)` + (b.photos.length ? "" : `; ${b.photos_note || "no photos"}`),
        }),
        el("div", { class: "photos" }, photos),
        el("h4", { text: "Nearest buildings" }),
        el("ol", { class: "near" }, near.hits.map((h) => hitItem(h, false)))
      );
      map.select(String(b.id));
    } catch (e) {
      panel.replaceChildren(el("p", { class: "error", text: e.message }));
    }
  }

  // ---- map: canvas, plate carree, zoom and pan ----
  const map = (function () {
    const canvas = $("map");
    const ctx = canvas.getContext("2d");
    const bg = new Image();
    let pts = { ids: [], lat: [], lon: [] };
    let scale = 1, tx = 0, ty = 0; // screen = world * scale + t (CSS px)
    let highlighted = new Set(), selected = null;
    let ready;
    const W = () => canvas.clientWidth, H = () => canvas.clientHeight;
    const world = (lat, lon) => [((lon + 180) / 360) * W(), ((90 - lat) / 180) * H()];
    const screen = (lat, lon) => { const [x, y] = world(lat, lon); return [x * scale + tx, y * scale + ty]; };

    function clamp() {
      scale = Math.max(1, Math.min(scale, 512));
      tx = Math.min(0, Math.max(tx, W() - W() * scale));
      ty = Math.min(0, Math.max(ty, H() - H() * scale));
    }

    function draw() {
      const dpr = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(W() * dpr)) {
        canvas.width = Math.round(W() * dpr);
        canvas.height = Math.round(H() * dpr);
      }
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#dfeaf4";
      ctx.fillRect(0, 0, W(), H());
      if (bg.complete && bg.naturalWidth) ctx.drawImage(bg, tx, ty, W() * scale, H() * scale);
      const r = Math.min(6, 2.5 + Math.log2(scale));
      ctx.lineWidth = 1;
      for (let i = 0; i < pts.ids.length; i++) {
        const [x, y] = screen(pts.lat[i], pts.lon[i]);
        if (x < -8 || y < -8 || x > W() + 8 || y > H() + 8) continue;
        const id = pts.ids[i];
        const hot = highlighted.has(id) || id === selected;
        ctx.beginPath();
        ctx.arc(x, y, hot ? r + 2.5 : r, 0, 2 * Math.PI);
        ctx.fillStyle = id === selected ? "#d7191c" : hot ? "#f08c00" : "#1f4e99";
        ctx.fill();
        ctx.strokeStyle = "#fff";
        ctx.stroke();
      }
    }

    function zoomAt(factor, cx, cy) {
      const s = Math.max(1, Math.min(scale * factor, 512));
      tx = cx - ((cx - tx) * s) / scale;
      ty = cy - ((cy - ty) * s) / scale;
      scale = s;
      clamp();
      draw();
    }

    function nearest(cx, cy, within) {
      let best = -1, bestD = within * within;
      for (let i = 0; i < pts.ids.length; i++) {
        const [x, y] = screen(pts.lat[i], pts.lon[i]);
        const d = (x - cx) ** 2 + (y - cy) ** 2;
        if (d <= bestD) { bestD = d; best = i; }
      }
      return best;
    }

    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, tx, ty, moved: false };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
      tx = drag.tx + dx; ty = drag.ty + dy;
      clamp();
      draw();
    });
    canvas.addEventListener("pointerup", (e) => {
      const wasDrag = drag && drag.moved;
      drag = null;
      canvas.classList.remove("dragging");
      if (wasDrag) return;
      const rect = canvas.getBoundingClientRect();
      const i = nearest(e.clientX - rect.left, e.clientY - rect.top, 10);
      if (i >= 0) showBuilding(String(pts.ids[i]));
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.4 : 1 / 1.4, e.clientX - rect.left, e.clientY - rect.top);
    }, { passive: false });
    $("zoom-in").addEventListener("click", () => zoomAt(2, W() / 2, H() / 2));
    $("zoom-out").addEventListener("click", () => zoomAt(0.5, W() / 2, H() / 2));
    $("zoom-reset").addEventListener("click", () => { scale = 1; tx = 0; ty = 0; draw(); });
    window.addEventListener("resize", () => { clamp(); draw(); });

    ready = (async () => {
      const loaded = new Promise((ok) => { bg.onload = ok; bg.onerror = ok; });
      bg.src = "/map/background.png";
      const p = await getJSON("/points");
      pts = { ids: p.ids.map(String), lat: p.lat, lon: p.lon };
      $("map-count").textContent = p.shown < p.count
        ? `${p.shown} of ${p.count} located buildings shown (a sample)`
        : `${p.count} located buildings; scroll to zoom, drag to pan, click a point`;
      await loaded;
      draw();
      return pts.ids.length;
    })();

    return {
      ready,
      highlight(ids) { highlighted = new Set(ids); draw(); },
      select(id) { selected = id; draw(); },
      // page coordinates of a point, for tests and for linking from results
      locate(id) {
        const i = pts.ids.indexOf(String(id));
        if (i < 0) return null;
        const [x, y] = screen(pts.lat[i], pts.lon[i]);
        const rect = canvas.getBoundingClientRect();
        return { x: rect.left + x, y: rect.top + y };
      },
      ids: () => pts.ids.slice(),
      zoomAt,
      view: () => ({ scale, tx, ty }),
    };
  })();

  window.sbeMap = map;
})();
