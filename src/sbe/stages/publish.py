"""Stage ``publish``: a training run (+ optional geo heads) -> a Hugging Face model folder.

``MODEL_DIR`` loads offline with ``AutoModel.from_pretrained(MODEL_DIR, trust_remote_code=True)``
and with :func:`sbe.models.published.load_embedder`::

    config.json                 SbeEmbeddingConfig: auto_map, backbone identity, projector config
    configuration_sbe.py        the config class (self-contained)
    modeling_sbe.py             the model class (self-contained)
    model.safetensors           the projector (``projector.*``)
    preprocessor_config.json    resize / crop / mean / std (a BitImageProcessor config)
    README.md                   model card: architecture, evaluation numbers, licences
    calibration.json            the calibrated "same building?" decision, when ``sbe evaluate``
                                fitted one (``RUN/evaluate/calibration.json``)
    geo/                        geo heads (config.json + model.safetensors), with --geo
    backbone/                   the backbone weights (safetensors), only with --bundle-backbone
    _manifest.json

The architecture is the run's saved projector config (never inferred from weight shapes). The new
folder is built in a temporary sub-folder of ``MODEL_DIR`` (``.tmp-publish-<random>``: no other
output folder's clean-up can match it) and verified (the published head must reproduce the
trained projector) before any old file is replaced; then its files are moved in and the manifest
is written last. A failed check leaves the old files; a killed publish leaves the folder marked in
progress, and the next run rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from sbe.config import PublishConfig
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.models.published.card import CardInfo, render_card
from sbe.models.published.export import (
    CARD_NAME,
    CODE_FILES,
    PREPROCESSOR_NAME,
    WEIGHTS_NAME,
    make_config,
    verify_projector,
    write_folder,
)
from sbe.stages.base import IN_PROGRESS_NAME, Input, Stage, StageContext, stage_function
from sbe.stages.summary import Summary, number
from sbe.storage import Manifest, fingerprint_paths, load_manifest
from sbe.storage.artifacts import (
    EvaluateDir,
    GeoDir,
    ModelDir,
    RunDir,
    RunRecord,
    read_json_object,
    relpath,
)
from sbe.storage.lock import LOCK_NAME
from sbe.storage.manifest import MANIFEST_NAME

STAGE = "publish"
RUN_JSON = RunDir.RUN_JSON
BEST_DIR = RunDir.BEST
GEO_METRICS = GeoDir.METRICS
BUILD_PREFIX = ".tmp-publish-"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (one-line errors; see :func:`sbe.storage.artifacts.read_json_object`)."""
    return read_json_object(path)


