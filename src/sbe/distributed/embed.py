"""``sbe embed --engine ray``: the embed stage on Ray Data, one model per actor.

The driver plans the chunks exactly as the local engine does (same part names, same footers,
same ``state.json``); Ray Data spreads the pending row groups over an actor pool
(``map_batches`` with ``ActorPoolStrategy``), each actor loading the model once (on its own GPU
when the cluster has GPUs) and streaming its row group's chunks through the same decode/embed
pipeline as the local engine, writing each part atomically. So outputs are row-for-row those of
the local engine, and a killed Ray run resumes with either engine.

Why actors read the parquet themselves instead of ``ray.data.read_parquet``: the output must
carry each row's input row index and be written as deterministic, atomic per-range parts (that
is what makes resume exact); ``read_parquet`` blocks carry no row index and
``Dataset.write_parquet`` names files per run. The input must be on storage every node can read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sbe.distributed.tasks import cluster_gpus, ray_session
from sbe.errors import SbeError
from sbe.inference.pipeline import ChunkResult, ChunkWriter, embed_chunks
from sbe.inference.plan import IMAGE_BYTES, IS_VALID, Chunk, InputInfo, inspect_input, read_chunks
from sbe.storage.schemas import OSMID


class RowGroupEmbedder:
    """A Ray Data actor: loads the model once, embeds whole row groups' pending chunks.

    Args:
        model_dir: the published model folder.
        input_path: the packaged parquet (readable from every node).
        input_fingerprint: the driver's view of the input; the actor refuses a changed file.
        writer: the driver's :class:`ChunkWriter` (output folder, schema, part provenance).
        filter_valid, batch_size, decode_workers, device, runtime: as for the local engine.
    """

    def __init__(
        self,
        model_dir: str,
        input_path: str,
        input_fingerprint: dict[str, Any],
        writer: ChunkWriter,
        filter_valid: bool,
        batch_size: int,
        decode_workers: int,
        device: str,
        runtime: str = "auto",
    ) -> None:
        from sbe.models.published import load_embedder

        self.info: InputInfo = inspect_input(input_path)
        now = self.info.fingerprint()
        for key in ("size", "mtime_ns", "num_rows"):
            if now[key] != input_fingerprint[key]:
                raise SbeError(f"{input_path} changed while embedding ({key})")
        self.pf = pq.ParquetFile(self.info.path)
        self.writer = writer
        self.filter_valid = filter_valid
        self.columns = [IMAGE_BYTES, OSMID]
        if filter_valid and self.info.has_valid:
            self.columns.append(IS_VALID)
        self.embedder = load_embedder(
            model_dir,
            device,
            runtime=runtime,
            batch_size=batch_size,
            decode_workers=decode_workers or 2,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results: list[str] = []
        for unit in batch["unit"]:
            chunks = [Chunk(**c) for c in json.loads(str(unit))]
            tables = read_chunks(self.pf, self.info, chunks, self.columns)
            for r in embed_chunks(
                self.embedder, tables, self.writer, filter_valid=self.filter_valid
            ):
                results.append(json.dumps(asdict(r)))
        return {"result": np.array(results, dtype=object)}


def row_group_units(chunks: list[Chunk]) -> list[str]:
    """One work unit per row group: the JSON list of its pending chunks, in row order."""
    by_rg: dict[int, list[dict[str, int]]] = {}
    for c in sorted(chunks, key=lambda c: c.start):
        by_rg.setdefault(c.row_group, []).append(asdict(c))
    return [json.dumps(v) for _, v in sorted(by_rg.items())]


def ray_embed_chunks(
    *,
    model_dir: Path,
    info: InputInfo,
    chunks: list[Chunk],
    writer: ChunkWriter,
    filter_valid: bool,
    batch_size: int,
    decode_workers: int,
    device: str,
    workers: int,
    gpus_per_worker: float | None,
    runtime: str = "auto",
    address: str | None = None,
) -> Iterator[ChunkResult]:
    """Embed ``chunks`` on Ray; yields each chunk's result as its part lands (any order).

    Args:
        workers: actors in the pool (one model each); capped at the number of row groups.
        gpus_per_worker: GPUs each actor reserves; ``None`` = 1 if the cluster has GPUs, else 0.
        address: Ray cluster (``None`` = ``$RAY_ADDRESS`` or a local instance).
    """
    units = row_group_units(chunks)
    if not units:
        return
    with ray_session(address) as ray:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster_gpus() else 0.0)
        ds = ray.data.from_items([{"unit": u} for u in units], override_num_blocks=len(units))
        ds = ds.map_batches(
            RowGroupEmbedder,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(units)))),
            num_gpus=gpus,
            num_cpus=1,
            fn_constructor_kwargs={
                "model_dir": str(model_dir),
                "input_path": str(info.path),
                "input_fingerprint": info.fingerprint(),
                "writer": writer,
                "filter_valid": filter_valid,
                "batch_size": batch_size,
                "decode_workers": decode_workers,
                "device": device if gpus else "cpu",
                "runtime": runtime,
            },
        )
        for row in ds.iter_rows():
            yield ChunkResult(**json.loads(row["result"]))
