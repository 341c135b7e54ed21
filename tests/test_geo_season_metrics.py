from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sbe.geo.metrics import (
    climate_metrics,
    location_metrics,
    macro_f1,
    most_common_baseline,
    nearest_neighbour_baseline,
    season_metrics,
    spatial_mode,
)
from sbe.geo.season import (
    angle_to_doy,
    calendar_angle,
    circular_error_days,
    circular_mean_doy,
    day_of_year,
    doy_to_angle,
    doy_to_month,
    hemisphere_cosine_loss,
    hemisphere_von_mises_nll,
    log_i0,
    predicted_doy,
    von_mises_nll,
)

# ---- season -------------------------------------------------------------------------------


def test_day_of_year_from_arrow_with_nulls() -> None:
    dates = pa.array([dt.date(2023, 1, 1), None, dt.date(2023, 12, 31), dt.date(2024, 3, 1)])
    doy = day_of_year(pa.chunked_array([dates]))
    assert doy[0] == 0 and math.isnan(doy[1]) and doy[2] == 364 and doy[3] == 60


def test_months_and_angles() -> None:
    assert doy_to_month(np.array([0, 30, 31, 58, 59, 180, 364])).tolist() == [1, 1, 2, 2, 3, 6, 12]
    assert angle_to_doy(doy_to_angle(np.array([100.0])))[0] == pytest.approx(100.0)
    assert angle_to_doy(np.array([-np.pi / 2]))[0] == pytest.approx(365.25 * 0.75)


@given(st.floats(0, 365.2), st.floats(0, 365.2))
def test_circular_error_is_a_symmetric_metric(a: float, b: float) -> None:
    e = circular_error_days(np.array([a]), np.array([b]))[0]
    assert 0 <= e <= 365.25 / 2 + 1e-9
    assert e == pytest.approx(circular_error_days(np.array([b]), np.array([a]))[0])
    assert e <= abs(a - b) + 1e-9


def test_new_year_is_close() -> None:
    assert circular_error_days(np.array([364.0]), np.array([0.0]))[0] == pytest.approx(1.25)
    assert circular_mean_doy(np.array([360.0, 4.0, np.nan])) == pytest.approx(
        (364.0 + 365.25) / 2 % 365.25, abs=1e-6
    )
    assert math.isnan(circular_mean_doy(np.array([np.nan])))


def test_log_i0_is_stable_and_correct() -> None:
    scipy_special = pytest.importorskip("scipy.special")
    k = torch.tensor([1e-3, 0.5, 3.0, 50.0, 700.0, 1e5], dtype=torch.float64)
    ref = np.log(scipy_special.i0e(k.numpy())) + k.numpy()
    assert np.allclose(log_i0(k).numpy(), ref, rtol=1e-10)
    assert torch.isfinite(log_i0(torch.tensor([1e6]))).all()  # torch.i0 itself would overflow


def test_von_mises_nll_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    raw = torch.tensor([[1.0, 0.0, 2.0], [0.0, -3.0, -1.0], [0.5, 0.5, 40.0]])
    theta = torch.tensor([0.3, -1.2, 2.0])
    mu = np.arctan2(raw[:, 1].numpy(), raw[:, 0].numpy())
    kappa = np.log1p(np.exp(raw[:, 2].numpy())) + 1e-3
    ref = -stats.vonmises.logpdf(theta.numpy(), kappa, loc=mu)
    assert np.allclose(von_mises_nll(raw, theta).numpy(), ref, atol=1e-4)
    assert predicted_doy(raw)[0] == pytest.approx(0.0)


