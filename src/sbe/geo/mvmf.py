"""Mixture of von Mises-Fisher distributions (MvMF) on the sphere: stable density, loss, centres.

A vMF on S² with mean direction μ and concentration κ has log-density

    log f(x) = log κ - log 2π - log(1 - e^{-2κ}) - κ (1 - μᵀx),

and ``1 - μᵀx`` is computed as half the squared chord ``‖x - μ‖² / 2`` in float64 (it does not
depend on any trainable parameter), because ``1 - dot`` in float32 cannot resolve points closer
than ~5 km. ``log(1 - e^{-2κ})`` is ``log(-expm1(-2κ))`` so that no ``sinh`` ever overflows. The
mixture NLL is ``-logsumexp_k(log_softmax(logits)_k + log f_k(x))`` in float32 outside autocast.

Centres are fixed: spherical k-means of the (deduplicated) training coordinates plus background
centres on land from a Fibonacci lattice. Each centre gets a learnable ``log κ``, initialised from
its cluster's spread and clamped to a configured range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sbe.geo.settings import GeoSettings
from sbe.mining.seeding import kmeans_plus_plus_indices
from sbe.sphere import EARTH_RADIUS_KM, latlon_to_unit, unit_to_latlon

LOG_2PI = math.log(2.0 * math.pi)


# ---- density --------------------------------------------------------------------------------


def half_chord_sq(x: Tensor, centres: Tensor) -> Tensor:
    """``1 - cos(angle)`` between every point and every centre, without cancellation.

    Args:
        x: (B, 3) unit vectors (any float dtype; float64 recommended).
        centres: (K, 3) unit vectors.

    Returns:
        float32 (B, K): ``‖x - μ‖² / 2`` computed in float64, in [0, 2].
    """
    diff = x.to(torch.float64)[:, None, :] - centres.to(torch.float64)[None, :, :]
    return (0.5 * (diff * diff).sum(-1)).to(torch.float32)


def log_vmf_normaliser(log_kappa: Tensor) -> Tensor:
    """``log κ - log 2π - log(1 - e^{-2κ})`` (the log of κ / (4π sinh κ) · e^κ), stable for all κ > 0."""
    log_kappa = log_kappa.float()
    kappa = log_kappa.exp()
    return log_kappa - LOG_2PI - torch.log(-torch.expm1(-2.0 * kappa))


def log_vmf(hcs: Tensor, log_kappa: Tensor) -> Tensor:
    """Log-density of each vMF component at each point.

    Args:
        hcs: (B, K) ``1 - cos`` from :func:`half_chord_sq`.
        log_kappa: (K,) log-concentrations.

    Returns:
        float32 (B, K), log-density per steradian.
    """
    log_kappa = log_kappa.float()
    return log_vmf_normaliser(log_kappa)[None, :] - log_kappa.exp()[None, :] * hcs.float()


def mvmf_log_density(logits: Tensor, log_kappa: Tensor, hcs: Tensor) -> Tensor:
    """Log-density of the mixture at each point: ``logsumexp_k(log_softmax(logits) + log f_k)``.

    Args:
        logits: (B, K) mixture logits (one row per image).
        log_kappa: (K,) log-concentrations.
        hcs: (B, K) ``1 - cos`` between the point of row b and centre k.

    Returns:
        float32 (B,).
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_w = torch.log_softmax(logits.float(), dim=-1)
        return torch.logsumexp(log_w + log_vmf(hcs, log_kappa), dim=-1)


def mvmf_nll(logits: Tensor, log_kappa: Tensor, x: Tensor, centres: Tensor) -> Tensor:
    """Per-row negative log-likelihood of the true locations under the predicted mixtures.

    Args:
        logits: (B, K) mixture logits.
        log_kappa: (K,) log-concentrations (already clamped).
        x: (B, 3) true locations as unit vectors (float64 recommended).
        centres: (K, 3) centre unit vectors.

    Returns:
        float32 (B,) NLL in nats per steradian (a uniform density on the sphere scores log 4π ≈ 2.53).
    """
    return -mvmf_log_density(logits, log_kappa, half_chord_sq(x, centres))


