"""One pydantic model per stage: the sections of the config file, ``[synth]`` to ``[report]``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from sbe.config.base import PRECISION_HELP, RUNTIME, Device, Engine, Precision, Section


# Typed default factories (a bare lambda infers list[int]/list[str], which the fields reject).
# The percentiles stay ints: they are dumped as-is into the config hash, so 5.0 would change it.
def _default_band_percentiles() -> list[float]:
    return [5, 10, 20, 40, 60, 85]


def _default_losses() -> list[Literal["triplet", "multi_similarity", "supcon"]]:
    return ["triplet", "multi_similarity", "supcon"]


def _default_curricula() -> list[Literal["none", "bands"]]:
    return ["none", "bands"]


class SynthConfig(Section):
    """Write a synthetic street-view world in the raw 3D Street View format.

    The synthetic street-view world (see docs/synth.md).
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe synth --out work/raw --buildings 300",
        "sbe synth --out work/raw --buildings 40 --preview",
    )

    _path_fields = ("output", "packaged")
    output: Path = Path("raw")
    buildings: int = Field(300, ge=1, description="buildings that carry targets")
    seed: int = Field(0, description="random seed: the same seed writes the same bytes")
    image_size: int = Field(640, ge=64, le=2048, description="image side in pixels")
    difficulty: float = Field(
        0.5, ge=0.0, le=1.0, description="0 = easy views, 1 = hard (viewpoint, light, occlusion)"
    )
    buildings_per_tar: int = Field(12, ge=1, description="target buildings per map region (tar)")
    packaged: Path | None = Field(None, description="also write this packaged_images.parquet")
    packaged_buildings: int = Field(50, ge=1, description="new buildings in the packaged parquet")
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of the images")
    preview: bool = Field(False, description="write preview.png (a contact sheet)")
    footprints: bool = Field(
        True, description="also write footprints.parquet: every building's polygon (GeoParquet)"
    )
    mapillary: bool = Field(
        True, description="also write mapillary.geojson: noisy positions and compass angles"
    )
    gps_noise_m: float = Field(
        1.5, ge=0, description="mapillary.geojson: position error (std dev per axis), metres"
    )
    compass_noise_deg: float = Field(
        3.0, ge=0, description="mapillary.geojson: compass error (std dev), degrees"
    )
    places: Literal["cities10", "world"] = Field(
        "world",
        description="cities10 = ten hand-made cities; world = n_places gazetteer towns and cities",
    )
    n_places: int = Field(
        300, ge=1, description="places of the gazetteer world (towns and cities of every size)"
    )
    workers: int = Field(
        0, ge=0, description="processes; 0 = one per core", json_schema_extra=RUNTIME
    )


