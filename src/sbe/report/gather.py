"""What the report shows, read from the other stages' outputs (no HTML here).

Each function reads one kind of output and returns plain data. Only a missing or unreadable input
(no folder, no file, no valid manifest, a file that is not JSON or not parquet) raises
:class:`Unavailable`, whose reason the page prints in place of the section. An output that is
present but not what this version writes (a missing column, a missing key) is a bug or a version
mismatch, not an absence: it raises (:class:`Malformed` where it is checked, else the original
error) and fails the report.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.report.thumbs import (
    LOCATION_COLUMNS,
    ImageReadError,
    file_thumbnail_uri,
    image_locations,
    read_parquet_rows,
    read_tar_member,
    thumbnail_uri,
)
from sbe.report.worldmap import MapPoint
from sbe.storage import Manifest, load_manifest, to_numpy_matrix


class Unavailable(Exception):
    """A section's input is missing or unreadable; the message says why (shown on the page)."""


class Malformed(SbeError):
    """A stage output is present and readable but not what this version writes."""


@dataclass
class ReportInputs:
    """Where the report reads from (absolute paths; ``None`` = not available)."""

    raw: Path | None = None
    images: Path | None = None
    backbone: Path | None = None
    split: Path | None = None
    neighbors: Path | None = None
    run: Path | None = None
    geo: Path | None = None
    model: Path | None = None
    embeddings: Path | None = None
    buildings: Path | None = None
    clusters: Path | None = None
    index: Path | None = None
    landmarks: Path | None = None


@dataclass
class ThumbSettings:
    """Thumbnail size (longest side, pixels) and JPEG quality."""

    max_px: int = 112
    quality: int = 80


# ---- small readers ---------------------------------------------------------------------------


def need_dir(path: Path | None, what: str) -> Path:
    """``path`` if it is an existing folder, else :class:`Unavailable` naming ``what``."""
    if path is None:
        raise Unavailable(f"no {what} folder configured")
    if not Path(path).is_dir():
        raise Unavailable(f"{what} not found at {path}")
    return Path(path)


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON, or :class:`Unavailable` when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise Unavailable(f"{what} not found ({path})") from None
    except (OSError, ValueError) as e:
        raise Unavailable(f"{what} unreadable ({path}: {e})") from None


def manifest_of(path: Path | None, what: str, stage: str | None = None) -> Manifest:
    """The ``_manifest.json`` of a stage output folder (optionally checking its stage name)."""
    folder = need_dir(path, what)
    m = load_manifest(folder)
    if m is None:
        raise Unavailable(
            f"{what} has no valid _manifest.json ({folder}): the stage did not finish"
        )
    if stage is not None and m.stage != stage:
        raise Unavailable(f"{folder} holds the output of stage {m.stage!r}, not {stage!r}")
    return m


def parquet_schema(path: Path, what: str) -> pa.Schema:
    """The schema of a parquet file; :class:`Unavailable` when it is missing or not parquet."""
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise Unavailable(f"{what} not found ({path})") from None
    except (OSError, pa.ArrowException) as e:
        raise Unavailable(f"{what} unreadable ({path}: {type(e).__name__}: {e})") from None


