"""Fixed-size array columns: (N, D) numpy matrices <-> Arrow ``fixed_size_list`` without Python lists."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numpy.typing import DTypeLike


def fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """Wrap an (N, D) array as an Arrow ``fixed_size_list<D>`` column (zero-copy when contiguous).

    Args:
        matrix: array of shape (N, D); its dtype is kept (float16, float32, uint8, int32, ...).

    Returns:
        A ``FixedSizeListArray`` of length N.
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {matrix.shape}")
    _n, d = matrix.shape
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, d)


def to_numpy_matrix(
    column: pa.Array | pa.ChunkedArray, dtype: DTypeLike | None = None
) -> np.ndarray:
    """Turn a ``fixed_size_list<D>`` column into an (N, D) numpy array.

    Args:
        column: the Arrow column (chunked or not). Nulls are not allowed.
        dtype: optional dtype to cast to (e.g. ``np.float32`` for compute).

    Returns:
        Array of shape (N, D).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_list(column.type):
        raise TypeError(f"expected a fixed_size_list column, got {column.type}")
    if column.null_count:
        raise ValueError("fixed-size array column has nulls")
    d = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    out = values.reshape(len(column), d)
    if dtype is not None and out.dtype != dtype:
        out = out.astype(dtype)
    return out
