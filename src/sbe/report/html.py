"""HTML rendering of the report: Jinja2 templates (``sbe/report/templates``), one per section.

Python here only computes what a section shows (numbers formatted as text, charts as SVG); the
markup is in the templates, autoescaped, so any text from a stage output is escaped. Everything
is inline (CSS, SVG, ``data:`` images, two small scripts) so the file opens offline. The scripts
only filter and sort the gallery and toggle the map's layers: without them the page shows
everything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from sbe.report import gather as g
from sbe.report.cells import is_numeric
from sbe.report.svg import Bars, Mark, Series, bar_chart, line_chart
from sbe.report.worldmap import MapBuilding, error_colour, world_map_svg

# ---- text formatting (template filters) --------------------------------------------------------


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers for tables: ints with separators, floats with ``digits`` decimals, '-' for None.

    Returns plain text (the template escapes it).
    """
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
    return str(v)


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal ('-' for None)."""
    return "-" if v is None else f"{100 * float(v):.1f}%"


def counts_text(counts: dict[str, int]) -> str:
    """``"a: 1, b: 2"`` sorted by key, or ``"none"``."""
    if not counts:
        return "none"
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))


@cache
def environment() -> jinja2.Environment:
    """The template environment: package templates, autoescaping on, undefined names fail."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sbe.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt=fmt, pct=pct, counts=counts_text)
    env.tests["numeric"] = is_numeric
    return env


def render(template: str, **context: Any) -> Markup:
    """One template rendered with ``context`` (safe HTML)."""
    return Markup(environment().get_template(template).render(**context))


def na(reason: str) -> Markup:
    """The visible note that replaces a section (or part) whose input is missing."""
    module = environment().get_template("macros.html.j2").module
    # jinja2 exports a template's macros as attributes its TemplateModule type does not declare.
    return Markup(module.na(reason))  # type: ignore[attr-defined]


# ---- sections ----------------------------------------------------------------------------------


