"""Building identity from footprints: which building polygon does each photo look at?

A photo with a camera position and a compass heading is labelled with the *first* footprint hit by
the ray from the camera along the heading, within ``max_distance_m``. When that central ray hits
nothing (a gap between houses, a compass a few degrees off), rays turned by up to
``fov_tolerance_deg`` to either side are tried, the smallest turn winning.

Everything is vectorised (no per-photo geometry in Python):

- rays are built in lon/lat degrees: over a street's length the map from local east/north metres
  to degrees is linear (``1 / (R cos lat)`` east, ``1 / R`` north), so a straight ray stays
  straight and its parameter is metres (the bend from cos(lat) changing along 60 m is below a
  millimetre);
- one ray per photo is built in bulk (``shapely.linestrings``) and an STRtree over the footprints
  gives the (ray, footprint) pairs whose bounding boxes meet;
- every footprint's ring vertices are laid out once, when the index is built (one array, a
  start offset per footprint), so each (ray, footprint) pair expands to its edges with numpy and
  every (ray, edge) pair is intersected with 2-D cross products; the smallest ray parameter per
  photo is its first hit, and the hit edge gives the facade normal (pointing back at the camera);
- a camera inside a building first meets that building's own wall from inside: the first-hit
  footprint is checked with one vectorised point-in-polygon call (``shapely.contains_xy``).

Footprints are read from GeoParquet (WKB geometry, CRS from the ``geo`` metadata) or GeoJSON, in
WGS84 lon/lat. The id column is kept as a string (OSM ``w123``, Overture GERS ids); its integer
form (:func:`footprint_uid`) is the number itself when the id is purely numeric, else a stable
62-bit hash with bit 62 set (so the two ranges never meet). The antimeridian is not handled (a ray
crossing it finds nothing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from sbe.data.geojson import read_feature_collection
from sbe.errors import SbeError
from sbe.sphere import EARTH_RADIUS_M
from sbe.storage import SkipLog

#: latitude beyond which Web Mercator is not used (no streets with buildings there anyway)
MAX_ABS_LAT = 85.0
#: CRS spellings accepted as WGS84 lon/lat
_WGS84_CODES = {("EPSG", "4326"), ("OGC", "CRS84"), ("OGC", "CRS84H"), ("EPSG", "4979")}
_HASH_BIT = np.int64(1 << 62)
#: GeoParquet rows decoded at once
READ_BATCH_ROWS = 131_072
_POLYGONAL = {shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON}

# reasons a photo is not labelled (manifest skip keys)
NO_POSITION = "no_position"
NO_HEADING = "no_heading"
HEADING_OUT_OF_RANGE = "heading_out_of_range"
POLAR = "position_beyond_85_deg_latitude"
INSIDE = "camera_inside_building"
NO_HIT = "no_footprint_hit"
REASONS = (NO_POSITION, NO_HEADING, HEADING_OUT_OF_RANGE, POLAR, INSIDE, NO_HIT)
_LABELLED = -1  # status code of a labelled photo (reasons are indexes into REASONS)


# ---- ids -----------------------------------------------------------------------------------------


def footprint_uid(ids: np.ndarray | list[str]) -> np.ndarray:
    """int64 identity of each footprint id string (see the module docstring).

    Returns:
        int64 (N,), all >= 0.
    """
    out = np.empty(len(ids), dtype=np.int64)
    for i, s in enumerate(ids):  # once per footprint hit, not per photo
        s = str(s)
        if s.isdigit() and len(s) <= 18:
            out[i] = int(s)
        else:
            h = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
            out[i] = (h & ((1 << 62) - 1)) | (1 << 62)
    return out


# ---- projection ----------------------------------------------------------------------------------

#: degrees of latitude per metre (and of longitude per metre at the equator)
DEG_PER_M = 180.0 / (np.pi * EARTH_RADIUS_M)


# ---- reading -------------------------------------------------------------------------------------


@dataclass
class Footprints:
    """Building polygons ready for ray casting.

    Attributes:
        ids: object (N,) footprint id strings.
        geoms: shapely (N,) polygons, lon/lat degrees.
        tree: STRtree over ``geoms``.
        xy: float64 (V, 2) every ring vertex (lon, lat), footprint after footprint.
        vstart: int64 (N + 1,) footprint i's vertices are ``xy[vstart[i]:vstart[i + 1]]``.
        edge: bool (V,) ``xy[k] -> xy[k + 1]`` is an edge (False where a ring ends).
        source: where they came from (file, id column, CRS, counts) for the manifest.
        skips: footprints not used, by reason.
    """

    ids: np.ndarray
    geoms: np.ndarray
    tree: shapely.STRtree
    xy: np.ndarray
    vstart: np.ndarray
    edge: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)
    skips: SkipLog = field(default_factory=SkipLog)

    def __len__(self) -> int:
        return len(self.ids)

    def uids(self, index: np.ndarray) -> np.ndarray:
        """int64 identity (:func:`footprint_uid`) of the footprints at ``index``."""
        index = np.asarray(index, dtype=np.int64)
        u, inv = np.unique(index, return_inverse=True)
        return footprint_uid(self.ids[u])[inv.reshape(-1)]


def vertex_layout(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring vertices of every polygon, grouped by polygon: ``(xy, vstart, edge)`` as in
    :class:`Footprints`.

    Simple polygons (one part, no hole: nearly every building) take one ``get_coordinates`` call;
    the others go through their parts and rings so that no edge joins two rings.
    """
    n = len(geoms)
    simple = (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON) & (
        shapely.get_num_interior_rings(geoms) == 0
    )
    xy, owner = shapely.get_coordinates(geoms[simple], return_index=True)
    simple_idx = np.flatnonzero(simple)
    owner = simple_idx[owner]
    edge = np.zeros(len(xy), dtype=bool)
    edge[:-1] = owner[:-1] == owner[1:]
    if not simple.all():
        complex_idx = np.flatnonzero(~simple)
        parts, part_of = shapely.get_parts(geoms[complex_idx], return_index=True)
        rings, ring_of = shapely.get_rings(parts, return_index=True)
        cxy, vring = shapely.get_coordinates(rings, return_index=True)
        cowner = complex_idx[part_of[ring_of[vring]]]
        cedge = np.zeros(len(cxy), dtype=bool)
        cedge[:-1] = vring[:-1] == vring[1:]
        xy = np.concatenate([xy, cxy])
        owner = np.concatenate([owner, cowner])
        edge = np.concatenate([edge, cedge])
        order = np.argsort(owner, kind="stable")
        xy, owner, edge = xy[order], owner[order], edge[order]
    vstart = np.searchsorted(owner, np.arange(n + 1)).astype(np.int64)
    return xy, vstart, edge


