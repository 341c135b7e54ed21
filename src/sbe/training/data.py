"""Training data in memory: one float16 embedding matrix, integer identities, optional neighbours.

Reads only the columns training needs from ``split/<split>.parquet`` (``building_id``,
``embedding``) and ``neighbors/<split>.parquet`` (``neighbor_rows``, ``band``), as fixed-size
arrays, never Python lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sbe.errors import SbeError
from sbe.storage import to_numpy_matrix
from sbe.storage.artifacts import SplitDir


@dataclass
class EmbeddingSet:
    """One split held in memory.

    Attributes:
        embeddings: float16 tensor (N, D) on CPU (moved to the training device by the trainer).
        building_ids: int64 array (N,), the identity of each row.
        neighbor_rows: int32 array (N, k) of row indices into this split (-1 = padding), or None.
        neighbor_band: int8 array (N, k) of difficulty bands (0 = hardest, -1 = padding), or None.
    """

    embeddings: torch.Tensor
    building_ids: np.ndarray
    neighbor_rows: np.ndarray | None = None
    neighbor_band: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def has_neighbors(self) -> bool:
        return self.neighbor_rows is not None


def split_path(split_dir: str | os.PathLike[str], split: str) -> Path:
    """``<split_dir>/<split>.parquet`` (see :class:`~sbe.storage.artifacts.SplitDir`)."""
    return SplitDir(split_dir).split_path(split)


def load_split(
    split_dir: str | os.PathLike[str],
    split: str,
    neighbors_dir: str | os.PathLike[str] | None = None,
) -> EmbeddingSet:
    """Load ``split_dir/<split>.parquet`` (and its neighbours when ``neighbors_dir`` is given).

    Raises:
        SbeError: a file is missing, lacks a column, or the neighbour file does not line up.
    """
    path = split_path(split_dir, split)
    if not path.is_file():
        raise SbeError(f"split file not found: {path}")
    try:
        table = pq.read_table(path, columns=["building_id", "embedding"])
    except (KeyError, ValueError) as e:
        raise SbeError(f"{path}: needs columns building_id and embedding ({e})") from None
    emb = to_numpy_matrix(table.column("embedding"))
    # a private, writable float16 copy (Arrow buffers are read-only)
    emb = emb.astype(np.float16) if emb.dtype != np.float16 else np.array(emb, copy=True)
    ids = table.column("building_id").to_numpy().astype(np.int64, copy=False)
    out = EmbeddingSet(embeddings=torch.from_numpy(emb), building_ids=ids)
    if neighbors_dir is not None:
        npath = Path(neighbors_dir) / f"{split}.parquet"
        if not npath.is_file():
            raise SbeError(f"neighbour file not found: {npath}")
        nt = pq.read_table(npath, columns=["neighbor_rows", "band"])
        if nt.num_rows != len(ids):
            raise SbeError(
                f"{npath} has {nt.num_rows} rows but {path} has {len(ids)}; "
                "rerun `sbe neighbors` on this split"
            )
        rows = to_numpy_matrix(nt.column("neighbor_rows")).astype(np.int32, copy=False)
        band = to_numpy_matrix(nt.column("band")).astype(np.int8, copy=False)
        if rows.size and int(rows.max()) >= len(ids):
            raise SbeError(f"{npath}: neighbour row index out of range")
        out.neighbor_rows, out.neighbor_band = rows, band
    return out


def backbone_identity(split_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The backbone identity recorded by the split stage (manifest, else a split file's footer)."""
    found = SplitDir(split_dir).backbone()
    return found.to_dict() if found is not None else None
