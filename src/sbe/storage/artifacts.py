"""One small class per stage output folder: its file names, its formats, its provenance.

A stage or a library function that reads another stage's output opens it as the folder's class
and asks it for paths and records, instead of joining file-name literals and walking JSON keys::

    >>> run = RunDir("work/run")
    >>> run.best, run.run_record().best_epoch, run.backbone().name   # doctest: +SKIP
    >>> SplitDir(run.split_dir()).path("test")                        # doctest: +SKIP

A required file that is missing is a one-line :class:`~sbe.errors.SbeError` naming the folder,
the flag to pass and the command that makes it::

    no trained run in work/run (best/config.json missing): pass --run DIR or run `sbe train` first

Paths recorded inside an output (a run's split folder, an index's source, a model card's run)
are stored relative to the output folder (:func:`relpath`) and resolved against it when read
(:meth:`ArtifactDir.resolve`), so a moved or copied work folder keeps working. Absolute values
written by older versions are still accepted; when the folder has moved since (the manifest's
recorded ``output`` differs), they are rebased onto its new place.

This module is in the base layer: no torch, no library imports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from sbe.errors import SbeError
from sbe.storage.lineage import BackboneIdentity, Lineage
from sbe.storage.manifest import MANIFEST_NAME, Manifest, load_manifest
from sbe.storage.parts import list_parts, read_part_meta
from sbe.storage.schemas import SPLITS

PathLike = str | os.PathLike[str]


def relpath(path: PathLike, folder: PathLike) -> str:
    """``path`` relative to ``folder`` (with ``..`` as needed, POSIX separators).

    What an output records instead of an absolute path, so the work folder can move.
    """
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def read_json_object(path: Path, hint: str = "") -> dict[str, Any]:
    """A JSON object file; any problem is one line naming the file (``hint`` says what to do)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SbeError(f"{path} not found{hint}") from None
    except (OSError, ValueError) as e:
        raise SbeError(f"{path}: not valid JSON ({e}){hint}") from None
    if not isinstance(data, dict):
        raise SbeError(f"{path}: expected a JSON object{hint}")
    return data