def run_backbone(run: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The backbone identity a training run recorded (see :meth:`RunDir.require_backbone`)."""
    return RunDir(run_dir).require_backbone(RunRecord.model_validate(run)).to_dict()


def run_data_sources(run: RunDir, record: RunRecord) -> list[str]:
    """Which training data a run used: the sources its upstream manifests declare or imply
    (:func:`data_sources`), else what its lineage says.

    Returns:
        Keys of :data:`~sbe.models.published.card.DATA_LICENCES`; ``[]`` when unknown.
    """
    try:
        found = data_sources(run.split_dir(record).root)
    except SbeError:
        found = []
    if found:
        return found
    stages = run.lineage().stages
    if "synth" in stages:
        return ["synthetic"]
    return ["streetview"] if "ingest" in stages else []


def data_sources(start: Path | None, max_depth: int = 8) -> list[str]:
    """Which training data a run used, by walking the stage manifests upstream of ``start``.

    A manifest may declare its sources (``extra["data_sources"]``: keys of
    :data:`~sbe.models.published.card.DATA_LICENCES`, e.g. ``label`` says where its footprints
    came from, an ingest of Mapillary or image folders says what it read). Otherwise a ``synth``
    output is ``synthetic``; an ``ingest`` of tars not made by ``synth`` is ``streetview`` (the
    3D Street View format) and an ingest of anything else ``own_images``.

    Returns:
        The sorted keys found; ``[]`` when the chain cannot be followed.
    """
    seen: set[Path] = set()
    found: set[str] = set()
    frontier = [start] if start is not None else []
    for _ in range(max_depth):
        nxt: list[Path] = []
        for d in frontier:
            if d in seen or not d.is_dir():
                continue
            seen.add(d)
            m = load_manifest(d)
            if m is None:
                continue
            declared = m.extra.get("data_sources")
            if isinstance(declared, list):
                found.update(str(x) for x in declared if x)
            if m.stage == "synth":
                found.add("synthetic")
                continue
            # input paths are recorded relative to their stage's folder (absolute in old ones)
            parents = {Path(os.path.normpath(d / i.path)).parent for i in m.inputs}
            if m.stage == "ingest" and not declared:
                from_synth = any(
                    (load_manifest(p) or Manifest(stage="")).stage == "synth" for p in parents
                )
                if not from_synth:
                    tars = all(i.path.endswith(".tar") for i in m.inputs) and m.inputs
                    found.add("streetview" if tars else "own_images")
            nxt += sorted(parents)
        frontier = nxt
    return sorted(found)


def val_check(run: dict[str, Any]) -> dict[str, Any] | None:
    """The head against the raw backbone on validation, from ``run.json`` (``None``: unknown).

    Returns:
        ``{"head_map@r", "backbone_map@r", "head_below_backbone"}``.
    """
    check = run.get("val_vs_backbone")
    if isinstance(check, dict) and check.get("backbone_map@r") is not None:
        return dict(check)
    head, base = run.get("best_val_map@r"), (run.get("val_baseline") or {}).get("map@r")
    if head is None or base is None:
        return None
    return {
        "head_map@r": float(head),
        "backbone_map@r": float(base),
        "head_below_backbone": float(head) < float(base),
    }


def run_calibration(run: RunDir) -> tuple[Path, dict[str, Any]] | None:
    """The run's committed same-building calibration and its evaluation summary.

    Only a calibration a finished ``sbe evaluate`` lists in its manifest counts (a file left by an
    interrupted evaluation does not).

    Returns:
        ``(RUN/evaluate/calibration.json, the results' "calibration" entry)`` or ``None``.

    Raises:
        SbeError: the listed file is not a readable calibration.
    """
    ev = run.evaluate_dir()
    m = ev.manifest()
    if m is None or EvaluateDir.CALIBRATION not in m.outputs:
        return None
    path = ev.path(EvaluateDir.CALIBRATION)
    from sbe.verify.calibration import Calibration

    Calibration.load(path)  # one-line error for a malformed file, before anything is built
    summary = (m.extra.get("results") or {}).get("calibration")
    return path, dict(summary) if isinstance(summary, dict) else {}


def _check_geo(geo_dir: Path, backbone: dict[str, Any], best: Path) -> dict[str, Any]:
    """Validate a geo stage folder against the run; returns the heads' config dict."""
    geo_cfg = GeoDir(geo_dir).head_config()
    geo_bb = geo_cfg.get("backbone") or {}
    if geo_bb and (geo_bb.get("name"), geo_bb.get("dim")) != (backbone["name"], backbone["dim"]):
        raise SbeError(
            f"--geo {geo_dir}: heads were trained on backbone {geo_bb.get('name')} "
            f"({geo_bb.get('dim')}-d), the run on {backbone['name']} ({backbone['dim']}-d)"
        )
    if geo_cfg.get("input_space") == "projector":
        geo_proj = geo_dir / GeoDir.PROJECTOR / GeoDir.WEIGHTS
        if not geo_proj.is_file():
            raise SbeError(f"--geo {geo_dir}: heads read projector outputs but have no projector/")
        a, b = load_file(str(geo_proj)), load_file(str(best / WEIGHTS_NAME))
        if a.keys() != b.keys() or any(not a[k].equal(b[k]) for k in a):
            raise SbeError(
                f"--geo {geo_dir}: heads were trained on another projector than {best}; "
                "retrain them with --run on this run"
            )
    return geo_cfg


def _code_hash() -> str:
    h = hashlib.sha256()
    for f in CODE_FILES:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _is_model_folder(out: Path) -> bool:
    """Whether ``out`` holds nothing, or what this stage writes (finished or interrupted)."""
    names = {p.name for p in out.iterdir()} - {LOCK_NAME} if out.is_dir() else set()
    ours = {MANIFEST_NAME, IN_PROGRESS_NAME, *(f.name for f in CODE_FILES)}
    return not names or bool(names & ours) or any(n.startswith(BUILD_PREFIX) for n in names)


def _move_in(build: Path, out: Path) -> None:
    """Replace the folder's content by the verified ``build`` (a sub-folder of ``out``).

    Everything but the lock, the in-progress marker and ``build`` goes first (a file of an earlier
    publish that this one does not write, e.g. ``backbone/``, must not stay), then each entry of
    ``build`` is renamed into place. A kill in between leaves the folder marked in progress.
    """
    for p in out.iterdir():
        if p.name in (LOCK_NAME, IN_PROGRESS_NAME, build.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    for p in sorted(build.iterdir()):
        os.replace(p, out / p.name)
    build.rmdir()


class PublishStage(Stage):
    """``sbe publish``: see the module docstring."""

    name = "publish"
    inputs = (Input("run", "train"), Input("geo", "geo"))

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        cal = m.extra.get("calibration")
        if not cal:
            return ["same building?: no calibration in the run (`sbe evaluate --calibrate` first)"]
        sim, test = cal.get("similarity_threshold"), cal.get("test") or {}
        at = f"cosine >= {sim:.4f}" if sim is not None else "no threshold reached the target"
        return [
            f"calibration.json: same building? at {at} (target precision "
            f"{cal['target_precision']:.2f}; test precision {number(test.get('precision'), '%')}, "
            f"recall {number(test.get('recall'), '%')})"
        ]

    def run(self, cfg: PublishConfig, ctx: StageContext) -> Manifest:
        """Publish ``cfg.run`` (and ``cfg.geo``) as a model folder at ``cfg.output``.

        Raises:
            SbeError: missing or inconsistent inputs, or an output path that is not a model
                folder.
        """
        run, out = RunDir(cfg.run), ctx.out_dir
        run_dir, best = run.root, run.best
        run.require_best()
        record = run.run_record()
        run_info = record.to_dict()
        backbone = run.require_backbone(record).to_dict()
        geo_dir = Path(cfg.geo) if cfg.geo is not None else None
        geo_cfg = _check_geo(geo_dir, backbone, best) if geo_dir is not None else None
        if not _is_model_folder(out):
            raise SbeError(
                f"--out {out} exists and is not a published model folder; not replacing it"
            )
        input_files = [*run.best_files(), run.run_json]
        if geo_dir is not None:
            input_files += GeoDir(geo_dir).head_files()
            if (geo_dir / GEO_METRICS).is_file():
                input_files.append(geo_dir / GEO_METRICS)
        calibration = run_calibration(run)
        if calibration is not None:
            input_files.append(calibration[0])
        check = val_check(run_info)
        if check is not None and check["head_below_backbone"]:
            if not cfg.force:
                raise SbeError(
                    f"{run_dir}: the trained head is below the raw backbone on validation "
                    f"(mAP@R {check['head_map@r']:.4f} < {check['backbone_map@r']:.4f}); "
                    "retrain (more data, other settings) or pass --force to publish it anyway"
                )
            check["forced"] = True
            ctx.log(
                f"publish: warning: head below the raw backbone on validation "
                f"({check['head_map@r']:.4f} < {check['backbone_map@r']:.4f}); published (--force)"
            )
        if (done := ctx.check(fingerprint_paths(input_files), code=_code_hash())) is not None:
            return done
        for stale in out.iterdir():  # builds of killed runs (only inside this locked folder)
            if stale.name.startswith(BUILD_PREFIX) and stale.is_dir():
                shutil.rmtree(stale)

        # The architecture is the saved config; strict loading refuses any mismatch.
        try:
            projector = Projector.from_pretrained(best)
        except (RuntimeError, ValueError) as e:
            raise SbeError(f"{best}: the weights do not match the saved config: {e}") from None
        proj_cfg = projector.config.model_dump()
        try:
            config = make_config(backbone, proj_cfg, geo_cfg, bundled=cfg.bundle_backbone)
        except ValueError as e:
            raise SbeError(f"cannot publish {run_dir}: {e}") from None
        geo_metrics = None
        if geo_dir is not None:
            geo_metrics = GeoDir(geo_dir).metrics_record() or {}
        sources = run_data_sources(run, record)
        card = render_card(
            CardInfo(
                name=out.name,
                backbone=backbone,
                projector=proj_cfg,
                bundled=cfg.bundle_backbone,
                data_sources=sources,
                run=run_info,
                geo_metrics=geo_metrics,
                val_check=check,
                calibration=calibration[1] if calibration is not None else None,
                # relative to the model folder: the card stays true when the work folder moves
                provenance={
                    "run": relpath(run_dir, out),
                    **({"geo": relpath(geo_dir, out)} if geo_dir else {}),
                },
            )
        )
        # built and verified inside the output folder (never a sibling's name), then moved in
        build = out / f"{BUILD_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            write_folder(
                build,
                config=config,
                projector_state=projector.state_dict(),
                card=card,
                geo_dir=geo_dir,
                bundle=cfg.bundle_backbone,
            )
            if calibration is not None:
                shutil.copyfile(calibration[0], build / ModelDir.CALIBRATION)
            try:
                diff = verify_projector(build, projector, int(proj_cfg["input_dim"]))
            except ValueError as e:
                raise SbeError(f"publish check failed: {e}") from None
            _move_in(build, out)
        finally:
            if build.exists():
                shutil.rmtree(build, ignore_errors=True)
        outputs = [ModelDir.CONFIG, *(f.name for f in CODE_FILES), WEIGHTS_NAME]
        outputs += [PREPROCESSOR_NAME, CARD_NAME]
        if geo_dir is not None:
            outputs += [f"{ModelDir.GEO}/{GeoDir.CONFIG}", f"{ModelDir.GEO}/{GeoDir.WEIGHTS}"]
        if cfg.bundle_backbone:
            outputs.append(ModelDir.BACKBONE)
        if calibration is not None:
            outputs.append(ModelDir.CALIBRATION)
        return ctx.commit(
            outputs=outputs,
            rows={"projector parameters": sum(p.numel() for p in projector.parameters())},
            extra={
                "backbone": backbone,
                "projector": proj_cfg,
                "geo": geo_cfg is not None,
                "bundled_backbone": cfg.bundle_backbone,
                "head_max_abs_diff": diff,
                "val_vs_backbone": check,
                "data_sources": sources,
                "calibration": calibration[1] if calibration is not None else None,
            },
        )


run = stage_function(PublishStage)