def candidate_log_density(
    logits: Tensor,
    log_kappa: Tensor,
    centres: Tensor,
    candidates: Tensor,
    *,
    chunk: int = 4096,
) -> Tensor:
    """Mixture log-density of every row's mixture at a shared set of candidate points.

    Args:
        logits: (B, K). log_kappa: (K,). centres: (K, 3).
        candidates: (P, 3) unit vectors.
        chunk: candidates per block (memory is B x chunk x K floats).

    Returns:
        float32 (B, P).
    """
    log_w = torch.log_softmax(logits.float(), dim=-1)  # (B, K)
    outs = []
    for s in range(0, candidates.shape[0], chunk):
        lv = log_vmf(half_chord_sq(candidates[s : s + chunk], centres), log_kappa)  # (p, K)
        outs.append(torch.logsumexp(log_w[:, None, :] + lv[None, :, :], dim=-1))
    return torch.cat(outs, dim=1)


@dataclass
class Modes:
    """Top-k modes of each row's mixture.

    Attributes:
        lat, lon: (B, k) degrees.
        prob: (B, k) share of the mixture weight whose centre is closest to this mode among the k.
        log_density: (B, k) mixture log-density at the mode (per steradian).
    """

    lat: np.ndarray
    lon: np.ndarray
    prob: np.ndarray
    log_density: np.ndarray


@dataclass(frozen=True)
class ModeSearch:
    """How :func:`mixture_modes` looks for modes.

    Attributes:
        top_components: candidates are the centres of a row's this many heaviest components...
        per_component: ...plus up to this many extra candidates owned by each of them.
        density_components: the density at a candidate sums this many heaviest components (the
            rest carry negligible weight in a trained head; with K <= it the density is exact).
        min_separation_km: each mode at least this far from those before (non-maximum
            suppression).
        chunk: rows per batch of the search (memory).
    """

    top_components: int = 16
    per_component: int = 8
    density_components: int = 48
    min_separation_km: float = 25.0
    chunk: int = 256


