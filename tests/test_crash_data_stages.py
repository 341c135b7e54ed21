"""Crash consistency of the data stages (synth, ingest, backbone, split, neighbors).

Each stage runs on tiny generated data through :func:`faults.crash_matrix`: a crash at every file
commit, with the same and with changed settings (that really change the output), then a rerun with
the original settings must give exactly a clean run's output. One regression test per defect of
issue 20 follows each matrix: "start with changed settings, crash after the first output file is
replaced, rerun with the old settings" must not report up to date over mixed files.

Set ``SBE_CRASH_REPORT=<file>`` to have the crash points tried per matrix appended there (JSON lines).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faults import (
    VOLATILE_MANIFEST_KEYS,
    CrashReport,
    SimulatedCrash,
    crash_matrix,
    output_files,
)
from faults import assert_same_output as assert_same_files
from safetensors import safe_open
from tarfactory import Record, make_dline, make_jpeg, records, write_tar
from test_backbone_stage import _env, make_ingest, tiny_vit  # noqa: F401 (fixtures)
from test_split_fixtures import generate

from sbe.config import BackboneConfig, IngestConfig, NeighborsConfig, SplitConfig, SynthConfig
from sbe.data.streetview import format_metadata
from sbe.stages import backbone as backbone_stage
from sbe.stages import ingest as ingest_stage
from sbe.stages import neighbors as neighbors_stage
from sbe.stages import split as split_stage
from sbe.stages import synth as synth_stage
from sbe.storage import read_part_meta
from sbe.synth.writers import truth_path

#: stage -> what its matrix tried
REPORTS: dict[str, dict[str, Any]] = {}


def _record(report: CrashReport, changed: dict[str, Any], max_points: int | None = None) -> None:
    assert report.runs >= 2
    assert set(report.points) == {"same", "changed"}
    REPORTS[report.stage] = {
        "crash_points": report.points,
        "runs": report.runs,
        "changed_settings": changed,
        "max_points": max_points,
    }


def assert_same_output(expected: Path, actual: Path) -> None:
    """``faults.assert_same_output``, with manifests compared up to the folder each run used.

    A manifest records its config, whose paths name the case's own work folder
    (``clean/out`` vs ``same-3/out``): they are compared relative to it. Safetensors files are
    compared by metadata and tensors.
    """

    def manifest(path: Path, work: Path) -> dict[str, Any]:
        data = json.loads(path.read_text().replace(str(work), "<work>"))
        return {k: v for k, v in data.items() if k not in VOLATILE_MANIFEST_KEYS}

    def same_manifest(a: Path, b: Path) -> None:
        assert manifest(a, expected.parent) == manifest(b, actual.parent), a.name

    def same_tensors(a: Path, b: Path) -> None:
        # safetensors writes its metadata keys in no fixed order: compare data, not bytes
        ta, tb = safe_open(a, "numpy"), safe_open(b, "numpy")
        assert ta.metadata() == tb.metadata(), a.name
        keys = sorted(ta.keys())
        assert keys == sorted(tb.keys()), a.name
        for key in keys:
            np.testing.assert_array_equal(ta.get_tensor(key), tb.get_tensor(key))

    compare: dict[str, Callable[[Path, Path], None]] = {}
    for name in output_files(expected):
        if Path(name).name == "_manifest.json":
            compare[name] = same_manifest
        elif name.endswith(".safetensors"):
            compare[name] = same_tensors
    assert_same_files(expected, actual, compare=compare)


def _assert_changed_output_differs(
    run: Callable[[Path, dict[str, Any]], Any],
    work: Path,
    changed: dict[str, Any],
    output: str = "out",
    same_output: Callable[[Path, Path], None] = assert_same_output,
) -> None:
    """The changed settings give another output (else the 'changed' cases would prove nothing)."""
    run(work / "changed-clean", changed)
    with pytest.raises(AssertionError):
        same_output(work / "clean" / output, work / "changed-clean" / output)


@contextlib.contextmanager
def crash_after_first(predicate: Callable[[str], bool]) -> Iterator[None]:
    """Raise :class:`SimulatedCrash` right after the first replace whose target matches.

    Unlike ``faults.crash_after`` it does not count bookkeeping commits, so the same test
    crashes at the same output file on code with and without an in-progress marker.
    """
    real_replace, real_rename = os.replace, os.rename

    def wrap(real: Callable[..., None]) -> Callable[..., None]:
        def fn(src: Any, dst: Any, *a: Any, **k: Any) -> None:
            real(src, dst, *a, **k)
            if predicate(str(dst)):
                raise SimulatedCrash(f"simulated crash after {dst}")

        return fn

    os.replace, os.rename = wrap(real_replace), wrap(real_rename)  # type: ignore[assignment]
    try:
        yield
    finally:
        os.replace, os.rename = real_replace, real_rename  # type: ignore[assignment]


def _is_parquet(name: str) -> bool:
    return name.endswith(".parquet")


# ---- split ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-backbone")
    return generate(root / "backbone", 60, seed=3, spacing_m=50.0).folder


def _split_runner(backbone: Path) -> Callable[[Path, dict[str, Any]], Any]:
    def run(work: Path, overrides: dict[str, Any]) -> Any:
        settings = {"cell_size_m": 300.0, **overrides}
        return split_stage.run(SplitConfig(input=backbone, output=work / "out", **settings))

    return run


def test_split_crash_matrix(backbone_dir: Path, tmp_path: Path) -> None:
    run = _split_runner(backbone_dir)
    changed = {"cell_size_m": 100.0}
    report = crash_matrix("split", run, tmp_path, changed=changed, same_output=assert_same_output)
    _assert_changed_output_differs(run, tmp_path, changed)
    # marker, three split files, manifest
    assert report.points == {"same": 5, "changed": 5}
    _record(report, changed)


def test_split_changed_cell_size_then_crash_is_not_up_to_date(
    backbone_dir: Path, tmp_path: Path
) -> None:
    """Issue 20: a crash after the first file of another cell size must not pass as current."""
    run = _split_runner(backbone_dir)
    run(tmp_path / "clean", {})
    case = tmp_path / "case"
    run(case, {})
    with contextlib.suppress(SimulatedCrash), crash_after_first(_is_parquet):
        run(case, {"cell_size_m": 100.0})
    m = run(case, {})
    assert not m.up_to_date
    assert_same_output(tmp_path / "clean" / "out", case / "out")


# ---- neighbors --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_dir(backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crash-split") / "split"
    split_stage.run(SplitConfig(input=backbone_dir, output=out, cell_size_m=300.0))
    return out


def _neighbors_runner(split: Path) -> Callable[[Path, dict[str, Any]], Any]:
    def run(work: Path, overrides: dict[str, Any]) -> Any:
        settings = {
            "space": "embedding",  # 16-d: the PCA of 768-d fingerprints would dominate the time
            "k": 8,
            "k0_local_scale": 4,
            "calibration_min_anchors": 20,
            "pca_components": 6,
            "threads": 1,
            **overrides,
        }
        return neighbors_stage.run(NeighborsConfig(input=split, output=work / "out", **settings))

    return run


def test_neighbors_crash_matrix(split_dir: Path, tmp_path: Path) -> None:
    run = _neighbors_runner(split_dir)
    changed = {"k": 5}
    report = crash_matrix(
        "neighbors", run, tmp_path, changed=changed, same_output=assert_same_output
    )
    _assert_changed_output_differs(run, tmp_path, changed)
    # marker, PCA, three split files, manifest
    assert report.points == {"same": 6, "changed": 6}
    _record(report, changed)


def test_neighbors_changed_k_then_crash_is_not_up_to_date(split_dir: Path, tmp_path: Path) -> None:
    """Issue 20: neighbour files of k=5 and k=8 side by side must not pass as current."""
    run = _neighbors_runner(split_dir)
    run(tmp_path / "clean", {})
    case = tmp_path / "case"
    run(case, {})
    with contextlib.suppress(SimulatedCrash), crash_after_first(_is_parquet):
        run(case, {"k": 5})
    m = run(case, {})
    assert not m.up_to_date
    assert_same_output(tmp_path / "clean" / "out", case / "out")
    for s in ("train", "val", "test"):
        assert read_part_meta(case / "out" / f"{s}.parquet")["k"] == 8


def test_neighbors_reused_files_keep_their_statistics(split_dir: Path, tmp_path: Path) -> None:
    """A rerun that reuses finished split files reports the statistics they were made with."""
    run = _neighbors_runner(split_dir)
    first = run(tmp_path, {})
    # an interrupted run: the files are finished, the manifest is not
    (tmp_path / "out" / "_manifest.json").unlink()
    again = run(tmp_path, {})
    assert not again.up_to_date
    for s in ("train", "val", "test"):
        reused = again.extra["splits"][s]
        assert reused.pop("reused") is True
        assert reused == first.extra["splits"][s]
        assert reused["band_counts"] and "mean_neighbors" in reused


# ---- backbone ---------------------------------------------------------------------------------


def _backbone_runner(ingest: Path, vit: Path) -> Callable[[Path, dict[str, Any]], Any]:
    def run(work: Path, overrides: dict[str, Any]) -> Any:
        settings = {
            "model": f"hf:{vit}",
            "runtime": "torch",
            "device": "cpu",
            "part_rows": 4,
            "batch_size": 3,
            **overrides,
        }
        return backbone_stage.run(BackboneConfig(input=ingest, output=work / "out", **settings))

    return run


def test_backbone_crash_matrix(tmp_path: Path, tiny_vit: Path) -> None:  # noqa: F811
    run = _backbone_runner(make_ingest(tmp_path / "data", 10, corrupt=(3,)), tiny_vit)
    changed = {"dtype": "float32"}
    work = tmp_path / "matrix"
    report = crash_matrix("backbone", run, work, changed=changed, same_output=assert_same_output)
    _assert_changed_output_differs(run, work, changed)
    # marker, three parts, manifest
    assert report.points == {"same": 5, "changed": 5}
    _record(report, changed)


def test_backbone_changed_dtype_then_crash_is_not_up_to_date(
    tmp_path: Path,
    tiny_vit: Path,  # noqa: F811
) -> None:
    """Issue 20: float16 and float32 parts side by side must not pass as current."""
    run = _backbone_runner(make_ingest(tmp_path / "data", 10), tiny_vit)
    run(tmp_path / "clean", {})
    case = tmp_path / "case"
    run(case, {})
    with contextlib.suppress(SimulatedCrash), crash_after_first(_is_parquet):
        run(case, {"dtype": "float32"})
    m = run(case, {})
    assert not m.up_to_date and m.extra["parts_reused"] == 2
    assert_same_output(tmp_path / "clean" / "out", case / "out")
    assert {read_part_meta(p)["dtype"] for p in (case / "out").glob("*.parquet")} == {"float16"}


# ---- ingest -----------------------------------------------------------------------------------


def _raw_tars(root: Path) -> Path:
    """Three small tars; each has two images whose normal is 0.5% too long.

    Those pass the default ``normal_tolerance`` (1e-2) and are skipped at 1e-3, so a changed
    tolerance changes every part.
    """
    raw = root / "raw"
    for k, ds in enumerate((88, 89, 90)):
        recs = records(4, ds)
        for i in (4, 5):
            d = make_dline(i, ds, normal_x=1.005 * np.cos(i), normal_y=1.005 * np.sin(i))
            stem = f"{ds:04d}_{i:06d}_{i % 7}_{d.target_id:06d}"
            recs.append(Record(stem, make_jpeg(48, 48, seed=i), format_metadata(d), meta=d))
        write_tar(raw / f"{ds:04d}.tar", recs, layout="nested" if k % 2 else "flat")
    return raw


def _ingest_runner(raw: Path) -> Callable[[Path, dict[str, Any]], Any]:
    def run(work: Path, overrides: dict[str, Any]) -> Any:
        cfg = IngestConfig(inputs=[raw], output=work / "out", workers=1, **overrides)
        return ingest_stage.run(cfg)

    return run


def test_ingest_crash_matrix(tmp_path: Path) -> None:
    run = _ingest_runner(_raw_tars(tmp_path / "data"))
    changed = {"normal_tolerance": 1e-3}
    work = tmp_path / "matrix"
    report = crash_matrix("ingest", run, work, changed=changed, same_output=assert_same_output)
    _assert_changed_output_differs(run, work, changed)
    # marker, three parts, manifest
    assert report.points == {"same": 5, "changed": 5}
    _record(report, changed)


def test_ingest_changed_tolerance_then_crash_is_redone(tmp_path: Path) -> None:
    """A part of another tolerance left by a crash is redone, the others are reused."""
    run = _ingest_runner(_raw_tars(tmp_path / "data"))
    clean = run(tmp_path / "clean", {})
    assert clean.rows["images"] == 18
    case = tmp_path / "case"
    run(case, {})
    with contextlib.suppress(SimulatedCrash), crash_after_first(_is_parquet):
        run(case, {"normal_tolerance": 1e-3})
    m = run(case, {})
    assert not m.up_to_date and m.extra["tars_reused"] == 2 and m.rows == clean.rows
    assert_same_output(tmp_path / "clean" / "out", case / "out")


# ---- synth ------------------------------------------------------------------------------------


def _synth_run(work: Path, overrides: dict[str, Any]) -> Any:
    out = work / "out"
    settings = {
        "buildings": 2,
        "buildings_per_tar": 1,
        "image_size": 64,
        "packaged_buildings": 1,
        "workers": 1,
        **overrides,
    }
    # the packaged parquet inside the folder, so that the comparison covers it too
    return synth_stage.run(SynthConfig(output=out, packaged=out / "packaged.parquet", **settings))


def test_synth_crash_matrix(tmp_path: Path) -> None:
    changed = {"seed": 1}
    # 8 commit points (marker, two tars and their truth parts, truth.parquet, the packaged
    # parquet, manifest); rendering makes each case cost a second, so 6 are tried: the first
    # three (up to the gap between the first tar and its truth part) and the last three.
    report = crash_matrix(
        "synth",
        _synth_run,
        tmp_path,
        changed=changed,
        same_output=assert_same_output,
        max_points=6,
    )
    _assert_changed_output_differs(_synth_run, tmp_path, changed)
    assert report.points == {"same": 6, "changed": 6}
    _record(report, changed, max_points=6)


def test_synth_tar_of_other_settings_is_never_vouched_for(tmp_path: Path) -> None:
    """A crash between a tar and its truth part must not leave the old truth part in place.

    The truth part (written after its tar) is what makes a rerun skip a tar; if a run with
    another seed replaced a tar and died before its truth part, the old part would vouch for
    the new tar whenever the two tars happen to have the same size (tar sizes are multiples of
    512 bytes).
    """
    _synth_run(tmp_path / "clean", {})
    case = tmp_path / "case"
    _synth_run(case, {})
    with contextlib.suppress(SimulatedCrash), crash_after_first(lambda n: n.endswith(".tar")):
        _synth_run(case, {"seed": 1})
    clean_out, out = tmp_path / "clean" / "out", case / "out"
    foreign = [
        p for p in sorted(out.glob("*.tar")) if p.read_bytes() != (clean_out / p.name).read_bytes()
    ]
    assert len(foreign) == 1
    assert not truth_path(out, int(foreign[0].stem)).exists()
    m = _synth_run(case, {})
    assert not m.up_to_date and m.extra["tars_written"] >= 1
    assert_same_output(clean_out, out)


def _photo_folder(root: Path) -> Path:
    """Seven photos in sub-folders with a metadata.csv that has two id columns."""
    folder = root / "photos"
    lines = ["file_name,building_id,alt_id,lat,lon,heading"]
    for i in range(7):
        rel = f"b{i % 3}/p{i}.jpg"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(make_jpeg(40, 32, seed=i))
        lines.append(f"{rel},b{i % 3},alt{i % 2},{48 + i / 100},11.5,{10 * i}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_ingest_folder_source_crash_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image folder in parts of 3 images: every commit point, same and changed id column."""
    monkeypatch.setattr(ingest_stage, "FOLDER_PART_ROWS", 3)
    run = _ingest_runner(_photo_folder(tmp_path / "data"))
    changed = {"id_column": "alt_id"}
    work = tmp_path / "matrix"
    report = crash_matrix("ingest", run, work, changed=changed, same_output=assert_same_output)
    _assert_changed_output_differs(run, work, changed)
    # marker, three parts, manifest
    assert report.points == {"same": 5, "changed": 5}
    _record(report, changed)