def headline_cards(
    metrics: g.RetrievalMetrics | None,
    geo: dict[str, Any] | None,
    facts: g.RunFacts | None,
) -> Markup:
    """The headline numbers above the table of contents (empty when there are none)."""
    nan = float("nan")
    cards: list[tuple[str, str]] = []
    if metrics is not None:
        p, b = metrics.projector, metrics.backbone
        for key, label in (("recall@1", "Recall@1"), ("map@r", "mAP@R")):
            cards.append(
                (
                    f"{p.get(key, nan):.3f}",
                    f"test {label}, projector (backbone {b.get(key, nan):.3f})",
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
    return render("headline.html.j2", cards=cards)


def dataset_section(
    split: g.SplitSummary | str,
    ingest: g.StageCounts | str,
    backbone: g.StageCounts | str,
    world: g.SynthWorld | str,
) -> Markup:
    split_rows: list[list[str]] = []
    leakage_rows: list[list[str]] = []
    if not isinstance(split, str):
        for name in ("train", "val", "test"):
            s = split.splits.get(name) or {}
            keys = ("images", "identities", "targets", "cells", "singleton_identities")
            split_rows.append([name] + [fmt(s.get(k)) for k in keys])
        for k, v in split.leakage.items():
            leakage_rows.append(
                [
                    k.replace("_", " vs "),
                    fmt(v.get("min_distance_m"), 1),
                    fmt(v.get("median_distance_m"), 1),
                    fmt(v.get("identities_within_group_radius")),
                    fmt(v.get("identities")),
                ]
            )
    city_rows = (
        [] if isinstance(world, str) else [[c, fmt(n)] for c, n in sorted(world.cities.items())]
    )
    return render(
        "dataset.html.j2",
        split=split,
        split_rows=split_rows,
        leakage_rows=leakage_rows,
        stages=[("ingest", ingest), ("backbone", backbone)],
        world=world,
        city_rows=city_rows,
    )


def _reward(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _training_charts(curves: g.TrainingCurves) -> tuple[str, str]:
    """The loss chart and the validation chart (SVG)."""
    series = [Series("train loss (epoch mean)", curves.epochs, curves.loss)]
    if curves.steps:
        spe = max(curves.steps[-1] / max(curves.epochs[-1], 1), 1)
        steps = Series(
            "train loss (steps)",
            [s / spe for s in curves.steps],
            curves.step_loss,
            color="#9ecae1",
            markers=False,
        )
        series.insert(0, steps)
    loss = line_chart(series, title="Training loss", x_label="epoch", y_label="loss")
    init = [curves.init] if curves.init else []
    xs = ([0] if curves.init else []) + curves.epochs
    val_map = [v.get("map@r", math.nan) for v in init + curves.val]
    val_r1 = [v.get("recall@1", math.nan) for v in init + curves.val]
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
    return loss, val


def training_section(curves: g.TrainingCurves | str) -> Markup:
    if isinstance(curves, str):
        return render("training.html.j2", curves=curves)
    loss, val = _training_charts(curves)
    band_rows = []
    for b in curves.bands:
        chosen = b.get("chosen_this_epoch")
        band_rows.append(
            [
                fmt(b.get("epoch")),
                ", ".join(str(x) for x in chosen) if isinstance(chosen, list) else str(chosen),
                ", ".join(_reward(x) for x in b.get("mean_reward") or []),
                fmt(b.get("band_negatives")),
                fmt(b.get("fallback_negatives")),
            ]
        )
    return render(
        "training.html.j2",
        curves=curves,
        loss_chart=Markup(loss),
        val_chart=Markup(val),
        band_rows=band_rows,
    )


METRIC_ROWS = (
    ("recall@1", "Recall@1"),
    ("recall@5", "Recall@5"),
    ("recall@10", "Recall@10"),
    ("recall@100", "Recall@100"),
    ("map@r", "mAP@R"),
)


def metrics_section(m: g.RetrievalMetrics | str, photos: list[g.LandmarkPhoto] | str) -> Markup:
    if isinstance(m, str):
        return render("metrics.html.j2", m=m, photos=photos)
    rows = []
    for key, label in METRIC_ROWS:
        b, p = m.backbone.get(key), m.projector.get(key)
        if b is None and p is None:
            continue
        delta = "-" if b is None or p is None else f"{p - b:+.4f}"
        rows.append([label, fmt(b, 4), fmt(p, 4), delta])
    lm = m.landmarks or {}
    landmark_rows = []
    for who in ("backbone", "projector"):
        r = lm.get(who) or {}
        p1 = f"{fmt(r.get('p@1'))} ({fmt(r.get('correct@1'))}/{fmt(lm.get('images'))})"
        landmark_rows.append([who, p1, fmt(r.get("map")), fmt(r.get("map@r"))])
    return render(
        "metrics.html.j2", m=m, photos=photos, metric_rows=rows, landmark_rows=landmark_rows
    )


def gallery_section(gal: g.Gallery | str) -> Markup:
    groups = [] if isinstance(gal, str) else sorted({q.group for q in gal.queries if q.group})
    return render("gallery.html.j2", gal=gal, groups=groups)


#: (label, part, key, format) of the rows of the geo metrics table
GEO_METRIC_ROWS: tuple[tuple[str, str, str, Any], ...] = (
    ("within 1 km", "location", "acc_1km", pct),
    ("within 25 km", "location", "acc_25km", pct),
    ("within 200 km", "location", "acc_200km", pct),
    ("within 750 km", "location", "acc_750km", pct),
    ("within 2500 km", "location", "acc_2500km", pct),
    ("median error (km)", "location", "median_km", lambda v: fmt(v, 1)),
    ("mean error (km)", "location", "mean_km", lambda v: fmt(v, 1)),
    ("climate accuracy (fine)", "climate", "fine_acc", pct),
    ("climate macro-F1 (fine)", "climate", "fine_macro_f1", fmt),
    ("climate accuracy (coarse)", "climate", "coarse_acc", pct),
    ("season mean error (days)", "season", "mean_error_days", lambda v: fmt(v, 1)),
    ("season within 30 days", "season", "within_30d", pct),
)


#: sample photos whose top-k location modes the map draws
MODE_PHOTOS = 6


def geo_section(
    geo: g.Geolocation | str,
    metrics: dict[str, Any] | str,
    curves: g.GeoCurves | str,
    background_uri: str | None,
    legend: list[tuple[str, str, str]],
    buildings: tuple[list[MapBuilding], int] | str = "no buildings given",
) -> Markup:
    """The geolocation section: the world map (test predictions and the buildings of ``sbe
    aggregate``, two layers a reader can switch), the geo metrics and the geo training curves.

    Args:
        buildings: ``(drawn, located)`` from :func:`~sbe.report.geoloc.map_buildings`, or why
            there are none (then the map has no buildings layer).
    """
    context: dict[str, Any] = {
        "geo": geo,
        "metrics": metrics,
        "curves": curves,
        "legend": legend,
        "buildings": buildings,
        "map": None,
        "mode_photos": [],
    }
    drawn = [] if isinstance(buildings, str) else buildings[0]
    points = [] if isinstance(geo, str) else geo.points
    if points or drawn:
        with_modes = [p for p in points if p.modes][:MODE_PHOTOS]
        context["map"] = Markup(
            world_map_svg(points, background_uri, buildings=drawn, mode_points=with_modes)
        )
        context["mode_photos"] = with_modes
        context["layers"] = [
            (name, text)
            for name, text, present in (
                ("predictions", "test predictions", bool(points)),
                ("modes", f"top-k modes of {len(with_modes)} sample photos", bool(with_modes)),
                ("buildings", f"buildings of sbe aggregate ({len(drawn):,} drawn)", bool(drawn)),
            )
            if present
        ]
    context["error_legend"] = [
        (error_colour(km), text)
        for km, text in ((0, "< 25 km"), (100, "25-750 km"), (1000, "> 750 km"))
    ]
    if not isinstance(geo, str):
        errs = sorted(p.error_km for p in geo.points)
        context["median_km"] = errs[len(errs) // 2] if errs else float("nan")
    if isinstance(metrics, dict) and metrics:
        preds = [
            ("geo heads", metrics["model"]),
            ("most common", metrics["baselines"]["most_common"]),
            ("nearest neighbour", metrics["baselines"]["nearest_neighbour"]),
        ]
        context["metric_headers"] = ["metric"] + [n for n, _ in preds]
        context["metric_rows"] = [
            [label] + [f((p.get(part) or {}).get(key)) for _, p in preds]
            for label, part, key, f in GEO_METRIC_ROWS
        ]
    if not isinstance(curves, str):
        marks = []
        if curves.best_epoch is not None:
            marks.append(Mark(curves.best_epoch, f"selected epoch {curves.best_epoch}", axis="x"))
        chart = line_chart(
            [
                Series("train loss", curves.epochs, curves.train_loss),
                Series("val loss", curves.epochs, curves.val_loss),
            ],
            title="Geo heads: training",
            x_label="epoch",
            y_label="loss",
            marks=marks,
        )
        context["curves_chart"] = Markup(chart)
    return render("geo.html.j2", **context)


def clusters_section(c: g.Clusters | str) -> Markup:
    if isinstance(c, str):
        return render("clusters.html.j2", c=c)
    chart = bar_chart(
        Bars([str(i) for i in range(len(c.sizes))], c.sizes),
        title=f"Cluster sizes ({c.method}, {len(c.sizes)} clusters)",
        x_label="cluster",
        y_label=f"{c.id_column} count",
    )
    return render("clusters.html.j2", c=c, chart=Markup(chart), total=sum(c.sizes) + c.noise)


def run_section(f: g.RunFacts | str) -> Markup:
    if isinstance(f, str):
        return render("run.html.j2", f=f)
    bb = f.backbone or {}
    pre = bb.get("preprocess") or {}
    ips = f.backbone_images_per_second
    pairs = [
        ("backbone", str(bb.get("name", "-"))),
        ("embedding dim", fmt(bb.get("dim"))),
        ("pooling", str(bb.get("pooling", "-"))),
        ("weights", str(bb.get("weights", bb.get("revision", "-")))),
        (
            "preprocess",
            f"resize {pre.get('resize', '-')} ({pre.get('resize_mode', '-')}), "
            f"crop {pre.get('crop', '-')}, mean {pre.get('mean', '-')}, std {pre.get('std', '-')}",
        ),
        (
            "backbone stage throughput",
            (f"{ips:,.1f} images/s" if ips else "-")
            + f" ({f.backbone_runtime or '-'} on {f.backbone_device or '-'})",
        ),
        ("sbe version", ", ".join(f.sbe_versions) or "-"),
    ]
    total = sum(s.seconds for s in f.stages if s.seconds is not None)
    return render("run.html.j2", f=f, pairs=pairs, total=float(total))


# ---- page --------------------------------------------------------------------------------------


def page(
    title: str,
    subtitle: str,
    sections: Sequence[tuple[str, str, str]],
    *,
    generated: str,
    version: str,
    headline: str = "",
    thumb_px: int = 112,
) -> str:
    """The whole document.

    Args:
        title, subtitle: plain text (escaped here).
        sections: ``(id, heading, inner HTML)`` in order; the table of contents links them.
        generated: when the page was made (plain text). version: the sbe version.
        headline: HTML of :func:`headline_cards`. thumb_px: thumbnail side (CSS pixels).
    """
    return render(
        "page.html.j2",
        title=title,
        subtitle=subtitle,
        generated=generated,
        version=version,
        headline=Markup(headline),
        sections=[{"id": s, "heading": h, "html": Markup(inner)} for s, h, inner in sections],
        thumb_px=int(thumb_px),
    )