def _crs_is_wgs84(crs: Any) -> bool:
    """Whether a GeoParquet/GeoJSON CRS (PROJJSON dict, string or None) means WGS84 lon/lat."""
    if crs is None:
        return True  # GeoParquet: absent = OGC:CRS84
    if isinstance(crs, str):
        s = crs.strip().upper().replace("::", ":")
        return any(s.endswith(f"{a}:{c}") for a, c in _WGS84_CODES) or s in {"WGS84", "WGS 84"}
    if isinstance(crs, dict):
        ident = crs.get("id") or {}
        if isinstance(ident, dict) and (
            (str(ident.get("authority", "")).upper(), str(ident.get("code", "")).upper())
            in _WGS84_CODES
        ):
            return True
        props = crs.get("properties")
        if isinstance(props, dict) and "name" in props:  # GeoJSON 2008 "crs" member
            return _crs_is_wgs84(props["name"])
        name = str(crs.get("name", "")).upper()
        return name in {"WGS 84", "WGS 84 (CRS84)", "WGS84"}
    return False


def _crs_text(crs: Any) -> str:
    if isinstance(crs, dict):
        ident = crs.get("id") or {}
        if isinstance(ident, dict) and ident:
            return f"{ident.get('authority')}:{ident.get('code')}"
        return str(crs.get("name") or (crs.get("properties") or {}).get("name") or crs)[:80]
    return str(crs)