def require_columns(schema: pa.Schema, columns: Sequence[str], path: Path, stage: str) -> None:
    """:class:`Malformed` naming ``path`` when ``schema`` lacks one of ``columns``."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise Malformed(
            f"{path} has no column(s) {', '.join(missing)}: not what this version of "
            f"`sbe {stage}` writes; rerun `sbe {stage}`"
        )


def read_parquet(path: Path, what: str, stage: str, columns: Sequence[str]) -> pa.Table:
    """The given columns of a parquet file.

    Raises:
        Unavailable: the file is missing or is not readable parquet.
        Malformed: it lacks one of ``columns``.
    """
    require_columns(parquet_schema(path, what), columns, path, stage)
    try:
        return pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as e:  # a corrupt page past a valid footer
        raise Unavailable(f"{what} unreadable ({path}: {type(e).__name__}: {e})") from None


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (blank or broken lines are left out)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise Unavailable(f"{what} not found ({path})") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# ---- 1. dataset ------------------------------------------------------------------------------


@dataclass
class SplitSummary:
    """Per-split counts and leakage distances from ``split/_manifest.json``."""

    splits: dict[str, dict[str, Any]]
    leakage: dict[str, dict[str, Any]]
    grouping: dict[str, Any]
    rows: dict[str, int]
    skipped: dict[str, int]


def split_summary(split_dir: Path | None) -> SplitSummary:
    m = manifest_of(split_dir, "split output", "split")
    return SplitSummary(
        splits=dict(m.extra.get("splits") or {}),
        leakage=dict(m.extra.get("leakage") or {}),
        grouping=dict(m.extra.get("grouping") or {}),
        rows=dict(m.rows),
        skipped=dict(m.skipped),
    )


@dataclass
class StageCounts:
    """Rows, skips by reason (with examples) and counted warnings of one stage."""

    stage: str
    rows: dict[str, int]
    skipped: dict[str, int]
    skip_examples: dict[str, list[str]]
    warnings: dict[str, int]


def stage_counts(path: Path | None, what: str, stage: str) -> StageCounts:
    m = manifest_of(path, what, stage)
    warnings = m.extra.get("warnings") if isinstance(m.extra.get("warnings"), dict) else {}
    return StageCounts(
        stage=stage,
        rows=dict(m.rows),
        skipped=dict(m.skipped),
        skip_examples={k: list(v) for k, v in m.skip_examples.items()},
        warnings=dict(warnings or {}),
    )


@dataclass
class SynthWorld:
    """The synthetic world (``sbe synth``): cities with their share of images, counts, preview."""

    rows: dict[str, int]
    cities: dict[str, int]
    difficulty: float | None
    seed: int | None
    image_size: int | None
    preview_uri: str | None


def synth_world(raw_dir: Path | None, preview_px: int = 960) -> SynthWorld:
    m = manifest_of(raw_dir, "synthetic world (raw)", None)
    if m.stage != "synth":
        raise Unavailable(f"{raw_dir} was not written by `sbe synth` (real data)")
    assert raw_dir is not None
    preview = Path(raw_dir) / "preview.png"
    uri = file_thumbnail_uri(preview, preview_px, 80, square=False) if preview.is_file() else None
    return SynthWorld(
        rows=dict(m.rows),
        cities=dict(m.extra.get("cities") or {}),
        difficulty=m.extra.get("difficulty", m.config.get("difficulty")),
        seed=m.config.get("seed"),
        image_size=m.config.get("image_size"),
        preview_uri=uri,
    )


# ---- 2. training curves ----------------------------------------------------------------------


@dataclass
class TrainingCurves:
    """Per-epoch training records of ``RUN/metrics.jsonl``.

    Attributes:
        epochs: epoch numbers (1-based). loss: mean train loss per epoch.
        val: per-epoch val metrics (``map@r``, ``recall@1``, ...), aligned with ``epochs``.
        baseline: the raw backbone on the val queries; init: the head before training (epoch 0).
        best_epoch: the selected epoch. steps / step_loss: the step records.
        bands: per epoch, the bandit's choices of difficulty band (empty without a curriculum).
    """

    epochs: list[int]
    loss: list[float]
    val: list[dict[str, float]]
    baseline: dict[str, float]
    init: dict[str, float]
    best_epoch: int | None
    steps: list[int]
    step_loss: list[float]
    bands: list[dict[str, Any]] = field(default_factory=list)


def training_curves(run_dir: Path | None) -> TrainingCurves:
    folder = need_dir(run_dir, "training run")
    records = read_jsonl(folder / "metrics.jsonl", "training metrics (metrics.jsonl)")
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        raise Unavailable(f"{folder / 'metrics.jsonl'} has no epoch records yet")
    base = next((r for r in records if r.get("kind") == "baseline"), {})
    init = next((r for r in records if r.get("kind") == "init"), {})
    steps = [r for r in records if r.get("kind") == "step" and "loss" in r]
    best = epochs[-1].get("best_epoch")
    with contextlib.suppress(Unavailable):
        best = read_json(folder / "run.json", "run.json").get("best_epoch", best)
    bands = []
    for r in epochs:
        b = r.get("bands")
        if isinstance(b, dict) and b:
            bands.append({"epoch": r["epoch"], **b})
    return TrainingCurves(
        epochs=[int(r["epoch"]) for r in epochs],
        loss=[float(r.get("loss", float("nan"))) for r in epochs],
        val=[dict(r.get("val") or {}) for r in epochs],
        baseline=dict(base.get("val") or {}),
        init=dict(init.get("val") or {}),
        best_epoch=best,
        steps=[int(r["step"]) for r in steps],
        step_loss=[float(r["loss"]) for r in steps],
        bands=bands,
    )


@dataclass
class GeoCurves:
    """Per-epoch records of ``GEO_DIR/metrics.jsonl``."""

    epochs: list[int]
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int | None


def geo_curves(geo_dir: Path | None) -> GeoCurves:
    folder = need_dir(geo_dir, "geo output")
    records = read_jsonl(folder / "metrics.jsonl", "geo training metrics (metrics.jsonl)")
    if not records:
        raise Unavailable(f"{folder / 'metrics.jsonl'} is empty")
    best = None
    with contextlib.suppress(Unavailable):  # metrics.json comes last: an unfinished run has none
        best = read_json(folder / "metrics.json", "geo metrics")["selection"]["best_epoch"]
    nan = float("nan")
    return GeoCurves(
        epochs=[int(r.get("epoch", i + 1)) for i, r in enumerate(records)],
        train_loss=[float(r.get("train_loss", nan)) for r in records],
        val_loss=[float(r.get("val_loss", nan)) for r in records],
        best_epoch=best,
    )


# ---- 3. metrics ------------------------------------------------------------------------------


@dataclass
class RetrievalMetrics:
    """Backbone vs projector on the test split (``RUN/evaluate/test.json``, else ``run.json``)."""

    source: str
    queries: int | None
    images: int | None
    identities: int | None
    backbone: dict[str, float]
    projector: dict[str, float]
    landmarks: dict[str, Any] | None


def retrieval_metrics(run_dir: Path | None) -> RetrievalMetrics:
    folder = need_dir(run_dir, "training run")
    ev_path = folder / "evaluate" / "test.json"
    landmarks = None
    if ev_path.is_file():
        ev = read_json(ev_path, "evaluation")
        ret = ev.get("retrieval") or {}
        landmarks = ev.get("landmarks")
        source = str(ev_path)
    else:
        run = read_json(folder / "run.json", "run.json (the run did not finish)")
        ret = run.get("test") or {}
        source = str(folder / "run.json")
    if "backbone" not in ret or "projector" not in ret:
        raise Unavailable(f"no test metrics in {source}")
    return RetrievalMetrics(
        source=source,
        queries=ret.get("queries"),
        images=ret.get("images"),
        identities=ret.get("identities"),
        backbone=dict(ret["backbone"]),
        projector=dict(ret["projector"]),
        landmarks=landmarks,
    )


@dataclass
class LandmarkPhoto:
    """One real photo of the landmarks check."""

    landmark: str
    name: str
    path: str
    uri: str | None


def landmark_photos(
    folder: Path | None, thumb: ThumbSettings, per_landmark: int = 5
) -> list[LandmarkPhoto]:
    """Thumbnails of a ``labels.csv`` (``path``, ``landmark``[, ``landmark_name``]) photo folder."""
    if folder is None:
        raise Unavailable("no real-photo folder found (set [report] landmarks or $SBE_LANDMARKS)")
    labels = Path(folder) / "labels.csv"
    try:
        with labels.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        raise Unavailable(f"no labels.csv in {folder}") from None
    out: list[LandmarkPhoto] = []
    taken: dict[str, int] = {}
    for r in rows:
        lm = r.get("landmark") or ""
        if not r.get("path") or taken.get(lm, 0) >= per_landmark:
            continue
        taken[lm] = taken.get(lm, 0) + 1
        out.append(
            LandmarkPhoto(
                landmark=lm,
                name=r.get("landmark_name") or lm,
                path=r["path"],
                uri=file_thumbnail_uri(Path(folder) / r["path"], thumb.max_px, thumb.quality),
            )
        )
    if not out:
        raise Unavailable(f"{labels} lists no photos")
    return out


# ---- 4. retrieval gallery --------------------------------------------------------------------


def pick_queries(building_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` seeded query rows among the rows whose building has another row (sorted draw order).

    Returns:
        int64 row indices, at most ``n`` (fewer when fewer rows qualify).
    """
    building_ids = np.asarray(building_ids)
    _, inverse, counts = np.unique(building_ids, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts[inverse] >= 2)
    if len(eligible) == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(n, len(eligible)), replace=False)).astype(np.int64)


