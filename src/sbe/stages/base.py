"""The stage protocol: one way to write a stage, one place for what every stage shares.

A stage is a small class (see :class:`Stage`): its name, its config section, the upstream stages
whose outputs feed which of its config fields, and ``run(cfg, ctx) -> Manifest``. What every stage
needs besides its own work lives once, in :class:`StageContext`: the output folder's lock, removing
temp files a killed run left, the up-to-date check, the commit protocol, timing, progress and logs.

Commit protocol (what makes a crash at any moment safe):

1. :meth:`StageContext.check` trusts an existing ``_manifest.json`` only when no run is marked in
   progress, its config hash and input fingerprints match, and every file it lists is on disk with
   the size it had at commit.
2. Otherwise, *before any output file is replaced*, it writes ``_in_progress.json`` with the new
   config hash and removes the old manifest. From then on the folder is never "up to date"
   until the run finishes, whatever files a kill leaves behind.
3. The stage writes every file atomically (temp file + rename, :mod:`sbe.storage.atomic`).
4. :meth:`StageContext.commit` writes the manifest last (listing every output file and its size
   and the output's :class:`~sbe.storage.lineage.Lineage`: the upstream stages, found from the
   manifests next to the inputs, and the backbone) and only then removes the in-progress marker.

A rerun after a kill with the *same* settings sees ``ctx.resuming`` and may keep finished parts (each
part carries its own config hash); with other settings it starts over.

Example:
    >>> class Echo(Stage):
    ...     name = "echo"
    ...     def run(self, cfg, ctx):
    ...         if (done := ctx.check(fingerprint_paths([cfg.input]))) is not None:
    ...             return done
    ...         write_json_atomic(ctx.out_dir / "echo.json", {"ok": True})
    ...         return ctx.commit(outputs=["echo.json"], rows={"files": 1})
"""

from __future__ import annotations

import datetime as dt
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sbe.config import SbeConfig, Section, section_dict
from sbe.progress import progress_bar
from sbe.settings import same_named
from sbe.stages.summary import Summary, manifest_table
from sbe.storage import (
    DirLock,
    InputFingerprint,
    Manifest,
    SkipLog,
    StageTimer,
    clean_stale_temps,
    config_hash,
    manifest_is_current,
    output_files,
    write_json_atomic,
    write_manifest,
)
from sbe.storage.artifacts import ArtifactDir, relpath
from sbe.storage.lineage import BackboneIdentity, Lineage
from sbe.storage.manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SettingsT = TypeVar("SettingsT", bound="DataclassInstance")

IN_PROGRESS_NAME = "_in_progress.json"
#: how many folders above an input file are searched for the manifest of the stage that wrote it
#: (``split/train.parquet``: 1; ``run/best/config.json``, ``embed/parts/x.parquet``: 2)
UPSTREAM_DEPTH = 3


@dataclass(frozen=True)
class Input:
    """One config field of a stage that ``sbe run`` fills from an upstream stage's config.

    Args:
        field: the field of this stage's section, e.g. ``"input"``.
        stage: the upstream stage, e.g. ``"backbone"``.
        attr: the upstream section's field that is copied (its output folder by default).
        follows: skip this stage when the upstream one is skipped (its output is what it reads).
    """

    field: str
    stage: str
    attr: str = "output"
    follows: bool = False


