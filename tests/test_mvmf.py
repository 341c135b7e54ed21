from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sbe.geo.koppen import is_land
from sbe.geo.mvmf import (
    ModeSearch,
    background_centres,
    build_centres,
    candidate_log_density,
    dedup_locations,
    fibonacci_sphere,
    half_chord_sq,
    kappa_from_spread,
    log_vmf,
    log_vmf_normaliser,
    mixture_modes,
    mvmf_log_density,
    mvmf_nll,
    spherical_kmeans,
)
from sbe.geo.settings import GeoSettings
from sbe.sphere import EARTH_RADIUS_KM, haversine_km, latlon_to_unit, unit_to_latlon

LOG_KAPPA_MAX_TESTED = math.log(1e8)


def destination(lat: float, lon: float, bearing_deg: float, dist_km: float) -> tuple[float, float]:
    """Point at a great-circle distance and bearing (float64, textbook formula)."""
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = dist_km / EARTH_RADIUS_KM
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), math.degrees(l2)


def ref_log_vmf(dist_km: np.ndarray, log_kappa: np.ndarray) -> np.ndarray:
    """float64 reference: log κ - log 2π - log(1 - e^{-2κ}) - κ · 2 sin²(d/2)."""
    kappa = np.exp(log_kappa)
    hav2 = 2.0 * np.sin(dist_km / EARTH_RADIUS_KM / 2.0) ** 2
    return log_kappa - math.log(2 * math.pi) - np.log(-np.expm1(-2.0 * kappa)) - kappa * hav2


def close(ours: np.ndarray, ref: np.ndarray, tol: float = 1e-4) -> bool:
    # float32 keeps ~7 significant digits: 1e-4 absolute for O(1) values, relative beyond
    return bool(np.all(np.abs(ours - ref) <= tol * np.maximum(1.0, np.abs(ref))))


def pair(lat: float, lon: float, bearing: float, dist_km: float) -> tuple[torch.Tensor, ...]:
    lat2, lon2 = destination(lat, lon, bearing, dist_km)
    x = torch.from_numpy(latlon_to_unit(np.array([lat]), np.array([lon])))
    mu = torch.from_numpy(latlon_to_unit(np.array([lat2]), np.array([lon2])))
    d = haversine_km(lat, lon, lat2, lon2)
    return x, mu, torch.tensor(float(d), dtype=torch.float64)


def test_normaliser_matches_the_sinh_form() -> None:
    log_k = np.linspace(-6.0, math.log(50.0), 40)
    k = np.exp(log_k)
    direct = np.log(k / (4 * np.pi * np.sinh(k))) + k  # fine in float64 for κ <= 50
    ours = log_vmf_normaliser(torch.tensor(log_k, dtype=torch.float32)).numpy()
    assert close(ours, direct)
    big = log_vmf_normaliser(torch.tensor([50.0, 100.0, 1e3, 1e4])).numpy()  # κ = e^1e4 too
    assert np.isfinite(big).all()


@pytest.mark.parametrize("dist_km", [0.1, 1.0, 5.0, 25.0, 200.0, 2500.0, 10_000.0])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 55.0, 1e3, 1e5, 1e7, 1e8])
def test_log_vmf_matches_float64_reference(dist_km: float, kappa: float) -> None:
    x, mu, d = pair(48.85, 2.35, 37.0, dist_km)
    log_k = torch.tensor([math.log(kappa)])
    ours = log_vmf(half_chord_sq(x, mu), log_k).numpy()[0, 0]
    ref = ref_log_vmf(d.numpy(), np.log(kappa))
    assert np.isfinite(ours)
    assert close(np.array(ours), ref), (ours, ref)


