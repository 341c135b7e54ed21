"""``sbe backbone`` stage: tar reads by offset, skips, dtypes, determinism, resume after a kill."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from sbe.config import BackboneConfig
from sbe.data.images import decode_rgb
from sbe.errors import SbeError
from sbe.models.backbones import load_backbone
from sbe.models.backbones.onnx import available_cores
from sbe.stages import backbone as stage
from sbe.storage import (
    fingerprint_file,
    fixed_size_list,
    read_part_meta,
    to_numpy_matrix,
    write_part,
)
from sbe.storage.schemas import IMAGES_SCHEMA, backbone_schema, make_uid

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("SBE_CACHE", str(tmp_path_factory.getbasetemp() / "sbe-cache"))
        yield


# ---- generated ingest-format data ----------------------------------------------------------------


def _jpeg(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x * rng.uniform(), y * rng.uniform(), (x + y) / 2], -1) * 255
    img += rng.normal(0, 10, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_ingest(
    root: Path, n: int, *, corrupt: tuple[int, ...] = (), size: int = 80, dataset: int = 88
) -> Path:
    """A raw tar of ``n`` JPEGs and its ingest part ``root/images/<dataset>.parquet``.

    Image ``i`` in ``corrupt`` keeps its JPEG header and loses the rest (not decodable).
    Row groups of 4 rows, so output parts span several of them.
    """
    tar = root / "raw" / f"{dataset:04d}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(n):
            data = _jpeg(i, size)
            if i in corrupt:
                data = data[:30] + bytes(len(data) - 30)
            info = tarfile.TarInfo(f"{dataset:04d}/{dataset:04d}/img_{i:05d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with tarfile.open(tar) as tf:
        where = [(m.name, m.offset_data, m.size) for m in tf.getmembers()]
    ids = np.arange(n, dtype=np.int64)
    ds = np.full(n, dataset)
    special = {
        "image_id": make_uid(ds, ids),
        "target_uid": make_uid(ds, ids // 2),
        "dataset_id": ds,
        "target_id": ids // 2,
        "patch_id": ids,
        "panorama_id": ids + 1000,
        "capture_date": [None] * n,
        "tar_file": [str(tar.resolve())] * n,
        "member_name": [w[0] for w in where],
        "tar_offset": [w[1] for w in where],
        "tar_size": [w[2] for w in where],
        "image_width": np.full(n, size),
        "image_height": np.full(n, size),
        "fingerprint": fixed_size_list((np.arange(n * 768) % 251).astype(np.uint8).reshape(n, 768)),
    }
    cols = []
    for f in IMAGES_SCHEMA:
        if f.name == "fingerprint":
            cols.append(special[f.name])
        elif f.name in special:
            cols.append(pa.array(special[f.name], f.type))
        elif pa.types.is_floating(f.type):  # geometry: any plausible numbers
            cols.append(pa.array(np.linspace(0, 1, n), f.type))
        else:  # other sources' metadata: absent
            cols.append(pa.nulls(n, f.type))
    table = pa.Table.from_arrays(cols, schema=IMAGES_SCHEMA)
    part = root / "images" / f"{dataset:04d}.parquet"
    write_part(
        table,
        part,
        {"stage": "ingest", "source": fingerprint_file(tar).model_dump()},
        row_group_size=4,
    )
    return root / "images"


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    """A tiny random ViT (32 px, 32-d): the torch runtime makes it fast enough for many runs."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("vit") / "vit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ViTModel(
            ViTConfig(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=32,
                patch_size=16,
            )
        ).save_pretrained(d)
    (d / "preprocessor_config.json").write_text(
        json.dumps(
            {"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}}
        )
    )
    return d


def _cfg(ingest: Path, out: Path, **kw) -> BackboneConfig:
    return BackboneConfig(input=ingest, output=out, **kw)


def _vit_cfg(ingest: Path, out: Path, vit: Path, **kw) -> BackboneConfig:
    kw.setdefault("part_rows", 4)
    kw.setdefault("batch_size", 3)
    return _cfg(ingest, out, model=f"hf:{vit}", runtime="torch", device="cpu", **kw)


def _read(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])


def _part_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}


# ---- tests ----------------------------------------------------------------------------------------