class StageContext:
    """What one run of one stage shares with every other: lock, check, commit, progress, log.

    Use as a context manager (it holds the output folder's lock); :func:`run_stage` does this.

    Args:
        stage: the stage name written into the manifest.
        cfg: the stage's resolved config section.
        out_dir: the folder the stage writes (locked for the whole run).
        log: receives one line per event (``None`` = silent).
        show_progress: progress bars (``None`` = only on a terminal).
        restart: never up to date and never resume: start from scratch.
        full_config: the whole config, for stages that read another section (``tune``).
    """

    def __init__(
        self,
        stage: str,
        cfg: Section,
        out_dir: str | os.PathLike[str],
        *,
        log: Callable[[str], None] | None = None,
        show_progress: bool | None = None,
        restart: bool = False,
        full_config: SbeConfig | None = None,
    ) -> None:
        self.stage = stage
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.show_progress = show_progress
        self.restart = restart
        self.full_config = full_config
        self.settings: dict[str, Any] = section_dict(cfg)
        self.results: dict[str, Any] = {}
        """Free-form results a stage hands back besides its manifest (printed by the CLI)."""
        self.resuming = False
        """True after :meth:`check` found an interrupted run of the same settings to continue."""
        self.removed_temps = 0
        self.timer = StageTimer()
        self._log = log
        self._lock = DirLock(self.out_dir)
        self._hash: str | None = None
        self._inputs: list[InputFingerprint] = []
        self._input_paths: list[Path] = []

    def __enter__(self) -> StageContext:
        self._lock.acquire()
        self.removed_temps = clean_stale_temps(self.out_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    # -- the commit protocol -------------------------------------------------------------------

    def config_hash(self, **extra: Any) -> str:
        """Hash of the settings that decide the output (see ``Section.hashed_settings``) + extra."""
        return config_hash({**self.cfg.hashed_settings(), **extra})

    @property
    def hash(self) -> str:
        """The config hash fixed by :meth:`check`."""
        if self._hash is None:
            raise RuntimeError("StageContext.check() must be called first")
        return self._hash

    @property
    def inputs(self) -> list[InputFingerprint]:
        """The input fingerprints as recorded: paths relative to the output folder."""
        return self._inputs

    def check(self, inputs: list[InputFingerprint], **hash_extra: Any) -> Manifest | None:
        """The finished manifest if the output is up to date; else invalidate it and begin.

        Args:
            inputs: fingerprints of every file the stage reads. They are recorded (and compared)
                with paths relative to the output folder, so a work folder moved as a whole
                (inputs and outputs together) is still up to date.
            **hash_extra: what besides the hashed settings decides the output (format versions,
                the backbone identity, ...).

        Returns:
            The existing manifest (``up_to_date`` set) or ``None``: then the old manifest is gone,
            the folder is marked in progress, and :attr:`resuming` says whether an interrupted run
            with the same settings and inputs left parts worth keeping.
        """
        self._input_paths = [Path(i.path) for i in inputs]
        self._inputs = [
            i.model_copy(update={"path": relpath(i.path, self.out_dir)}) for i in inputs
        ]
        self._hash = self.config_hash(**hash_extra)
        marker = self.in_progress()
        if marker is None and not self.restart:
            current = manifest_is_current(self.out_dir, self.stage, self._hash, self._inputs)
            if current is not None:
                return current
        same_run = (
            marker is not None
            and marker.get("config_hash") == self._hash
            and marker.get("inputs") == [i.model_dump() for i in self._inputs]
        )
        self.resuming = same_run and not self.restart
        self.begin()
        return None

    def begin(self) -> None:
        """Mark the folder in progress with the new hash, then remove the old manifest."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # marker first: a kill between the two leaves a marker, which check() never trusts past
        write_json_atomic(
            self.out_dir / IN_PROGRESS_NAME,
            {
                "stage": self.stage,
                "config_hash": self.hash,
                "inputs": [i.model_dump() for i in self._inputs],
                "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "pid": os.getpid(),
            },
        )
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)

    def in_progress(self) -> dict[str, Any] | None:
        """The marker an unfinished run left (``None`` when the last run finished)."""
        path = self.out_dir / IN_PROGRESS_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def commit(
        self,
        *,
        outputs: list[str],
        rows: dict[str, int] | None = None,
        skips: SkipLog | None = None,
        extra: dict[str, Any] | None = None,
        backbone: BackboneIdentity | dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        upstream: list[ArtifactDir] | None = None,
    ) -> Manifest:
        """Write the manifest (last), then clear the in-progress marker.

        Args:
            outputs: files or folders (relative to the output folder) the stage wrote.
            rows: counts for the summary.
            skips: records skipped by reason.
            extra: stage-specific facts for later stages and the report.
            backbone: the backbone of this output's vectors when this stage decides it (the
                backbone stage); otherwise the one upstream (see :meth:`lineage`).
            backbone_weights: the backbone's weights fingerprint, with ``backbone``.
            upstream: output folders this stage read besides its fingerprinted input files (e.g.
                a published model known by its content fingerprint): their lineage is merged.

        Returns:
            The written manifest.
        """
        manifest = Manifest(
            stage=self.stage,
            config=self.settings,
            config_hash=self.hash,
            inputs=self._inputs,
            outputs=list(outputs),
            files=output_files(self.out_dir, outputs),
            rows=dict(rows or {}),
            wall_seconds=self.timer.seconds,
            extra=dict(extra or {}),
            lineage=self.lineage(BackboneIdentity.of(backbone), backbone_weights, upstream),
        )
        if skips is not None:
            manifest.with_skips(skips)
        write_manifest(self.out_dir, manifest)
        (self.out_dir / IN_PROGRESS_NAME).unlink(missing_ok=True)
        return manifest

    # -- lineage -------------------------------------------------------------------------------

    def upstream(self) -> list[ArtifactDir]:
        """The output folders of the stages whose files this run read (in input order).

        The nearest folder above each input (up to :data:`UPSTREAM_DEPTH` levels) holding a
        ``_manifest.json``, then the stage output folders its settings name (absolute paths);
        never this stage's own folder.
        """
        own = self.out_dir.resolve()
        found: list[ArtifactDir] = []
        seen: set[Path] = set()
        for parent in dict.fromkeys(p.parent for p in self._input_paths):
            parent = parent.resolve()
            folder: Path | None = parent
            for _ in range(UPSTREAM_DEPTH):
                if folder is None or folder in seen:
                    break
                seen.add(folder)
                if folder != own and (folder / MANIFEST_NAME).is_file():
                    found.append(ArtifactDir(folder))
                    break
                folder = folder.parent if folder.parent != folder else None
        # folders the stage reads by its settings rather than by fingerprinted files (embed's
        # --model: a published model known by its content fingerprint)
        for value in self.settings.values():
            for raw in value if isinstance(value, list) else [value]:
                if not isinstance(raw, str) or not os.path.isabs(raw):
                    continue
                folder = Path(raw).resolve()
                if folder in seen or folder == own or not (folder / MANIFEST_NAME).is_file():
                    continue
                seen.add(folder)
                found.append(ArtifactDir(folder))
        return found

    def lineage(
        self,
        backbone: BackboneIdentity | None = None,
        backbone_weights: str | None = None,
        upstream: list[ArtifactDir] | None = None,
    ) -> Lineage:
        """This output's lineage: the upstream outputs' lineages, merged, then this stage.

        Args:
            backbone: set by the stage that decides it (see :meth:`commit`).
            backbone_weights: its weights fingerprint.
            upstream: folders read besides the input files (see :meth:`commit`).

        An upstream manifest of an older version (no lineage) counts as its own stage, with the
        backbone its ``extra`` records.
        """
        parents: list[Lineage] = []
        for d in [*self.upstream(), *(upstream or [])]:
            m = d.manifest()
            if m is None:
                continue
            lineage = d.lineage()  # the manifest's, its backbone filled from ``extra`` if need be
            parents.append(
                lineage if m.lineage is not None else lineage.then(m.stage, m.config_hash)
            )
        return Lineage.merge(parents).then(self.stage, self.hash, backbone, backbone_weights)

    # -- progress and log ----------------------------------------------------------------------

    def progress(self, description: str, total: float | None, unit: str = "items") -> Any:
        """A progress bar (a context manager yielding :class:`~sbe.progress.Bar`)."""
        return progress_bar(description, total, unit=unit, enabled=self.show_progress)

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)


class Stage(ABC):
    """One step of the pipeline. Subclasses set the class attributes and implement :meth:`run`.

    Attributes:
        name: the command and manifest name, e.g. ``"split"``.
        section: the config section it reads (defaults to ``name``).
        inputs: config fields ``sbe run`` fills from upstream stages.
        wired_alone: run as its own command too, its inputs are wired to the work directory's
            stage outputs (values set in the config file or on the command line win).
    """

    name: ClassVar[str]
    section: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]] = ()
    wired_alone: ClassVar[bool] = False

    @classmethod
    def section_name(cls) -> str:
        return cls.section or cls.name

    def summary(self, manifest: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        """What a finished run shows: the manifest table, :meth:`result_lines`, the output."""
        dest = getattr(cfg, "output", None)
        tail: Summary = [f"-> {dest}"] if dest is not None else []
        return [manifest_table(manifest), *self.result_lines(manifest, results, cfg), *tail]

    def result_lines(self, manifest: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        """Lines (or tables) for what the manifest's counts alone do not say."""
        return []

    def output_dir(self, cfg: Section) -> Path:
        """The folder this stage writes and locks (the section's ``output`` by default)."""
        return Path(cfg.output)  # type: ignore[attr-defined]

    def disabled_reason(self, cfg: SbeConfig) -> str | None:
        """Why the config turns this stage off for ``sbe run`` (``None`` = on). Decided from the
        config alone, before anything runs, so the stages after it are wired around it."""
        return None

    def skip_reason(self, cfg: SbeConfig) -> str | None:
        """Why ``sbe run`` should not run this stage now (``None`` = run it); asked when its
        turn comes, so it may look at what the stages before it wrote."""
        return None

    def wire(self, cfg: SbeConfig, skipped: set[str]) -> None:
        """Extra wiring beyond :attr:`inputs` (rarely needed); ``cfg`` is changed in place."""
        return None

    @abstractmethod
    def run(self, cfg: Any, ctx: StageContext) -> Manifest:
        """Do the stage's work inside ``ctx`` and return its manifest (``ctx.commit``)."""