def test_chord_form_resolves_what_float32_dot_cannot() -> None:
    x, mu, d = pair(52.37, 4.90, 90.0, 0.1)
    naive = 1.0 - float((x.float() * mu.float()).sum())
    exact = 2.0 * math.sin(float(d) / EARTH_RADIUS_KM / 2) ** 2
    assert naive == 0.0 or abs(naive - exact) / exact > 0.1  # the float32 dot product is useless
    assert abs(float(half_chord_sq(x, mu)[0, 0]) - exact) / exact < 1e-5


@settings(max_examples=150, deadline=None)
@given(
    lat=st.floats(-89.0, 89.0),
    lon=st.floats(-180.0, 180.0),
    bearing=st.floats(0.0, 360.0),
    log_dist=st.floats(math.log(0.1), math.log(10_000.0)),
    log_kappa=st.floats(-4.0, LOG_KAPPA_MAX_TESTED),
)
def test_log_vmf_property(
    lat: float, lon: float, bearing: float, log_dist: float, log_kappa: float
) -> None:
    x, mu, d = pair(lat, lon, bearing, math.exp(log_dist))
    ours = log_vmf(half_chord_sq(x, mu), torch.tensor([log_kappa])).numpy()[0, 0]
    assert np.isfinite(ours)
    assert close(np.array(ours), ref_log_vmf(d.numpy(), np.array(log_kappa)))


def _ref_nll(logits: np.ndarray, log_kappa: np.ndarray, dist_km: np.ndarray) -> np.ndarray:
    lw = logits - logits.max(axis=1, keepdims=True)
    lw = lw - np.log(np.exp(lw).sum(axis=1, keepdims=True))
    terms = lw + ref_log_vmf(dist_km, log_kappa[None, :])
    m = terms.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(terms - m).sum(axis=1)))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    logit_scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]),
    kappa_hi=st.floats(0.0, LOG_KAPPA_MAX_TESTED),
)
def test_mixture_nll_matches_reference_and_stays_finite(
    seed: int, logit_scale: float, kappa_hi: float
) -> None:
    rng = np.random.default_rng(seed)
    b, k = 6, 9
    lat = rng.uniform(-80, 80, k)
    lon = rng.uniform(-180, 180, k)
    centres = latlon_to_unit(lat, lon)
    # true points 0.1 km to 10,000 km from the first centre
    dists = np.exp(rng.uniform(math.log(0.1), math.log(10_000.0), b))
    pts = np.array(
        [destination(lat[0], lon[0], rng.uniform(0, 360), float(d)) for d in dists]
    ).reshape(b, 2)
    x = latlon_to_unit(pts[:, 0], pts[:, 1])
    logits = rng.standard_normal((b, k)) * logit_scale
    log_kappa = rng.uniform(-3.0, kappa_hi, k)
    ours = mvmf_nll(
        torch.tensor(logits, dtype=torch.float32),
        torch.tensor(log_kappa, dtype=torch.float32),
        torch.from_numpy(x),
        torch.from_numpy(centres),
    ).numpy()
    dist = haversine_km(pts[:, None, 0], pts[:, None, 1], lat[None, :], lon[None, :])
    ref = _ref_nll(logits.astype(np.float32).astype(np.float64), log_kappa, dist)
    assert np.isfinite(ours).all()
    assert close(ours, ref)


def test_nll_gradients_are_finite_at_extremes() -> None:
    centres = torch.from_numpy(fibonacci_sphere(16))
    x = torch.from_numpy(latlon_to_unit(np.array([0.0, 45.0]), np.array([0.0, 90.0])))
    logits = torch.tensor(np.r_[1e6, np.zeros(15)], dtype=torch.float32).repeat(2, 1)
    logits.requires_grad_(True)
    log_k = torch.tensor(np.linspace(-5.0, 18.5, 16), dtype=torch.float32, requires_grad=True)
    loss = mvmf_nll(logits, log_k, x, centres).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and torch.isfinite(log_k.grad).all()


