"""The ``sbe`` command line, generated (:mod:`sbe.cli.gen`) from the config sections (one command
per stage) and the options models of :mod:`sbe.config.commands` (the other commands).

Each command names the function that runs it; that function returns what ``--json`` prints and a
summary that :func:`sbe.cli.base.render` prints. Everything is also usable from Python without the
CLI. ``sbe --help`` imports no stage module (nor torch, faiss or onnxruntime).
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer

from sbe import __version__
from sbe.cli.base import error, out, state
from sbe.cli.gen import add
from sbe.config import SECTION_NAMES, SbeConfig
from sbe.config import commands as options
from sbe.errors import SbeError, os_error_message

app = typer.Typer(
    name="sbe",
    help="Spatial Building Embeddings: street-level building photos to identity embeddings.\n\n"
    "Relative paths on the command line are relative to the current folder; in a config file, "
    "to its work directory. Ctrl-C keeps finished work: the same command resumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
GROUPS = {
    "geo": "Geographic expert: location, climate zone and season heads on the embeddings.",
    "index": "Build a faiss index over embeddings.",
    "config": "Inspect the configuration.",
}
groups = {name: typer.Typer(help=text, no_args_is_help=True) for name, text in GROUPS.items()}
STAGE = "sbe.pipeline:run_stage_command"
#: the commands that are not stages: name -> (options model, function that runs them)
OTHERS = {
    "geo evaluate": (options.GeoEvaluateOptions, "sbe.stages.geo:evaluate_command"),
    "geo predict": (options.GeoPredictOptions, "sbe.stages.geo:predict_command"),
    "search": (options.SearchOptions, "sbe.stages.search:command"),
    "serve": (options.ServeOptions, "sbe.pipeline:serve_command"),
    "run": (options.RunOptions, "sbe.pipeline:run_command"),
    "demo": (options.DemoOptions, "sbe.pipeline:demo_command"),
    "config show": (options.ConfigShowOptions, "sbe.config.commands:config_show"),
}


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"sbe {__version__}")
        raise typer.Exit()


def _add(name: str, model: Any, runner: str, section: str = "") -> None:
    group, _, _ = name.rpartition(" ")
    add(groups[group] if group else app, name, model, runner, section)


#: config sections that configure no stage of their own
NOT_STAGES = ("pipeline", "verify")
# one command per stage section, in the config's (pipeline) order; then the others
for stage in SECTION_NAMES:
    if stage not in NOT_STAGES:
        command = {"geo": "geo train", "index": "index build"}.get(stage, stage)
        _add(command, SbeConfig.model_fields[stage].annotation, STAGE, stage)
for name, (model, runner) in OTHERS.items():
    _add(name, model, runner)
for name, group in groups.items():
    app.add_typer(group, name=name)


def main() -> None:
    """Console entry point: a user-facing error is one line ``error: ...`` (exit 1), no traceback
    unless ``--verbose``; config and usage errors exit 2, Ctrl-C 130 (see :mod:`sbe.cli.base`)."""
    try:
        app()
    except Exception as e:
        if not _user_error(e):
            raise
        if state["verbose"]:
            traceback.print_exc()
        message = os_error_message(e) if isinstance(e, OSError) else str(e)
        error(message)
        sys.exit(1)


def _user_error(e: BaseException) -> bool:
    """An error reported in one line: SbeError, OSError or sbe.storage's LockedError.

    LockedError is looked up only if its module is loaded (it is whenever one was raised):
    importing ``sbe.storage`` here would load numpy and pyarrow, a third of ``sbe --help``.
    """
    lock = sys.modules.get("sbe.storage.lock")
    return isinstance(e, SbeError | OSError) or (
        lock is not None and isinstance(e, lock.LockedError)
    )


__all__ = ["app", "main"]