class ArtifactDir:
    """A stage's output folder.

    Class attributes (each subclass sets them as class keywords:
    ``class RunDir(ArtifactDir, stage="train", what="trained run", flag="--run")``):
        stage: the stage that writes it.
        what: what it holds, for messages (``"trained run"``).
        flag: the option a consumer passes to point at it (``"--run"``; inherited when not given).
        command: the command that makes it (default ``sbe <stage>``).

    Args:
        root: the folder (need not exist: :meth:`missing` says what to do).
    """

    stage: ClassVar[str] = ""
    what: ClassVar[str] = "stage output"
    flag: ClassVar[str] = "--in"
    command: ClassVar[str] = ""

    def __init_subclass__(
        cls,
        *,
        stage: str = "",
        what: str = "",
        flag: str = "",
        command: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if stage:
            cls.stage, cls.command = stage, command or f"sbe {stage}"
        cls.what = what or cls.what
        cls.flag = flag or cls.flag

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ArtifactDir) and type(other) is type(self) and other.root == self.root
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.root))

    def path(self, name: str) -> Path:
        """A file or sub-folder of this output, by its name relative to the folder."""
        return self.root / name

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def manifest(self) -> Manifest | None:
        """The committed ``_manifest.json`` (``None``: unfinished, never run, or unreadable)."""
        return load_manifest(self.root) if self.root.is_dir() else None

    # -- errors --------------------------------------------------------------------------------

    def missing(self, detail: str = "", *, flag: str | None = None) -> SbeError:
        """The one-line error for a missing output: which flag to pass or which command to run.

        Args:
            detail: what is missing, e.g. ``"best/config.json"``.
            flag: the consumer's option, when not :attr:`flag`.
        """
        why = f" ({detail} missing)" if detail else ""
        return SbeError(
            f"no {self.what} in {self.root}{why}: pass {flag or self.flag} DIR "
            f"or run `{self.command}` first"
        )

    def require(self, *names: str, flag: str | None = None) -> list[Path]:
        """The paths of ``names``, checked to exist.

        Raises:
            SbeError: :meth:`missing` for the first one absent.
        """
        paths = [self.path(n) for n in names]
        for n, p in zip(names, paths, strict=True):
            if not p.exists():
                raise self.missing(n, flag=flag)
        return paths

    # -- provenance ----------------------------------------------------------------------------

    def lineage(self) -> Lineage:
        """The manifest's lineage; for an older manifest, what its ``extra`` says of the backbone."""
        m = self.manifest()
        if m is None:
            return Lineage()
        lineage = m.lineage or Lineage()
        if lineage.backbone is not None:
            return lineage
        # manifests written before lineages, and stages whose model is not an input file: the
        # backbone stage/split record ``extra["backbone"]``, embed/aggregate
        # ``extra["model"]["backbone"]`` (the published model's)
        model = m.extra.get("model")
        backbone = BackboneIdentity.of(m.extra.get("backbone"))
        if backbone is None and isinstance(model, dict):
            backbone = BackboneIdentity.of(model.get("backbone"))
        return lineage.model_copy(update={"backbone": backbone})

    def backbone(self) -> BackboneIdentity | None:
        """The backbone identity of this output's vectors (``None`` when not recorded)."""
        return self.lineage().backbone

    # -- recorded paths ------------------------------------------------------------------------

    def relative(self, path: PathLike) -> str:
        """``path`` as this folder records it (:func:`relpath`)."""
        return relpath(path, self.root)

    def recorded_root(self) -> Path | None:
        """Where this folder was when its manifest was written (``None`` when not recorded)."""
        m = self.manifest()
        out = m.config.get("output") if m is not None else None
        return Path(out) if isinstance(out, str) and out else None

    def resolve(self, recorded: PathLike | None) -> Path | None:
        """A path this folder recorded, as a path that works from here.

        Relative values are relative to the folder. An absolute value (older outputs, or a stage
        that still records one) is rebased by the same move when the folder was moved or copied
        since its manifest was written and the rebased path exists (``/old/work/model`` ->
        ``/new/work/model``); otherwise it is used as it is.
        """
        if recorded is None or str(recorded) == "":
            return None
        p = Path(recorded)
        if not p.is_absolute():
            return Path(os.path.normpath(self.root.absolute() / p))
        old = self.recorded_root()
        if old is not None and old.resolve() != self.root.resolve():
            moved = Path(os.path.normpath(self.root.absolute() / os.path.relpath(p, old)))
            if moved.exists():
                return moved
        return p

    def resolve_first(self, *recorded: PathLike | None) -> Path | None:
        """The first of several recorded values (:meth:`resolve`d) that exists, else the first.

        For a path recorded both relative (works when the whole work folder moved) and absolute
        (works when this folder alone was copied elsewhere).
        """
        paths = [p for p in (self.resolve(r) for r in recorded) if p is not None]
        return next((p for p in paths if p.exists()), paths[0] if paths else None)


class SynthDir(ArtifactDir, stage="synth", what="synthetic images"):
    """``sbe synth`` output: ``*.tar`` shards of images, ``preview.png`` with ``--preview``."""

    PREVIEW: ClassVar[str] = "preview.png"

    def tars(self) -> list[Path]:
        return sorted(self.root.glob("*.tar"))


class PartsDir(ArtifactDir):
    """A folder of ``*.parquet`` parts (ingest, backbone)."""

    def parts(self) -> list[Path]:
        """The parts, sorted by name.

        Raises:
            SbeError: no folder or no part (naming the flag and the command).
        """
        if not self.root.is_dir() or not any(self.root.glob("*.parquet")):
            raise self.missing("*.parquet")
        return list_parts(self.root, what=self.what)


class ImagesDir(PartsDir, stage="ingest", what="ingest parts"):
    """``sbe ingest`` output: ``<tar stem>.parquet`` parts pointing into the tars."""


class BackboneDir(PartsDir, stage="backbone", what="backbone embeddings"):
    """``sbe backbone`` output: ``<ingest stem>-<first row>.parquet`` embedding parts.

    Each part's footer records the backbone identity (key ``"backbone"``); so does the manifest.
    """

    def backbone(self, parts: list[Path] | None = None) -> BackboneIdentity | None:
        """The identity from the manifest, checked against every part's footer.

        Args:
            parts: the parts to check (default: :meth:`parts`).

        Raises:
            SbeError: parts embedded by different backbones.
        """
        identity = super().backbone()
        for p in self.parts() if parts is None else parts:
            found = BackboneIdentity.of((read_part_meta(p) or {}).get("backbone"))
            if found is None:
                continue
            if identity is None:
                identity = found
            elif found != identity:
                raise SbeError(
                    f"{p.name} was embedded by a different backbone ({found.name!r}) than the "
                    f"rest ({identity.name!r}); rerun the backbone stage on one model"
                )
        return identity