def test_nll_prefers_the_right_component_and_autocast_is_ignored() -> None:
    c = torch.from_numpy(latlon_to_unit(np.array([48.85, 40.42]), np.array([2.35, -3.70])))
    x = c[:1]
    log_k = torch.tensor([9.0, 9.0])
    good = mvmf_nll(torch.tensor([[5.0, 0.0]]), log_k, x, c)
    bad = mvmf_nll(torch.tensor([[0.0, 5.0]]), log_k, x, c)
    assert float(good) < float(bad) - 4.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = mvmf_nll(torch.tensor([[5.0, 0.0]]), log_k, x, c)
    assert inside.dtype == torch.float32 and float(inside) == pytest.approx(float(good), abs=1e-5)


def test_candidate_density_equals_pointwise_density() -> None:
    rng = np.random.default_rng(1)
    centres = torch.from_numpy(fibonacci_sphere(12))
    logits = torch.tensor(rng.standard_normal((3, 12)), dtype=torch.float32)
    log_k = torch.tensor(rng.uniform(2, 9, 12), dtype=torch.float32)
    cand = torch.from_numpy(fibonacci_sphere(7))
    grid = candidate_log_density(logits, log_k, centres, cand, chunk=3)
    for j in range(7):
        pts = cand[j : j + 1].repeat(3, 1)
        direct = mvmf_log_density(logits, log_k, half_chord_sq(pts, centres))
        assert torch.allclose(grid[:, j], direct, atol=1e-5)


def test_density_integrates_to_one() -> None:
    centres = torch.from_numpy(latlon_to_unit(np.array([10.0, -40.0]), np.array([20.0, 100.0])))
    logits = torch.tensor([[0.3, -0.2]])
    log_k = torch.tensor([2.0, 3.0])
    pts = torch.from_numpy(fibonacci_sphere(200_000))
    dens = candidate_log_density(logits, log_k, centres, pts).exp()
    assert float(dens.mean() * 4 * math.pi) == pytest.approx(1.0, abs=2e-3)


def test_modes_pick_the_density_peak_and_report_shares() -> None:
    # two equal, overlapping components 6 km apart (1.3 σ, so unimodal): the density peaks between them, where only
    # an extra candidate sits; a third, lighter component far away is the second mode
    lat = np.array([48.85, 48.85, 40.42])
    lon = np.array([2.35, 2.35 + 6 / 73.2, -3.70])
    centres = torch.from_numpy(latlon_to_unit(lat, lon))
    log_k = torch.full((3,), math.log(2e6))  # σ ≈ 4.5 km
    logits = torch.log(torch.tensor([[0.4, 0.4, 0.2]]))
    mid = latlon_to_unit(np.array([48.85]), np.array([2.35 + 3 / 73.2]))
    modes = mixture_modes(
        logits,
        log_k,
        centres,
        extra_candidates=torch.from_numpy(mid),
        extra_owner=torch.tensor([0]),
        top_k=2,
    )
    assert haversine_km(modes.lat[0, 0], modes.lon[0, 0], 48.85, 2.35 + 3 / 73.2) < 0.01
    assert haversine_km(modes.lat[0, 1], modes.lon[0, 1], 40.42, -3.70) < 0.01
    assert modes.prob[0].tolist() == pytest.approx([0.8, 0.2], abs=1e-5)
    assert modes.log_density[0, 0] > modes.log_density[0, 1]
    # without the extra candidate the best point is one of the two centres
    plain = mixture_modes(logits, log_k, centres, top_k=3)
    assert haversine_km(plain.lat[0, 0], plain.lon[0, 0], 48.85, 2.35) < 7
    # the second Paris centre is within the 25 km suppression radius: only two modes exist
    assert np.isnan(plain.lat[0, 2]) and plain.prob[0, 2] == 0.0
    # a suppression radius beyond Paris-Madrid (1 050 km) leaves one mode
    wide = mixture_modes(logits, log_k, centres, top_k=3, search=ModeSearch(min_separation_km=2000))
    assert np.isnan(wide.lat[0, 1]) and wide.prob[0, 0] == pytest.approx(1.0, abs=1e-5)


