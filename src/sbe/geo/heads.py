"""Geo heads on frozen embeddings: a shared MLP trunk, an MvMF location head, a hierarchical
Köppen-Geiger climate head and a circular season head.

Saved like an HF model: ``config.json`` (:class:`GeoHeadsConfig`) + ``model.safetensors`` (weights,
the fixed MvMF centres and the gallery of training locations used as prediction candidates).

Example:
    >>> heads = GeoHeads(GeoHeadsConfig(in_dim=256, num_centres=300, num_data_centres=100))
    >>> out = heads(torch.randn(8, 256))
    >>> out.location_logits.shape, out.climate_logits.shape, out.season.shape
    (torch.Size([8, 300]), torch.Size([8, 31]), torch.Size([8, 3]))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sbe.geo.koppen import COARSE_OF_FINE, NUM_COARSE, NUM_FINE
from sbe.geo.mvmf import Modes, Regions, log_density_at, mixture_modes, mixture_regions
from sbe.geo.season import predicted_doy, season_params
from sbe.settings import Record
from sbe.storage import atomic_path, write_json_atomic

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class GeoHeadsConfig(Record):
    """Shape and meaning of a :class:`GeoHeads` (JSON-serialisable).

    Attributes:
        in_dim: embedding size the heads read.
        hidden_dim: trunk width.
        dropout: trunk dropout.
        num_centres: MvMF components (data + background centres).
        num_data_centres: the first this many centres come from training data (k-means).
        num_gallery: training locations kept as extra prediction candidates.
        log_kappa_min, log_kappa_max: clamp of the learned log-concentrations.
        num_fine, num_coarse: climate classes (31 Phileo/Beck classes incl. water; 6 groups).
        season_hemisphere: read the season head as the *local* season and shift it by half a
            year where the location head puts the image in the southern hemisphere.
        season_readout: add a fixed linear read-out of the embedding to the season head's
            direction (``season_readout_w`` (D, 2), ``season_readout_b`` (2,): a ridge regression
            of the local season's (cos, sin) fit in closed form by
            :func:`sbe.geo.season.fit_season_readout`; zero until :meth:`GeoHeads.set_season_readout`).
            Heads saved before this field existed have none.
        season_south_min: P(south) above which the predicted date is the local season shifted
            by half a year (fit on the validation split by the ``geo`` stage,
            :func:`sbe.geo.season.fit_south_min`; 0.5 = the likelier hemisphere).
        input_space: ``"backbone"`` (L2-normalised backbone embeddings) or ``"projector"``.
        backbone: identity of the backbone that made the embeddings (to embed new images).
        extra: free-form provenance (split dir, run dir, ...).
        spread_log_scale: added to every log κ when the heads report their spread (mode radii,
            highest-density regions; not the point predictions): fit on the validation split so
            that the 90 % region holds about 90 % of the true places (0 = as trained).
    """

    in_dim: int
    hidden_dim: int = 512
    dropout: float = 0.1
    num_centres: int = 1
    num_data_centres: int = 1
    num_gallery: int = 0
    log_kappa_min: float = 4.0
    log_kappa_max: float = 16.0
    num_fine: int = NUM_FINE
    num_coarse: int = NUM_COARSE
    season_hemisphere: bool = True
    season_readout: bool = False
    season_south_min: float = 0.5
    input_space: str = "backbone"
    backbone: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    spread_log_scale: float = 0.0


@dataclass
class GeoOutputs:
    """What :meth:`GeoHeads.forward` returns for a batch of B embeddings.

    Attributes:
        location_logits: (B, K) MvMF mixture logits.
        log_kappa: (K,) clamped log-concentrations.
        centres: (K, 3) float64 fixed centre unit vectors.
        climate_logits: (B, 31) fine Köppen-Geiger logits.
        season: (B, 3) season head output (direction a, b and raw concentration).
        hemisphere: (B, 2) log P(north), log P(south) from the location head's mixture weights
            (detached: the season loss does not train the location head), or ``None`` when the
            season head is not hemisphere-aware.
    """

    location_logits: Tensor
    log_kappa: Tensor
    centres: Tensor
    climate_logits: Tensor
    season: Tensor
    hemisphere: Tensor | None = None


@dataclass
class GeoPrediction:
    """Decoded predictions for B rows (numpy).

    Attributes:
        modes: top-k locations (:class:`sbe.geo.mvmf.Modes`, arrays (B, k)).
        fine: (B,) predicted fine climate class. fine_prob: (B,) its probability.
        coarse: (B,) predicted coarse group. coarse_prob: (B,) its probability.
        doy: (B,) predicted 0-based day of year. season_kappa: (B,) its von Mises concentration.
        regions: mass and 50 %/90 % radii of the modes, HPD thresholds (``regions=True``).
        inside: (B, L) the true location lies in the HPD region of each level (``truth_xyz``).
    """

    modes: Modes
    fine: np.ndarray
    fine_prob: np.ndarray
    coarse: np.ndarray
    coarse_prob: np.ndarray
    doy: np.ndarray
    season_kappa: np.ndarray
    regions: Regions | None = None
    inside: np.ndarray | None = None


def coarse_log_probs(fine_logits: Tensor, coarse_of_fine: Tensor) -> Tensor:
    """Coarse-group log-probabilities: logsumexp of each group's fine log-softmax.

    Args:
        fine_logits: (B, F). coarse_of_fine: (F,) int64 group of each fine class.

    Returns:
        float32 (B, G) with G = max group + 1.
    """
    log_p = torch.log_softmax(fine_logits.float(), dim=-1)
    groups = int(coarse_of_fine.max()) + 1
    mask = torch.nn.functional.one_hot(coarse_of_fine, groups).T.bool()  # (G, F)
    masked = log_p[:, None, :].masked_fill(~mask[None], float("-inf"))
    return torch.logsumexp(masked, dim=-1)


class GeoHeads(nn.Module):
    """Shared trunk + location (MvMF), climate (31 fine / 6 coarse) and season heads."""

    # registered buffers (declared so type checkers see tensors, not ``Tensor | Module``)
    centres: Tensor
    gallery: Tensor
    gallery_owner: Tensor
    coarse_of_fine: Tensor
    season_readout_w: Tensor
    season_readout_b: Tensor

    def __init__(self, config: GeoHeadsConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.trunk = nn.Sequential(
            nn.LayerNorm(c.in_dim),
            nn.Linear(c.in_dim, c.hidden_dim),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden_dim, c.hidden_dim),
            nn.GELU(),
        )
        self.location = nn.Linear(c.hidden_dim, c.num_centres)
        self.climate = nn.Linear(c.hidden_dim, c.num_fine)
        self.season = nn.Linear(c.hidden_dim, 3)
        self.log_kappa = nn.Parameter(torch.full((c.num_centres,), 8.0))
        self.register_buffer("centres", _default_centres(c.num_centres))
        self.register_buffer("gallery", torch.zeros(c.num_gallery, 3, dtype=torch.float64))
        self.register_buffer("gallery_owner", torch.zeros(c.num_gallery, dtype=torch.int64))
        self.register_buffer("coarse_of_fine", torch.as_tensor(COARSE_OF_FINE[: c.num_fine]))
        if c.season_readout:
            self.register_buffer("season_readout_w", torch.zeros(c.in_dim, 2))
            self.register_buffer("season_readout_b", torch.zeros(2))

    # -- setup ------------------------------------------------------------------------------

    @torch.no_grad()
    def set_centres(self, xyz: np.ndarray, log_kappa: np.ndarray) -> None:
        """Install fixed centres (K, 3) and initial log κ (K,) (K must match the config)."""
        if xyz.shape != (self.config.num_centres, 3):
            raise ValueError(f"expected {self.config.num_centres} centres, got {xyz.shape}")
        self.centres.copy_(torch.as_tensor(xyz, dtype=torch.float64))
        lo, hi = self.config.log_kappa_min, self.config.log_kappa_max
        self.log_kappa.copy_(torch.as_tensor(log_kappa, dtype=torch.float32).clamp(lo, hi))

    @torch.no_grad()
    def set_gallery(self, xyz: np.ndarray) -> None:
        """Install training locations (P, 3) as extra prediction candidates, each owned by its
        nearest centre (P must match the config)."""
        if xyz.shape != (self.config.num_gallery, 3):
            raise ValueError(f"expected {self.config.num_gallery} gallery points, got {xyz.shape}")
        g = torch.as_tensor(xyz, dtype=torch.float64)
        self.gallery.copy_(g)
        if len(g):
            self.gallery_owner.copy_(torch.argmax(g @ self.centres.T, dim=1))

    @torch.no_grad()
    def set_season_readout(self, w: np.ndarray, b: np.ndarray) -> None:
        """Install the fixed season read-out: (D, 2) weights and (2,) bias mapping an embedding to
        the (cos, sin) of its local season (:func:`sbe.geo.season.fit_season_readout`)."""
        if not self.config.season_readout:
            raise ValueError("these heads have no season read-out (season_readout=False)")
        self.season_readout_w.copy_(torch.as_tensor(w, dtype=torch.float32))
        self.season_readout_b.copy_(torch.as_tensor(b, dtype=torch.float32))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the log-concentrations inside their range (call after each optimiser step)."""
        self.log_kappa.clamp_(self.config.log_kappa_min, self.config.log_kappa_max)

    # -- forward ----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> GeoOutputs:
        """Run the heads.

        Args:
            x: (B, in_dim) embeddings (as the heads were trained on: L2-normalised backbone
                embeddings or projector outputs).
        """
        h = self.trunk(x.float())
        lo, hi = self.config.log_kappa_min, self.config.log_kappa_max
        logits = self.location(h)
        season = self.season(h)
        if self.config.season_readout:
            # the direction comes from the closed-form read-out, the concentration from the trunk
            direct = x.float() @ self.season_readout_w + self.season_readout_b
            season = torch.cat([direct, season[:, 2:]], dim=1)
        return GeoOutputs(
            location_logits=logits,
            log_kappa=self.log_kappa.clamp(lo, hi),
            centres=self.centres,
            climate_logits=self.climate(h),
            season=season,
            hemisphere=self.hemisphere_log_probs(logits) if self.config.season_hemisphere else None,
        )

    def hemisphere_log_probs(self, location_logits: Tensor) -> Tensor:
        """(B, 2) log P(north), log P(south): the mixture weight of centres on each side."""
        log_w = torch.log_softmax(location_logits.detach().float(), dim=-1)
        south = (self.centres[:, 2] < 0)[None, :]
        neg_inf = float("-inf")
        return torch.stack(
            [
                torch.logsumexp(log_w.masked_fill(south, neg_inf), dim=-1),
                torch.logsumexp(log_w.masked_fill(~south, neg_inf), dim=-1),
            ],
            dim=1,
        )

    @torch.no_grad()
    def predict(
        self,
        x: Tensor,
        *,
        top_k: int = 5,
        use_gallery: bool = True,
        batch_size: int = 1024,
        regions: bool = False,
        truth_xyz: Tensor | None = None,
        levels: tuple[float, ...] = (0.5, 0.9),
    ) -> GeoPrediction:
        """Decode predictions for (B, in_dim) embeddings (eval mode, no grad, batched).

        Args:
            x: (B, in_dim) features.
            top_k: modes per row.
            regions: also compute each mode's mass and radii and the HPD thresholds
                (:func:`~sbe.geo.mvmf.mixture_regions`, at ``levels``).
            truth_xyz: (B, 3) true locations: also tell whether each lies inside the
                highest-density region of each level (implies ``regions``).
        """
        was_training = self.training
        self.eval()
        parts: list[GeoPrediction] = []
        want = regions or truth_xyz is not None
        try:
            for s in range(0, x.shape[0], batch_size):
                truth = truth_xyz[s : s + batch_size] if truth_xyz is not None else None
                parts.append(
                    self._predict_batch(
                        x[s : s + batch_size], top_k, use_gallery, want, truth, levels
                    )
                )
        finally:
            self.train(was_training)
        return _concat_predictions(parts, top_k)

    @torch.no_grad()
    def _predict_batch(
        self,
        x: Tensor,
        top_k: int,
        use_gallery: bool,
        want_regions: bool = False,
        truth_xyz: Tensor | None = None,
        levels: tuple[float, ...] = (0.5, 0.9),
    ) -> GeoPrediction:
        out = self(x)
        gallery = self.gallery if use_gallery and len(self.gallery) else None
        modes = mixture_modes(
            out.location_logits,
            out.log_kappa,
            out.centres,
            extra_candidates=gallery,
            extra_owner=self.gallery_owner if gallery is not None else None,
            top_k=top_k,
        )
        p_fine = torch.softmax(out.climate_logits.float(), dim=-1)
        p_coarse = coarse_log_probs(out.climate_logits, self.coarse_of_fine).exp()
        fine_prob, fine = p_fine.max(dim=-1)
        coarse_prob, coarse = p_coarse.max(dim=-1)
        _, kappa = season_params(out.season)
        reg, inside = None, None
        spread_lk = out.log_kappa + self.config.spread_log_scale
        if want_regions:
            reg = mixture_regions(
                out.location_logits, spread_lk, out.centres, modes.lat, modes.lon, levels=levels
            )
        if truth_xyz is not None and reg is not None:
            at = log_density_at(out.location_logits, spread_lk, out.centres, truth_xyz.to(x.device))
            inside = at.cpu().numpy()[:, None] >= reg.hpd_log_density
        return GeoPrediction(
            regions=reg,
            inside=inside,
            modes=modes,
            fine=fine.cpu().numpy(),
            fine_prob=fine_prob.cpu().numpy(),
            coarse=coarse.cpu().numpy(),
            coarse_prob=coarse_prob.cpu().numpy(),
            doy=predicted_doy(out.season, out.hemisphere, self.config.season_south_min),
            season_kappa=kappa.cpu().numpy(),
        )

    # -- persistence ------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        write_json_atomic(directory / CONFIG_NAME, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> GeoHeads:
        """Load heads saved by :meth:`save_pretrained`."""
        directory = Path(directory)
        cfg_path = directory / CONFIG_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no geo heads in {directory} (missing {CONFIG_NAME})")
        config = GeoHeadsConfig.from_dict(json.loads(cfg_path.read_text()))
        model = cls(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.to(device).eval()


def _default_centres(k: int) -> Tensor:
    from sbe.geo.mvmf import fibonacci_sphere

    return torch.as_tensor(fibonacci_sphere(k), dtype=torch.float64)


def _concat_predictions(parts: list[GeoPrediction], top_k: int) -> GeoPrediction:
    if not parts:
        empty = np.zeros((0, top_k))
        e1 = np.zeros(0)
        return GeoPrediction(Modes(empty, empty, empty, empty), e1, e1, e1, e1, e1, e1)

    def cat(get: Any) -> np.ndarray:
        return np.concatenate([get(p) for p in parts])

    regions = None
    if all(p.regions is not None for p in parts):
        regions = Regions(
            mass=cat(lambda p: p.regions.mass),
            radius_km=cat(lambda p: p.regions.radius_km),
            hpd_log_density=cat(lambda p: p.regions.hpd_log_density),
            levels=parts[0].regions.levels,  # type: ignore[union-attr]
        )
    inside = None
    if all(p.inside is not None for p in parts):
        inside = cat(lambda p: p.inside)
    modes = Modes(
        lat=cat(lambda p: p.modes.lat),
        lon=cat(lambda p: p.modes.lon),
        prob=cat(lambda p: p.modes.prob),
        log_density=cat(lambda p: p.modes.log_density),
    )
    return GeoPrediction(
        modes=modes,
        fine=cat(lambda p: p.fine),
        fine_prob=cat(lambda p: p.fine_prob),
        coarse=cat(lambda p: p.coarse),
        coarse_prob=cat(lambda p: p.coarse_prob),
        doy=cat(lambda p: p.doy),
        season_kappa=cat(lambda p: p.season_kappa),
        regions=regions,
        inside=inside,
    )