def _read_geoparquet(path: Path, id_column: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ids as str objects with None for nulls, WKB-decoded geoms, crs text)``."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SbeError(f"{path}: not a readable Parquet file ({e})") from None
    meta = schema.metadata or {}
    if b"geo" not in meta:
        raise SbeError(
            f"{path}: no GeoParquet 'geo' metadata; write it with geopandas.to_parquet, "
            "QuackOSM or ogr2ogr"
        )
    geo = json.loads(meta[b"geo"])
    column = geo.get("primary_column", "geometry")
    info = (geo.get("columns") or {}).get(column, {})
    encoding = str(info.get("encoding", "WKB")).upper()
    if encoding != "WKB":
        raise SbeError(
            f"{path}: geometry column {column!r} is encoded as {encoding}; write it as WKB"
        )
    crs = info.get("crs")
    if not _crs_is_wgs84(crs):
        raise SbeError(
            f"{path}: geometry column {column!r} has CRS {_crs_text(crs)}, not WGS84; reproject "
            "to EPSG:4326 (e.g. ogr2ogr -t_srs EPSG:4326)"
        )
    if id_column not in schema.names:
        raise SbeError(
            f"{path}: no id column {id_column!r} (columns: {', '.join(schema.names)}); "
            "pass --footprint-id-column"
        )
    # decoded batch by batch: the WKB bytes of one batch at a time are held as Python objects
    ids: list[np.ndarray] = []
    geoms: list[np.ndarray] = []
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=[id_column, column]):
        ids.append(batch.column(0).cast(pa.string()).to_numpy(zero_copy_only=False))
        wkb = batch.column(1).to_numpy(zero_copy_only=False)
        geoms.append(shapely.from_wkb(wkb, on_invalid="ignore"))
    id_arr = np.concatenate(ids).astype(object) if ids else np.zeros(0, dtype=object)
    geom_arr = np.concatenate(geoms) if geoms else np.zeros(0, dtype=object)
    return id_arr, geom_arr, _crs_text(crs) if crs is not None else "OGC:CRS84"


def _read_geojson(path: Path, id_column: str) -> tuple[np.ndarray, np.ndarray, str]:
    data = read_feature_collection(path)
    crs = data.get("crs")
    if crs is not None and not _crs_is_wgs84(crs):
        raise SbeError(f"{path}: CRS {_crs_text(crs)} is not WGS84; reproject to EPSG:4326 lon/lat")
    feats = data.get("features") or []
    ids: list[Any] = []
    geoms_json: list[str | None] = []
    found = False
    for f in feats:  # reading only; the geometry is parsed in bulk below
        props = f.get("properties") or {}
        if id_column in props:
            found = True
            v = props[id_column]
        elif id_column == "id" and "id" in f:
            found = True
            v = f["id"]
        else:
            v = None
        ids.append(None if v is None else str(v))
        g = f.get("geometry")
        geoms_json.append(json.dumps(g) if g else None)
    if feats and not found:
        keys = sorted({k for f in feats[:100] for k in (f.get("properties") or {})})
        raise SbeError(
            f"{path}: no id column {id_column!r} in the features' properties "
            f"(found: {', '.join(keys) or 'none'}); pass --footprint-id-column"
        )
    geoms = shapely.from_geojson(np.array(geoms_json, dtype=object), on_invalid="ignore")
    return np.array(ids, dtype=object), geoms, _crs_text(crs) if crs else "WGS84 (GeoJSON)"


