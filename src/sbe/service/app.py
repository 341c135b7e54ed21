"""The FastAPI app: search an index by photo or by id, browse its buildings on a map.

Example:
    >>> from sbe.service import create_app
    >>> app = create_app("work/index", "work/model")  # then: uvicorn.run(app)

Every error is a JSON object ``{"error": "<what went wrong and what to do>", "status": code}``;
a bad request never takes the server down (tested in ``tests/test_service.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Unpack

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from sbe import __version__
from sbe.errors import SbeError
from sbe.service.engine import Engine, EngineOptions, Upload
from sbe.service.uploads import UploadError, UploadLimits

HERE = Path(__file__).resolve().parent
UPLOAD_FIELD = "images"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error(status: int, message: str) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse({"error": message, "status": status}, status_code=status)


class Guard:
    """ASGI middleware: caps request bodies while they stream in, and times every request.

    A body declaring (``Content-Length``) or sending more than ``max_body`` bytes is refused
    with 413 before the rest is read. Latencies are recorded per route template (``/buildings/
    {id}``), so the counters stay bounded whatever paths clients invent.
    """

    def __init__(self, app: ASGIApp, engine: Engine, max_body: int) -> None:
        self.app = app
        self.engine = engine
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body:
                    await error(413, self._too_large(declared))(scope, receive, send)
                    self.engine.stats.record("(refused)", 413, 0.0)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise UploadError(413, self._too_large(seen))
            return msg

        async def timed_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, limited_receive, timed_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "(unrouted)"
            key = f"{scope.get('method', '')} {name}"
            self.engine.stats.record(key, status[0], (time.perf_counter() - t0) * 1000.0)

    def _too_large(self, n: int) -> str:
        return f"request body of {n:,} bytes or more; the limit is {self.max_body:,} bytes"


class VectorQuery(BaseModel):
    """``POST /search/vectors``: query vectors (one per query) and k."""

    vectors: list[list[float]] = Field(..., min_length=1, max_length=1000)
    k: int = 10


MULTIPART_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {
                        UPLOAD_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more JPEG/PNG photos",
                        },
                        "k": {"type": "integer", "default": 10},
                        "rerank": {"type": "boolean", "default": False},
                    },
                }
            }
        },
    }
}


async def read_uploads(request: Request, limits: UploadLimits) -> tuple[list[Upload], dict]:
    """The multipart form's images (field ``images``) and its other fields.

    Raises:
        UploadError: not multipart (415), a malformed form or too many parts (400/413).
    """
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UploadError(
            415,
            f"content type {ctype.split(';')[0] or 'none'!r}: send multipart/form-data with one "
            f"or more image files in the field {UPLOAD_FIELD!r}",
        )
    try:
        form = await request.form(max_files=limits.max_images, max_fields=16)
    except (MultiPartException, StarletteHTTPException) as e:
        # Starlette turns its parser's errors into a 400 HTTPException inside an app
        message = str(getattr(e, "message", None) or getattr(e, "detail", "") or e)
        if "too many files" in message.lower():
            raise UploadError(
                413, f"too many images in one request; the limit is {limits.max_images}"
            ) from None
        raise UploadError(400, f"malformed multipart body: {message}") from None
    try:
        uploads = []
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != UPLOAD_FIELD:
                    raise UploadError(400, f"unexpected file field {key!r}; use {UPLOAD_FIELD!r}")
                data = await value.read(limits.max_image_bytes + 1)
                uploads.append(Upload(value.filename or "upload", value.content_type, data))
            else:
                fields[key] = value
        return uploads, fields
    finally:
        await form.close()  # spooled files are released now, not when the GC gets to them


def form_int(fields: dict, name: str, default: int) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UploadError(422, f"{name} must be an integer, got {raw!r}") from None


def form_bool(fields: dict, name: str) -> bool:
    raw = str(fields.get(name, "")).strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise UploadError(422, f"{name} must be true or false, got {raw!r}")


def create_app(
    index_dir: str | Path, model_dir: str | Path | None = None, **options: Unpack[EngineOptions]
) -> FastAPI:
    """Build the app; the index and the model are loaded now, once.

    Args:
        index_dir: an index directory (``sbe index build`` output).
        model_dir: the published model for image queries; ``None`` uses the one ``index.json``
            records.
        options: ``photos`` (a parquet of photos for thumbnails; ``None`` finds one through the
            index's provenance when it can), ``settings`` (:class:`ServiceSettings`: limits,
            batching, map size), ``embedder`` (an already loaded
            :class:`~sbe.models.published.Embedder`, wins over ``model_dir``).

    Returns:
        The FastAPI app (OpenAPI at ``/docs``).

    Raises:
        SbeError: the index or model cannot be loaded.
    """
    engine = Engine(index_dir, model_dir, **options)
    limits = engine.settings.limits

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(
        title="sbe search service",
        version=__version__,
        description="Find buildings like a photo, or like an indexed building; browse the map.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.add_middleware(Guard, engine=engine, max_body=limits.max_request_bytes)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, e: UploadError) -> JSONResponse:
        return error(e.status, e.message)

    @app.exception_handler(SbeError)
    async def _sbe_error(_: Request, e: SbeError) -> JSONResponse:
        return error(400, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        if any(x.get("type") == "json_invalid" for x in errs):
            ctx = next(x for x in errs if x.get("type") == "json_invalid").get("ctx") or {}
            return error(400, f"malformed JSON body: {ctx.get('error', 'cannot parse')}")
        parts = []
        for x in errs:
            where = ".".join(str(p) for p in x.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where or 'body'}: {x.get('msg', 'invalid')}")
        return error(422, "; ".join(parts))

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(e).__name__}); the server keeps running")

    # ---- page ----

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> Response:
        d = engine.describe()
        return templates.TemplateResponse(
            request,
            "index.html",
            {
                "index": d["index"],
                "model": d["model"],
                "model_note": d["model_note"],
                "photos_note": d["photos_note"],
                "max_k": engine.settings.max_k,
                "version": __version__,
            },
        )

    @app.get("/map/background.png", include_in_schema=False)
    def background() -> Response:
        return Response(
            engine.background_png(),
            media_type="image/png",
            headers={"Cache-Control": "max-age=86400"},
        )

    @app.get("/points", summary="Every located building, for the map")
    def points() -> dict[str, Any]:
        """``ids``, ``lat``, ``lon`` (parallel lists) of every located id (a seeded sample of
        ``shown`` out of ``count`` when there are more than the map limit)."""
        return engine.points()

    # ---- API ----

    @app.post(
        "/search", summary="Nearest buildings of uploaded photos", openapi_extra=MULTIPART_DOC
    )
    async def search_images(request: Request) -> dict[str, Any]:
        """Upload one or more photos (multipart field ``images``); for each, the ``k`` most
        similar indexed buildings, best first, with similarity (cosine), location, a thumbnail
        URL and, when the index carries a calibration, ``same_building`` and its probability.
        ``rerank=true`` re-orders the global top ``rerank_k`` by verified local matches (DISK +
        LightGlue + RANSAC; the index's feature store, else the candidates' photos extracted
        now): each hit then has ``matches`` (``null``: no photo, global place kept) and
        ``score``."""
        uploads, fields = await read_uploads(request, limits)
        # k and rerank may come as form fields or in the query string; the form wins
        given = {**dict(request.query_params), **fields}
        k = engine.check_k(form_int(given, "k", engine.settings.default_k))
        rerank = form_bool(given, "rerank")
        t0 = time.perf_counter()
        vectors = await engine.embed(uploads)
        t1 = time.perf_counter()
        kk = max(k, engine.rerank_k) if rerank else k
        result = await _to_thread(engine.search_vectors, vectors, kk)
        t2 = time.perf_counter()
        timing = {"embed": round((t1 - t0) * 1e3, 3), "search": round((t2 - t1) * 1e3, 3)}
        if rerank:
            result = await _to_thread(engine.rerank, result, [[u.data] for u in uploads])
            timing["rerank"] = round((time.perf_counter() - t2) * 1e3, 3)
            result = result.head(k)
        # hits may make thumbnails (decoding): off the event loop too; calibrated once for all
        result = engine.calibrated(result)
        hits = await _to_thread(lambda: [engine.hits(result, q) for q in range(len(uploads))])
        return {
            "k": k,
            "queries": [{"query": u.name, "hits": hits[q]} for q, u in enumerate(uploads)],
            **result.notes,
            "calibration": engine.calibration.to_dict() if engine.calibration else None,
            "timing_ms": timing,
        }

    @app.post("/search/vectors", summary="Nearest buildings of query vectors")
    def search_vectors(body: VectorQuery) -> dict[str, Any]:
        """JSON ``{"vectors": [[...D floats...], ...], "k": 10}``; vectors are normalised here."""
        k = engine.check_k(body.k)
        x = np.asarray(body.vectors, dtype=np.float32) if _rectangular(body.vectors) else None
        if x is None or x.shape[1] != engine.index.dim:
            raise UploadError(
                422, f"vectors must all have dimension {engine.index.dim} (the index's)"
            )
        result = engine.calibrated(engine.search_vectors(x, k))
        return {"k": k, "queries": [{"hits": engine.hits(result, q)} for q in range(len(x))]}

    @app.get("/search", summary="Nearest buildings of an indexed building or row")
    def search_id(
        id: str | None = Query(None, description="an indexed id (its building's vector)"),
        row: int | None = Query(None, description="an indexed row (one image's vector)"),
        k: int = Query(10, description="neighbours returned"),
        rerank: bool = Query(
            False, description="with id=: re-rank by verified local matches of its photos"
        ),
    ) -> dict[str, Any]:
        """Give exactly one of ``id`` or ``row``; the query itself is left out of the hits."""
        if (id is None) == (row is None):
            raise UploadError(422, "give exactly one of id= or row=")
        k = engine.check_k(k)
        if rerank and id is None:
            raise UploadError(422, "rerank=true needs id= (the building's photos are the query)")
        kk = max(k, engine.rerank_k) if rerank else k
        if id is not None:
            result = engine.search_id(id, kk)
            if rerank:
                result = engine.rerank(result, [engine.query_photos_of(id)]).head(k)
        else:
            assert row is not None  # exactly one of id/row was given (checked above)
            result = engine.search_row(int(row), k)
        return {
            "query": id if id is not None else f"row {row}",
            "k": k,
            **result.notes,
            "hits": engine.hits(result),
        }

    @app.get("/buildings/{id}", summary="What the index holds about one building")
    def building(id: str) -> dict[str, Any]:
        """Its rows, metadata (location, image count, ...) and thumbnail URLs when available."""
        return engine.building(id)

    @app.get(
        "/buildings/{id}/photos/{n}",
        summary="A thumbnail of a building's n-th photo",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def photo(id: str, n: int) -> Response:
        return Response(
            engine.photo(id, n), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
        )

    @app.post("/embed", summary="Embeddings of uploaded photos", openapi_extra=MULTIPART_DOC)
    async def embed(request: Request) -> dict[str, Any]:
        """One unit vector per uploaded photo (multipart field ``images``), in upload order."""
        uploads, _ = await read_uploads(request, limits)
        vectors = await engine.embed(uploads)
        ident = engine.model_identity or {}
        return {
            "model": ident.get("fingerprint"),
            "dim": int(vectors.shape[1]),
            "names": [u.name for u in uploads],
            "vectors": vectors.astype(float).round(7).tolist(),
        }

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "index": engine.info.count, "model": engine.embedder is not None}

    @app.get("/stats", summary="Counts, identity, latency percentiles")
    def stats() -> dict[str, Any]:
        """Index and model identity, request counts by status, per-route latency percentiles
        (ms, over the last 4096 requests of each route) and batching counters."""
        return {
            **engine.describe(),
            **engine.stats.snapshot(),
            "batching": engine.batcher.stats.as_dict(),
        }

    return app


def _rectangular(rows: list[list[float]]) -> bool:
    return len({len(r) for r in rows}) == 1


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
