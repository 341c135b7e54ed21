"""The config sections of the data stages, ``[synth]`` to ``[neighbors]`` (one pydantic model each).

The model stages are in :mod:`sbe.config.model_sections`, the serving ones in
:mod:`sbe.config.serving_sections`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import (
    Field,
    model_validator,
)

from sbe.config.base import (
    HASHED_WHEN_SET,
    PRECISION_HELP,
    RUNTIME,
    Device,
    Engine,
    Precision,
    Section,
)


# Typed default factories (a bare lambda infers list[int]/list[str], which the fields reject).
# The percentiles stay ints: they are dumped as-is into the config hash, so 5.0 would change it.
def _default_band_percentiles() -> list[float]:
    return [5, 10, 20, 40, 60, 85]


class SynthConfig(Section):
    """Write a synthetic street-view world in the raw 3D Street View format (see docs/synth.md)."""

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

    ``<output>/<tar stem>.parquet`` per tar; a photo folder in parts of
    ``<folder name>-<first row>.parquet``.
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

    Ingest parts + building footprints -> the same parts with targets filled: each photo with a
    position and a heading gets the first footprint its heading ray hits; the others are counted
    by reason and left out.
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
    """Ingest parts + their tars -> <out>/<tar stem>-<first row>.parquet embeddings."""

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
    image_size: int = Field(
        0,
        ge=0,
        description="input side in px: short-side resize and centre crop (0 = the model's own; "
        "EfficientNet-Lite >= 32; hf: the processor's resize scaled to it)",
        json_schema_extra=HASHED_WHEN_SET,
    )
    gem_p: float = Field(
        3.0,
        ge=1.0,
        description="GeM exponent when pooling = gem (1 = mean)",
        json_schema_extra=HASHED_WHEN_SET,
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