@torch.no_grad()
def mixture_modes(
    logits: Tensor,
    log_kappa: Tensor,
    centres: Tensor,
    *,
    extra_candidates: Tensor | None = None,
    extra_owner: Tensor | None = None,
    top_k: int = 5,
    search: ModeSearch | None = None,
) -> Modes:
    """Point predictions: arg-max of the mixture density over candidate points, plus runners-up.

    Candidates of a row are the centres of its heaviest components plus the ``extra_candidates``
    (e.g. training locations) owned by them; modes are picked greedily by density, apart from
    each other (see :class:`ModeSearch`).

    Args:
        logits: (B, K). log_kappa: (K,). centres: (K, 3).
        extra_candidates: (P, 3) unit vectors, optional.
        extra_owner: (P,) int64 index of the centre each extra candidate belongs to.
        top_k: modes per row.
        search: :class:`ModeSearch` (default: its defaults).

    Returns:
        :class:`Modes` with arrays of shape (B, top_k) (NaN / 0 where fewer modes exist).
    """
    ms = search or ModeSearch()
    chunk = ms.chunk
    b, k = logits.shape
    m_cand = min(ms.top_components, k)
    m_dens = max(min(ms.density_components, k), m_cand)
    centres64 = centres.to(torch.float64)
    log_norm = log_vmf_normaliser(log_kappa)
    kappa = log_kappa.float().exp()
    table = _owner_table(extra_candidates, extra_owner, k, ms.per_component)
    extra64 = None if extra_candidates is None else extra_candidates.to(torch.float64)
    out = Modes(
        lat=np.full((b, top_k), np.nan),
        lon=np.full((b, top_k), np.nan),
        prob=np.zeros((b, top_k)),
        log_density=np.full((b, top_k), -np.inf),
    )
    cos_sep = math.cos(ms.min_separation_km / EARTH_RADIUS_KM)
    for s in range(0, b, chunk):
        log_w = torch.log_softmax(logits[s : s + chunk].float(), dim=-1)
        r = log_w.shape[0]
        top_w, top = torch.topk(log_w, m_dens, dim=-1)  # (r, M)
        cand_comp = top[:, :m_cand]
        cand = [centres64[cand_comp]]  # (r, m, 3)
        valid = [torch.ones(r, m_cand, dtype=torch.bool, device=logits.device)]
        if table is not None and extra64 is not None:
            idx = table[cand_comp].reshape(r, -1)  # (r, m * G), -1 = padding
            cand.append(extra64[idx.clamp(min=0)])
            valid.append(idx >= 0)
        pts = torch.cat(cand, dim=1)  # (r, P, 3)
        ok = torch.cat(valid, dim=1)
        mu = centres64[top]  # (r, M, 3)
        # 1 - cos in float64 resolves ~0.1 m, enough here; training uses the chord form instead
        hcs = (1.0 - torch.bmm(pts, mu.transpose(1, 2))).clamp(min=0.0).float()  # (r, P, M)
        lv = log_norm[top][:, None, :] - kappa[top][:, None, :] * hcs
        dens = torch.logsumexp(top_w[:, None, :] + lv, dim=-1).masked_fill(~ok, float("-inf"))
        chosen = torch.zeros(r, top_k, 3, dtype=torch.float64, device=logits.device)
        chosen_d = torch.full((r, top_k), float("-inf"), device=logits.device)
        live = dens.clone()
        for j in range(top_k):
            best_d, best = live.max(dim=1)
            sel = pts[torch.arange(r), best]  # (r, 3)
            chosen[:, j], chosen_d[:, j] = sel, best_d
            near = (pts @ sel[:, :, None]).squeeze(-1) > cos_sep
            live = live.masked_fill(near, float("-inf"))
        found = torch.isfinite(chosen_d)
        # share of the heaviest components' weight closest to each chosen mode
        sim = (mu @ chosen.transpose(1, 2)).masked_fill(~found[:, None, :], -2.0)  # (r, M, k)
        owner = sim.argmax(dim=-1)
        prob = torch.zeros(r, top_k, dtype=torch.float64, device=logits.device)
        prob.scatter_add_(1, owner, top_w.exp().to(torch.float64))
        lat, lon = unit_to_latlon(chosen.reshape(-1, 3).cpu().numpy())
        f = found.cpu().numpy()
        out.lat[s : s + r] = np.where(f, lat.reshape(r, top_k), np.nan)
        out.lon[s : s + r] = np.where(f, lon.reshape(r, top_k), np.nan)
        out.prob[s : s + r] = np.where(f, prob.cpu().numpy(), 0.0)
        out.log_density[s : s + r] = chosen_d.cpu().numpy()
    return out


@dataclass
class Regions:
    """Probability mass around each mode and the highest-density regions of each row's mixture.

    Attributes:
        mass: (B, k) share of the mixture closer to this mode than to the other modes (sums to 1
            over a row's found modes).
        radius_km: (B, k, L) radius around the mode holding ``levels[l]`` of its mass.
        hpd_log_density: (B, L) log-density threshold of the highest-density region holding
            ``levels[l]`` of the mixture (a point is inside when its density is at least this).
        levels: the L levels, e.g. ``(0.5, 0.9)``.
    """

    mass: np.ndarray
    radius_km: np.ndarray
    hpd_log_density: np.ndarray
    levels: tuple[float, ...]


