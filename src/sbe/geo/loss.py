"""The geo loss: weighted MvMF location NLL + hierarchical climate CE + circular season loss.

Usable on its own by any training loop (e.g. joint training with the projector):

    heads = GeoHeads(config)                       # sbe.geo.heads
    criterion = GeoLoss(GeoSettings(location_weight=1.0, climate_weight=0.5, season_weight=0.25))
    loss, parts = criterion(heads(embeddings), labels[batch_index])  # labels: GeoLabels
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sbe.geo.heads import GeoOutputs, coarse_log_probs
from sbe.geo.labels import GeoLabels
from sbe.geo.mvmf import mvmf_nll
from sbe.geo.season import (
    cosine_loss,
    hemisphere_cosine_loss,
    hemisphere_von_mises_nll,
    von_mises_nll,
)
from sbe.geo.settings import GeoSettings


def climate_loss(
    fine_logits: Tensor,
    fine: Tensor,
    coarse: Tensor,
    coarse_of_fine: Tensor,
    *,
    label_smoothing: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Hierarchical climate loss per row: ``(fine CE, coarse NLL)``, each float32 (B,).

    The fine CE uses label smoothing; the coarse log-probability of a group is the logsumexp of
    its members' fine log-probabilities, so both terms come from one distribution.
    """
    logits = fine_logits.float()
    ce_fine = nn.functional.cross_entropy(
        logits, fine, label_smoothing=label_smoothing, reduction="none"
    )
    log_pc = coarse_log_probs(logits, coarse_of_fine)
    nll_coarse = -log_pc.gather(1, coarse[:, None]).squeeze(1)
    return ce_fine, nll_coarse


class GeoLoss(nn.Module):
    """``w_loc · MvMF NLL + w_kg · (½ CE_fine + ½ CE_coarse) + w_season · season loss``.

    The season term averages over rows with a date only (0 when a batch has none). All terms are
    computed in float32 outside autocast.

    Args:
        settings: ``location_weight``, ``climate_weight``, ``season_weight`` (the loss weights),
            ``season_loss`` (``"von_mises"``: NLL with a learned concentration, or ``"cosine"``)
            and ``label_smoothing`` (of the fine climate CE); the rest of
            :class:`~sbe.geo.settings.GeoSettings` is not read here.
    """

    def __init__(self, settings: GeoSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or GeoSettings()

    def forward(self, out: GeoOutputs, labels: GeoLabels) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean loss over the batch and its detached parts.

        Returns:
            ``(loss, parts)`` with parts ``location``, ``climate_fine``, ``climate_coarse``,
            ``climate``, ``season`` (scalar tensors, detached).
        """
        labels = labels.to(out.location_logits.device)
        with torch.autocast(device_type=out.location_logits.device.type, enabled=False):
            loc = mvmf_nll(out.location_logits, out.log_kappa, labels.xyz, out.centres).mean()
            coarse_of_fine = _coarse_map(out.climate_logits)
            ce_f, ce_c = climate_loss(
                out.climate_logits,
                labels.fine,
                labels.coarse,
                coarse_of_fine,
                label_smoothing=self.settings.label_smoothing,
            )
            kg = 0.5 * ce_f.mean() + 0.5 * ce_c.mean()
            per_row = self._season(out, labels.season_theta)
            mask = labels.has_date.to(per_row.dtype)
            season = (per_row * mask).sum() / mask.sum().clamp(min=1.0)
            w = self.settings
            total = w.location_weight * loc + w.climate_weight * kg + w.season_weight * season
        parts = {
            "location": loc.detach(),
            "climate_fine": ce_f.mean().detach(),
            "climate_coarse": ce_c.mean().detach(),
            "climate": kg.detach(),
            "season": season.detach(),
        }
        return total, parts

    def _season(self, out: GeoOutputs, theta: Tensor) -> Tensor:
        vm = self.settings.season_loss == "von_mises"
        if out.hemisphere is None:
            return (von_mises_nll if vm else cosine_loss)(out.season, theta)
        fn = hemisphere_von_mises_nll if vm else hemisphere_cosine_loss
        return fn(out.season, theta, out.hemisphere)


def _coarse_map(fine_logits: Tensor) -> Tensor:
    from sbe.geo.koppen import COARSE_OF_FINE

    return torch.as_tensor(COARSE_OF_FINE[: fine_logits.shape[1]], device=fine_logits.device)