def read_footprints(path: str | Path, id_column: str = "osm_id") -> Footprints:
    """Read, check and index building footprints.

    Args:
        path: a GeoParquet (``.parquet``) or GeoJSON (``.geojson``/``.json``) file, WGS84 lon/lat.
        id_column: the column (GeoJSON: property) holding each building's id.

    Returns:
        The usable footprints, projected and indexed; the others are counted in ``skips``
        (``missing_id``, ``empty_geometry``, ``not_a_polygon``, ``coordinates_out_of_range``,
        ``invalid_polygon``) with example ids.

    Raises:
        SbeError: unreadable file, no id column, a CRS other than WGS84, or coordinates that are
            all outside lon/lat range (projected data): one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SbeError(f"{path}: footprint file not found")
    if path.suffix.lower() in {".parquet", ".geoparquet", ".pq"}:
        ids, geoms, crs = _read_geoparquet(path, id_column)
    else:
        ids, geoms, crs = _read_geojson(path, id_column)
    skips = SkipLog()
    n = len(ids)
    keep = np.ones(n, dtype=bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        mask = mask & keep
        if mask.any():
            first = int(np.flatnonzero(mask)[0])
            skips.add(reason, f"row {first} ({id_column}={ids[first]!r})", n=int(mask.sum()))
            keep[mask] = False

    drop(np.array([i is None for i in ids], dtype=bool), "missing_id")
    drop(shapely.is_missing(geoms) | shapely.is_empty(geoms), "empty_geometry")
    types = shapely.get_type_id(geoms)
    drop(~np.isin(types, [int(t) for t in _POLYGONAL]), "not_a_polygon")
    bounds = shapely.bounds(geoms)  # NaN for missing ones
    with np.errstate(invalid="ignore"):
        out_of_range = (
            (np.abs(bounds[:, [0, 2]]) > 180).any(axis=1)
            | (np.abs(bounds[:, [1, 3]]) > 90).any(axis=1)
            | ~np.isfinite(bounds).all(axis=1)
        )
    checked = keep.copy()
    if checked.any() and out_of_range[checked].all():
        first = int(np.flatnonzero(checked)[0])
        raise SbeError(
            f"{path}: coordinates are not WGS84 lon/lat (e.g. {id_column}={ids[first]!r} spans "
            f"x {bounds[first, 0]:.6g}..{bounds[first, 2]:.6g}, y {bounds[first, 1]:.6g}.."
            f"{bounds[first, 3]:.6g}); reproject to EPSG:4326"
        )
    drop(out_of_range, "coordinates_out_of_range")
    drop(~shapely.is_valid(geoms), "invalid_polygon")
    ids, geoms = ids[keep], geoms[keep]
    tree = shapely.STRtree(geoms)
    xy, vstart, edge = vertex_layout(geoms)
    source = {
        "path": str(path),
        "id_column": id_column,
        "crs": crs,
        "footprints": n,
        "usable": int(keep.sum()),
    }
    return Footprints(ids, geoms, tree, xy, vstart, edge, source, skips)


# ---- ray casting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaySettings:
    """How rays are cast.

    Attributes:
        max_distance_m: longest ray, metres.
        fov_tolerance_deg: when the central ray misses, rays turned by up to this many degrees to
            either side are tried (0 = the central ray only).
        fov_step_deg: spacing of those extra rays.
        chunk: photos per vectorised batch (bounds memory).
    """

    max_distance_m: float = 60.0
    fov_tolerance_deg: float = 10.0
    fov_step_deg: float = 2.0
    chunk: int = 32_768


@dataclass
class Labels:
    """One label per photo (arrays of length N, in the order of the input).

    Attributes:
        status: int8, -1 = labelled, else an index into :data:`REASONS`.
        footprint: int64 index into the footprints (-1 when not labelled).
        hit_lat, hit_lon: float64 degrees of the first hit (the facade target), NaN if none.
        distance_m: float64 camera-to-hit distance, metres.
        normal_e, normal_n: float64 unit facade normal (east, north), toward the camera.
        incidence_deg: float64 angle between the reversed ray and the facade normal (0 = head-on).
        offset_deg: float64 turn of the ray that hit (0 = the central ray).
    """

    status: np.ndarray
    footprint: np.ndarray
    hit_lat: np.ndarray
    hit_lon: np.ndarray
    distance_m: np.ndarray
    normal_e: np.ndarray
    normal_n: np.ndarray
    incidence_deg: np.ndarray
    offset_deg: np.ndarray

    @property
    def labelled(self) -> np.ndarray:
        return self.status == _LABELLED

    def reason_counts(self) -> dict[str, int]:
        c = np.bincount(self.status[self.status >= 0].astype(np.int64), minlength=len(REASONS))
        return {r: int(c[i]) for i, r in enumerate(REASONS) if c[i]}


def _first_hits(
    fp: Footprints,
    px: np.ndarray,
    py: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    length: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First footprint hit by each ray ``p + t d``, ``0 < t <= length`` (lon/lat, t in metres).

    Args:
        fp: the footprints.
        px, py: (R,) ray origins, lon/lat degrees.
        dx, dy: (R,) degrees of lon/lat per metre along each ray.
        length: ray length, metres.

    Returns:
        ``(footprint (R,) int64 or -1, t (R,) metres, edge_x (R,), edge_y (R,))``: the hit edge
        in degrees (its direction gives the facade normal).
    """
    r = len(px)
    hit_fp = np.full(r, -1, dtype=np.int64)
    best_t = np.full(r, np.inf)
    ex = np.zeros(r)
    ey = np.zeros(r)
    if r == 0:
        return hit_fp, best_t, ex, ey
    coords = np.empty((r, 2, 2))
    coords[:, 0, 0], coords[:, 0, 1] = px, py
    coords[:, 1, 0], coords[:, 1, 1] = px + dx * length, py + dy * length
    ray_i, fp_j = fp.tree.query(shapely.linestrings(coords))  # bounding boxes; exact test below
    if len(ray_i) == 0:
        return hit_fp, best_t, ex, ey
    # every (ray, footprint) pair -> its (ray, edge start vertex) pairs
    first = fp.vstart[fp_j]
    n_v = fp.vstart[fp_j + 1] - first - 1  # a ring of k vertices has k - 1 edges
    n_v = np.maximum(n_v, 0)
    pair_ray = np.repeat(ray_i, n_v)
    k = np.repeat(first - np.cumsum(n_v) + n_v, n_v) + np.arange(int(n_v.sum()))
    real = fp.edge[k]
    pair_ray, k = pair_ray[real], k[real]
    a = fp.xy[k]
    e = fp.xy[k + 1] - a
    ap_x = a[:, 0] - px[pair_ray]
    ap_y = a[:, 1] - py[pair_ray]
    rdx, rdy = dx[pair_ray], dy[pair_ray]
    denom = rdx * e[:, 1] - rdy * e[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ap_x * e[:, 1] - ap_y * e[:, 0]) / denom
        s = (ap_x * rdy - ap_y * rdx) / denom
    ok = (s >= 0) & (s <= 1) & (t > 0) & (t <= length)  # NaN (parallel) compares False
    if not ok.any():
        return hit_fp, best_t, ex, ey
    hit = np.flatnonzero(ok)
    order = hit[np.lexsort((t[hit], pair_ray[hit]))]
    rays_hit, first_of = np.unique(pair_ray[order], return_index=True)
    win = order[first_of]
    owner = np.searchsorted(fp.vstart, k[win], side="right") - 1
    hit_fp[rays_hit] = owner
    best_t[rays_hit] = t[win]
    ex[rays_hit], ey[rays_hit] = e[win, 0], e[win, 1]
    return hit_fp, best_t, ex, ey