def vmf_quasi_samples(mu: Tensor, kappa: Tensor, n: int) -> Tensor:
    """``n`` deterministic, evenly spread samples of each vMF (stratified inverse CDF).

    The angle from the mean follows the exact vMF law on S² (``1 - cos θ = -log(u + (1-u)
    e^{-2κ}) / κ`` at ``u = (i + ½) / n``); the azimuth turns by the golden angle.

    Args:
        mu: (..., 3) float64 unit mean directions. kappa: (...) concentrations.
        n: samples per component.

    Returns:
        float64 (..., n, 3) unit vectors.
    """
    mu = mu.to(torch.float64)
    kap = kappa.to(torch.float64)[..., None]
    u = (torch.arange(n, dtype=torch.float64, device=mu.device) + 0.5) / n
    log_term = torch.logaddexp(torch.log(u), torch.log1p(-u) - 2.0 * kap)
    t = (-log_term / kap).clamp(0.0, 2.0)  # 1 - cos θ, (..., n)
    sin_t = torch.sqrt((t * (2.0 - t)).clamp(min=0.0))
    phi = (
        2.0
        * math.pi
        * torch.frac(torch.arange(n, dtype=torch.float64, device=mu.device) * 0.6180339887498949)
    )
    # tangent basis at mu: any axis not parallel to mu
    axis = torch.zeros_like(mu)
    axis[..., 2] = 1.0
    near_pole = mu[..., 2].abs() > 0.9
    axis[near_pole] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=mu.device)
    e1 = torch.linalg.cross(mu, axis)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(mu, e1)
    x = (
        (1.0 - t)[..., None] * mu[..., None, :]
        + (sin_t * torch.cos(phi))[..., None] * e1[..., None, :]
        + (sin_t * torch.sin(phi))[..., None] * e2[..., None, :]
    )
    return x / x.norm(dim=-1, keepdim=True)


def _weighted_quantile(values: Tensor, weights: Tensor, q: float) -> Tensor:
    """Per-row weighted quantile of (R, N) values (weights need not be normalised); NaN if none."""
    order = torch.argsort(values, dim=1)
    v = torch.gather(values, 1, order)
    w = torch.gather(weights, 1, order)
    cum = torch.cumsum(w, dim=1)
    total = cum[:, -1:]
    idx = torch.searchsorted(cum, (q * total).contiguous()).clamp(max=values.shape[1] - 1)
    out = torch.gather(v, 1, idx).squeeze(1)
    return torch.where(total.squeeze(1) > 0, out, torch.full_like(out, float("nan")))


