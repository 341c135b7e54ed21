"""Nearest-neighbour search and clustering over embeddings (faiss, scikit-learn).

- :mod:`sbe.index.source`: read any embeddings parquet (file or folder) into ids, metadata and
  a float32 matrix.
- :mod:`sbe.index.faiss_index`: build exact (``IndexFlatIP``) or HNSW inner-product indexes.
- :mod:`sbe.index.table`: the side table (row -> id + metadata).
- :mod:`sbe.index.directory`: the on-disk index directory and its ``index.json``.
- :mod:`sbe.index.search`: :class:`SearchIndex`, the query API.
- :mod:`sbe.index.cluster`: spherical k-means and HDBSCAN.
"""

from sbe.index.cluster import Clustering, hdbscan, kmeans
from sbe.index.directory import IndexInfo, load_index_dir, save_index_dir
from sbe.index.faiss_index import IndexParams, build_index
from sbe.index.search import SearchIndex, SearchResult, embed_images
from sbe.index.source import EmbeddingSource, find_parquet_files, open_source, read_source

__all__ = [
    "Clustering",
    "EmbeddingSource",
    "IndexInfo",
    "IndexParams",
    "SearchIndex",
    "SearchResult",
    "build_index",
    "embed_images",
    "find_parquet_files",
    "hdbscan",
    "kmeans",
    "load_index_dir",
    "open_source",
    "read_source",
    "save_index_dir",
]