def run_stage(
    stage: Stage,
    cfg: Section,
    *,
    log: Callable[[str], None] | None = None,
    show_progress: bool | None = None,
    restart: bool = False,
    full_config: SbeConfig | None = None,
) -> tuple[Manifest, dict[str, Any]]:
    """Run one stage in a fresh :class:`StageContext`.

    Returns:
        ``(manifest, results)``: results are what the stage put in ``ctx.results``.
    """
    ctx = StageContext(
        stage.name,
        cfg,
        stage.output_dir(cfg),
        log=log,
        show_progress=show_progress,
        restart=restart,
        full_config=full_config,
    )
    with ctx:
        manifest = stage.run(cfg, ctx)
    return manifest, ctx.results


def stage_function(cls: type[Stage]) -> Callable[..., Manifest]:
    """A stage as a plain function, the module-level ``run(cfg, **options) -> Manifest``."""

    def run(cfg: Any, **options: Any) -> Manifest:
        return run_stage(cls(), cfg, **options)[0]

    run.__doc__ = f"""Run :class:`{cls.__name__}` from Python.

    Args:
        cfg: its resolved config section (absolute paths).
        **options: :func:`run_stage` options (``show_progress``, ``restart``, ``log``...).

    Returns:
        The manifest written to ``cfg.output/_manifest.json`` (``up_to_date`` when nothing
        changed).
    """
    return run


def settings_from(cls: type[SettingsT], section: object, **overrides: Any) -> SettingsT:
    """A library settings dataclass built from the same-named fields of a config section.

    Args:
        cls: the dataclass; every one of its init fields is taken from ``section`` unless given in
            ``overrides`` (a field the section lacks is an ``AttributeError``, so a renamed field
            cannot quietly fall back to its default).
        section: the config section (or any object with those attributes).
        overrides: values computed by the stage rather than read from the section.

    Returns:
        ``cls(**values)``.
    """
    return same_named(cls, section, strict=True, **overrides)