class IngestConfig(Section):
    """Photos (3D Street View tars, image folders, WebDataset, Mapillary) -> an images table.

    Raw tars (or folders of tars) -> ``<output>/<tar stem>.parquet``.
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe ingest --in work/raw --out work/images",
        "sbe ingest --in photos --out work/images --id-column building_id",
        "sbe ingest --in shards --out work/images --format webdataset",
    )

    _path_fields = ("inputs", "output")
    inputs: list[Path] = Field(default_factory=lambda: [Path("raw")], min_length=1)
    output: Path = Path("images")
    workers: int = Field(
        0, ge=0, description="processes, one tar each; 0 = one per core", json_schema_extra=RUNTIME
    )
    decode_threads: int = Field(
        0,
        ge=0,
        description="JPEG decode threads per tar; 0 = cores / processes",
        json_schema_extra=RUNTIME,
    )
    normal_tolerance: float = Field(
        1e-2, gt=0, lt=1, description="largest accepted | |surface normal| - 1 | in a d line"
    )
    format: Literal["auto", "3dsv", "imagefolder", "webdataset", "mapillary"] = Field(
        "auto", description="input format; auto = detected from what the inputs hold"
    )
    id_column: str | None = Field(
        None, description="metadata column of the building id; default building_id/OSMID/osm_id"
    )
    engine: Engine = Field(
        "local", description="local processes, or Ray tasks", json_schema_extra=RUNTIME
    )


class LabelConfig(Section):
    """Give photos a building identity from footprints (see docs/footprints.md).

    Ingest parts + building footprints -> the same parts with targets filled.

    Each photo with a position and a heading gets the first footprint its heading ray hits (see
    docs/footprints.md); the others are counted by reason and left out.
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe label --in work/images --footprints buildings.parquet --out work/labelled",
        "sbe label --in work/images --footprints osm.geojson --footprint-id-column id --metadata mapillary.geojson --out work/labelled",
    )

    _path_fields = ("input", "footprints", "metadata", "output")
    input: Path = Path("images")
    footprints: Path = Field(
        Path("footprints.parquet"), description="building polygons: GeoParquet or GeoJSON, WGS84"
    )
    footprint_id_column: str = Field("osm_id", description="the footprints' building id column")
    footprint_licence: str | None = Field(
        None,
        description="data licence of the footprints for the model card; None = ODbL when the "
        "ids look like OpenStreetMap or Overture ids",
    )
    metadata: Path | None = Field(
        None,
        description="Mapillary-style GeoJSON whose positions and compass angles replace the "
        "ingest table's (matched by image id)",
    )
    prefer_computed: bool = Field(
        True, description="metadata: use computed_geometry/computed_compass_angle when present"
    )
    output: Path = Path("labelled")
    max_distance_m: float = Field(60.0, gt=0, description="longest camera-to-facade ray, metres")
    fov_tolerance_deg: float = Field(
        10.0, ge=0, le=90, description="when the central ray misses, try rays turned up to this"
    )
    fov_step_deg: float = Field(2.0, gt=0, le=45, description="spacing of those rays, degrees")
    chunk_rows: int = Field(
        32_768, ge=1, description="photos per vectorised batch", json_schema_extra=RUNTIME
    )


class BackboneConfig(Section):
    """Ingest parts + their tars -> <out>/<tar stem>-<first row>.parquet embeddings.

    Ingest parts + tars -> ``<output>/<tar stem>-<first row>.parquet``.
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe backbone --in work/images --out work/backbone",
        "sbe backbone --in work/images --out work/backbone --model hf:facebook/dinov2-small --device cuda",
    )

    _path_fields = ("input", "output")
    input: Path = Path("images")
    output: Path = Path("backbone")
    model: str = Field(
        "efficientnet-lite0",
        description="efficientnet-lite0, efficientnet-lite2 or hf:<id or path>",
    )
    pooling: Literal["auto", "cls", "pooler", "mean", "gem"] = Field(
        "auto",
        description="how token or feature maps become one vector; auto = the model's usual pooling",
    )
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto = ONNX Runtime on CPU, torch on GPU"
    )
    device: Device = Field(
        "auto",
        json_schema_extra=RUNTIME,
        description="where the model runs; auto = CUDA when available",
    )
    batch_size: int = Field(0, ge=0, description="0 = automatic", json_schema_extra=RUNTIME)
    dtype: Literal["float16", "float32"] = Field(
        "float16", description="stored embedding precision"
    )
    decode_workers: int = Field(
        0,
        ge=0,
        description="JPEG decoders: threads, or processes on a GPU; 0 = automatic",
        json_schema_extra=RUNTIME,
    )
    threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime threads; 0 = every available core",
        json_schema_extra=RUNTIME,
    )
    part_rows: int = Field(
        8192, ge=1, description="rows per output part (a kill loses at most one part)"
    )
    precision: Precision = Field("fp32", description=PRECISION_HELP)
    calibration_images: int = Field(
        128, ge=1, le=4096, description="int8: images drawn (seeded) from the input to calibrate"
    )
    engine: Engine = Field(
        "local",
        json_schema_extra=RUNTIME,
        description="local processes, or Ray tasks (a cluster, GPUs when present)",
    )


class SplitConfig(Section):
    """Merge backbone parts into train/val/test by building and by geography."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe split --in work/backbone --out work/split --cell-size-m 500",
    )

    _path_fields = ("input", "output")
    input: Path = Path("backbone")
    output: Path = Path("split")
    identity: Literal["auto", "building", "target"] = Field(
        "auto",
        description="what counts as one identity: a building (nearby targets grouped) or each "
        "target; auto = target when `sbe label` gave each photo its footprint, else building",
    )
    group_radius_m: float = Field(
        15.0, gt=0, description="targets closer than this (metres) on one building are one identity"
    )
    normal_max_angle_deg: float = Field(
        30.0,
        gt=0,
        le=180,
        description="targets grouped only if their facade normals differ by less than this",
    )
    cell_size_m: float = Field(
        500.0,
        gt=0,
        description="side of the geographic cells (metres) that go whole into one split",
    )
    train_ratio: float = Field(0.7, ge=0, le=1, description="share of cells in train")
    val_ratio: float = Field(0.15, ge=0, le=1, description="share of cells in val")
    test_ratio: float = Field(0.15, ge=0, le=1, description="share of cells in test")
    salt: str = Field("sbe", description="changing it draws a different, equally stable split")
    singletons_in_test: bool = Field(
        True, description="keep single-image identities of test cells as gallery distractors"
    )

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> Self:
        total = self.train_ratio + self.val_ratio + self.test_ratio
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train_ratio + val_ratio + test_ratio must be 1, got {total:g}")
        return self


