"""Options of the commands that are not pipeline stages (they read outputs and write nothing).

Like the stage sections, each model is the one place its options are written: the CLI is
generated from the fields (type, bounds, description, default) and the ``examples``. A path
left ``None`` means "the matching stage's output in the work directory".
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

# the package's __init__ is loaded before this module and imports nothing of it
from sbe.config import PipelineStage, SbeConfig
from sbe.config.base import PRECISION_HELP, Precision, Section


class SearchOptions(Section):
    """Nearest neighbours by id, vector or image: similarity, id and location.

    With --rerank, verified local matches re-order the top candidates; with a calibration.json in
    the index (from the model), each hit says whether it is the same building.
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe search --index work/demo/index --id 1234",
        "sbe search --index work/demo/index --image photos/ -k 5 --json",
        "sbe search --index work/demo/index --image photo.jpg --rerank",
    )

    index: Path | None = Field(None, description="index folder (default: the index stage's output)")
    id: str | None = Field(None, description="query by id (the query's own rows are left out)")
    vector_file: Path | None = Field(
        None, description="query vectors: .npy, .json or .parquet (embedding column)"
    )
    image: list[Path] | None = Field(
        None, description="query image(s): a file, a folder or a glob; one model load for all"
    )
    k: int = Field(10, ge=1, description="neighbours per query")
    model: Path | None = Field(
        None, description="published model folder (default: the one the index records)"
    )
    ef_search: int | None = Field(None, ge=1, description="HNSW search breadth")
    include_self: bool = Field(False, description="with --id: keep the query's own rows")
    precision: Precision = Field("fp32", description=f"with --image: {PRECISION_HELP}")
    calibration: str | None = Field(
        None, description="with int8: the calibration digest in the embed run's _manifest.json"
    )
    rerank: bool = Field(
        False,
        description="re-order the top --rerank-k by verified local matches (--image or --id; "
        "[verify] settings)",
    )
    rerank_k: int | None = Field(
        None, ge=1, description="candidates re-ranked per query (default: [verify] rerank_k)"
    )
    photos: Path | None = Field(
        None,
        description="with --rerank and no stored local features: the photo parquet (default: "
        "found from the index)",
    )


class ServeOptions(Section):
    """Search service + map explorer: the model and index loaded once (OpenAPI at /docs)."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe serve --index work/demo/index --port 8000   (then open http://127.0.0.1:8000/)",
    )

    index: Path | None = Field(None, description="index folder (default: the index stage's output)")
    model: Path | None = Field(
        None, description="published model folder (default: the one the index records)"
    )
    host: str = Field("127.0.0.1", description="address to bind; this machine only unless told")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free one)")
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    photos: Path | None = Field(
        None, description="parquet of the indexed photos (default: found through the index)"
    )


class GeoEvaluateOptions(Section):
    """Accuracy at 1/25/200/750/2500 km, climate and season errors, beside two baselines."""

    examples: ClassVar[tuple[str, ...]] = ("sbe geo evaluate --model work/geo --split test",)

    model: Path | None = Field(
        None, description="geo heads folder (default: the geo stage's output)"
    )
    split: Literal["train", "val", "test"] = Field("test", description="split to evaluate")
    input: Path | None = Field(None, description="split folder (default: the one trained on)")


class GeoPredictOptions(Section):
    """Top-k locations with probabilities, climate class and season for images or embeddings."""

    examples: ClassVar[tuple[str, ...]] = (
        "sbe geo predict photo.jpg --model work/geo --top-k 3",
        "sbe geo predict --embeddings rows.parquet --json",
    )

    images: list[Path] | None = Field(None, description="image files")
    model: Path | None = Field(
        None, description="geo heads folder (default: the geo stage's output)"
    )
    embeddings: Path | None = Field(
        None, description="parquet file with a backbone `embedding` column"
    )
    top_k: int = Field(5, ge=1, description="locations per input")


class RunOptions(Section):
    """Run the whole pipeline (synth or ingest -> ... -> report); finished stages are skipped.

    An interrupted run resumes: run the same command again.
    """

    examples: ClassVar[tuple[str, ...]] = (
        "sbe run --config configs/demo.toml",
        "sbe run --config my.toml --restart train --json",
    )

    restart: list[PipelineStage] = Field(
        default_factory=list, description="run this stage from scratch"
    )


class DemoOptions(RunOptions):
    """The whole pipeline on built-in synthetic data with the offline backbone (`make demo`)."""

    examples: ClassVar[tuple[str, ...]] = ("sbe demo --workdir work/demo",)


class ConfigShowOptions(Section):
    """Print the effective configuration (file values over defaults), as TOML or JSON."""

    examples: ClassVar[tuple[str, ...]] = ("sbe config show --config my.toml",)


def config_show(opts: ConfigShowOptions, cfg: SbeConfig, **_: object) -> tuple[dict, list[str]]:
    """``sbe config show``: the effective configuration as a TOML document (JSON with --json)."""
    import tomli_w

    from sbe.config import config_to_toml_dict

    data = config_to_toml_dict(cfg)
    return data, [tomli_w.dumps(data)]
