"""``sbe serve``: run the search service with uvicorn (the CLI wires its options to :func:`serve`).

With ``workers > 1`` uvicorn starts that many processes, each loading the index and the model
(memory grows accordingly); they learn what to load from environment variables, because uvicorn
re-imports the app by name in each worker.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from sbe.errors import SbeError
from sbe.service.engine import ServiceSettings

ENV_INDEX = "SBE_SERVE_INDEX"
ENV_MODEL = "SBE_SERVE_MODEL"
ENV_PHOTOS = "SBE_SERVE_PHOTOS"
#: re-ranking settings for the worker processes (JSON: ``{"local": {...}, "rerank": {...}}``)
ENV_VERIFY = "SBE_SERVE_VERIFY"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_from_env() -> Any:
    """The app factory uvicorn's worker processes call (reads :data:`ENV_INDEX` and friends)."""
    from sbe.service.app import create_app

    index = os.environ.get(ENV_INDEX)
    if not index:
        raise SbeError(f"{ENV_INDEX} is not set: start the service with `sbe serve --index DIR`")
    return create_app(
        index,
        os.environ.get(ENV_MODEL) or None,
        photos=os.environ.get(ENV_PHOTOS) or None,
        settings=verify_settings_from_json(os.environ.get(ENV_VERIFY) or ""),
    )


def verify_settings_to_json(settings: ServiceSettings | None) -> str:
    """The re-ranking part of ``settings`` as JSON (what worker processes receive)."""
    if settings is None:
        return ""
    parts = {"local": settings.local, "rerank": settings.rerank}
    return json.dumps({k: v.to_dict() for k, v in parts.items() if v is not None})


def verify_settings_from_json(text: str) -> ServiceSettings | None:
    """:func:`verify_settings_to_json` read back (``None`` for an empty text)."""
    if not text:
        return None
    from sbe.verify.gallery import RerankSettings
    from sbe.verify.local import LocalSettings

    data = json.loads(text)
    local, rerank = data.get("local"), data.get("rerank")
    return ServiceSettings(
        local=LocalSettings.from_dict(local) if local else None,
        rerank=RerankSettings.from_dict(rerank) if rerank else None,
    )


def serve(
    index_dir: str | Path,
    model_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    photos: str | Path | None = None,
    log_level: str = "info",
    settings: ServiceSettings | None = None,
) -> None:
    """Serve ``index_dir`` until interrupted (Ctrl-C).

    Args:
        index_dir: an index directory (``sbe index build`` output).
        model_dir: the published model for photo queries; ``None`` uses the one the index records.
        host: address to bind; 127.0.0.1 (this machine only) unless told otherwise.
        port: TCP port (0 = any free one).
        workers: server processes (each holds its own copy of the index and model).
        photos: parquet of photos (``image_bytes`` + id column) for thumbnails; default: found
            through the index's provenance.
        log_level: uvicorn's log level.
        settings: how the service behaves (``None``: the defaults); with several workers only
            its re-ranking settings reach them (through :data:`ENV_VERIFY`).

    Raises:
        SbeError: the index or model cannot be loaded, or ``workers`` < 1.
    """
    import uvicorn

    if workers < 1:
        raise SbeError(f"--workers must be at least 1, got {workers}")
    if not _is_loopback(host):
        print(f"warning: binding {host}: the service is reachable from other machines")
    if workers == 1:
        from sbe.service.app import create_app

        app = create_app(index_dir, model_dir, photos=photos, settings=settings)  # errors here
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    from sbe.index.directory import load_info

    load_info(index_dir)  # a wrong folder fails here, once, not in every worker
    os.environ[ENV_INDEX] = str(Path(index_dir).resolve())
    os.environ[ENV_MODEL] = str(Path(model_dir).resolve()) if model_dir else ""
    os.environ[ENV_PHOTOS] = str(Path(photos).resolve()) if photos else ""
    os.environ[ENV_VERIFY] = verify_settings_to_json(settings)
    uvicorn.run(
        "sbe.service.command:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
