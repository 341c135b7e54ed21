"""The config sections of the model stages: ``[train]``, ``[evaluate]``, ``[verify]``, ``[tune]``,
``[geo]`` (one pydantic model each)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import (
    Field,
    model_validator,
)

from sbe.config.base import RUNTIME, Device, Section


# Typed default factories (a bare lambda infers list[str], which the fields reject).
def _default_losses() -> list[Literal["triplet", "multi_similarity", "supcon"]]:
    return ["triplet", "multi_similarity", "supcon"]


def _default_curricula() -> list[Literal["none", "bands"]]:
    return ["none", "bands"]


class TrainConfig(Section):
    """Fit the projection head on split/train, select it on split/val, test once."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe train --in work/split --neighbors work/neighbors --out work/run",
        "sbe train --in work/split --out work/run --loss triplet --epochs 10",
    )

    _path_fields = ("input", "neighbors", "output")
    input: Path = Path("split")
    neighbors: Path | None = Field(
        Path("neighbors"),
        description="neighbours folder (for the bands curriculum); none = not used",
    )
    output: Path = Path("run")
    # projection head
    output_dim: int = Field(256, ge=2, description="embedding size the head outputs")
    hidden_dim: int = Field(1024, ge=2, description="width of the MLP hidden layers")
    num_hidden_layers: int = Field(1, ge=0, description="MLP hidden layers (0 = a linear head)")
    activation: Literal["gelu", "relu", "silu"] = Field("gelu", description="MLP activation")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the MLP")
    layer_norm: bool = Field(True, description="layer norm before the MLP")
    residual: bool = Field(True, description="add a linear residual path beside the MLP")
    residual_init: Literal["random", "pca", "whitening"] = Field(
        "whitening",
        description="residual path starts as this projection (MLP output at zero): "
        "supervised whitening, PCA, or random",
    )
    whitening_shrinkage: float = Field(0.1, ge=0, description="whitening regulariser")
    residual_lr_scale: float = Field(
        1.0, ge=0, description="learning rate of the residual path relative to lr; 0 = frozen"
    )
    # loss and sampling
    loss: Literal["triplet", "multi_similarity", "supcon"] = Field(
        "supcon", description="metric-learning loss"
    )
    margin: float = Field(0.45, ge=0, description="triplet loss margin")
    distance: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="distance of the triplet loss"
    )
    ms_alpha: float = Field(2.0, gt=0, description="multi-similarity: positive scale")
    ms_beta: float = Field(50.0, gt=0, description="multi-similarity: negative scale")
    ms_base: float = Field(0.5, ge=-1, le=1, description="multi-similarity: similarity offset")
    ms_epsilon: float = Field(0.1, ge=0, description="multi-similarity: mining margin")
    temperature: float = Field(0.1, gt=0, description="supervised contrastive temperature")
    identities_per_batch: int = Field(64, ge=2, description="P: identities in each batch")
    images_per_identity: int = Field(4, ge=2, description="K: images of each identity in a batch")
    curriculum: Literal["none", "bands"] = Field(
        "none",
        description="negatives: none = random batches, bands = hard negatives from visual-neighbour bands (UCB)",
    )
    ucb_exploration: float = Field(
        0.05, ge=0, description="UCB bonus scale, in reward units (share of informative triplets)"
    )
    ucb_warmup_steps: int = Field(50, ge=0, description="steps of uniform band choice before UCB")
    # optimisation
    epochs: int = Field(30, ge=1, description="most epochs (early stopping may end sooner)")
    steps_per_epoch: int = Field(
        0, ge=0, description="0 = one pass over the train images, at least min_steps_per_epoch"
    )
    min_steps_per_epoch: int = Field(50, ge=1, description="fewest steps in an epoch")
    lr: float = Field(1e-5, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps before the cosine decay")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    amp: bool = Field(True, description="bfloat16 autocast; used on GPU only")
    patience: int = Field(5, ge=0, description="epochs without val improvement; 0 = never stop")
    val_queries: int = Field(
        2000, ge=1, description="val queries scored each epoch (seeded sample)"
    )
    log_every: int = Field(
        50,
        ge=1,
        description="steps between step records in metrics.jsonl",
        json_schema_extra=RUNTIME,
    )
    geo_weight: float = Field(
        0.0, ge=0, description="weight of geo heads trained jointly on the output; 0 = off"
    )
    device: Device = Field(
        "auto",
        json_schema_extra=RUNTIME,
        description="where training runs; auto = CUDA when available",
    )
    seed: int = Field(0, description="random seed (weights, batches)")
    resume: bool = Field(
        False,
        json_schema_extra=RUNTIME,
        description="continue the run in --out from its last checkpoint (changed settings are "
        "refused); a killed run resumes without it",
    )


class EvaluateConfig(Section):
    """Image-to-image retrieval of a trained run, backbone vs projector.

    Also: the calibrated "same building?" decision, re-ranking by local features (``--rerank``)
    and the standard place-recognition evaluation (``--vpr``); see docs/verify.md.
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe evaluate --run work/run",
        "sbe evaluate --run work/run --landmarks ../shared/data/landmarks-mini",
        "sbe evaluate --run work/run --rerank --rerank-queries 20",
        "sbe evaluate --run work/run --vpr data/vpr-test --model work/model --rerank",
    )

    _path_fields = ("run", "landmarks", "images", "vpr", "model")
    run: Path = Field(Path("run"), description="training run folder")
    split: Literal["train", "val", "test"] = Field("test", description="which split to score")
    ks: list[int] = Field(
        default_factory=lambda: [1, 5, 10, 100], description="Recall@k reported for these k"
    )
    landmarks: Path | None = Field(
        None, description="real-photo folder (labels.csv); none = auto-detect"
    )
    calibrate: bool = Field(
        True,
        description="fit the 'same building?' threshold on val pairs ([verify] target_precision)"
        " and check it on test (calibration.json)",
    )
    calibration_pairs: int = Field(
        2_000_000, ge=100, description="pairs per split at most (a seeded uniform sample beyond)"
    )
    rerank: bool = Field(
        False,
        description="re-rank the global top-k by verified local matches ([verify]) on the "
        "landmarks check, a sample of split queries and --vpr (CPU: ~20 s per query)",
    )
    rerank_queries: int = Field(100, ge=1, description="split queries re-ranked (a seeded sample)")
    images: Path | None = Field(
        None,
        description="ingest output holding the split's photos (--rerank); none = found "
        "through the split's manifests",
    )
    vpr: Path | None = Field(
        None, description="VPR folder (database/, queries/): Recall@1/5/10/20 of the model"
    )
    model: Path | None = Field(
        None, description="published model folder embedding the --vpr images (default: the run)"
    )
    seed: int = Field(0, description="seed of the pair and query samples")
    device: Device = Field("auto", json_schema_extra=RUNTIME, description="where the head runs")


class VerifyConfig(Section):
    """Local-feature verification (DISK + LightGlue + RANSAC), shared by every re-ranking:
    ``index build --local-features``, ``search --rerank``, ``evaluate --rerank`` and ``serve``."""

    max_keypoints: int = Field(256, ge=16, description="DISK keypoints kept per image")
    max_side: int = Field(320, ge=64, description="longer image side before extraction, px")
    ransac: Literal["none", "fundamental", "homography"] = Field(
        "fundamental", description="geometric check of the matches"
    )
    ransac_px: float = Field(3.0, gt=0, description="RANSAC inlier threshold, px")
    combine: Literal["matches", "verified", "sum"] = Field(
        "verified", description="how verified matches and the global similarity are combined"
    )
    min_matches: int = Field(
        15, ge=0, description="verified: fewer verified matches than this count as not verified"
    )
    rerank_k: int = Field(10, ge=1, description="candidates re-ranked per query")
    target_precision: float = Field(
        0.95, gt=0, lt=1, description="precision the same-building decision is calibrated for"
    )


class TuneConfig(Section):
    """Optuna search over the projector's head, loss and sampler settings of ``[train]``."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe tune --in work/split --neighbors work/neighbors --out work/tune --trials 20",
    )

    _path_fields = ("input", "neighbors", "output")
    input: Path = Path("split")
    neighbors: Path | None = Field(
        Path("neighbors"), description="neighbours folder (for the bands curriculum)"
    )
    output: Path = Path("tune")
    trials: int = Field(20, ge=1, description="trials run by this worker")
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite in output")
    study_name: str = Field("sbe-train", description="Optuna study (shared by workers)")
    epochs: int = Field(8, ge=1, description="epochs per trial")
    seed: int = Field(0, description="sampler seed")
    losses: list[Literal["triplet", "multi_similarity", "supcon"]] = Field(
        default_factory=_default_losses,
        description="losses tried",
    )
    curricula: list[Literal["none", "bands"]] = Field(
        default_factory=_default_curricula, description="curricula tried"
    )
    pruner_warmup_epochs: int = Field(2, ge=0, description="epochs before a trial can be pruned")
    device: Device = Field("auto", json_schema_extra=RUNTIME, description="where trials train")


