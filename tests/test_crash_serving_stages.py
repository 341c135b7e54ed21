"""Crash consistency of the serving stages: embed, aggregate, index, cluster and report.

Each stage is stopped right after every one of its file commits (``tests/faults.py``), with the same
settings and with a changed setting, then rerun with the original settings: the output must equal
a clean run's, file by file. Inputs come from the session's tiny pipeline, copied into a scratch
folder (nothing is written into the session fixture's folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faults import assert_same_output, crash_matrix, output_files

from sbe.config import AggregateConfig, ClusterConfig, EmbedConfig, IndexConfig
from sbe.pipeline import wire
from sbe.stages import aggregate, cluster, embed, index, report
from sbe.storage import to_numpy_matrix

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


@dataclass(frozen=True)
class Inputs:
    """Copies of the tiny pipeline's outputs that the serving stages read."""

    packaged: Path
    model: Path
    embeddings: Path
    buildings: Path
    locations: Path
    pipeline: Any  # the tiny pipeline's SbeConfig (the report reads its folders, read-only)


@pytest.fixture(scope="module")
def inputs(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    cfg, _ = tiny_pipeline
    root = tmp_path_factory.mktemp("serving-inputs")
    work = cfg.workdir.expanduser().resolve()
    packaged = shutil.copy2(cfg.section("embed").input, root / "packaged.parquet")
    model = shutil.copytree(work / "model", root / "model")
    # an embed output made from the copies (its state.json then names the copied input)
    embeddings = root / "embeddings"
    embed.run(EmbedConfig(input=packaged, model=model, output=embeddings, chunk_rows=4))
    buildings = root / "buildings"
    aggregate.run(AggregateConfig(input=[embeddings], output=buildings))
    ids = pq.read_table(buildings / "buildings.parquet", columns=["OSMID"])["OSMID"]
    n = len(ids)
    locations = root / "locations.parquet"
    pq.write_table(
        pa.table({"OSMID": ids, "lat": np.linspace(-10, 10, n), "lon": np.linspace(5, 25, n)}),
        locations,
    )
    return Inputs(Path(packaged), Path(model), embeddings, buildings, locations, cfg)


def _parts_close(a: Path, b: Path) -> None:
    """Embedding parts: ids and rows exactly, vectors to float tolerance (a resumed run batches
    its images differently, which moves the last bits)."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema.remove_metadata() == tb.schema.remove_metadata(), a.name
    assert ta.drop_columns("embedding").equals(tb.drop_columns("embedding")), a.name
    np.testing.assert_allclose(
        to_numpy_matrix(ta["embedding"]), to_numpy_matrix(tb["embedding"]), atol=1e-5
    )


def _same_with(rules: dict[str, Callable[[Path, Path], None]]) -> Callable[[Path, Path], None]:
    """:func:`assert_same_output` with ``rules`` (name pattern -> comparison) for some files."""

    def same(expected: Path, actual: Path) -> None:
        compare = {
            name: rule
            for name in output_files(expected)
            for pattern, rule in rules.items()
            if re.fullmatch(pattern, name)
        }
        assert_same_output(expected, actual, compare=compare)

    return same


@contextlib.contextmanager
def inside(workdir: Path) -> Iterator[Path]:
    """Run with ``workdir`` as the current folder, so the output is the relative path ``out`` and
    the manifests of two cases (which record the config, paths included) can be compared."""
    workdir.mkdir(parents=True, exist_ok=True)
    old = Path.cwd()
    os.chdir(workdir)
    try:
        yield Path("out")
    finally:
        os.chdir(old)


def _check(report: Any, minimum: int) -> None:
    assert report.points["same"] >= minimum and report.points["changed"] >= minimum, report.points


def test_embed_crash_at_every_commit(inputs: Inputs, tmp_path: Path) -> None:
    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        settings = {"chunk_rows": 4, "limit": 10, "batch_size": 4, **overrides}
        with inside(workdir) as out:
            cfg = EmbedConfig(input=inputs.packaged, model=inputs.model, output=out, **settings)
            embed.run(cfg, progress=False)

    same = _same_with({r"parts/.*\.parquet": _parts_close})
    for changed in ({"chunk_rows": 3}, {"limit": 6}):
        work = tmp_path / next(iter(changed))
        work.mkdir()
        # marker, state, (part, state) per chunk, state, manifest
        _check(crash_matrix("embed", run, work, changed=changed, same_output=same), 8)


def test_embed_folder_input_crash_at_every_commit(tmp_path: Path) -> None:
    """A photo folder with metadata.csv: sources.parquet, state and parts at every commit point;
    the changed runs list other kept columns (only sources.parquet differs) or other chunks."""
    from test_publish_fixtures import make_tiny_model
    from test_sources import jpeg, write_csv

    os.environ["HF_HUB_OFFLINE"] = "1"
    model = make_tiny_model(tmp_path / "tiny")
    photos = tmp_path / "photos"
    rows = []
    for i in range(5):
        (photos / f"b{i % 2}").mkdir(parents=True, exist_ok=True)
        (photos / f"b{i % 2}" / f"img{i}.jpg").write_bytes(jpeg(i))
        rows.append([f"b{i % 2}/img{i}.jpg", f"way/{i % 2}", "n" if i % 2 else "s"])
    (photos / "b0" / "bad.jpg").write_bytes(b"not an image")
    rows.append(["b0/bad.jpg", "way/0", "s"])
    write_csv(photos / "metadata.csv", ["file_name", "building_id", "side"], rows)

    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        settings = {"chunk_rows": 2, "batch_size": 2, "keep_columns": ["side"], **overrides}
        with inside(workdir) as out:
            cfg = EmbedConfig(input=photos, model=model, output=out, **settings)
            embed.run(cfg, progress=False)

    same = _same_with({r"parts/.*\.parquet": _parts_close})
    for changed in ({"keep_columns": []}, {"chunk_rows": 3}):
        work = tmp_path / next(iter(changed))
        work.mkdir()
        # marker, sources, state, (failures?, part, state) per chunk, state, manifest
        _check(crash_matrix("embed", run, work, changed=changed, same_output=same), 10)


def test_aggregate_crash_at_every_commit(inputs: Inputs, tmp_path: Path) -> None:
    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        with inside(workdir) as out:
            aggregate.run(AggregateConfig(input=[inputs.embeddings], output=out, **overrides))

    r = crash_matrix("aggregate", run, tmp_path, changed={"locations": inputs.locations})
    _check(r, 3)  # marker, buildings.parquet, manifest (+ GeoParquet when located)


def _index_json_same(a: Path, b: Path) -> None:
    """index.json without what differs between two builds of the same index."""
    volatile = {"build_id", "created_at", "build_seconds", "read_seconds"}

    def norm(p: Path) -> dict[str, Any]:
        data = {k: v for k, v in json.loads(p.read_text()).items() if k not in volatile}
        data["memory"] = {k: v for k, v in data["memory"].items() if k != "peak_rss"}
        return data

    assert norm(a) == norm(b)


@pytest.mark.parametrize("changed", [{"kind": "hnsw"}, {"id_column": "image_count"}])
def test_index_crash_at_every_commit(
    inputs: Inputs, tmp_path: Path, changed: dict[str, Any]
) -> None:
    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        settings = {"kind": "exact", **overrides}
        with inside(workdir) as out:
            index.run(IndexConfig(input=inputs.buildings, output=out, **settings))

    same = _same_with({r"index\.json": _index_json_same})
    _check(crash_matrix("index", run, tmp_path, changed=changed, same_output=same), 5)
    # the recovered index still loads and answers
    from sbe.index import SearchIndex

    found = SearchIndex.load(tmp_path / "same-0" / "out").search_rows([0], k=1)
    assert found.rows.shape == (1, 1) and found.rows[0, 0] >= 0


def _store_meta_same(a: Path, b: Path) -> None:
    """local_features/meta.json without the index build id (new on every build)."""

    def norm(p: Path) -> dict[str, Any]:
        return {k: v for k, v in json.loads(p.read_text()).items() if k != "index_build_id"}

    assert norm(a) == norm(b)


def test_index_with_local_features_crash_at_every_commit(inputs: Inputs, tmp_path: Path) -> None:
    """``--local-features`` adds the resumable parts and the store's files (meta.json last)."""
    from sbe.config import SbeConfig, VerifyConfig

    full = SbeConfig(verify=VerifyConfig(max_keypoints=32, max_side=96))

    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        settings = {"kind": "exact", "local_features": True, "local_features_per_row": 2}
        with inside(workdir) as out:
            cfg = IndexConfig(input=inputs.buildings, output=out, **{**settings, **overrides})
            index.run(cfg, full_config=full, show_progress=False)

    same = _same_with(
        {r"index\.json": _index_json_same, r"local_features/meta\.json": _store_meta_same}
    )
    report = crash_matrix(
        "index", run, tmp_path, changed={"local_features_per_row": 1}, same_output=same
    )
    _check(report, 10)  # + the part, 6 store files
    from sbe.verify.store import LocalFeatureStore

    store = LocalFeatureStore(tmp_path / "same-0" / "out" / "local_features")
    assert store.num_rows == len(pq.read_table(inputs.buildings / "buildings.parquet"))
    assert not (tmp_path / "same-0" / "out" / "local_features.parts").exists()


def test_cluster_crash_at_every_commit(inputs: Inputs, tmp_path: Path) -> None:
    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        settings = {"k": 3, **overrides}
        with inside(workdir) as out:
            cluster.run(ClusterConfig(input=inputs.buildings, output=out, **settings))

    _check(crash_matrix("cluster", run, tmp_path, changed={"k": 2}), 4)


GENERATED = re.compile(r"generated \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")


def _report_same(a: Path, b: Path) -> None:
    """The pages are equal but for the minute they were generated at (in the subtitle)."""
    ta, tb = a.read_text(), b.read_text()
    assert len(GENERATED.findall(ta)) == 1
    assert GENERATED.sub("generated -", ta) == GENERATED.sub("generated -", tb)


def test_report_crash_at_every_commit(inputs: Inputs, tmp_path: Path) -> None:
    base = wire(inputs.pipeline).section("report")

    def run(workdir: Path, overrides: dict[str, Any]) -> None:
        with inside(workdir) as out:
            report.run(base.model_copy(update={"output": out, **overrides}))

    same = _same_with({r"report\.html": _report_same})
    r = crash_matrix("report", run, tmp_path, changed={"gallery_queries": 3}, same_output=same)
    _check(r, 3)  # marker, report.html, manifest
    assert not list(Path(inputs.pipeline.workdir).rglob(".tmp-*"))


def test_crash_points_leave_no_manifest_claiming_a_half_output(
    inputs: Inputs, tmp_path: Path
) -> None:
    """After a crash the folder is never "up to date": the in-progress marker is written first and
    the manifest is gone before any output is replaced, so a reader (or ``sbe run``) cannot take a
    half-written index for a finished one (a crash between the two leaves the old, whole output)."""
    from faults import SimulatedCrash, crash_after

    cfg = IndexConfig(input=inputs.buildings, output=tmp_path / "out", kind="exact")
    index.run(cfg)
    other = cfg.model_copy(update={"kind": "hnsw"})
    for n in range(1, 4):
        with pytest.raises(SimulatedCrash), crash_after(n):
            index.run(other)
        if n > 1:  # n == 1: only the marker was written, the old output is untouched
            assert not (tmp_path / "out" / "_manifest.json").exists()
        assert (tmp_path / "out" / "_in_progress.json").exists()
    assert not index.run(cfg).up_to_date
    assert os.path.exists(tmp_path / "out" / "_manifest.json")
