"""The config sections of the serving stages: ``[publish]`` to ``[report]`` (one pydantic model
each)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    Field,
    field_validator,
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

    @model_validator(mode="before")
    @classmethod
    def _split_shard(cls, data: Any) -> Any:
        """``shard = "K/N"`` becomes ``shard_index`` K and ``shard_count`` N (validated as such)."""
        if isinstance(data, dict) and isinstance(shard := data.get("shard"), str):
            if re.fullmatch(r"\d+/\d+", shard.strip()) is None:
                raise ValueError(f"shard must be K/N (e.g. 2/8), got {shard!r}")
            k, n = shard.strip().split("/")
            data = {**data, "shard_index": int(k), "shard_count": int(n), "shard": None}
        return data

    @model_validator(mode="after")
    def _check_shard(self) -> Self:
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
        json_schema_extra=HASHED_WHEN_SET,
    )
    local_features_per_row: int = Field(
        3,
        ge=1,
        description="photos per indexed row whose local features are stored",
        json_schema_extra=HASHED_WHEN_SET,
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
