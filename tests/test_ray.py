"""The Ray engine on a local two-worker Ray: the per-task runner and ``sbe embed --engine ray``
give exactly the local engine's outputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_publish_fixtures import make_tiny_model, packaged_parquet

from sbe.config import EmbedConfig
from sbe.distributed import ray_map
from sbe.stages import embed
from sbe.storage import to_numpy_matrix, write_json_atomic

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


@pytest.fixture(scope="module")
def local_ray():
    os.environ["HF_HUB_OFFLINE"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_map_runs_one_task_per_item_like_the_local_loop(tmp_path: Path, local_ray) -> None:
    def work(item: int, out_dir: str, scale: int) -> dict:
        # a stand-in for a stage's per-tar function: pure, writes its own output atomically
        value = {"item": item, "square": item * item * scale, "pid": os.getpid()}
        write_json_atomic(Path(out_dir) / f"{item:03d}.json", value)
        return value

    items = list(range(7))
    local = [work(i, str(tmp_path / "local"), 3) for i in items]
    got = dict(ray_map(work, items, kwargs={"out_dir": str(tmp_path / "ray"), "scale": 3}))
    assert sorted(got) == items
    assert [got[i]["square"] for i in items] == [r["square"] for r in local]
    for i in items:
        a = (tmp_path / "local" / f"{i:03d}.json").read_text()
        b = (tmp_path / "ray" / f"{i:03d}.json").read_text()
        assert a.replace(str(local[i]["pid"]), "") == b.replace(str(got[i]["pid"]), "")
    assert {r["pid"] for r in got.values()} != {os.getpid()}  # ran in Ray workers

    def boom(item: int) -> int:
        if item == 3:
            raise ValueError(f"item {item} is corrupt")
        return item

    with pytest.raises(ValueError, match="item 3 is corrupt"):
        dict(ray_map(boom, items, max_in_flight=2))


def test_embed_engine_ray_matches_local(tmp_path: Path, local_ray) -> None:
    model = make_tiny_model(tmp_path / "tiny")
    inp = packaged_parquet(
        tmp_path / "in.parquet",
        60,
        osmid="string",
        bad={5: b"junk"},
        row_group_size=20,
        is_valid=[i % 9 != 2 for i in range(60)],
    )
    cfg = {"input": inp, "model": model, "chunk_rows": 8}
    embed.run(EmbedConfig(output=tmp_path / "local", **cfg))
    m = embed.run(EmbedConfig(output=tmp_path / "ray", engine="ray", ray_workers=2, **cfg))
    assert m.rows["embedded"] == 52 and m.rows["failed"] == 1
    a = pq.read_table(tmp_path / "local" / "parts").sort_by("row_index")
    b = pq.read_table(tmp_path / "ray" / "parts").sort_by("row_index")
    assert a.schema == b.schema or a.schema.remove_metadata() == b.schema.remove_metadata()
    assert a["row_index"].equals(b["row_index"]) and a["OSMID"].equals(b["OSMID"])
    np.testing.assert_allclose(
        to_numpy_matrix(a["embedding"]), to_numpy_matrix(b["embedding"]), atol=1e-5
    )
    names = sorted(p.name for p in (tmp_path / "ray" / "parts").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "local" / "parts").iterdir())
    assert pq.read_table(tmp_path / "ray" / "failures")["row_index"].to_pylist() == [5]
    # a finished Ray run is current for the local engine too (same parts, same provenance)
    assert embed.run(EmbedConfig(output=tmp_path / "ray", **cfg)).up_to_date
