"""The ``sbe`` command line: parses flags, loads the config, calls one stage function.

Each command is thin on purpose: the work lives in ``sbe.stages.<name>.run(section)`` so that
everything here is also usable from Python without the CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import typer
from rich.console import Console
from rich.table import Table

from sbe import __version__
from sbe.config import ConfigError, SbeConfig, Section, config_to_toml_dict, load_config
from sbe.errors import SbeError
from sbe.storage import LockedError, Manifest

app = typer.Typer(
    name="sbe",
    help="Spatial Building Embeddings: street-level building photos to identity embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (defaults apply when omitted)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def load(config: Path | None, **sections: dict[str, Any]) -> SbeConfig:
    """Load the config with CLI flag overrides per section; config errors exit with code 2."""
    try:
        return load_config(config, sections)
    except ConfigError as e:
        _fail(f"config: {e}", code=2)
        raise  # unreachable


def section(config: Path | None, name: str, **overrides: Any) -> Section:
    """The resolved config section ``name`` with flag overrides applied."""
    return load(config, **{name: overrides}).section(name)


def print_manifest(m: Manifest, title: str | None = None) -> None:
    """Print a stage's summary: rows, skips by reason, wall time."""
    table = Table(title=title or f"sbe {m.stage}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    if m.up_to_date:
        table.add_row("status", "up to date (inputs and config unchanged): nothing redone")
    for k, v in m.rows.items():
        table.add_row(k, f"{v:,}")
    if m.skipped:
        table.add_row("skipped", ", ".join(f"{k}: {v:,}" for k, v in m.skipped.items()))
    table.add_row("wall time", f"{m.wall_seconds:.1f} s")
    out.print(table)


def main() -> None:
    """Console entry point: user-facing errors print one clear line instead of a traceback."""
    try:
        app()
    except (SbeError, LockedError, FileNotFoundError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(1)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"sbe {__version__}")
        raise typer.Exit()


@config_app.command("show")
def config_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective configuration (file values over defaults), as TOML or JSON."""
    cfg = load(config)
    data = config_to_toml_dict(cfg)
    if as_json:
        out.print_json(json.dumps(data))
    else:
        typer.echo(tomli_w.dumps(data))


# ---- stage commands (one block per stage, in pipeline order) ---------------------------------

# ---- synth ----

# ---- ingest ----

# ---- backbone ----

# ---- split ----

# ---- neighbors ----

# ---- train / evaluate / tune ----

# ---- geo ----

# ---- publish / embed / aggregate ----

# ---- index / search / cluster ----

# ---- report / run / demo ----


if __name__ == "__main__":
    main()
