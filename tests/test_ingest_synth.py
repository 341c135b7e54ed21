"""End to end: the synthetic world's tars (``sbe synth``) ingest cleanly and match its ground truth."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sbe.config import load_config
from sbe.stages import ingest, synth


def test_synthetic_tars_ingest_without_skips_and_match_truth(tmp_path: Path) -> None:
    cfg = load_config(
        overrides={
            "synth": {"buildings": 3, "image_size": 96, "buildings_per_tar": 2, "workers": 1},
            "ingest": {"workers": 1},
        }
    )
    cfg.workdir = tmp_path
    synth.run(cfg.section("synth"))
    m = ingest.run(cfg.section("ingest"))

    truth = pq.read_table(tmp_path / "raw" / "truth.parquet")
    assert m.skipped == {} and m.extra["warnings"] == {}
    assert m.rows == {"images": truth.num_rows, "tars": len(list((tmp_path / "raw").glob("*.tar")))}

    rows = pa.concat_tables(pq.read_table(tmp_path / "images" / p) for p in m.outputs)
    joined = (
        rows.drop_columns(["fingerprint"])
        .join(truth, ["dataset_id", "patch_id"], right_suffix="_truth")
        .sort_by([("dataset_id", "ascending"), ("patch_id", "ascending")])
    )
    assert joined.num_rows == truth.num_rows
    for col in ("target_id", "panorama_id", "capture_date", "member_name"):
        assert joined[col].equals(joined[f"{col}_truth"]), col
    assert any("/" in n for n in joined["member_name"].to_pylist()), "a nested tar is covered"
    np.testing.assert_allclose(
        joined["camera_distance"].to_numpy(), joined["camera_distance_truth"].to_numpy(), atol=2e-3
    )
    assert set(joined["image_width"].to_pylist()) == {96}

    # every offset reads back a decodable image of the recorded size
    for row in rows.select(["tar_file", "tar_offset", "tar_size"]).to_pylist()[:10]:
        with open(row["tar_file"], "rb") as f:
            f.seek(row["tar_offset"])
            assert Image.open(io.BytesIO(f.read(row["tar_size"]))).size == (96, 96)
