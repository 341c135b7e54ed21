"""``--engine ray`` for the tar stages: one Ray task per tar, outputs identical to the local engine."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tarfactory import records, write_tar

from sbe.config import IngestConfig
from sbe.stages import ingest

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _tables(folder: Path) -> dict[str, object]:
    return {p.name: pq.read_table(p) for p in sorted(folder.glob("*.parquet"))}


def test_ingest_engine_ray_matches_local(tmp_path: Path, local_ray) -> None:
    raw = tmp_path / "raw"
    for ds in (11, 12, 13):
        write_tar(
            raw / f"{ds:04d}.tar", records(6, dataset_id=ds), layout="nested" if ds % 2 else "flat"
        )
    local = ingest.run(IngestConfig(inputs=[raw], output=tmp_path / "local", workers=1))
    on_ray = ingest.run(IngestConfig(inputs=[raw], output=tmp_path / "ray", engine="ray"))
    assert on_ray.rows == local.rows == {"images": 18, "tars": 3}
    a, b = _tables(tmp_path / "local"), _tables(tmp_path / "ray")
    assert list(a) == list(b) == ["0011.parquet", "0012.parquet", "0013.parquet"]
    for name in a:
        assert a[name].equals(b[name]), name
    # a rerun with either engine finds the other's output current
    assert ingest.run(IngestConfig(inputs=[raw], output=tmp_path / "ray", workers=1)).up_to_date


def test_backbone_engine_ray_matches_local(tmp_path: Path, local_ray) -> None:
    from sbe.config import BackboneConfig
    from sbe.stages import backbone

    raw = tmp_path / "raw"
    for ds in (21, 22):
        write_tar(raw / f"{ds:04d}.tar", records(5, dataset_id=ds, size=64))
    ingest.run(IngestConfig(inputs=[raw], output=tmp_path / "images", workers=1))
    common = {"input": tmp_path / "images", "runtime": "torch", "threads": 1, "part_rows": 4}
    local = backbone.run(BackboneConfig(output=tmp_path / "local", **common))
    on_ray = backbone.run(BackboneConfig(output=tmp_path / "ray", engine="ray", **common))
    assert on_ray.rows == local.rows == {"images": 10, "embedded": 10, "parts": 4}
    a, b = _tables(tmp_path / "local"), _tables(tmp_path / "ray")
    assert list(a) == list(b) and len(a) == 4
    for name in a:
        assert a[name].equals(b[name]), name