class NeighborsConfig(Section):
    """Visual neighbours of other identities and their difficulty bands, per split."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe neighbors --in work/split --out work/neighbors --k 150",
    )

    _path_fields = ("input", "output")
    input: Path = Path("split")
    output: Path = Path("neighbors")
    space: Literal["fingerprint", "embedding"] = Field(
        "fingerprint",
        description="search neighbours in the thumbnail fingerprints or the backbone embeddings",
    )
    pca_components: int = Field(32, ge=0, description="0 = no PCA (search the raw features)")
    k: int = Field(150, ge=1, description="neighbours kept per image")
    k0_local_scale: int = Field(
        50, ge=1, description="rank of the neighbour setting the local scale (capped at k)"
    )
    band_percentiles: list[float] = Field(
        default_factory=_default_band_percentiles,
        description="distance percentiles (train-calibrated) that bound the difficulty bands",
    )
    calibration_fraction: float = Field(
        0.03, gt=0, le=1, description="share of train anchors used to calibrate the bands"
    )
    calibration_min_anchors: int = Field(
        10_000, ge=1, description="at least this many calibration anchors"
    )
    pca_fit_sample: int = Field(200_000, ge=100, description="rows used to fit the PCA")
    exact_max_rows: int = Field(100_000, ge=1, description="above this, an approximate index")
    ann_target_recall: float = Field(
        0.97, gt=0, le=1, description="approximate index: nprobe is raised until this recall"
    )
    ann_nlist: int = Field(0, ge=0, description="approximate index lists; 0 = about 4 sqrt(N)")
    threads: int = Field(
        0, ge=0, description="faiss threads; 0 = every available core", json_schema_extra=RUNTIME
    )
    seed: int = Field(0, description="random seed (sampling, PCA, index training)")

    @model_validator(mode="after")
    def _check(self) -> Self:
        p = list(self.band_percentiles)
        if not p or any(p[i + 1] <= p[i] for i in range(len(p) - 1)):
            raise ValueError("band_percentiles must be non-empty and strictly increasing")
        if p[0] <= 0 or p[-1] >= 100:
            raise ValueError("band_percentiles must lie strictly between 0 and 100")
        return self


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
    """Optuna search over the projector's head, loss and sampler settings.

    Optuna search over the head, loss and sampler settings of ``[train]``.
    """

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


class PublishConfig(Section):
    """A training run (+ optional geo heads) -> a Hugging Face model folder."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe publish --run work/run --geo work/geo --out work/model",
    )

    _path_fields = ("run", "geo", "output")
    run: Path = Field(Path("run"), description="training run to publish")
    geo: Path | None = Field(None, description="geo stage output whose heads ship with the model")
    output: Path = Path("model")
    bundle_backbone: bool = Field(False, description="copy the backbone weights into the folder")
    force: bool = Field(
        False, description="publish even when the head is below the raw backbone on validation"
    )