def _sample_vmf(mu: np.ndarray, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(n)
    w = 1.0 + np.log(u + (1.0 - u) * np.exp(-2.0 * kappa)) / kappa
    a = np.cross(mu, [0.0, 0.0, 1.0] if abs(mu[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(mu, a)
    phi = rng.uniform(0, 2 * np.pi, n)
    r = np.sqrt(np.clip(1 - w * w, 0, None))
    return w[:, None] * mu + r[:, None] * (np.cos(phi)[:, None] * a + np.sin(phi)[:, None] * b)


def test_spherical_kmeans_and_kappa_init_recover_clusters() -> None:
    rng = np.random.default_rng(0)
    true = latlon_to_unit(np.array([52.0, -33.9, 35.7, 40.7]), np.array([4.9, 151.2, 139.7, -74.0]))
    kappas = [1e5, 1e4, 1e6, 1e5]
    pts = np.concatenate([_sample_vmf(m, k, 3000, rng) for m, k in zip(true, kappas, strict=True)])
    centres, assign = spherical_kmeans(pts, 4, seed=0)
    match = np.argmax(centres @ true.T, axis=1)
    assert sorted(match.tolist()) == [0, 1, 2, 3]
    lat, lon = unit_to_latlon(centres)
    tl, tn = unit_to_latlon(true[match])
    assert haversine_km(lat, lon, tl, tn).max() < 5.0
    assert (match[assign] == np.repeat(np.arange(4), 3000)).all()
    log_k = kappa_from_spread(pts, assign, centres, log_kappa_min=4.0, log_kappa_max=16.0)
    assert np.abs(log_k - np.log(np.array(kappas)[match])).max() < 0.15
    # the clamp holds
    tight = kappa_from_spread(pts, assign, centres, log_kappa_min=4.0, log_kappa_max=10.0)
    assert tight.max() <= 10.0


def test_background_centres_on_land_and_away_from_data() -> None:
    data = latlon_to_unit(np.array([48.85, 40.42]), np.array([2.35, -3.70]))
    bg = background_centres(400, data)
    assert 250 <= len(bg) <= 550
    lat, lon = unit_to_latlon(bg)
    assert is_land(lat, lon).all()
    d = haversine_km(lat[:, None], lon[:, None], np.array([48.85, 40.42]), np.array([2.35, -3.70]))
    assert d.min() > 100.0
    assert background_centres(0, data).shape == (0, 3)


def test_build_centres_counts_and_dedup() -> None:
    rng = np.random.default_rng(0)
    lat = np.r_[52.37 + rng.normal(0, 0.02, 400), 40.42 + rng.normal(0, 0.02, 400)]
    lon = np.r_[4.90 + rng.normal(0, 0.03, 400), -3.70 + rng.normal(0, 0.03, 400)]
    dup_lat, dup_lon = np.r_[lat, lat + 1e-6], np.r_[lon, lon]  # same 100 m cells
    uniq, counts = dedup_locations(dup_lat, dup_lon)
    assert len(uniq) <= len(lat) and counts.sum() == 2 * len(lat)
    geo = GeoSettings(centres_per_sample=20, background_centres=100, log_kappa_max=16.0)
    cs = build_centres(lat, lon, geo)
    assert cs.num_data == round(len(dedup_locations(lat, lon)[0]) / 20)
    assert 30 <= cs.num_data <= 40
    assert cs.xyz.shape == (len(cs.log_kappa), 3) and len(cs.xyz) > cs.num_data
    assert np.allclose(np.linalg.norm(cs.xyz, axis=1), 1.0)
    assert (cs.log_kappa >= 4.0).all() and (cs.log_kappa <= 16.0).all()
    assert (cs.log_kappa[cs.num_data :] == 6.5).all()