@torch.no_grad()
def mixture_regions(
    logits: Tensor,
    log_kappa: Tensor,
    centres: Tensor,
    mode_lat: np.ndarray,
    mode_lon: np.ndarray,
    *,
    levels: tuple[float, ...] = (0.5, 0.9),
    components: int = 24,
    samples: int = 16,
    chunk: int = 128,
) -> Regions:
    """Mass and radii around given modes, and the highest-density-region (HPD) thresholds.

    The mixture of a row is represented by ``samples`` quasi-random points per component of its
    ``components`` heaviest components (weights renormalised over them), each point weighted by
    its component's weight / ``samples``. A mode's mass is the weight of the points closer to it
    than to any other mode; its radius at level ``l`` is the weighted ``l``-quantile of their
    distances to it. The HPD threshold at level ``l`` is the density above which the points hold
    ``l`` of the weight (the density of a location inside the region is at least that).

    Args:
        logits: (B, K). log_kappa: (K,). centres: (K, 3).
        mode_lat, mode_lon: (B, k) degrees (NaN = no mode).
        levels: probability levels in (0, 1).

    Returns:
        :class:`Regions`.
    """
    b, k = logits.shape
    top_k = mode_lat.shape[1]
    m = min(components, k)
    centres64 = centres.to(torch.float64)
    log_norm = log_vmf_normaliser(log_kappa).to(torch.float64)
    kappa = log_kappa.to(torch.float64).exp()
    n_lv = len(levels)
    mass = np.zeros((b, top_k))
    radius = np.full((b, top_k, n_lv), np.nan)
    hpd = np.full((b, n_lv), np.nan)
    modes_all = torch.from_numpy(
        latlon_to_unit(np.nan_to_num(mode_lat), np.nan_to_num(mode_lon)).reshape(b, top_k, 3)
    ).to(logits.device, torch.float64)
    found_all = torch.from_numpy(np.isfinite(mode_lat)).to(logits.device)
    for s in range(0, b, chunk):
        log_w = torch.log_softmax(logits[s : s + chunk].double(), dim=-1)
        r = log_w.shape[0]
        top_w, top = torch.topk(log_w, m, dim=-1)  # (r, M)
        top_w = top_w - torch.logsumexp(top_w, dim=-1, keepdim=True)
        mu = centres64[top]  # (r, M, 3)
        pts = vmf_quasi_samples(mu, kappa[top], samples).reshape(r, m * samples, 3)
        wts = (top_w.exp() / samples).repeat_interleave(samples, dim=1)  # (r, N)
        # mixture log-density at every sample point (the same M components)
        hcs = (1.0 - torch.bmm(pts, mu.transpose(1, 2))).clamp(min=0.0)  # (r, N, M)
        dens = torch.logsumexp(
            top_w[:, None, :] + log_norm[top][:, None, :] - kappa[top][:, None, :] * hcs, dim=-1
        )
        for j, lv in enumerate(levels):
            # the region {f >= t} holding lv of the weight: t = the (1 - lv) quantile of f
            hpd[s : s + r, j] = _weighted_quantile(dens, wts, 1.0 - lv).cpu().numpy()
        modes = modes_all[s : s + r]
        found = found_all[s : s + r]
        sim = torch.bmm(pts, modes.transpose(1, 2)).masked_fill(~found[:, None, :], -3.0)
        owner = sim.argmax(dim=-1)  # (r, N)
        chord = (pts - torch.gather(modes, 1, owner[..., None].expand(-1, -1, 3))).norm(dim=-1)
        dist_km = 2.0 * EARTH_RADIUS_KM * torch.asin((chord / 2.0).clamp(max=1.0))
        for j in range(top_k):
            wj = torch.where(owner == j, wts, torch.zeros_like(wts))
            mass[s : s + r, j] = wj.sum(dim=1).cpu().numpy()
            for li, lv in enumerate(levels):
                radius[s : s + r, j, li] = _weighted_quantile(dist_km, wj, lv).cpu().numpy()
        f = found.cpu().numpy()
        mass[s : s + r] = np.where(f, mass[s : s + r], 0.0)
        radius[s : s + r] = np.where(f[..., None], radius[s : s + r], np.nan)
    return Regions(mass=mass, radius_km=radius, hpd_log_density=hpd, levels=tuple(levels))


@torch.no_grad()
def log_density_at(
    logits: Tensor, log_kappa: Tensor, centres: Tensor, x: Tensor, *, components: int = 24
) -> Tensor:
    """Each row's mixture log-density at its own point ``x[b]``, over the same ``components``
    heaviest components (renormalised) as :func:`mixture_regions`, so the two compare.

    Args:
        logits: (B, K). log_kappa: (K,). centres: (K, 3). x: (B, 3) unit vectors.

    Returns:
        float64 (B,).
    """
    m = min(components, logits.shape[1])
    log_w = torch.log_softmax(logits.double(), dim=-1)
    top_w, top = torch.topk(log_w, m, dim=-1)
    top_w = top_w - torch.logsumexp(top_w, dim=-1, keepdim=True)
    mu = centres.to(torch.float64)[top]  # (B, M, 3)
    diff = x.to(torch.float64)[:, None, :] - mu
    hcs = 0.5 * (diff * diff).sum(-1)
    kappa = log_kappa.to(torch.float64).exp()[top]
    log_norm = log_vmf_normaliser(log_kappa).to(torch.float64)[top]
    return torch.logsumexp(top_w + log_norm - kappa * hcs, dim=-1)


def _owner_table(
    extra: Tensor | None, owner: Tensor | None, k: int, per_component: int
) -> Tensor | None:
    """(K, G) indices of up to G extra candidates per centre, evenly spread over its members;
    -1 pads. ``None`` when there are no extra candidates."""
    if extra is None or owner is None or len(extra) == 0 or per_component <= 0:
        return None
    own = owner.cpu().numpy()
    order = np.argsort(own, kind="stable")
    bounds = np.searchsorted(own[order], np.arange(k + 1))
    table = np.full((k, per_component), -1, dtype=np.int64)
    for c in range(k):
        members = order[bounds[c] : bounds[c + 1]]
        if members.size > per_component:
            members = members[np.linspace(0, members.size - 1, per_component).astype(np.int64)]
        table[c, : members.size] = members
    return torch.from_numpy(table).to(owner.device)