def _rotate(dx: np.ndarray, dy: np.ndarray, deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn unit directions (east, north) clockwise by ``deg`` (a compass turn)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return dx * c + dy * s, -dx * s + dy * c


def cast_rays(
    footprints: Footprints,
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    heading_deg: np.ndarray,
    settings: RaySettings | None = None,
) -> Labels:
    """Label photos with the first footprint their camera's heading ray hits.

    Args:
        footprints: from :func:`read_footprints`.
        lat_deg, lon_deg: (N,) camera position, degrees; NaN = unknown.
        heading_deg: (N,) compass heading (clockwise from north), degrees in [0, 360); NaN =
            unknown.
        settings: ray length, field-of-view tolerance, batch size.

    Returns:
        :class:`Labels`, one per photo.
    """
    cfg = settings or RaySettings()
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    head = np.asarray(heading_deg, dtype=np.float64)
    n = len(lat)
    status = np.full(n, _LABELLED, dtype=np.int8)
    has_pos = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    status[~has_pos] = REASONS.index(NO_POSITION)
    rest = status == _LABELLED
    status[rest & ~np.isfinite(head)] = REASONS.index(NO_HEADING)
    rest = status == _LABELLED
    with np.errstate(invalid="ignore"):
        status[rest & ((head < 0) | (head >= 360))] = REASONS.index(HEADING_OUT_OF_RANGE)
    rest = status == _LABELLED
    status[rest & (np.abs(lat) > MAX_ABS_LAT)] = REASONS.index(POLAR)

    out = Labels(
        status=status,
        footprint=np.full(n, -1, dtype=np.int64),
        hit_lat=np.full(n, np.nan),
        hit_lon=np.full(n, np.nan),
        distance_m=np.full(n, np.nan),
        normal_e=np.full(n, np.nan),
        normal_n=np.full(n, np.nan),
        incidence_deg=np.full(n, np.nan),
        offset_deg=np.full(n, np.nan),
    )
    todo = np.flatnonzero(status == _LABELLED)
    offsets = [0.0]
    if cfg.fov_tolerance_deg > 0 and cfg.fov_step_deg > 0:
        k = int(np.floor(cfg.fov_tolerance_deg / cfg.fov_step_deg + 1e-9))
        for i in range(1, k + 1):
            offsets += [i * cfg.fov_step_deg, -i * cfg.fov_step_deg]
    for lo in range(0, len(todo), cfg.chunk):
        idx = todo[lo : lo + cfg.chunk]
        _label_chunk(footprints, lat[idx], lon[idx], head[idx], cfg, offsets, idx, out)
    return out


def _label_chunk(
    fp: Footprints,
    lat: np.ndarray,
    lon: np.ndarray,
    head: np.ndarray,
    cfg: RaySettings,
    offsets: list[float],
    idx: np.ndarray,
    out: Labels,
) -> None:
    m = len(lat)
    # degrees per metre east (at the camera's latitude) and north
    deg_e = DEG_PER_M / np.cos(np.radians(lat))
    h = np.radians(head)
    ue0, un0 = np.sin(h), np.cos(h)  # unit direction, metres
    hit = np.full(m, -1, dtype=np.int64)
    t = np.zeros(m)
    ex = np.zeros(m)
    ey = np.zeros(m)
    off = np.full(m, np.nan)
    ue = np.zeros(m)
    un = np.zeros(m)
    for o in offsets:
        sel = np.flatnonzero(hit < 0)
        if len(sel) == 0:
            break
        de, dn = _rotate(ue0[sel], un0[sel], o)
        f, tt, ax, ay = _first_hits(
            fp, lon[sel], lat[sel], de * deg_e[sel], dn * DEG_PER_M, cfg.max_distance_m
        )
        got = f >= 0
        s = sel[got]
        hit[s], t[s], ex[s], ey[s], off[s] = f[got], tt[got], ax[got], ay[got], o
        ue[s], un[s] = de[got], dn[got]
    status = np.full(m, _LABELLED, dtype=np.int8)
    status[hit < 0] = REASONS.index(NO_HIT)
    # a camera inside a building meets that building's own wall first (from inside); one
    # inside a building too big to leave within the ray is found by a point query
    found = np.flatnonzero(hit >= 0)
    inside = np.zeros(m, dtype=bool)
    inside[found] = shapely.contains_xy(fp.geoms[hit[found]], lon[found], lat[found])
    missed = np.flatnonzero(hit < 0)
    if len(missed):
        q, _ = fp.tree.query(shapely.points(lon[missed], lat[missed]), predicate="intersects")
        inside[missed[q]] = True
    status[inside] = REASONS.index(INSIDE)
    ok = status == _LABELLED
    hit[~ok] = -1
    tf = np.where(ok, t, 0.0)
    hlon = lon + ue * tf * deg_e
    hlat = lat + un * tf * DEG_PER_M
    # facade normal: perpendicular to the hit edge (in metres), facing the camera
    em_e = ex / deg_e
    em_n = ey / DEG_PER_M
    norm = np.hypot(em_e, em_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ne, nn = em_n / norm, -em_e / norm
    flip = ne * ue + nn * un > 0
    ne, nn = np.where(flip, -ne, ne), np.where(flip, -nn, nn)
    cos_inc = np.clip(-(ne * ue + nn * un), -1.0, 1.0)
    out.status[idx] = status
    out.footprint[idx] = hit
    for name, value in (
        ("hit_lat", hlat),
        ("hit_lon", hlon),
        ("distance_m", tf),
        ("normal_e", ne),
        ("normal_n", nn),
        ("incidence_deg", np.degrees(np.arccos(cos_inc))),
        ("offset_deg", off),
    ):
        getattr(out, name)[idx] = np.where(ok, value, np.nan)


# ---- writing -------------------------------------------------------------------------------------


def geoparquet_table(
    geoms_lonlat: np.ndarray, columns: dict[str, pa.Array | np.ndarray | list[Any]]
) -> pa.Table:
    """A GeoParquet 1.1 table (WKB ``geometry``, WGS84 lon/lat) that geopandas and GDAL read.

    Args:
        geoms_lonlat: shapely (N,) geometries in lon/lat degrees.
        columns: the attribute columns (an id column among them), each of length N.

    Returns:
        The table with its ``geo`` schema metadata (CRS omitted = OGC:CRS84).
    """
    types = sorted(
        {shapely.GeometryType(int(t)).name.title() for t in shapely.get_type_id(geoms_lonlat)}
    )
    types = [t.replace("Multipolygon", "MultiPolygon") for t in types]
    b = shapely.total_bounds(geoms_lonlat) if len(geoms_lonlat) else np.zeros(4)
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {"encoding": "WKB", "geometry_types": types, "bbox": [float(x) for x in b]}
        },
    }
    data = {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()}
    data["geometry"] = pa.array(shapely.to_wkb(geoms_lonlat), pa.binary())
    table = pa.table(data)
    return table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