class SplitDir(ArtifactDir, stage="split", what="split"):
    """``sbe split`` output: ``train.parquet``, ``val.parquet``, ``test.parquet``."""

    SPLITS: ClassVar[tuple[str, ...]] = tuple(SPLITS)

    @staticmethod
    def file_name(split: str) -> str:
        return f"{split}.parquet"

    def split_path(self, split: str) -> Path:
        """``<root>/<split>.parquet`` (whether or not it exists)."""
        return self.root / self.file_name(split)

    def path(self, name: str) -> Path:
        """A split's file by its name (``"test"``), or any file by its file name."""
        return self.split_path(name) if name in self.SPLITS else super().path(name)

    def require_split(self, split: str, *, flag: str | None = None) -> Path:
        """The split's file, checked to exist (else :meth:`missing`)."""
        return self.require(self.file_name(split), flag=flag)[0]

    def backbone(self) -> BackboneIdentity | None:
        """The manifest's backbone, else the one a split file's footer records."""
        found = super().backbone()
        if found is not None:
            return found
        for split in self.SPLITS:
            found = BackboneIdentity.of(
                (read_part_meta(self.split_path(split)) or {}).get("backbone")
            )
            if found is not None:
                return found
        return None


class NeighborsDir(SplitDir, stage="neighbors", what="neighbour bands", flag="--neighbors"):
    """``sbe neighbors`` output: per split ``<split>.parquet`` bands, ``pca.safetensors``."""

    PCA: ClassVar[str] = "pca.safetensors"


