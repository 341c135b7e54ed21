"""Top-k modes with mass, 50 %/90 % radii and highest-density regions of an MvMF mixture; names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sbe.geo.heads import GeoHeads, GeoHeadsConfig
from sbe.geo.koppen import COMMON_NAMES, FINE_CODES, climate_name
from sbe.geo.mvmf import log_density_at, mixture_modes, mixture_regions, vmf_quasi_samples
from sbe.geo.predict import describe
from sbe.geo.season import doy_to_date
from sbe.sphere import EARTH_RADIUS_KM, haversine_km, latlon_to_unit, unit_to_latlon


def _cap_radius_km(kappa: float, q: float) -> float:
    """Radius of the cap around a vMF's mean holding ``q`` of its mass (closed form on S²)."""
    t = -math.log(1.0 - q * (1.0 - math.exp(-2.0 * kappa))) / kappa
    return EARTH_RADIUS_KM * math.acos(1.0 - t)


def _mixture() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    centres = torch.from_numpy(latlon_to_unit(np.array([10.0, -30.0]), np.array([20.0, 100.0])))
    log_kappa = torch.log(torch.tensor([2e4, 5e3]))
    logits = torch.log(torch.tensor([[0.7, 0.3]]))
    return logits, log_kappa, centres


def test_modes_mass_and_radii_of_two_far_components() -> None:
    logits, log_kappa, centres = _mixture()
    modes = mixture_modes(logits, log_kappa, centres, top_k=2)
    np.testing.assert_allclose(modes.lat[0], [10.0, -30.0], atol=1e-6)
    reg = mixture_regions(logits, log_kappa, centres, modes.lat, modes.lon, samples=256)
    np.testing.assert_allclose(reg.mass[0], [0.7, 0.3], atol=1e-6)
    for j, kappa in enumerate((2e4, 5e3)):
        for li, q in enumerate((0.5, 0.9)):
            want = _cap_radius_km(kappa, q)
            assert reg.radius_km[0, j, li] == pytest.approx(want, rel=0.02)
    # the 50 % radius of a vMF with kappa 2e4 is about 53 km, its 90 % radius about 97 km
    assert 50 < reg.radius_km[0, 0, 0] < 56 and 93 < reg.radius_km[0, 0, 1] < 100


def test_quasi_samples_follow_the_vmf_radial_law() -> None:
    mu = torch.from_numpy(latlon_to_unit(np.array([45.0]), np.array([7.0])))
    pts = vmf_quasi_samples(mu, torch.tensor([1e3]), 400)[0].numpy()
    assert np.allclose(np.linalg.norm(pts, axis=1), 1.0)
    lat, lon = unit_to_latlon(pts)
    d = np.sort(haversine_km(45.0, 7.0, lat, lon))
    assert np.median(d) == pytest.approx(_cap_radius_km(1e3, 0.5), rel=0.02)
    # azimuths are spread: the samples' mean stays on the mean direction
    m = pts.mean(axis=0)
    assert float(m @ mu[0].numpy() / np.linalg.norm(m)) > 0.9999


def test_hpd_region_coverage_is_calibrated_for_samples_of_the_mixture() -> None:
    logits, log_kappa, centres = _mixture()
    rng = np.random.default_rng(0)
    n = 3000
    comp = rng.choice(2, size=n, p=[0.7, 0.3])
    kappa = np.exp(log_kappa.numpy())[comp]
    # exact vMF draws on S2 (Wood): w = 1 + log(u + (1-u) e^{-2k}) / k
    u = rng.random(n)
    w = 1.0 + np.log(u + (1 - u) * np.exp(-2 * kappa)) / kappa
    phi = rng.uniform(0, 2 * np.pi, n)
    mu = centres.numpy()[comp]
    axis = np.tile([0.0, 0.0, 1.0], (n, 1))
    e1 = np.cross(mu, axis)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(mu, e1)
    s = np.sqrt(1 - w**2)[:, None]
    x = w[:, None] * mu + s * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    rows = logits.expand(n, -1)
    modes = mixture_modes(rows[:1], log_kappa, centres, top_k=2)
    lat = np.repeat(modes.lat, n, axis=0)
    lon = np.repeat(modes.lon, n, axis=0)
    reg = mixture_regions(rows, log_kappa, centres, lat, lon, samples=64, chunk=512)
    dens = log_density_at(rows, log_kappa, centres, torch.from_numpy(x)).numpy()
    inside = dens[:, None] >= reg.hpd_log_density
    assert inside[:, 0].mean() == pytest.approx(0.5, abs=0.04)
    assert inside[:, 1].mean() == pytest.approx(0.9, abs=0.03)


def test_single_component_hpd_region_is_the_90_percent_disk() -> None:
    centres = torch.from_numpy(latlon_to_unit(np.array([0.0]), np.array([0.0])))
    log_kappa = torch.log(torch.tensor([1e4]))
    logits = torch.zeros(1, 1)
    modes = mixture_modes(logits, log_kappa, centres, top_k=1)
    reg = mixture_regions(logits, log_kappa, centres, modes.lat, modes.lon, samples=512)
    r90 = reg.radius_km[0, 0, 1]
    for d_km, expected in ((0.95 * r90, True), (1.05 * r90, False)):
        lon = math.degrees(d_km / EARTH_RADIUS_KM)
        x = torch.from_numpy(latlon_to_unit(np.array([0.0]), np.array([lon])))
        dens = log_density_at(logits, log_kappa, centres, x).numpy()
        assert bool(dens[0] >= reg.hpd_log_density[0, 1]) is expected


def test_heads_predict_regions_and_describe_with_names() -> None:
    torch.manual_seed(0)
    heads = GeoHeads(GeoHeadsConfig(in_dim=8, hidden_dim=16, num_centres=12, num_data_centres=12))
    x = torch.randn(5, 8)
    truth = torch.from_numpy(latlon_to_unit(np.zeros(5), np.zeros(5)))
    pred = heads.predict(x, top_k=3, truth_xyz=truth)
    assert pred.regions is not None and pred.inside is not None
    assert pred.inside.shape == (5, 2)
    np.testing.assert_allclose(pred.regions.mass.sum(axis=1), 1.0, atol=1e-9)
    r = pred.regions.radius_km
    assert np.all((r[..., 1] >= r[..., 0]) | np.isnan(r[..., 0]))
    rows = describe(pred)
    assert len(rows) == 5
    row = rows[0]
    assert {"lat", "lon", "prob", "radius_50_km", "radius_90_km"} <= set(row["locations"][0])
    code = row["climate"]["code"]
    assert row["climate"]["name"] == COMMON_NAMES[FINE_CODES.index(code)]
    assert row["season"]["date"].startswith("--") and len(row["season"]["date"]) == 7


def test_climate_names_and_dates() -> None:
    assert climate_name("Csb") == "warm-summer Mediterranean"
    assert climate_name("Cfb") == "temperate oceanic"
    assert climate_name("Af") == "tropical rainforest"
    assert climate_name("As") == "tropical savanna"  # Rubel's As is merged into Aw
    assert climate_name("BWh") == "hot desert"
    assert climate_name("Dfc") == "subarctic"
    assert climate_name("EF") == "ice cap"
    assert len(COMMON_NAMES) == len(FINE_CODES)
    with pytest.raises(KeyError):
        climate_name("Xyz")
    assert doy_to_date(0) == ("--01-01", "1 January")
    assert doy_to_date(194.6) == ("--07-15", "15 July")
    assert doy_to_date(364) == ("--12-31", "31 December")
    assert doy_to_date(365.2) == ("--01-01", "1 January")
