from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sbe.geo.heads import GeoHeads, GeoHeadsConfig, coarse_log_probs
from sbe.geo.koppen import COARSE_OF_FINE, FINE_CODES
from sbe.geo.labels import make_labels
from sbe.geo.loss import GeoLoss, climate_loss
from sbe.geo.mvmf import fibonacci_sphere
from sbe.geo.settings import GeoSettings
from sbe.geo.trainer import param_groups, warmup_cosine
from sbe.sphere import latlon_to_unit


def small_heads(k: int = 20, gallery: int = 6, in_dim: int = 16) -> GeoHeads:
    torch.manual_seed(0)
    cfg = GeoHeadsConfig(
        in_dim=in_dim,
        hidden_dim=32,
        num_centres=k,
        num_data_centres=k - 4,
        num_gallery=gallery,
        backbone={"name": "toy", "dim": in_dim},
    )
    heads = GeoHeads(cfg)
    heads.set_centres(fibonacci_sphere(k), np.linspace(3.0, 20.0, k))
    heads.set_gallery(fibonacci_sphere(gallery))
    return heads


def test_coarse_log_probs_are_group_sums() -> None:
    logits = torch.randn(5, 31)
    cof = torch.as_tensor(COARSE_OF_FINE)
    lp = coarse_log_probs(logits, cof)
    p_fine = torch.softmax(logits, dim=-1)
    expected = torch.zeros(5, 6).index_add_(1, cof, p_fine)
    assert torch.allclose(lp.exp(), expected, atol=1e-6)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(5), atol=1e-6)


def test_climate_loss_terms() -> None:
    logits = torch.randn(4, 31)
    fine = torch.tensor([15, 8, 4, 1])
    coarse = torch.as_tensor(COARSE_OF_FINE)[fine]
    ce_f, nll_c = climate_loss(logits, fine, coarse, torch.as_tensor(COARSE_OF_FINE))
    plain = torch.nn.functional.cross_entropy(logits, fine, reduction="none")
    smoothed = torch.nn.functional.cross_entropy(
        logits, fine, reduction="none", label_smoothing=0.05
    )
    assert torch.allclose(ce_f, smoothed) and not torch.allclose(ce_f, plain)
    assert (nll_c <= plain + 1e-6).all()  # a group is at least as likely as its member


def test_clamp_and_forward_shapes() -> None:
    heads = small_heads()
    lk = heads.log_kappa.detach()
    assert float(lk.min()) == 4.0 and float(lk.max()) == 16.0
    out = heads(torch.randn(3, 16))
    assert out.location_logits.shape == (3, 20) and out.climate_logits.shape == (3, 31)
    assert out.season.shape == (3, 3) and out.centres.dtype == torch.float64
    with torch.no_grad():
        heads.log_kappa.fill_(30.0)
    assert float(heads(torch.randn(1, 16)).log_kappa.detach().max()) == 16.0
    heads.clamp_()
    assert float(heads.log_kappa.detach().max()) == 16.0
    with pytest.raises(ValueError):
        heads.set_centres(fibonacci_sphere(3), np.zeros(3))


def test_hemisphere_probabilities_follow_the_location_head() -> None:
    heads = small_heads()
    south = heads.centres[:, 2] < 0
    logits = torch.full((2, 20), -30.0, requires_grad=True)
    with torch.no_grad():
        logits[0, int(torch.nonzero(south)[0])] = 30.0  # all weight on one southern centre
        logits[1, int(torch.nonzero(~south)[0])] = 30.0
    lh = heads.hemisphere_log_probs(logits)
    assert torch.allclose(torch.logsumexp(lh, dim=1), torch.zeros(2), atol=1e-6)
    assert float(lh[0, 1].exp()) > 0.999 and float(lh[1, 0].exp()) > 0.999
    assert not lh.requires_grad  # the season loss does not move the location head
    out = heads(torch.randn(3, 16))
    assert out.hemisphere is not None and out.hemisphere.shape == (3, 2)
    heads.config.season_hemisphere = False
    assert heads(torch.randn(3, 16)).hemisphere is None


def test_gallery_owner_is_nearest_centre() -> None:
    heads = small_heads()
    owner = heads.gallery_owner
    best = torch.argmax(heads.gallery @ heads.centres.T, dim=1)
    assert torch.equal(owner, best)


def test_save_and_load_roundtrip(tmp_path) -> None:
    heads = small_heads().eval()
    x = torch.randn(4, 16)
    ref = heads(x)
    heads.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["backbone"]["name"] == "toy"
    loaded = GeoHeads.from_pretrained(tmp_path)
    out = loaded(x)
    assert torch.equal(out.location_logits, ref.location_logits)
    assert torch.equal(loaded.centres, heads.centres) and torch.equal(loaded.gallery, heads.gallery)
    assert torch.equal(out.log_kappa, ref.log_kappa)
    with pytest.raises(FileNotFoundError):
        GeoHeads.from_pretrained(tmp_path / "missing")