def top_k_excluding_self(
    vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of the given rows among all rows, the query row itself excluded.

    Args:
        vectors: (N, D) float; rows are L2-normalised here.
        queries: (Q,) row indices.
        k: results per query (capped at N - 1).

    Returns:
        ``(rows, similarity)``: (Q, k) int64 and float32, best first (ties by row order).
    """
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v[queries] @ v.T
    sims[np.arange(len(queries)), queries] = -np.inf
    k = min(k, len(v) - 1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(sims, order, axis=1).astype(np.float32)


@dataclass
class Tile:
    """One picture of the gallery: an image with its building and, for results, whether it is right."""

    image_id: int
    building_id: int
    uri: str | None
    rank: int = 0
    similarity: float | None = None
    correct: bool | None = None
    note: str = ""


@dataclass
class GalleryQuery:
    """A query image with its top-k by the projector (and the backbone's top-1 for comparison)."""

    query: Tile
    results: list[Tile]
    backbone_top1_correct: bool | None = None


@dataclass
class Gallery:
    queries: list[GalleryQuery]
    test_images: int
    missing_images: int


def ingest_parts(folder: Path) -> list[Path]:
    """The ingest parts of ``folder`` after checking each is readable parquet with the location columns.

    Raises:
        Unavailable: no parts, or a part is not readable parquet.
        Malformed: a part lacks a location column.
    """
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise Unavailable(f"no ingest parts (*.parquet) in {folder}")
    for f in files:
        require_columns(parquet_schema(f, "ingest part"), LOCATION_COLUMNS, f, "ingest")
    return files


def image_bytes_by_id(images_dir: Path | None, image_ids: Sequence[int]) -> dict[int, bytes | str]:
    """JPEG bytes of images (one positional read each), or a reason string when not readable."""
    out: dict[int, bytes | str] = {}
    ids = [int(i) for i in image_ids]
    try:
        folder = need_dir(images_dir, "ingest output")
        parts = ingest_parts(folder)
    except Unavailable as e:
        return dict.fromkeys(ids, str(e))
    loc = image_locations(folder, ids, files=parts)
    tars = loc.column("tar_file").to_pylist()
    offs = loc.column("tar_offset").to_numpy()
    sizes = loc.column("tar_size").to_numpy()
    for i, image_id in enumerate(loc.column("image_id").to_numpy()):
        try:
            out[int(image_id)] = read_tar_member(tars[i], int(offs[i]), int(sizes[i]))
        except ImageReadError as e:
            out[int(image_id)] = str(e)
    for i in ids:
        out.setdefault(i, "not in the ingest output")
    return out


def retrieval_gallery(
    split_dir: Path | None,
    run_dir: Path | None,
    images_dir: Path | None,
    *,
    queries: int,
    k: int,
    seed: int,
    thumb: ThumbSettings,
) -> Gallery:
    """Seeded test queries with their top-k by the trained projector (cosine, query excluded)."""
    folder = need_dir(split_dir, "split output")
    test = folder / "test.parquet"
    best = need_dir(run_dir, "training run") / "best"
    if not (best / "config.json").is_file():
        raise Unavailable(f"no trained projector in {best}")
    from sbe.models.projector import Projector

    table = read_parquet(test, "test split", "split", ["building_id", "image_id", "embedding"])
    if table.num_rows < 2:
        raise Unavailable(f"{test} has fewer than two images")
    building = table.column("building_id").to_numpy()
    image_ids = table.column("image_id").to_numpy()
    backbone = to_numpy_matrix(table.column("embedding"), np.float32)
    projector = Projector.from_pretrained(best)
    if backbone.shape[1] != projector.config.input_dim:
        raise Unavailable(
            f"the test embeddings are {backbone.shape[1]}-d; the projector expects "
            f"{projector.config.input_dim}-d"
        )
    q = pick_queries(building, queries, seed)
    if len(q) == 0:
        raise Unavailable("no test building has two images: nothing to retrieve")
    rows, sims = top_k_excluding_self(projector.project(backbone), q, k)
    b_rows, _ = top_k_excluding_self(backbone, q, 1)
    wanted = np.unique(np.concatenate([image_ids[q], image_ids[rows.reshape(-1)]]))
    data = image_bytes_by_id(images_dir, wanted.tolist())
    uris: dict[int, str | None] = {}
    notes: dict[int, str] = {}
    for image_id, blob in data.items():
        if isinstance(blob, bytes):
            uris[image_id] = thumbnail_uri(blob, thumb.max_px, thumb.quality)
            if uris[image_id] is None:
                notes[image_id] = "does not decode"
        else:
            uris[image_id], notes[image_id] = None, blob

    def tile(row: int, **kw: Any) -> Tile:
        iid = int(image_ids[row])
        return Tile(iid, int(building[row]), uris.get(iid), note=notes.get(iid, ""), **kw)

    out = []
    for i, qr in enumerate(q):
        results = [
            tile(
                int(r),
                rank=j + 1,
                similarity=float(sims[i, j]),
                correct=bool(building[r] == building[qr]),
            )
            for j, r in enumerate(rows[i])
        ]
        out.append(
            GalleryQuery(
                query=tile(int(qr)),
                results=results,
                backbone_top1_correct=bool(building[b_rows[i, 0]] == building[qr]),
            )
        )
    return Gallery(
        queries=out,
        test_images=table.num_rows,
        missing_images=sum(1 for u in uris.values() if u is None),
    )


# ---- 5. geolocation --------------------------------------------------------------------------

#: ``predict(geo_dir, embeddings (N, D) float32) -> [{"locations": [{"lat", "lon", ...}], ...}]``
GeoPredictor = Callable[[Path, np.ndarray], list[dict[str, Any]]]


@dataclass
class Geolocation:
    """Test-split predictions for the map, and the metrics of ``GEO_DIR/metrics.json``."""

    points: list[MapPoint]
    test_rows: int
    metrics: dict[str, Any] | None
    selection: dict[str, Any]
    input_space: str | None


def geo_metrics(geo_dir: Path | None) -> dict[str, Any]:
    folder = need_dir(geo_dir, "geo output")
    return read_json(folder / "metrics.json", "geo metrics (metrics.json)")


def geolocation(
    split_dir: Path | None,
    geo_dir: Path | None,
    predict: GeoPredictor,
    *,
    max_points: int,
    seed: int,
) -> Geolocation:
    """Predicted vs true locations of (a seeded sample of) the test images."""
    metrics = geo_metrics(geo_dir)
    assert geo_dir is not None
    if not (Path(geo_dir) / "model.safetensors").is_file():
        raise Unavailable(f"no trained geo heads in {geo_dir}")
    test = need_dir(split_dir, "split output") / "test.parquet"
    columns = ["image_id", "target_lat", "target_lon", "embedding"]
    table = read_parquet(test, "test split", "split", columns)
    n = table.num_rows
    if n == 0:
        raise Unavailable(f"{test} has no rows")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    table = table.take(rows)
    emb = to_numpy_matrix(table.column("embedding"), np.float32)
    preds = predict(Path(geo_dir), emb)
    lat = table.column("target_lat").to_numpy()
    lon = table.column("target_lon").to_numpy()
    ids = table.column("image_id").to_numpy()
    points = []
    for i, p in enumerate(preds):
        if not p.get("locations"):
            continue
        top = p["locations"][0]
        points.append(
            MapPoint(
                float(lat[i]), float(lon[i]), float(top["lat"]), float(top["lon"]), f"{ids[i]}"
            )
        )
    space = None
    with contextlib.suppress(Unavailable):
        space = read_json(Path(geo_dir) / "config.json", "geo config").get("input_space")
    return Geolocation(
        points=points,
        test_rows=n,
        metrics=metrics.get("test"),
        selection=dict(metrics.get("selection") or {}),
        input_space=space,
    )


# ---- 6. clusters -----------------------------------------------------------------------------


@dataclass
class ClusterSample:
    cluster: int
    size: int
    tiles: list[Tile]


@dataclass
class Clusters:
    method: str
    sizes: list[int]
    noise: int
    id_column: str
    samples: list[ClusterSample]
    images_note: str = ""


def _osmid_images(
    embeddings_dir: Path | None, osmids: Sequence[Any]
) -> tuple[dict[Any, bytes | None], str]:
    """One packaged image per OSMID, found through the embed output (``row_index``)."""
    try:
        folder = need_dir(embeddings_dir, "embed output")
        state = read_json(folder / "state.json", "embed state.json")
    except Unavailable as e:
        return {}, str(e)
    source = Path((state.get("input") or {}).get("path", ""))
    if not source.is_file():
        return {}, f"the embed input {source} is gone"
    parts = sorted((folder / "parts").glob("*.parquet"))
    if not parts:
        return {}, f"no embed parts in {folder}"
    try:
        for f in parts:
            require_columns(parquet_schema(f, "embed part"), ["OSMID", "row_index"], f, "embed")
        require_columns(parquet_schema(source, "embed input"), ["image_bytes"], source, "embed")
    except Unavailable as e:
        return {}, str(e)
    table = ds.dataset([str(f) for f in parts], format="parquet").to_table(
        columns=["OSMID", "row_index"]
    )
    first: dict[Any, int] = {}
    for osmid, row in zip(
        table.column("OSMID").to_pylist(), table.column("row_index").to_pylist(), strict=True
    ):
        if osmid not in first or row < first[osmid]:
            first[osmid] = row
    wanted = {o: first[o] for o in osmids if o in first}
    blobs = read_parquet_rows(source, list(wanted.values()), "image_bytes")
    return {o: blobs.get(r) for o, r in wanted.items()}, ""


def cluster_samples(
    clusters_dir: Path | None,
    embeddings_dir: Path | None,
    images_dir: Path | None,
    *,
    per_cluster: int,
    max_clusters: int,
    thumb: ThumbSettings,
) -> Clusters:
    """Cluster sizes and the images of each cluster's most central members (rank_in_cluster)."""
    m = manifest_of(clusters_dir, "cluster output", "cluster")
    assert clusters_dir is not None
    path = Path(clusters_dir) / "assignments.parquet"
    schema = parquet_schema(path, "cluster assignments")
    id_col = m.extra.get("id_column") or schema.names[0]
    table = read_parquet(
        path, "cluster assignments", "cluster", [id_col, "cluster", "rank_in_cluster"]
    )
    labels = table.column("cluster").to_numpy()
    ranks = table.column("rank_in_cluster").to_numpy()
    ids = table.column(id_col).to_pylist()
    sizes = [int(s) for s in m.extra.get("sizes") or np.bincount(labels[labels >= 0]).tolist()]
    order = np.argsort(-np.asarray(sizes), kind="stable")[:max_clusters]
    picked: dict[int, list[int]] = {}
    for c in order:
        members = np.flatnonzero((labels == c) & (ranks >= 0) & (ranks < per_cluster))
        picked[int(c)] = members[np.argsort(ranks[members], kind="stable")].tolist()
    chosen = [ids[r] for rows in picked.values() for r in rows]
    note = ""
    blobs: dict[Any, bytes | str | None]
    if id_col == "OSMID":
        osm, note = _osmid_images(embeddings_dir, chosen)
        blobs = dict(osm)
    elif id_col == "image_id":
        blobs = dict(image_bytes_by_id(images_dir, [int(i) for i in chosen]))
    else:
        blobs, note = {}, f"no images for clusters of {id_col!r} ids"
    samples = []
    for c in order:
        tiles = []
        for r in picked[int(c)]:
            blob = blobs.get(ids[r])
            uri = (
                thumbnail_uri(blob, thumb.max_px, thumb.quality)
                if isinstance(blob, bytes)
                else None
            )
            tiles.append(
                Tile(
                    image_id=int(r),
                    building_id=ids[r] if isinstance(ids[r], int) else 0,
                    uri=uri,
                    rank=int(ranks[r]) + 1,
                    note=str(ids[r]),
                )
            )
        samples.append(ClusterSample(int(c), sizes[int(c)], tiles))
    return Clusters(
        method=str(m.extra.get("method", "")),
        sizes=sizes,
        noise=int(m.extra.get("noise", 0)),
        id_column=id_col,
        samples=samples,
        images_note=note,
    )


# ---- 7. run facts ----------------------------------------------------------------------------

#: (stage, ReportInputs attribute, sub-folder) in pipeline order
STAGE_DIRS: tuple[tuple[str, str, str], ...] = (
    ("synth", "raw", ""),
    ("ingest", "images", ""),
    ("backbone", "backbone", ""),
    ("split", "split", ""),
    ("neighbors", "neighbors", ""),
    ("train", "run", ""),
    ("evaluate", "run", "evaluate"),
    ("geo", "geo", ""),
    ("publish", "model", ""),
    ("embed", "embeddings", ""),
    ("aggregate", "buildings", ""),
    ("index", "index", ""),
    ("cluster", "clusters", ""),
)


@dataclass
class StageTime:
    stage: str
    folder: str
    seconds: float | None
    created_at: str | None
    rows: dict[str, int]
    note: str = ""


@dataclass
class RunFacts:
    backbone: dict[str, Any] | None
    backbone_images_per_second: float | None
    backbone_runtime: str | None
    backbone_device: str | None
    stages: list[StageTime]
    sbe_versions: list[str]


def stage_dirs(inputs: ReportInputs) -> list[tuple[str, Path | None]]:
    """``(stage, output folder)`` of every stage the report knows, in pipeline order."""
    out = []
    for stage, attr, sub in STAGE_DIRS:
        base = getattr(inputs, attr)
        out.append((stage, (Path(base) / sub) if base is not None and sub else base))
    return out


def run_facts(inputs: ReportInputs) -> RunFacts:
    stages = []
    versions: set[str] = set()
    for stage, folder in stage_dirs(inputs):
        m = load_manifest(folder) if folder is not None and Path(folder).is_dir() else None
        if m is None or m.stage != stage:
            why = "no output" if m is None else f"{folder} is a {m.stage} output"
            stages.append(StageTime(stage, str(folder or "-"), None, None, {}, why))
            continue
        versions.add(m.sbe_version)
        stages.append(StageTime(stage, str(folder), m.wall_seconds, m.created_at, dict(m.rows)))
    bb = load_manifest(inputs.backbone) if inputs.backbone is not None else None
    extra = bb.extra if bb is not None and bb.stage == "backbone" else {}
    if not any(s.seconds is not None for s in stages):
        raise Unavailable("no stage manifest found")
    ips = extra.get("images_per_second")
    return RunFacts(
        backbone=extra.get("backbone"),
        backbone_images_per_second=float(ips) if ips else None,
        backbone_runtime=extra.get("runtime"),
        backbone_device=extra.get("device"),
        stages=stages,
        sbe_versions=sorted(versions),
    )


def input_files(inputs: ReportInputs) -> list[Path]:
    """Every file the report reads whose change should redo it (existing ones only)."""
    candidates: list[Path] = []
    for stage, folder in stage_dirs(inputs):
        # embed rewrites its manifest and state.json on every rerun, even an up-to-date one:
        # its finished parts stand for it instead
        if folder is not None and stage != "embed":
            candidates.append(Path(folder) / "_manifest.json")
    if inputs.raw is not None:
        candidates.append(Path(inputs.raw) / "preview.png")
    if inputs.split is not None:
        candidates.append(Path(inputs.split) / "test.parquet")
    if inputs.run is not None:
        r = Path(inputs.run)
        candidates += [r / "metrics.jsonl", r / "run.json", r / "best" / "model.safetensors"]
        candidates.append(r / "evaluate" / "test.json")
    if inputs.geo is not None:
        g = Path(inputs.geo)
        candidates += [g / "metrics.json", g / "metrics.jsonl", g / "model.safetensors"]
    if inputs.clusters is not None:
        candidates.append(Path(inputs.clusters) / "assignments.parquet")
    if inputs.embeddings is not None:
        candidates += sorted((Path(inputs.embeddings) / "parts").glob("*.parquet"))
    if inputs.landmarks is not None:
        candidates.append(Path(inputs.landmarks) / "labels.csv")
    return [p for p in candidates if p.is_file()]


def evaluated_landmarks_dir(run_dir: Path | None) -> Path | None:
    """The real-photo folder the evaluation used (recorded in ``RUN/evaluate/test.json``)."""
    if run_dir is None:
        return None
    try:
        ev = read_json(Path(run_dir) / "evaluate" / "test.json", "evaluation")
    except Unavailable:
        return None
    folder = (ev.get("landmarks") or {}).get("folder")
    if folder and (Path(folder) / "labels.csv").is_file():
        return Path(folder)
    return None