class GeoConfig(Section):
    """Train the geo heads on frozen embeddings, evaluate them beside baselines, predict."""

    examples: ClassVar[tuple[str, ...]] = ("sbe geo train --in work/split --out work/geo",)

    _path_fields = ("input", "run", "output")
    input: Path = Path("split")
    run: Path | None = Field(
        None, description="training run whose projector feeds the heads; none = backbone embeddings"
    )
    output: Path = Path("geo")
    hidden_dim: int = Field(512, ge=8, description="width of the shared trunk")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the trunk")
    background_centres: int = Field(
        800, ge=0, description="evenly spread MvMF centres besides the data centres"
    )
    centres_per_sample: int = Field(10, ge=1, description="K_data = unique locations / this")
    log_kappa_min: float = Field(4.0, description="smallest log concentration of a centre")
    log_kappa_max: float = Field(16.0, description="largest log concentration of a centre")
    background_log_kappa: float = Field(
        6.5, description="log concentration of the background centres"
    )
    gallery_max: int = Field(20_000, ge=0, description="training locations kept as candidates")
    coastal_fallback_px: int = Field(
        5, ge=0, le=20, description="climate lookup: search this many raster pixels for land"
    )
    location_weight: float = Field(1.0, ge=0, description="weight of the location loss")
    climate_weight: float = Field(0.5, ge=0, description="weight of the climate loss")
    season_weight: float = Field(0.25, ge=0, description="weight of the season loss")
    season_loss: Literal["von_mises", "cosine"] = Field(
        "von_mises", description="season loss on the circle"
    )
    season_hemisphere: bool = Field(
        True, description="season head predicts the local season, shifted 6 months in the south"
    )
    label_smoothing: float = Field(0.05, ge=0, lt=1, description="climate label smoothing")
    epochs: int = Field(40, ge=1, description="most epochs (early stopping may end sooner)")
    batch_size: int = Field(512, ge=1, description="rows per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    patience: int = Field(8, ge=0, description="epochs without val improvement; 0 = never stop")
    select_on: Literal["loss", "median_km"] = Field(
        "loss", description="val figure that picks the best epoch"
    )
    device: Device = Field("auto", json_schema_extra=RUNTIME, description="where training runs")
    threads: int = Field(
        1,
        ge=0,
        description="CPU threads for the heads; 0 = torch default",
        json_schema_extra=RUNTIME,
    )
    seed: int = Field(0, description="random seed")

    @model_validator(mode="after")
    def _check_kappa(self) -> Self:
        if self.log_kappa_min >= self.log_kappa_max:
            raise ValueError("log_kappa_min must be below log_kappa_max")
        return self