# ---- centres --------------------------------------------------------------------------------


def spherical_kmeans(
    xyz: np.ndarray, k: int, *, iters: int = 25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means on unit vectors with k-means++ seeding; centroid = normalised mean.

    Args:
        xyz: (N, 3) unit vectors.
        k: number of clusters (capped at N).
        iters: Lloyd iterations (stops early when assignments no longer change).
        seed: RNG seed.

    Returns:
        ``(centres (k, 3) float64, assignment (N,) int64)``.
    """
    x = np.asarray(xyz, dtype=np.float64)
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centres = x[kmeans_plus_plus_indices(x, k, rng)]
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(iters):
        new = nearest_by_dot(x, centres)
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros((k, 3))
        np.add.at(sums, assign, x)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms < 1e-12
        centres[~empty] = sums[~empty] / norms[~empty, None]
        if empty.any():  # re-seed empty clusters at the points farthest from their centres
            far = np.argsort(np.einsum("ij,ij->i", x, centres[assign]))[: int(empty.sum())]
            centres[np.flatnonzero(empty)] = x[far]
    return centres, nearest_by_dot(x, centres)


def nearest_by_dot(x: np.ndarray, centres: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the row of ``centres`` (K, D) with the largest dot product, for each row of
    ``x`` (N, D), computed ``chunk`` rows of ``x`` at a time; int64 (N,)."""
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), chunk):
        out[s : s + chunk] = np.argmax(x[s : s + chunk] @ centres.T, axis=1)
    return out


