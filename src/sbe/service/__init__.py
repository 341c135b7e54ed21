"""A web service over an index directory: photo and id queries, embeddings, a map page.

- :mod:`sbe.service.app`: :func:`create_app`, the FastAPI app (OpenAPI at ``/docs``).
- :mod:`sbe.service.engine`: the loaded index + model, shared by requests.
- :mod:`sbe.service.batching`: concurrent requests share one model call.
- :mod:`sbe.service.uploads`: upload checks (size, type, decompression bombs).
- :mod:`sbe.service.photos`: thumbnails from a photo parquet.
- :mod:`sbe.service.command`: :func:`serve` (``sbe serve``).
"""

from typing import Any

from sbe.service.command import serve


def create_app(*args: Any, **kwargs: Any) -> Any:
    """:func:`sbe.service.app.create_app` (imported on first use: FastAPI loads only here)."""
    from sbe.service.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app", "serve"]
