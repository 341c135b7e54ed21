"""Commands generated from pydantic models: one option per field, nothing declared twice.

A stage command takes the fields of its config section (``SbeConfig.<section>``); the other
commands take the fields of their options model (:mod:`sbe.config.commands`). Each field becomes
``--kebab-case`` with its type, choices (``Literal``), bounds, description and real default;
booleans are ``--x/--no-x``, lists repeatable (or comma-separated). The model's docstring is the
help and its ``examples`` end it. The code that runs is named as ``module:function`` and imported
only when the command runs, so ``--help`` never loads torch, numpy or pyarrow.
"""

from __future__ import annotations

import importlib
import inspect
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from sbe.cli.base import INTERRUPTED, err, error, render, say, state
from sbe.config import ConfigError, SbeConfig, format_errors, load_config, parse_sets

P = inspect.Parameter
#: spellings of a field's option besides ``--field-name`` (those of REPLACES replace it)
ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("input", "inputs"), ("--in", "-i", "--input")),
    "output": ("--out", "-o", "--output"),
    "model": ("-m",),
    "workers": ("-w",),
    "batch_size": ("-b",),
    "k": ("-k",),
    "buildings": ("-n",),
    "seed": ("-s",),
    "metadata_columns": ("--metadata",),
    "study_name": ("--study",),
    "ray_gpus_per_worker": ("--ray-gpus",),
    "bundle_backbone": (" /--reference-backbone",),
}
REPLACES = {"input", "inputs", "output"}
#: a field also taken as positional arguments (``sbe synth OUT``, ``sbe geo predict IMAGES``)
POSITIONAL = {"synth": "output", "ingest": "inputs", "geo predict": "images"}
METAVARS = {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(type without ``None``, is a list)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is list:
        return get_args(annotation)[0], True
    return annotation, False


def _bounds(info: FieldInfo) -> str:
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [
        f"{op} {getattr(m, a)}"
        for m in info.metadata
        for a, op in ops.items()
        if getattr(m, a, None) is not None
    ]
    return f"({', '.join(parts)})" if parts else ""


def field_param(name: str, info: FieldInfo) -> P:
    """The option of one field (``None`` when not given: the model supplies the default)."""
    base, many = _unwrap(info.annotation)
    default = info.get_default(call_default_factory=True)
    flag = "--" + name.replace("_", "-")
    decls = list(ALIASES.get(name, ())) if name in REPLACES else [flag, *ALIASES.get(name, ())]
    help_ = f"{info.description or ''} {_bounds(info)}".strip()
    kind: Any = base
    extra: dict[str, Any] = {"metavar": METAVARS.get(base, "TEXT")}
    if get_origin(base) is Literal:
        kind, extra["metavar"] = str, "|".join(map(str, get_args(base)))
    elif base is bool:
        decls[0], extra = f"{flag}/--no-{flag[2:]}", {}
    elif many:
        kind = str if base is not Path else Path
    if many:
        help_ += " (repeatable, or comma-separated)" if base is not Path else " (repeatable)"
    kind = list[kind] if many else kind
    if default is None or default == []:
        kind, extra["show_default"] = kind | None, False
    option = typer.Option(*decls, help=escape(help_[:1].upper() + help_[1:]), **extra)
    return P(f"f_{name}", P.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def _common(name: str, kind: Any, *decls: str, help: str, metavar: str | None = None) -> P:
    panel = "Common options"
    option = typer.Option(
        *decls, show_default=False, help=help, rich_help_panel=panel, metavar=metavar
    )
    default = False if kind is bool else None
    return P(name, P.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


COMMON = [
    _common("config", Path | None, "--config", "-c", help="TOML config file (defaults apply)."),
    _common("workdir", Path | None, "--workdir", help="Work directory (overrides the config's)."),
    _common(
        "set_",
        list[str] | None,
        "--set",
        help="Any other setting, e.g. --set seed=3 or --set train.epochs=5 (repeatable).",
        metavar="KEY=VALUE",
    ),
    _common("json_", bool, "--json", help="Print the result as JSON."),
    _common("quiet", bool, "--quiet", "-q", help="Only errors and the result."),
    _common("verbose", bool, "--verbose", "-v", help="Log lines of every stage; tracebacks."),
]
RESTART = _common("restart", bool, "--restart", help="Start over: no up-to-date check, no resume.")


def _explicit(ctx: typer.Context, param: str) -> bool:
    """Whether the user gave ``param`` (command line or environment), not its default."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _given(ctx: typer.Context, kw: dict[str, Any], fields: dict[str, FieldInfo]) -> dict[str, Any]:
    """The field values the user gave (positional arguments included), lists split on commas."""
    values: dict[str, Any] = {}
    for key, value in kw.items():
        kind, _, field = key.partition("_")
        if kind in ("f", "a") and field in fields and value is not None and _explicit(ctx, key):
            text_list = isinstance(value, list) and value and isinstance(value[0], str)
            values[field] = (
                [p.strip() for v in value for p in v.split(",") if p.strip()]
                if text_list
                else value
            )
    return values


def command(name: str, model: type[BaseModel], runner: str, section: str = "") -> Callable:
    """The command ``name``: options from ``model``'s fields, ``runner`` (``module:function``) run.

    Args:
        name: the command as typed (``"geo predict"``).
        model: the fields' model: a config section (``section`` given) or an options model.
        runner: called as ``runner(options, cfg, log=, notes=, workdir=)`` (``log``: every log
            line, with ``--verbose``; ``notes``: lines shown unless ``--quiet``; ``workdir``,
            ``config``: as given; ``overrides``: the ``--set`` values by section; ``name``:
            ``section``; ``restart``: a stage's option). It returns
            ``(payload, summary)``: ``--json`` prints the payload, else the summary is rendered.
        section: for a stage: its ``SbeConfig`` section; the values become config overrides.
    """
    fields = model.model_fields
    params = [P("ctx", P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    if pos := POSITIONAL.get(name):
        many = _unwrap(fields[pos].annotation)[1]
        arg = typer.Argument(
            metavar="PATH",
            help=f"Same as --{'in' if pos != 'output' else 'out'}." if section else "",
            show_default=False,
        )
        kind = list[Path] | None if many else Path | None
        params.append(P("a_" + pos, P.KEYWORD_ONLY, default=None, annotation=Annotated[kind, arg]))
    params += [field_param(f, info) for f, info in fields.items()]
    params += [*COMMON, RESTART] if section else COMMON

    def run(ctx: typer.Context, **kw: Any) -> None:
        from sbe.progress import progress_default  # rich.progress: not for --help

        values = _given(ctx, kw, fields)
        state["verbose"] = kw["verbose"]
        log, notes = (
            say if kw["verbose"] and not kw["quiet"] else None,
            None if kw["quiet"] else say,
        )
        try:
            overrides = parse_sets(kw["set_"], section or None)
            if section:
                overrides.setdefault(section, {}).update(values)
            cfg: SbeConfig = load_config(kw["config"], overrides)
            if kw["workdir"] is not None:
                cfg.workdir = kw["workdir"].expanduser().resolve()
            try:
                options = cfg.section(section) if section else model(**values)
            except ValidationError as e:
                raise ConfigError(format_errors(e)) from None
            module, _, func = runner.partition(":")
            fn = getattr(importlib.import_module(module), func)
            paths, restart = {k: kw[k] for k in ("workdir", "config")}, kw.get("restart", False)
            with progress_default(False if kw["quiet"] else None):
                payload, summary = fn(
                    options,
                    cfg,
                    log=log,
                    notes=notes,
                    name=section,
                    restart=restart,
                    overrides=overrides,
                    **paths,
                )
        except ConfigError as e:  # other user errors reach sbe.cli.main (tests see the exception)
            error(f"config: {e}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print(INTERRUPTED, markup=False, soft_wrap=True)
            raise typer.Exit(130) from None
        if kw["json_"]:
            typer.echo(json.dumps(payload, default=str))
        else:
            render(summary)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__name__ = name.replace(" ", "_") + "_command"
    return run


def add(
    app: typer.Typer, name: str, model: type[BaseModel], runner: str, section: str = ""
) -> None:
    """Register :func:`command` on ``app`` with the model's docstring and examples as help."""
    doc = inspect.cleandoc(model.__doc__ or "")
    examples = getattr(model, "examples", ())
    epilog = "Examples:\n\n" + "\n\n".join(f"  {e}" for e in examples) if examples else None
    typed = name.rpartition(" ")[2]
    app.command(typed, help=escape(doc.replace("``", "")), epilog=epilog and escape(epilog))(
        command(name, model, runner, section)
    )
