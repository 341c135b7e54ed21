"""``sbe serve``: run the search service with uvicorn (the CLI wires its options to :func:`serve`).

With ``workers > 1`` uvicorn starts that many processes, each loading the index and the model
(memory grows accordingly); they learn what to load from environment variables, because uvicorn
re-imports the app by name in each worker.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from sbe.errors import SbeError

ENV_INDEX = "SBE_SERVE_INDEX"
ENV_MODEL = "SBE_SERVE_MODEL"
ENV_PHOTOS = "SBE_SERVE_PHOTOS"


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
        index, os.environ.get(ENV_MODEL) or None, photos=os.environ.get(ENV_PHOTOS) or None
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

        app = create_app(index_dir, model_dir, photos=photos)  # load errors surface here
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    from sbe.index.directory import load_info

    load_info(index_dir)  # a wrong folder fails here, once, not in every worker
    os.environ[ENV_INDEX] = str(Path(index_dir).resolve())
    os.environ[ENV_MODEL] = str(Path(model_dir).resolve()) if model_dir else ""
    os.environ[ENV_PHOTOS] = str(Path(photos).resolve()) if photos else ""
    uvicorn.run(
        "sbe.service.command:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