def kappa_from_spread(
    xyz: np.ndarray,
    assign: np.ndarray,
    centres: np.ndarray,
    *,
    log_kappa_min: float,
    log_kappa_max: float,
    prior_log_kappa: float = 8.0,
    prior_weight: float = 3.0,
) -> np.ndarray:
    """Initial log κ per centre from its members' spread.

    The large-κ vMF estimate on S² is κ ≈ 1 / (1 - R̄), with R̄ the mean resultant length of the
    members. Small clusters are shrunk toward ``prior_log_kappa`` (weight ``prior_weight``
    pseudo-members, in log space), κ is raised so that σ = 1/√κ is at most half the angle to the
    nearest other centre, and the result is clamped to ``[log_kappa_min, log_kappa_max]``.

    Args:
        xyz: (N, 3) unit vectors. assign: (N,) cluster of each. centres: (K, 3).

    Returns:
        float64 (K,) log κ.
    """
    k = len(centres)
    counts = np.bincount(assign, minlength=k).astype(np.float64)
    sums = np.zeros((k, 3))
    np.add.at(sums, assign, xyz)
    rbar = np.linalg.norm(sums, axis=1) / np.maximum(counts, 1.0)
    one_minus = np.maximum(1.0 - rbar, 1e-12)
    log_k = -np.log(one_minus)
    log_k = np.where(counts > 1, log_k, log_kappa_max)
    log_k = (counts * log_k + prior_weight * prior_log_kappa) / (counts + prior_weight)
    if k > 1:
        gram = centres @ centres.T
        np.fill_diagonal(gram, -1.0)
        nn_angle = np.arccos(np.clip(gram.max(axis=1), -1.0, 1.0))
        floor = -2.0 * np.log(np.maximum(0.5 * nn_angle, 1e-9))  # κ ≥ 1 / (θ_nn / 2)²
        log_k = np.maximum(log_k, floor)
    return np.clip(log_k, log_kappa_min, log_kappa_max)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` near-uniform points on the sphere (golden-angle spiral).

    Returns:
        float64 (n, 3) unit vectors.
    """
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def background_centres(
    n_land: int,
    data_centres: np.ndarray,
    *,
    min_distance_km: float = 100.0,
    land_fraction: float = 0.29,
) -> np.ndarray:
    """About ``n_land`` lattice points on land, none within ``min_distance_km`` of a data centre.

    Gives images from regions without training data a finite, broad density. Land is any pixel of
    the Köppen-Geiger raster that is not water.

    Args:
        n_land: wanted number on land (the lattice has ``n_land / land_fraction`` points).
        data_centres: (K, 3) unit vectors.

    Returns:
        float64 (M, 3) unit vectors, M about ``n_land`` minus those near data.
    """
    from sbe.geo.koppen import is_land

    if n_land <= 0:
        return np.zeros((0, 3))
    lattice = fibonacci_sphere(max(1, round(n_land / land_fraction)))
    lat, lon = unit_to_latlon(lattice)
    pts = lattice[is_land(lat, lon)]
    if len(data_centres) and len(pts):
        cos_min = math.cos(min_distance_km / EARTH_RADIUS_KM)
        near = (pts @ np.asarray(data_centres, dtype=np.float64).T).max(axis=1) > cos_min
        pts = pts[~near]
    return pts


def dedup_locations(
    lat_deg: np.ndarray, lon_deg: np.ndarray, grid_m: float = 100.0
) -> tuple[np.ndarray, np.ndarray]:
    """Unique locations after snapping to a ~``grid_m`` grid, so dense streets do not dominate.

    Returns:
        ``(unit vectors (U, 3) of the unique snapped cells' mean positions, counts (U,))``.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    step = grid_m / (EARTH_RADIUS_KM * 1000.0) * 180.0 / math.pi  # degrees of latitude
    key = np.stack(
        [np.floor(lat / step), np.floor(lon * np.cos(np.radians(lat)) / step)], axis=1
    ).astype(np.int64)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    xyz = latlon_to_unit(lat, lon)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse.ravel(), xyz)
    return sums / np.linalg.norm(sums, axis=1, keepdims=True), counts


@dataclass
class CentreSet:
    """Fixed MvMF centres and their initial log κ.

    Attributes:
        xyz: (K, 3) float64 unit vectors; the first ``num_data`` are data centres.
        log_kappa: (K,) float64 initial log κ.
        num_data: number of data (k-means) centres.
    """

    xyz: np.ndarray
    log_kappa: np.ndarray
    num_data: int


def build_centres(
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    settings: GeoSettings | None = None,
    *,
    k_min: int = 16,
    k_max: int = 4096,
) -> CentreSet:
    """Data centres (spherical k-means on deduplicated coordinates) plus background land centres.

    Args:
        lat_deg, lon_deg: training coordinates (N,).
        settings: ``centres_per_sample`` (``K_data = clamp(round(unique / centres_per_sample),
            k_min, k_max)``, capped at the number of unique locations), ``background_centres``
            (wanted on land; 0 = none), ``background_log_kappa`` (their log κ; 6.5 ≈ σ 250 km),
            ``log_kappa_min`` / ``log_kappa_max`` (the clamp of every log κ) and ``seed``.

    Returns:
        :class:`CentreSet`.
    """
    s = settings or GeoSettings()
    lo, hi = s.log_kappa_min, s.log_kappa_max
    uniq, _counts = dedup_locations(lat_deg, lon_deg)
    k = int(np.clip(round(len(uniq) / s.centres_per_sample), k_min, k_max))
    centres, assign = spherical_kmeans(uniq, k, seed=s.seed)
    log_k = kappa_from_spread(uniq, assign, centres, log_kappa_min=lo, log_kappa_max=hi)
    bg = background_centres(s.background_centres, centres)
    bg_log_k = np.full(len(bg), np.clip(s.background_log_kappa, lo, hi))
    return CentreSet(
        xyz=np.concatenate([centres, bg]),
        log_kappa=np.concatenate([log_k, bg_log_k]),
        num_data=len(centres),
    )