def test_default_backbone_end_to_end(tmp_path):
    ingest = make_ingest(tmp_path, 10, corrupt=(3,))
    out = tmp_path / "backbone"
    m = stage.run(_cfg(ingest, out, part_rows=4, batch_size=3, device="cpu"))
    bb = load_backbone("efficientnet-lite0", device="cpu")
    ident = bb.identity()
    assert m.rows == {"images": 10, "embedded": 9, "parts": 3}
    assert m.skipped == {"corrupt_jpeg": 1} and "0088_000003" in m.skip_examples["corrupt_jpeg"][0]
    assert m.extra["backbone"] == ident and m.extra["runtime"] == "onnx"
    # automatic threads on ONNX Runtime: one single-threaded model call per core at once
    assert m.extra["model_lanes"] == available_cores()
    assert m.outputs == [
        "0088-000000000.parquet",
        "0088-000000004.parquet",
        "0088-000000008.parquet",
    ]
    for name in m.outputs:
        meta = read_part_meta(out / name)
        assert meta["backbone"] == ident and meta["dtype"] == "float16"
    table = _read(out)
    assert table.schema.remove_metadata() == backbone_schema(1280, pa.float16())
    ingest_rows = pq.read_table(ingest / "0088.parquet")
    keep = [i for i in range(10) if i != 3]
    assert table["image_id"].to_pylist() == [ingest_rows["image_id"][i].as_py() for i in keep]
    assert table["fingerprint"].equals(ingest_rows["fingerprint"].take(keep))
    # the stored vectors are the backbone applied to each JPEG, read back from the tar
    emb = to_numpy_matrix(table["embedding"], np.float32)
    with open(ingest.parent / "raw" / "0088.tar", "rb") as fh:
        imgs = []
        for i in keep:
            fh.seek(ingest_rows["tar_offset"][i].as_py())
            imgs.append(decode_rgb(fh.read(ingest_rows["tar_size"][i].as_py())))
    ref = bb.embed_pil(imgs)
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999
    again = stage.run(_cfg(ingest, out, part_rows=4, batch_size=7, device="cpu"))
    assert again.up_to_date  # batch size does not change the result: nothing redone


def test_float32_output_and_dtype_change_redoes_parts(tmp_path, tiny_vit):
    ingest = make_ingest(tmp_path, 7)
    out = tmp_path / "bb"
    stage.run(_vit_cfg(ingest, out, tiny_vit))
    half = _read(out)
    m = stage.run(_vit_cfg(ingest, out, tiny_vit, dtype="float32"))
    assert not m.up_to_date and m.extra["parts_reused"] == 0
    full = _read(out)
    assert full.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert half.schema.field("embedding").type == pa.list_(pa.float16(), 32)
    a = to_numpy_matrix(full["embedding"])
    b = to_numpy_matrix(half["embedding"], np.float32)
    np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-3)
    assert not np.array_equal(a, b)  # float32 keeps what float16 rounds away


class Stop(Exception):
    pass


def test_interrupted_run_resumes_to_byte_identical_parts(tmp_path, tiny_vit):
    ingest = make_ingest(tmp_path, 18, corrupt=(5,))
    clean = tmp_path / "clean"
    stage.run(_vit_cfg(ingest, clean, tiny_vit))
    out = tmp_path / "resumed"
    done: list[str] = []

    def stop_after_two(result: stage.PartResult) -> None:
        done.append(result.output)
        if len(done) == 2:
            raise Stop

    with pytest.raises(Stop):
        stage.run(_vit_cfg(ingest, out, tiny_vit), on_part=stop_after_two)
    assert len(list(out.glob("*.parquet"))) == 2 and not (out / "_manifest.json").exists()
    m = stage.run(_vit_cfg(ingest, out, tiny_vit))
    assert m.extra["parts_reused"] == 2 and m.extra["images_this_run"] == 18 - 8
    assert m.rows == {"images": 18, "embedded": 17, "parts": 5} and m.skipped == {"corrupt_jpeg": 1}
    assert _part_bytes(out) == _part_bytes(clean)


@pytest.mark.slow
def test_killed_process_resumes_without_loss_or_duplicates(tmp_path, tiny_vit):
    """SIGKILL a real run after its second part, rerun: same rows as an uninterrupted run."""
    ingest = make_ingest(tmp_path, 24)
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from sbe.config import BackboneConfig
        from sbe.stages import backbone as stage
        real = stage.embed_part
        def slow(task, progress=None):
            r = real(task, progress)
            time.sleep(0.4)  # leave time for the kill to land mid-run
            return r
        stage.embed_part = slow
        stage.run(BackboneConfig(input=Path({str(ingest)!r}), output=Path({str(out)!r}),
                  model="hf:{tiny_vit}", runtime="torch", device="cpu", part_rows=4,
                  batch_size=3))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.parquet"))) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = len(list(out.glob("*.parquet")))
    assert 2 <= partial < 6
    m = stage.run(_vit_cfg(ingest, out, tiny_vit))
    assert m.extra["parts_reused"] == partial and not list(out.glob(".tmp-*"))
    clean = tmp_path / "clean"
    stage.run(_vit_cfg(ingest, clean, tiny_vit))
    assert _part_bytes(out) == _part_bytes(clean)
    ids = _read(out)["image_id"].to_numpy()
    assert len(ids) == 24 and len(np.unique(ids)) == 24