def test_hemisphere_mixture_reduces_to_one_von_mises_and_normalises() -> None:
    raw = torch.tensor([[1.0, 0.5, 2.0], [-0.3, 1.0, 0.0]])
    theta = torch.tensor([0.7, -2.5])
    north = torch.log(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    south = north.flip(1)
    assert torch.allclose(hemisphere_von_mises_nll(raw, theta, north), von_mises_nll(raw, theta))
    flipped = torch.cat([-raw[:, :2], raw[:, 2:]], dim=1)  # direction + π
    assert torch.allclose(
        hemisphere_von_mises_nll(raw, theta, south), von_mises_nll(flipped, theta), atol=1e-6
    )
    # any hemisphere split is still a density on the circle
    grid = torch.linspace(-math.pi, math.pi, 20_001)[:-1]
    mixed = torch.log(torch.tensor([[0.3, 0.7]])).repeat(len(grid), 1)
    dens = (-hemisphere_von_mises_nll(raw[:1].repeat(len(grid), 1), grid, mixed)).exp()
    assert float(dens.mean() * 2 * math.pi) == pytest.approx(1.0, abs=1e-4)
    # the calendar angle is shifted half a year where south is more likely
    assert torch.allclose(
        calendar_angle(raw, south) - calendar_angle(raw, north), torch.tensor(math.pi)
    )
    assert torch.allclose(
        hemisphere_cosine_loss(raw, theta, north), 1 - torch.cos(theta - calendar_angle(raw, None))
    )


# ---- metrics ------------------------------------------------------------------------------


def test_location_metrics_thresholds() -> None:
    true_lat = np.zeros(5)
    true_lon = np.zeros(5)
    # errors of 0.5, 10, 150, 600 and 3000 km along the equator
    errs = np.array([0.5, 10.0, 150.0, 600.0, 3000.0])
    pred_lon = np.degrees(errs / 6371.0)
    m = location_metrics(np.zeros(5), pred_lon, true_lat, true_lon)
    assert [m[f"acc_{t}km"] for t in (1, 25, 200, 750, 2500)] == [0.2, 0.4, 0.6, 0.8, 0.8]
    assert m["median_km"] == pytest.approx(150.0, rel=1e-6)
    assert m["mean_km"] == pytest.approx(errs.mean(), rel=1e-6)


def test_macro_f1_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 8, 200))
    assert macro_f1(p, y) == pytest.approx(metrics.f1_score(y, p, average="macro"))


def test_climate_metrics_uses_groups() -> None:
    true = np.array([15, 15, 8, 4])  # Cfb Cfb Csa BWh
    pred = np.array([15, 14, 14, 5])  # Cfb Cfa Cfa BWk: fine 1/4, coarse all right
    m = climate_metrics(pred, true)
    assert m["fine_acc"] == 0.25 and m["coarse_acc"] == 1.0
    assert climate_metrics(pred, true, pred_coarse=np.array([3, 3, 3, 4]))["coarse_acc"] == 0.75


def test_season_metrics_per_hemisphere() -> None:
    pred = np.array([10.0, 20.0, 100.0, 0.0])
    true = np.array([0.0, 0.0, 300.0, np.nan])
    lat = np.array([50.0, -30.0, -30.0, 10.0])
    m = season_metrics(pred, true, lat)
    assert m["n"] == 3
    assert m["mean_error_days"] == pytest.approx((10 + 20 + 165.25) / 3)
    assert m["north_mean_error_days"] == 10 and m["north_n"] == 1
    assert m["south_mean_error_days"] == pytest.approx((20 + 165.25) / 2)
    assert m["within_30d"] == pytest.approx(2 / 3)


def test_baselines() -> None:
    rng = np.random.default_rng(0)
    lat = np.r_[48.85 + rng.normal(0, 0.01, 30), 40.42 + rng.normal(0, 0.01, 10)]
    lon = np.r_[2.35 + rng.normal(0, 0.01, 30), -3.70 + rng.normal(0, 0.01, 10)]
    mlat, mlon = spatial_mode(lat, lon)
    assert abs(mlat - 48.85) < 0.1 and abs(mlon - 2.35) < 0.1
    fine = np.r_[np.full(30, 15), np.full(10, 8)]
    doy = np.r_[np.full(20, 100.0), np.full(20, np.nan)]
    mc = most_common_baseline(lat, lon, fine, doy, 3)
    assert (mc.fine == 15).all() and mc.doy[0] == pytest.approx(100.0) and len(mc.lat) == 3
    emb = rng.standard_normal((40, 8))
    q = emb[[35, 3]] + 0.01 * rng.standard_normal((2, 8))
    nn = nearest_neighbour_baseline(q, emb, lat, lon, fine, doy)
    assert nn.lat.tolist() == [lat[35], lat[3]] and nn.fine.tolist() == [8, 15]
    # row 35 has no date: the season comes from the closest *dated* training row
    assert nn.doy[0] == 100.0 and nn.doy[1] == 100.0