class RunRecord(BaseModel):
    """``run.json``: what a training run used and reached (other keys are kept as they are).

    ``input`` and ``neighbors`` are relative to the run folder (absolute in older runs): use
    :meth:`RunDir.split_dir` / :meth:`RunDir.neighbors_dir` to resolve them.
    """

    model_config = ConfigDict(extra="allow")

    backbone: BackboneIdentity | None = None
    input: str | None = None
    neighbors: str | None = None
    best_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as it was read (``run.json``'s keys)."""
        return self.model_dump(mode="json", exclude_unset=True)


class PretrainedFiles:
    """The two files of a ``save_pretrained`` folder (a projector, the geo heads, a model)."""

    CONFIG: ClassVar[str] = "config.json"
    WEIGHTS: ClassVar[str] = "model.safetensors"


class RunDir(ArtifactDir, stage="train", what="trained run", flag="--run"):
    """``sbe train`` output (a *run*): ``best/``, ``last/``, ``run.json``, ``metrics.jsonl``."""

    BEST: ClassVar[str] = "best"
    LAST: ClassVar[str] = "last"
    RUN_JSON: ClassVar[str] = "run.json"
    METRICS: ClassVar[str] = "metrics.jsonl"
    EVALUATE: ClassVar[str] = "evaluate"
    #: the projector files in ``best/`` and ``last/`` (Projector.save_pretrained)
    PROJECTOR_FILES: ClassVar[tuple[str, ...]] = (PretrainedFiles.CONFIG, PretrainedFiles.WEIGHTS)

    @property
    def best(self) -> Path:
        return self.root / self.BEST

    @property
    def last(self) -> Path:
        return self.root / self.LAST

    @property
    def run_json(self) -> Path:
        return self.root / self.RUN_JSON

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    def evaluate_dir(self) -> EvaluateDir:
        return EvaluateDir(self.root / self.EVALUATE)

    def best_files(self) -> list[Path]:
        """``best/config.json`` and ``best/model.safetensors`` (whether or not they exist)."""
        return [self.best / n for n in self.PROJECTOR_FILES]

    def require_best(self, *, flag: str | None = None) -> list[Path]:
        """The selected projector's files, checked to exist (else :meth:`missing`)."""
        return self.require(*(f"{self.BEST}/{n}" for n in self.PROJECTOR_FILES), flag=flag)

    def run_record(self, *, flag: str | None = None) -> RunRecord:
        """``run.json``.

        Raises:
            SbeError: missing (naming the flag) or not a JSON object.
        """
        if not self.run_json.is_file():
            raise self.missing(self.RUN_JSON, flag=flag)
        return RunRecord.model_validate(read_json_object(self.run_json))

    def recorded_root(self) -> Path | None:
        return super().recorded_root() or self._config_output()

    def _config_output(self) -> Path | None:
        try:
            config = json.loads(self.run_json.read_text()).get("config") or {}
        except (OSError, ValueError, AttributeError):
            return None
        out = config.get("output") if isinstance(config, dict) else None
        return Path(out) if isinstance(out, str) and out else None

    def split_dir(self, record: RunRecord | None = None) -> SplitDir:
        """The split folder the run trained on (``run.json`` ``input``, resolved here).

        Raises:
            SbeError: the run records none.
        """
        rec = record or self.run_record()
        extra = rec.model_extra or {}
        config = extra.get("config")
        config = config if isinstance(config, dict) else {}
        # the relative ``input`` first (a moved work folder); the config's absolute one when the
        # run folder was copied alone; ``split_dir`` in runs of older versions
        path = self.resolve_first(rec.input, extra.get("split_dir"), config.get("input"))
        if path is None:
            raise SbeError(
                f"{self.run_json} records no split folder (key 'input'); rerun `sbe train`"
            )
        return SplitDir(path)

    def neighbors_dir(self, record: RunRecord | None = None) -> NeighborsDir | None:
        """The neighbours folder the run's band curriculum read (``None``: none)."""
        rec = record or self.run_record()
        if rec.neighbors is None:
            return None
        config = (rec.model_extra or {}).get("config")
        absolute = config.get("neighbors") if isinstance(config, dict) else None
        path = self.resolve_first(rec.neighbors, absolute)
        return NeighborsDir(path) if path is not None else None

    def backbone(self, record: RunRecord | None = None) -> BackboneIdentity | None:
        """The backbone the run was trained on: ``run.json``, else the manifest's lineage."""
        rec = record
        if rec is None and self.run_json.is_file():
            rec = self.run_record()
        if rec is not None:
            if rec.backbone is not None:
                return rec.backbone
            # runs of older versions named it ``backbone_identity``
            legacy = BackboneIdentity.of((rec.model_extra or {}).get("backbone_identity"))
            if legacy is not None:
                return legacy
        return super().backbone()

    def require_backbone(self, record: RunRecord | None = None) -> BackboneIdentity:
        """:meth:`backbone`, which must be recorded.

        Raises:
            SbeError: the run records none.
        """
        found = self.backbone(record)
        if found is None:
            raise SbeError(
                f"{self.run_json} records no backbone identity (key 'backbone'); "
                "was this run made by `sbe train`?"
            )
        return found


class EvaluateDir(ArtifactDir, stage="evaluate", what="evaluation", flag="--run"):
    """``sbe evaluate`` output (``RUN/evaluate/``): ``<split>.json`` results."""

    #: ``--calibrate``: the "same building?" decision fitted on val (read by ``sbe publish``)
    CALIBRATION: ClassVar[str] = "calibration.json"

    @staticmethod
    def file_name(split: str) -> str:
        return f"{split}.json"

    def result_path(self, split: str) -> Path:
        return self.root / self.file_name(split)


class GeoDir(
    PretrainedFiles,
    ArtifactDir,
    stage="geo",
    what="geo heads",
    flag="--geo",
    command="sbe geo train",
):
    """``sbe geo train`` output: the heads (``config.json``, ``model.safetensors``), metrics."""

    METRICS: ClassVar[str] = "metrics.json"
    HISTORY: ClassVar[str] = "metrics.jsonl"
    PROJECTOR: ClassVar[str] = "projector"
    CHECKPOINT: ClassVar[str] = "_checkpoint"

    def head_files(self) -> list[Path]:
        return [self.root / self.CONFIG, self.root / self.WEIGHTS]

    def require_heads(self, *, flag: str | None = None) -> list[Path]:
        return self.require(self.CONFIG, self.WEIGHTS, flag=flag)

    def head_config(self) -> dict[str, Any]:
        """The heads' ``config.json``."""
        self.require_heads()
        return read_json_object(self.root / self.CONFIG)

    def metrics_record(self) -> dict[str, Any] | None:
        """``metrics.json`` (``None`` when absent)."""
        p = self.root / self.METRICS
        return read_json_object(p) if p.is_file() else None


class ModelDir(
    PretrainedFiles, ArtifactDir, stage="publish", what="published model", flag="--model"
):
    """``sbe publish`` output: a Hugging Face model folder (see ``sbe.stages.publish``)."""

    PREPROCESSOR: ClassVar[str] = "preprocessor_config.json"
    CARD: ClassVar[str] = "README.md"
    GEO: ClassVar[str] = "geo"
    BACKBONE: ClassVar[str] = "backbone"
    #: the calibrated "same building?" decision (``sbe.verify.calibration.Calibration`` JSON)
    CALIBRATION: ClassVar[str] = "calibration.json"

    def require_model(self, *, flag: str | None = None) -> Path:
        """The folder, checked to hold a model ``config.json`` (else :meth:`missing`)."""
        self.require(self.CONFIG, flag=flag)
        return self.root


class EmbedDir(ArtifactDir, stage="embed", what="embeddings"):
    """``sbe embed`` output: ``state.json``, ``parts/rows-*.parquet``, ``failures/``."""

    STATE: ClassVar[str] = "state.json"
    PARTS: ClassVar[str] = "parts"
    FAILURES: ClassVar[str] = "failures"

    @property
    def state_path(self) -> Path:
        return self.root / self.STATE

    def state(self, *, flag: str | None = None) -> dict[str, Any]:
        """``state.json`` (input and model identity, settings, counters).

        Raises:
            SbeError: missing (naming the flag) or unreadable.
        """
        if not self.state_path.is_file():
            raise self.missing(self.STATE, flag=flag)
        return read_json_object(self.state_path, f"; delete {self.root} to start over")

    def input_path(self, state: dict[str, Any] | None = None) -> Path | None:
        """The packaged images the run embedded (resolved here; ``None`` when not recorded)."""
        rec = (state or self.state()).get("input") or {}
        return self.resolve(rec.get("path")) if isinstance(rec, dict) else None

    def model_dir(self, state: dict[str, Any] | None = None) -> Path | None:
        """The published model the run used (resolved here; ``None`` when not recorded)."""
        rec = (state or self.state()).get("model") or {}
        return self.resolve(rec.get("model_dir")) if isinstance(rec, dict) else None


class BuildingsDir(ArtifactDir, stage="aggregate", what="building embeddings"):
    """``sbe aggregate`` output: ``buildings.parquet`` (+ ``buildings.geoparquet``)."""

    BUILDINGS: ClassVar[str] = "buildings.parquet"
    GEOPARQUET: ClassVar[str] = "buildings.geoparquet"

    def model_dir(self) -> Path | None:
        """The published model recorded in the manifest (``extra["model"]["model_dir"]``)."""
        m = self.manifest()
        model = m.extra.get("model") if m is not None else None
        return self.resolve(model.get("model_dir")) if isinstance(model, dict) else None


class IndexDir(ArtifactDir, stage="index", what="index", flag="--index", command="sbe index build"):
    """``sbe index build`` output: ``index.faiss`` + ``ids.parquet`` + ``index.json``."""

    INDEX: ClassVar[str] = "index.faiss"
    IDS: ClassVar[str] = "ids.parquet"
    INFO: ClassVar[str] = "index.json"
    #: copied from the model that made the vectors, when it carries one
    CALIBRATION: ClassVar[str] = "calibration.json"
    #: ``sbe.verify.store`` folder of gallery local features (``--local-features``)
    LOCAL_FEATURES: ClassVar[str] = "local_features"


class ClustersDir(ArtifactDir, stage="cluster", what="clusters"):
    """``sbe cluster`` output: ``assignments.parquet`` + ``clusters.parquet``."""

    ASSIGNMENTS: ClassVar[str] = "assignments.parquet"
    CLUSTERS: ClassVar[str] = "clusters.parquet"


class TuneDir(ArtifactDir, stage="tune", what="tuning study"):
    """``sbe tune`` output: the best trial as a ``[train]`` snippet and as JSON."""

    BEST_TOML: ClassVar[str] = "best_params.toml"
    BEST_JSON: ClassVar[str] = "best_params.json"


class ReportDir(ArtifactDir, stage="report", what="report"):
    """``sbe report`` output: ``report.html``."""

    REPORT: ClassVar[str] = "report.html"


def source_dir(path: PathLike) -> ArtifactDir:
    """The output folder of a file or folder given as a source (a file's folder for a file)."""
    p = Path(path)
    return ArtifactDir(p if p.is_dir() else p.parent)


__all__ = [
    "ArtifactDir",
    "BackboneDir",
    "BackboneIdentity",
    "BuildingsDir",
    "ClustersDir",
    "EmbedDir",
    "EvaluateDir",
    "GeoDir",
    "ImagesDir",
    "IndexDir",
    "Lineage",
    "ModelDir",
    "NeighborsDir",
    "ReportDir",
    "RunDir",
    "RunRecord",
    "SplitDir",
    "SynthDir",
    "read_json_object",
    "relpath",
    "source_dir",
]