class EmbedConfig(Section):
    """New images -> per-image embeddings from a published model."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe embed --in packaged_images.parquet --model work/model --out work/embeddings",
        "sbe embed --in photos --model work/model --out work/embeddings --id-column building_id",
        "sbe embed --in list.csv --model work/model --out work/embeddings --keep-columns city",
        "sbe embed --in shards --model work/model --out work/embeddings --format webdataset",
    )

    _path_fields = ("input", "output", "model")
    input: Path = Path("packaged_images.parquet")
    output: Path = Path("embeddings")
    model: Path = Field(Path("model"), description="published model folder")
    limit: int | None = Field(None, ge=0, description="embed only the first N selected rows")
    filter_valid: bool = Field(True, description="skip rows whose is_valid is False")
    batch_size: int = Field(
        0, ge=0, description="images per forward pass; 0 = automatic", json_schema_extra=RUNTIME
    )
    chunk_rows: int = Field(1000, ge=1, description="input rows per output part")
    decode_workers: int = Field(
        0, ge=0, description="decoding threads; 0 = one per core", json_schema_extra=RUNTIME
    )
    device: Device = Field(
        "auto",
        json_schema_extra=RUNTIME,
        description="where the model runs; auto = CUDA when available",
    )
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="backbone runtime; auto = ONNX Runtime on CPU, torch on GPU"
    )
    precision: Precision = Field("fp32", description=PRECISION_HELP)
    calibration_images: int = Field(
        128, ge=1, le=4096, description="int8: images drawn (seeded) from the input to calibrate"
    )
    engine: Engine = Field("local", json_schema_extra=RUNTIME, description="local, or Ray actors")
    ray_workers: int = Field(
        2, ge=1, description="Ray actors, one model each", json_schema_extra=RUNTIME
    )
    ray_gpus_per_worker: float | None = Field(
        None,
        ge=0,
        description="None = 1 when the cluster has GPUs, else 0",
        json_schema_extra=RUNTIME,
    )
    shard_index: int = Field(0, ge=0, description="this job's shard (SLURM arrays)")
    shard_count: int = Field(1, ge=1, description="chunks are dealt round-robin to shards")
    shard: str | None = Field(
        None,
        pattern=r"^\d+/\d+$",
        json_schema_extra=RUNTIME,
        description="K/N: shard_index K of shard_count N (SLURM arrays)",
    )
    format: Literal["auto", "packaged", "imagefolder", "webdataset", "mapillary"] = Field(
        "auto",
        description="input format: a packaged parquet (image_bytes + OSMID), an image folder or "
        "CSV/JSONL list of paths, WebDataset shards, a Mapillary download; auto = detected",
    )
    id_column: str | None = Field(
        None,
        description="key of each image in a folder/list/WebDataset input (stored as OSMID); "
        "default building_id/OSMID/osm_id, else the sub-folder, else the image's path",
    )
    keep_columns: list[str] = Field(
        default_factory=list,
        description="metadata columns of a folder/list/WebDataset input copied to sources.parquet",
    )

    @model_validator(mode="after")
    def _check_shard(self) -> Self:
        if self.shard is not None:
            k, n = (int(v) for v in self.shard.split("/"))
            self.__dict__.update(shard_index=k, shard_count=n, shard=None)
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} must be < shard_count")
        return self


class AggregateConfig(Section):
    """Per-image embeddings -> one vector per building (OSMID)."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe aggregate --in work/embeddings --out work/buildings",
        "sbe aggregate --in work/embeddings --out work/buildings --locations osm.parquet",
    )

    _path_fields = ("input", "output", "locations")
    input: list[Path] = Field(
        default_factory=lambda: [Path("embeddings")],
        description="embed output folder(s); several = shards of one run",
    )
    output: Path = Path("buildings")
    locations: Path | None = Field(None, description="parquet with OSMID, lat, lon")

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str | Path) else v


class IndexConfig(Section):
    """A faiss index + side table over any embeddings dataset."""

    examples: ClassVar[tuple[str, ...]] = ("sbe index build --in work/buildings --out work/index",)

    _path_fields = ("input", "output", "model")
    input: Path = Path("buildings")
    output: Path = Path("index")
    kind: Literal["auto", "exact", "hnsw"] = Field(
        "auto", description="exact (flat) or HNSW; auto = exact up to exact_max_rows"
    )
    exact_max_rows: int = Field(100_000, ge=1, description="auto: above this, an HNSW index")
    hnsw_m: int = Field(32, ge=4, description="HNSW links per node")
    ef_construction: int = Field(80, ge=8, description="HNSW build breadth")
    ef_search: int = Field(64, ge=8, description="HNSW search breadth")
    id_column: str | None = Field(None, description="None = OSMID, else building_id, else image_id")
    embedding_column: str = Field("embedding", description="column holding the vectors")
    metadata_columns: list[str] | None = Field(None, description="None = location + known ids")
    model: Path | None = Field(None, description="published model that made the vectors")
    local_features: bool = Field(
        False,
        description="also store DISK local features of each row's photos (for search --rerank; "
        "[verify] max_keypoints/max_side)",
    )
    local_features_per_row: int = Field(
        3, ge=1, description="photos per indexed row whose local features are stored"
    )
    batch_rows: int = Field(
        65_536, ge=1, description="rows read per batch", json_schema_extra=RUNTIME
    )