def test_changed_part_size_replaces_old_parts(tmp_path, tiny_vit):
    ingest = make_ingest(tmp_path, 11)
    out = tmp_path / "bb"
    stage.run(_vit_cfg(ingest, out, tiny_vit, part_rows=4))
    pq.write_table(pa.table({"x": [1]}), out / "notes.parquet")  # not ours: must survive
    m = stage.run(_vit_cfg(ingest, out, tiny_vit, part_rows=5))
    (out / "notes.parquet").unlink()
    assert (
        sorted(p.name for p in out.glob("*.parquet"))
        == m.outputs
        == [
            "0088-000000000.parquet",
            "0088-000000005.parquet",
            "0088-000000010.parquet",
        ]
    )
    assert sorted(m.extra["removed_stale_parts"]) == [
        "0088-000000004.parquet",
        "0088-000000008.parquet",
    ]
    ids = _read(out)["image_id"].to_numpy()
    assert len(ids) == 11 and len(np.unique(ids)) == 11


def test_damaged_and_missing_tars(tmp_path, tiny_vit):
    ingest = make_ingest(tmp_path, 8)
    tar = tmp_path / "raw" / "0088.tar"
    rows = pq.read_table(ingest / "0088.parquet")
    cut = rows["tar_offset"][6].as_py() + 10  # images 6 and 7 now lie past the end
    tar.write_bytes(tar.read_bytes()[:cut])
    m = stage.run(_vit_cfg(ingest, tmp_path / "bb", tiny_vit))
    assert m.rows["embedded"] == 6 and m.skipped == {"unreadable_bytes": 2}
    assert "tar ends early" in m.skip_examples["unreadable_bytes"][0]
    tar.unlink()
    with pytest.raises(SbeError, match=r"0088\.tar.*not found"):
        stage.run(_vit_cfg(ingest, tmp_path / "bb2", tiny_vit))
    with pytest.raises(SbeError, match="no ingest parts"):
        stage.run(_vit_cfg(tmp_path / "raw", tmp_path / "bb3", tiny_vit))


def test_a_part_with_only_bad_images_is_written_empty(tmp_path, tiny_vit):
    ingest = make_ingest(tmp_path, 6, corrupt=(0, 1, 2, 3))
    out = tmp_path / "bb"
    m = stage.run(_vit_cfg(ingest, out, tiny_vit))
    assert pq.read_table(out / "0088-000000000.parquet").num_rows == 0
    assert m.rows == {"images": 6, "embedded": 2, "parts": 2}
    assert m.skipped == {"corrupt_jpeg": 4}
    (out / "_manifest.json").unlink()
    assert stage.run(_vit_cfg(ingest, out, tiny_vit)).extra["parts_reused"] == 2


def test_part_task_is_picklable_and_pure(tmp_path, tiny_vit):
    ingest = make_ingest(tmp_path, 5)
    out = tmp_path / "bb"
    stage.run(_vit_cfg(ingest, out, tiny_vit))
    first = out / "0088-000000000.parquet"
    before = first.read_bytes()
    meta = read_part_meta(first)
    ident = meta["backbone"]
    task = stage.PartTask(
        source=str(ingest / "0088.parquet"),
        start=0,
        stop=4,
        tars={str((tmp_path / "raw" / "0088.tar").resolve()): str(tmp_path / "raw" / "0088.tar")},
        output=str(tmp_path / "again.parquet"),
        meta={k: v for k, v in meta.items() if k != "result"},
        backbone=ident,
        runtime="torch",
        device="cpu",
        batch_size=2,
    )
    result = stage.embed_part(pickle.loads(pickle.dumps(task)))
    assert (result.rows_in, result.rows_out) == (4, 4)
    assert (tmp_path / "again.parquet").read_bytes() == before
    # decoding in worker processes (the GPU plan) writes the same part, byte for byte
    procs = dataclasses.replace(task, output=str(tmp_path / "procs.parquet"), decode_processes=2)
    assert stage.embed_part(procs).rows_out == 4
    assert (tmp_path / "procs.parquet").read_bytes() == before


def test_ingest_stage_output_is_accepted(tmp_path, tiny_vit):
    """The real ingest stage's parts (absolute tar paths, its footer) feed this stage."""
    tarfactory = pytest.importorskip("tarfactory")
    from sbe.config import IngestConfig
    from sbe.stages import ingest as ingest_stage

    tarfactory.write_tar(tmp_path / "raw" / "0042.tar", tarfactory.records(5, dataset_id=42))
    ingest_stage.run(IngestConfig(inputs=[tmp_path / "raw"], output=tmp_path / "images", workers=1))
    m = stage.run(_vit_cfg(tmp_path / "images", tmp_path / "bb", tiny_vit))
    assert m.rows == {"images": 5, "embedded": 5, "parts": 2}
    assert _read(tmp_path / "bb")["dataset_id"].to_pylist() == [42] * 5
