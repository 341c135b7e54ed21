"""The closed-form season read-out and the validation-fit hemisphere threshold of the geo heads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from sbe.geo.heads import GeoHeads, GeoHeadsConfig
from sbe.geo.season import (
    YEAR_DAYS,
    angle_to_doy,
    circular_error_days,
    fit_season_readout,
    fit_south_min,
    local_angle,
    predicted_doy,
    season_params,
)


def _season_world(n: int, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings whose first two dimensions hold the local season (plus noise), the rest noise;
    half the rows carry no season at all (their first two dimensions are noise too)."""
    theta = rng.uniform(0, 2 * math.pi, n)
    x = rng.normal(0, 1.0, (n, d))
    seasonal = np.arange(n) % 2 == 0
    x[seasonal, 0] += 3 * np.cos(theta[seasonal])
    x[seasonal, 1] += 3 * np.sin(theta[seasonal])
    return x.astype(np.float32), theta


def test_readout_finds_a_linear_season_and_shrinks_where_there_is_none() -> None:
    rng = np.random.default_rng(0)
    x, theta = _season_world(1200, 64, rng)
    vx, vtheta = _season_world(400, 64, rng)
    w, b, lam = fit_season_readout(x[:800], theta[:800], vx, vtheta)
    assert w.shape == (64, 2) and b.shape == (2,) and w.dtype == np.float32 and lam > 0
    p = x[800:] @ w + b
    err = circular_error_days(angle_to_doy(np.arctan2(p[:, 1], p[:, 0])), angle_to_doy(theta[800:]))
    seasonal = (np.arange(800, 1200) % 2) == 0
    assert err[seasonal].mean() < 25.0  # a random guess errs 91 days on average
    assert err[~seasonal].mean() > 70.0
    # the read-out's length is a confidence: long where the season shows
    length = np.linalg.norm(p, axis=1)
    assert np.median(length[seasonal]) > 2 * np.median(length[~seasonal])


def test_local_angle_shifts_the_south_by_half_a_year() -> None:
    th = np.array([0.1, 0.1])
    assert np.allclose(local_angle(th, np.array([False, True])), [0.1, 0.1 + math.pi])


def test_heads_take_the_direction_from_the_readout_and_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = GeoHeadsConfig(in_dim=8, num_centres=4, num_data_centres=4, season_readout=True)
    heads = GeoHeads(cfg)
    w = np.zeros((8, 2), np.float32)
    w[0, 0], w[1, 1] = 1.0, 1.0
    heads.set_season_readout(w, np.zeros(2, np.float32))
    x = torch.zeros(3, 8)
    x[:, 0] = torch.tensor([1.0, 0.0, -1.0])
    x[:, 1] = torch.tensor([0.0, 1.0, 0.0])
    mu, _ = season_params(heads(x).season)
    assert np.allclose(mu.detach().numpy(), [0.0, math.pi / 2, math.pi], atol=1e-5)
    heads.config.season_south_min = 0.8
    heads.save_pretrained(tmp_path)
    again = GeoHeads.from_pretrained(tmp_path)
    assert again.config.season_readout and again.config.season_south_min == 0.8
    assert torch.equal(again.season_readout_w, heads.season_readout_w)
    # heads saved before the read-out existed: a config without the fields, no buffers
    old = GeoHeads(GeoHeadsConfig(in_dim=8, num_centres=4, num_data_centres=4))
    assert not old.config.season_readout and "season_readout_w" not in old.state_dict()
    assert GeoHeadsConfig.from_dict({"in_dim": 8}).season_south_min == 0.5


def test_south_threshold_fit_prefers_north_when_the_hemisphere_is_unreliable() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    south = rng.random(n) < 0.2
    local = rng.uniform(0, YEAR_DAYS, n)
    true = np.where(south, local + YEAR_DAYS / 2, local) % YEAR_DAYS
    # a hemisphere guess that is right only 60 % of the time, confident or not
    p_noisy = np.where(rng.random(n) < 0.6, south, ~south).astype(float) * 0.5 + 0.25
    t = fit_south_min(local, p_noisy, true)
    assert not (p_noisy > t).any()  # never shift: 80 % of the rows are north
    p_good = np.where(south, 0.97, 0.03)
    assert fit_south_min(local, p_good, true) == 0.5
    # NaN truths are ignored
    assert fit_south_min(local, p_good, np.where(np.arange(n) % 2 == 0, true, np.nan)) == 0.5
    # the threshold is applied by predicted_doy
    raw = torch.tensor([[1.0, 0.0, 1.0]])
    log_hemi = torch.log(torch.tensor([[0.3, 0.7]]))
    assert abs(predicted_doy(raw, log_hemi)[0] - YEAR_DAYS / 2) < 1e-3
    assert predicted_doy(raw, log_hemi, south_min=0.8)[0] == 0.0