class ClusterConfig(Section):
    """K-means or HDBSCAN over building (or image) vectors."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe cluster --in work/buildings --out work/clusters --k 12",
    )

    _path_fields = ("input", "output")
    input: Path = Path("buildings")
    output: Path = Path("clusters")
    method: Literal["kmeans", "hdbscan"] = Field(
        "kmeans", description="k-means (k clusters) or HDBSCAN (density, with noise)"
    )
    k: int = Field(12, ge=2, description="k-means clusters")
    niter: int = Field(25, ge=1, description="k-means iterations")
    restarts: int = Field(3, ge=1, description="k-means: k-means++ runs, best kept")
    min_cluster_size: int = Field(5, ge=2, description="HDBSCAN: smallest cluster")
    min_samples: int | None = Field(
        None, ge=1, description="HDBSCAN: neighbourhood size; none = min_cluster_size"
    )
    pca_components: int = Field(32, ge=0, description="HDBSCAN: reduce to this first; 0 = off")
    hdbscan_max_rows: int = Field(
        200_000, ge=1, description="refuse HDBSCAN above this many vectors"
    )
    id_column: str | None = Field(
        None, description="id column; none = OSMID, else building_id, else image_id"
    )
    embedding_column: str = Field("embedding", description="column holding the vectors")
    metadata_columns: list[str] | None = Field(
        None, description="columns carried to the output; none = location + known ids"
    )
    seed: int = Field(0, description="random seed")


class ReportConfig(Section):
    """One self-contained HTML page over the outputs of the other stages.

    One self-contained HTML page over the other stages' outputs.

    Every input is optional: a missing one turns its section into a "not available" note."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe report --workdir work",
        "sbe report --run work/run --out work/report",
    )

    _path_fields = (
        "raw",
        "images",
        "backbone",
        "split",
        "neighbors",
        "run",
        "geo",
        "model",
        "embeddings",
        "buildings",
        "clusters",
        "index",
        "landmarks",
        "output",
    )
    raw: Path | None = Field(Path("raw"), description="synth output (world, preview.png)")
    images: Path = Field(Path("images"), description="ingest output (tar offsets)")
    backbone: Path = Field(Path("backbone"), description="backbone stage output")
    split: Path = Field(Path("split"), description="split stage output")
    neighbors: Path = Field(Path("neighbors"), description="neighbors stage output")
    run: Path = Field(Path("run"), description="training run (best/, metrics.jsonl, evaluate/)")
    geo: Path = Field(Path("geo"), description="geo stage output")
    model: Path = Field(Path("model"), description="published model folder")
    embeddings: Path = Field(Path("embeddings"), description="embed output (state.json)")
    buildings: Path = Field(Path("buildings"), description="aggregate stage output")
    clusters: Path = Field(Path("clusters"), description="cluster stage output")
    index: Path = Field(Path("index"), description="index stage output")
    landmarks: Path | None = Field(
        None, description="real-photo folder; None = the one evaluate used, else auto-detect"
    )
    output: Path = Path("report")
    gallery_queries: int = Field(8, ge=1, description="test queries in the retrieval gallery")
    gallery_k: int = Field(5, ge=1, le=20, description="results shown per query")
    cluster_samples: int = Field(4, ge=1, le=20, description="most central buildings per cluster")
    max_clusters: int = Field(24, ge=1, description="clusters shown with samples")
    map_points: int = Field(600, ge=1, description="test images drawn on the world map, at most")
    thumb_px: int = Field(112, ge=32, le=512, description="thumbnail size (longest side), pixels")
    jpeg_quality: int = Field(80, ge=30, le=95, description="thumbnail JPEG quality")
    seed: int = Field(0, description="draws the gallery queries and the map sample")
