"""What every command shares: consoles, verbosity, loading the config, errors and Ctrl-C."""

from __future__ import annotations

import contextlib
import functools
import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from sbe.config import ConfigError, SbeConfig, load_config

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
#: set by the command that runs: ``main`` prints a traceback only when ``verbose``
state = {"verbose": False, "quiet": False}

INTERRUPTED = (
    "interrupted: finished stages and parts are kept; the folder that was being written is resumed "
    "or redone on the next run: to continue, run the same command again"
)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def say(message: Any) -> None:
    """One log line on stderr (records that are not text are shown as JSON)."""
    from sbe.progress import log_line

    log_line(message if isinstance(message, str) else json.dumps(message, default=str))


def guarded(func: Callable[..., None]) -> Callable[..., None]:
    """Config errors exit 2 with one line; Ctrl-C says what was kept and exits 130.

    Other user-facing errors (``SbeError``, ``OSError``, ``LockedError``) propagate to
    :func:`sbe.cli.main`, which prints them as one line (tests see the exception itself).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except ConfigError as e:
            fail(f"config: {e}", code=2)
        except KeyboardInterrupt:
            err.print(INTERRUPTED, markup=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def verbosity(quiet: bool, verbose: bool) -> Iterator[Callable[[Any], None] | None]:
    """Set ``--quiet``/``--verbose`` for one command; yields the stage log (``None`` = silent)."""
    from sbe.progress import progress_default

    state.update(quiet=quiet, verbose=verbose)
    with progress_default(False if quiet else None):
        yield say if verbose and not quiet else None


def parse_sets(pairs: list[str] | None, section: str | None) -> dict[str, dict[str, Any]]:
    """``--set key=value`` (``key`` or ``section.key``) -> ``{section: {key: value}}``.

    A value is read as a TOML value (``3``, ``true``, ``[1, 5]``, ``"x"``), else taken as text; a
    relative path in it is under the work directory, as in a config file.
    """
    result: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        sec, dot, field = key.strip().rpartition(".")
        if not sep or not field or not (dot or section):
            raise ConfigError(f"--set expects SECTION.KEY=VALUE (or KEY=VALUE), got {pair!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        result.setdefault(sec or section or "", {})[field] = value
    return result


def load_cfg(
    config: Path | None,
    workdir: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    wired: bool = False,
) -> SbeConfig:
    """The config file (or defaults) with ``overrides`` on top; ``wired``: inputs follow outputs.

    With ``wired`` the inputs are derived from the other stages' outputs in the work directory
    (:func:`sbe.pipeline.wire`) and the command-line values are applied after that, so they win.
    """
    overrides = overrides or {}
    cfg = load_config(config, overrides)
    if workdir is not None:
        cfg.workdir = workdir.expanduser().resolve()
    if not wired:
        return cfg
    from sbe.pipeline import wire

    result = wire(cfg)
    for sec, values in overrides.items():
        for key, value in values.items():
            if value is not None:
                setattr(getattr(result, sec), key, getattr(getattr(cfg, sec), key))
    return result