def test_predict_decodes_everything() -> None:
    heads = small_heads()
    pred = heads.predict(torch.randn(7, 16), top_k=3, batch_size=3)
    assert pred.modes.lat.shape == (7, 3) and pred.fine.shape == (7,)
    assert np.all(pred.modes.prob.sum(axis=1) <= 1 + 1e-6)
    assert np.all((pred.doy >= 0) & (pred.doy < 365.25))
    assert np.all(pred.fine_prob > 0) and np.all(pred.season_kappa > 0)
    assert heads.training  # predict restores the mode


def _labels(n: int, with_dates: bool = True):
    rng = np.random.default_rng(0)
    lat = rng.uniform(35, 60, n)
    lon = rng.uniform(-5, 30, n)
    doy = rng.uniform(0, 365, n) if with_dates else None
    return make_labels(lat, lon, doy)


def test_labels_from_coordinates() -> None:
    lab = make_labels(np.array([52.37, 40.42]), np.array([4.90, -3.70]), np.array([10.0, np.nan]))
    assert [FINE_CODES[i] for i in lab.fine.tolist()] == ["Cfb", "Csa"]
    assert lab.coarse.tolist() == [3, 3]
    assert lab.has_date.tolist() == [True, False]
    assert float(lab.season_theta[0]) == pytest.approx(2 * math.pi * 10 / 365.25)
    assert torch.allclose(
        lab.xyz, torch.from_numpy(latlon_to_unit(np.array([52.37, 40.42]), np.array([4.9, -3.7])))
    )
    sub = lab[torch.tensor([1])]
    assert len(sub) == 1 and sub.fine.tolist() == [8]


def test_geo_loss_masks_undated_rows_and_backpropagates() -> None:
    heads = small_heads()
    lab = _labels(8)
    lab.has_date[4:] = False
    crit = GeoLoss(GeoSettings(location_weight=1.0, climate_weight=0.5, season_weight=0.25))
    out = heads(torch.randn(8, 16))
    loss, parts = crit(out, lab)
    assert torch.isfinite(loss) and set(parts) >= {"location", "climate", "season"}
    expected = parts["location"] + 0.5 * parts["climate"] + 0.25 * parts["season"]
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    # changing the angles of undated rows does not change the loss
    lab2 = lab[torch.arange(8)]
    lab2.season_theta[4:] += 1.0
    loss2, _ = crit(out, lab2)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert heads.log_kappa.grad is not None and torch.isfinite(heads.log_kappa.grad).all()
    assert heads.season.weight.grad.abs().sum() > 0
    # a batch without any date trains no season head and stays finite
    heads.zero_grad()
    none = _labels(4, with_dates=False)
    loss3, parts3 = crit(heads(torch.randn(4, 16)), none)
    loss3.backward()
    assert float(parts3["season"]) == 0.0 and heads.season.weight.grad.abs().sum() == 0


def test_cosine_season_loss_option() -> None:
    heads = small_heads()
    lab = _labels(4)
    _, parts = GeoLoss(GeoSettings(season_loss="cosine"))(heads(torch.randn(4, 16)), lab)
    assert 0.0 <= float(parts["season"]) <= 2.0


def test_optimizer_groups_and_schedule() -> None:
    heads = small_heads()
    groups = param_groups(heads, 0.01)
    no_decay = {id(p) for p in groups[1]["params"]}
    assert id(heads.log_kappa) in no_decay and id(heads.location.bias) in no_decay
    assert id(heads.location.weight) not in no_decay
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_heads_and_loss_from_config() -> None:
    from sbe.config import GeoConfig
    from sbe.geo.build import heads_from_config, loss_from_config

    rng = np.random.default_rng(0)
    lat = np.r_[52.37 + rng.normal(0, 0.02, 200), -33.87 + rng.normal(0, 0.02, 200)]
    lon = np.r_[4.90 + rng.normal(0, 0.03, 200), 151.21 + rng.normal(0, 0.03, 200)]
    cfg = GeoConfig(
        background_centres=60, centres_per_sample=10, gallery_max=50, hidden_dim=32, seed=3
    )
    heads = heads_from_config(cfg, lat, lon, in_dim=16, input_space="projector")
    c = heads.config
    assert c.in_dim == 16 and c.hidden_dim == 32 and c.input_space == "projector"
    assert 16 <= c.num_data_centres < c.num_centres and c.num_gallery == 50
    data_lat = np.degrees(np.arcsin(heads.centres[: c.num_data_centres, 2].numpy()))
    assert set(np.round(data_lat).astype(int)) <= {52, -34}  # data centres sit on the data
    crit = loss_from_config(cfg.model_copy(update={"season_weight": 0.0}))
    assert (
        crit.settings.season_weight == 0.0 and crit.settings.location_weight == cfg.location_weight
    )
    labels = make_labels(lat[:8], lon[:8], np.arange(8.0))
    loss, _ = crit(heads(torch.randn(8, 16)), labels)
    assert torch.isfinite(loss)
