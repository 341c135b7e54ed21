"""What the server holds: the loaded index, the published model, the batcher and the counters.

:class:`Engine` is plain Python (no HTTP): the FastAPI app in :mod:`sbe.service.app` turns its
answers into JSON and its :class:`~sbe.service.uploads.UploadError` / ``SbeError`` into 4xx
responses. Everything CPU-bound runs off the event loop: image checks and decoding in a thread
pool, the model in the batcher's thread, faiss in the caller's worker thread.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from sbe.data.images import ImageDecodeError
from sbe.errors import SbeError
from sbe.index.search import SearchIndex, SearchResult
from sbe.service.batching import MicroBatcher
from sbe.service.photos import PhotoSource, find_photo_parquet
from sbe.service.stats import RequestStats
from sbe.service.uploads import UploadError, UploadLimits, check_image
from sbe.storage.artifacts import IndexDir
from sbe.verify.same_building import load_calibration, with_same_building

if TYPE_CHECKING:
    from sbe.verify.gallery import Gallery, RerankSettings
    from sbe.verify.local import LocalMatcher, LocalSettings

#: optional file of an index directory: a :class:`sbe.verify.calibration.Calibration`
CALIBRATION_FILE = IndexDir.CALIBRATION


@dataclass(frozen=True)
class ServiceSettings:
    """How the service behaves (none of it changes what a query returns).

    Attributes:
        max_k: largest ``k`` a query may ask for.
        default_k: ``k`` when the query gives none.
        max_batch: most images per model call; 0 = the model's batch size.
        max_wait_ms: how long a request waits for others to share its model call, in ms.
        decode_threads: threads checking and decoding uploads.
        limits: upload limits.
        map_points: most buildings sent to the page's map (a seeded sample beyond).
        photos_per_building: thumbnails listed per building.
        thumb_px: longest side of a thumbnail, in pixels.
        local: ``rerank=true``: local-feature settings (``None``: 256 keypoints, 320 px, the
            ``[verify]`` defaults; an index's feature store imposes its own extraction settings).
        rerank: ``rerank=true``: k, combination rule (``None``: the library defaults).
    """

    max_k: int = 100
    default_k: int = 10
    max_batch: int = 0
    max_wait_ms: float = 2.0
    decode_threads: int = 2
    limits: UploadLimits = field(default_factory=UploadLimits)
    map_points: int = 100_000
    photos_per_building: int = 6
    thumb_px: int = 256
    local: LocalSettings | None = None
    rerank: RerankSettings | None = None


@dataclass
class Upload:
    """One uploaded image: client file name, declared content type, bytes."""

    name: str
    content_type: str | None
    data: bytes


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EngineOptions(TypedDict, total=False):
    """The keyword options of :class:`Engine` (and of :func:`sbe.service.app.create_app`)."""

    photos: str | Path | None
    settings: ServiceSettings | None
    embedder: Any


class Engine:
    """The loaded index and model, shared by every request.

    Args:
        index_dir: an index directory (``sbe index build`` output).
        model_dir: the published model; ``None`` uses the one ``index.json`` records, and when
            there is none image queries answer 503.
        photos: a parquet with ``image_bytes`` and the id column; ``None`` looks for one via the
            index's provenance (no thumbnails when none is found).
        settings: :class:`ServiceSettings`.
        embedder: an already loaded embedder (tests, benchmarks); wins over ``model_dir``.

    Raises:
        SbeError: the index or the model cannot be loaded, or they disagree on the dimension.
    """

    def __init__(
        self,
        index_dir: str | Path,
        model_dir: str | Path | None = None,
        *,
        photos: str | Path | None = None,
        settings: ServiceSettings | None = None,
        embedder: Any = None,
    ) -> None:
        self.settings = settings or ServiceSettings()
        self.index_dir = Path(index_dir).expanduser().resolve()
        t0 = time.perf_counter()
        self.index = SearchIndex.load(self.index_dir)
        self.info = self.index.info
        self.calibration = load_calibration(self.index_dir / CALIBRATION_FILE)
        self.embedder = embedder
        chosen = model_dir or self.info.model_dir
        self.model_note = ""
        if self.embedder is None and chosen is not None:
            from sbe.models.published import load_embedder

            if not Path(chosen).is_dir():
                raise SbeError(
                    f"model folder not found: {chosen}; pass --model DIR (a folder written by "
                    "`sbe publish`)"
                )
            self.embedder = load_embedder(chosen)
        if self.embedder is None:
            self.model_note = (
                "this index records no model and none was given: start the server with --model"
            )
        elif self.embedder.dim != self.index.dim:
            raise SbeError(
                f"the model in {self.embedder.model_dir} makes {self.embedder.dim}-d vectors but "
                f"the index {self.index_dir} holds {self.index.dim}-d ones: serve the model that "
                "made the index"
            )
        self.model_identity: dict[str, Any] | None = (
            self.embedder.identity() if self.embedder is not None else None
        )
        self.photo_note = ""
        self.photos: PhotoSource | None = None
        recorded = self.info.source.get("path")  # relative to the index folder
        source = None if recorded is None else Path(self.index_dir) / recorded
        photo_path = photos or find_photo_parquet(source, self.info.id_column)
        if photo_path is not None:
            self.photos = PhotoSource(
                photo_path, self.info.id_column, thumb_px=self.settings.thumb_px
            )
        else:
            self.photo_note = "no photo parquet found for this index (pass --photos FILE)"
        self.load_seconds = time.perf_counter() - t0
        self.started_at = time.time()
        self.stats = RequestStats()
        self.stats_rerank = {"queries": 0, "missing": 0}
        batch = self.settings.max_batch or (self.embedder.batch_size if self.embedder else 1)
        self.batcher = MicroBatcher(
            self._embed_batch, max_batch=batch, max_wait_s=self.settings.max_wait_ms / 1000.0
        )
        self._pool = ThreadPoolExecutor(
            max(1, self.settings.decode_threads), thread_name_prefix="sbe-decode"
        )
        self._points: dict[str, Any] | None = None
        self._background: bytes | None = None
        self._rerank_lock = threading.Lock()  # one matcher, loaded on first use
        self._gallery: Gallery | None = None
        self._matcher: LocalMatcher | None = None

    # ---- lifecycle ----

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self._pool.shutdown(wait=True)

    # ---- checks ----

    def check_k(self, k: int) -> int:
        """``k`` within [1, max_k], else a 422 :class:`UploadError` saying the range."""
        if not 1 <= k <= self.settings.max_k:
            raise UploadError(422, f"k must be between 1 and {self.settings.max_k}, got {k}")
        return k

    def require_model(self) -> Any:
        if self.embedder is None:
            raise UploadError(503, f"image queries are not available: {self.model_note}")
        return self.embedder

    # ---- images -> vectors ----

    def _embed_batch(self, images: np.ndarray) -> np.ndarray:
        return self.embedder.embed_uint8(images)

    def _prepare(self, upload: Upload) -> np.ndarray:
        """Check then decode one upload to the model's uint8 (crop, crop, 3) input."""
        check_image(upload.name, upload.content_type, upload.data, self.settings.limits)
        try:
            return self.embedder.decode(upload.data)
        except ImageDecodeError as e:
            raise UploadError(415, f"{upload.name}: the image does not decode ({e})") from None

    async def embed(self, uploads: list[Upload]) -> np.ndarray:
        """Embed uploaded images through the batcher.

        Returns:
            float32 (len(uploads), D), unit rows.

        Raises:
            UploadError: no image, too many, or one fails its checks (the first failure).
        """
        self.require_model()
        limits = self.settings.limits
        if not uploads:
            raise UploadError(
                400, "no image uploaded: send one or more files in the multipart field 'images'"
            )
        if len(uploads) > limits.max_images:
            raise UploadError(
                413, f"{len(uploads)} images in one request; the limit is {limits.max_images}"
            )
        loop = asyncio.get_running_loop()
        arrays = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self._prepare, u) for u in uploads)
        )
        return await self.batcher.submit(np.stack(arrays))

    # ---- searches ----

    def search_vectors(self, vectors: np.ndarray, k: int) -> SearchResult:
        """faiss search of (Q, D) vectors (call off the event loop)."""
        return self.index.search(vectors, k)

    def search_id(self, id_value: str, k: int) -> SearchResult:
        """Neighbours of an indexed id, itself excluded.

        Raises:
            UploadError: 404 when the id is not in the index.
        """
        try:
            return self.index.search_id(id_value, k)
        except SbeError as e:
            raise UploadError(404, str(e)) from None

    def search_row(self, row: int, k: int) -> SearchResult:
        if not 0 <= row < len(self.index):
            raise UploadError(404, f"row {row} is not in the index (it has {len(self.index)} rows)")
        return self.index.search_rows([row], k)

    # ---- answers ----

    def photo_urls(self, id_value: Any, limit: int = 0) -> list[str]:
        """URLs of up to ``limit`` (0: ``photos_per_building``) decodable photos of an id."""
        if self.photos is None:
            return []
        n = len(self.photos.good_rows(id_value, limit or self.settings.photos_per_building))
        return [f"/buildings/{id_value}/photos/{i}" for i in range(n)]

    def calibrated(self, result: SearchResult) -> SearchResult:
        """``result`` with ``same_building`` / ``same_building_probability`` when the index has
        a calibration (a match-based one needs a re-ranked result: else ``None``)."""
        return with_same_building(result, self.calibration)

    def hits(self, result: SearchResult, q: int = 0) -> list[dict[str, Any]]:
        """Query ``q``'s hits as JSON-ready dicts, with photo URLs and the calibrated answer."""
        out = []
        for h in self.calibrated(result).hits(q):
            hit = {k: _finite(v) for k, v in h.items()}
            hit["photos"] = self.photo_urls(hit["id"], 1)
            out.append(hit)
        return out

    # ---- re-ranking ----

    @property
    def rerank_k(self) -> int:
        return self._rerank_settings().k

    def _rerank_settings(self) -> RerankSettings:
        from sbe.verify.gallery import RerankSettings

        return self.settings.rerank or RerankSettings()

    def gallery_source(self) -> str:
        """Where re-ranking finds candidate photos: ``store``, ``on the fly`` or ``none``."""
        if (self.index_dir / IndexDir.LOCAL_FEATURES / "meta.json").is_file():
            return "store"
        return "on the fly" if self.photos is not None else "none"

    def _reranker(self) -> tuple[Gallery, LocalMatcher]:
        """The gallery and matcher, loaded once (call with the lock held)."""
        if self._gallery is None or self._matcher is None:
            from sbe.index.photos import row_photo_reader
            from sbe.verify.gallery import Gallery, open_store
            from sbe.verify.local import LocalMatcher, LocalSettings

            try:
                store = open_store(self.index_dir / IndexDir.LOCAL_FEATURES, self.info.build_id)
            except SbeError as e:
                raise UploadError(503, f"re-ranking is not available: {e}") from None
            if store is not None:
                gallery = Gallery(store=store)
            else:
                reader = None
                if self.photos is not None:
                    reader, _ = row_photo_reader(
                        self.index_dir,
                        None,
                        self.info.id_column,
                        self.index.table.column(self.info.id_column),
                        self.photos.path,
                    )
                gallery = Gallery(photos=reader, per_row=self._rerank_settings().per_row)
            local = self.settings.local or LocalSettings()
            self._matcher = LocalMatcher(gallery.settings_of(local))
            self._gallery = gallery
        return self._gallery, self._matcher

    def rerank(self, result: SearchResult, queries: list[list[Any]]) -> SearchResult:
        """Re-order each query's global top ``rerank.k`` by verified local matches (the code
        path of ``sbe search --rerank``; call off the event loop).

        Args:
            result: the global answer.
            queries: per query, its photos (uploaded bytes, or a building's stored photos).

        Raises:
            UploadError: 503 when the verification weights or store cannot be loaded, 415 when a
                query photo does not decode.
        """
        from sbe.verify.gallery import rerank_answer

        with self._rerank_lock:
            try:
                gallery, matcher = self._reranker()
            except SbeError as e:
                raise UploadError(503, f"re-ranking is not available: {e}") from None
            try:
                out, rr = rerank_answer(result, queries, gallery, matcher, self._rerank_settings())
            except SbeError as e:
                raise UploadError(415, f"re-ranking: {e}") from None
        self.stats_rerank["queries"] += len(queries)
        self.stats_rerank["missing"] += rr.missing
        return out

    def query_photos_of(self, id_value: str) -> list[Any]:
        """The photos of an indexed id, as re-ranking's query (stored features or bytes)."""
        with self._rerank_lock:
            try:
                gallery, _ = self._reranker()
            except SbeError as e:
                raise UploadError(503, f"re-ranking is not available: {e}") from None
        photos = [p for ps in gallery.rows_photos(self.index.rows_of(id_value)) for p in ps]
        photos = [p for p in photos if p is not None]
        if not photos:
            raise UploadError(
                422, f"id {id_value!r} has no photo to re-rank with (photos: {gallery.source})"
            )
        return photos

    def building(self, id_value: str) -> dict[str, Any]:
        """What the index holds about one id: rows, metadata, location, photos.

        Raises:
            UploadError: 404 when the id is not in the index.
        """
        try:
            rows = self.index.rows_of(id_value)
        except SbeError as e:
            raise UploadError(404, str(e)) from None
        if len(rows) == 0:
            raise UploadError(404, f"id {id_value!r} is not in the index ({self.info.id_column})")
        table = self.index.table.take(rows).to_pylist()
        first = table[0]
        the_id = first[self.info.id_column]
        lat_col, lon_col = self.info.location_columns or (None, None)
        photos_total = len(self.photos.rows_of(the_id)) if self.photos else 0
        return {
            "id": the_id,
            "id_column": self.info.id_column,
            "rows": [int(r) for r in rows],
            "lat": _finite(first.get(lat_col)) if lat_col else None,
            "lon": _finite(first.get(lon_col)) if lon_col else None,
            "image_count": first.get("image_count", len(rows)),
            "metadata": [
                {k: _finite(v) for k, v in r.items() if k != self.info.id_column} for r in table
            ],
            "photos": self.photo_urls(the_id),
            "photos_total": photos_total,  # rows in the photo parquet, decodable or not
            "photos_note": self.photo_note,
        }

    def photo(self, id_value: str, n: int) -> bytes:
        """The ``n``-th thumbnail of a building, JPEG bytes.

        Raises:
            UploadError: 404 when there is no such photo.
        """
        if self.photos is None:
            raise UploadError(404, f"no photos: {self.photo_note}")
        rows = self.photos.good_rows(id_value, self.settings.photos_per_building)
        if not 0 <= n < len(rows):
            raise UploadError(404, f"building {id_value!r} has no photo number {n}")
        data = self.photos.thumbnail_jpeg(rows[n], self.settings.thumb_px)
        if data is None:
            raise UploadError(404, f"photo {n} of building {id_value!r} does not decode")
        return data

    def points(self) -> dict[str, Any]:
        """Every located id once (a seeded sample beyond ``map_points``): ids, lat, lon lists."""
        if self._points is not None:
            return self._points
        loc = self.info.location_columns
        if not loc:
            self._points = {"count": 0, "shown": 0, "ids": [], "lat": [], "lon": []}
            return self._points
        t = self.index.table
        ids = t.column(self.info.id_column).to_numpy(zero_copy_only=False)
        lat = np.asarray(t.column(loc[0]).to_numpy(zero_copy_only=False), dtype=np.float64)
        lon = np.asarray(t.column(loc[1]).to_numpy(zero_copy_only=False), dtype=np.float64)
        _, first = np.unique(ids, return_index=True)
        first = np.sort(first)
        first = first[np.isfinite(lat[first]) & np.isfinite(lon[first])]
        count = len(first)
        if count > self.settings.map_points:
            rng = np.random.default_rng(0)
            first = np.sort(rng.choice(first, self.settings.map_points, replace=False))
        self._points = {
            "count": int(count),
            "shown": len(first),
            "ids": ids[first].tolist(),
            "lat": np.round(lat[first], 5).tolist(),
            "lon": np.round(lon[first], 5).tolist(),
        }
        return self._points

    def background_png(self) -> bytes:
        """The map background: the report's Köppen-Geiger world raster (offline), as PNG."""
        if self._background is None:
            from PIL import Image

            try:
                from sbe.report.worldmap import koppen_background

                img = koppen_background(1440, 720)
            except (SbeError, ImportError, OSError):
                img = Image.new("RGB", (1440, 720), (222, 234, 244))
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=True)
            self._background = buf.getvalue()
        return self._background

    def describe(self) -> dict[str, Any]:
        """Index and model identity, for ``/stats`` and the page."""
        info = self.info
        return {
            "index": {
                "dir": str(self.index_dir),
                "build_id": info.build_id,
                "kind": info.kind,
                "faiss_class": info.faiss_class,
                "dim": info.dim,
                "count": info.count,
                "unique_ids": info.unique_ids,
                "id_column": info.id_column,
                "location_columns": info.location_columns,
                "created_at": info.created_at,
                "calibration": self.calibration.to_dict() if self.calibration else None,
            },
            "model": self.model_identity,
            "model_note": self.model_note,
            "photos": str(self.photos.path) if self.photos else None,
            "photos_note": self.photo_note,
            "rerank": {"gallery": self.gallery_source(), **self.stats_rerank},
            "load_seconds": round(self.load_seconds, 3),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "max_k": self.settings.max_k,
        }
