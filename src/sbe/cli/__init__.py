"""The ``sbe`` command line: one command per stage, generated from the config models.

Stage commands (:mod:`sbe.cli.gen`) take one option per field of the stage's config section and
run the stage through the stage protocol; results are printed by :mod:`sbe.cli.printers`; the
other commands are in :mod:`sbe.cli.commands`. Everything is also usable from Python without the
CLI. ``sbe --help`` imports no stage module (nor torch, faiss or onnxruntime).
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from sbe import __version__
from sbe.cli import commands
from sbe.cli.base import err, out, state
from sbe.cli.gen import register
from sbe.config import PIPELINE_STAGES
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
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
geo_app = typer.Typer(
    help="Geographic expert: location, climate zone and season heads on the embeddings.",
    no_args_is_help=True,
)
index_app = typer.Typer(help="Build a faiss index over embeddings.", no_args_is_help=True)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"sbe {__version__}")
        raise typer.Exit()


for _name in PIPELINE_STAGES:
    if _name == "geo":
        register(geo_app, "geo", "train")
        geo_app.command("evaluate")(commands.geo_evaluate)
        geo_app.command("predict")(commands.geo_predict)
        app.add_typer(geo_app, name="geo")
    elif _name == "index":
        register(index_app, "index", "build")
        app.add_typer(index_app, name="index")
        app.command("search")(commands.search)
        app.command("serve")(commands.serve)
    else:
        register(app, _name)
    if _name == "evaluate":
        register(app, "tune", runner=commands.run_tune)
    if _name == "ingest":  # not part of `sbe run`: footprints label your own photos
        register(app, "label")
app.command("run")(commands.run)
app.command("demo")(commands.demo)
config_app.command("show")(commands.config_show)
app.add_typer(config_app, name="config")


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
        err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
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
