"""Stage commands generated from the config models: one option per field of the stage's section.

Each field becomes ``--kebab-case`` with its type, its choices (``Literal``), its description as
help and its real default; booleans are ``--x/--no-x``, lists are repeatable (or comma-separated),
and ``--set key=value`` reaches anything else. Relative paths given on the command line are
relative to the current folder; in a config file, to its work directory.

Help stays fast: nothing here imports a stage module (they pull in torch, faiss, onnxruntime). The
summary and the examples are read from the stage's source with :mod:`ast` (the ``examples`` class
attribute stays the one place they are written), the stage is imported only when the command runs.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import re
import token
import tokenize
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from rich.markup import escape

import sbe
from sbe.cli import printers
from sbe.cli.base import guarded, load_cfg, parse_sets, verbosity
from sbe.config import SbeConfig

P = inspect.Parameter
#: spellings of a field's option besides ``--field-name`` (the first of a tuple replaces it)
ALIASES: dict[str, tuple[str, ...]] = {
    "input": ("--in", "-i", "--input"),
    "inputs": ("--in", "-i", "--input"),
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
#: help of fields that have no description in the config model
HELP = {
    "input": "Input (an upstream stage's output)",
    "inputs": "Inputs",
    "output": "Output folder",
    "seed": "Random seed",
}
#: a field also taken as a positional argument (``sbe synth OUT``, ``sbe ingest TARS...``)
POSITIONAL = {"synth": "output", "ingest": "inputs"}
Runner = Callable[..., tuple[Any, dict[str, Any]]]


def _source(module: str) -> Path:
    """The source file of ``module`` (a module of this package), found without importing it."""
    path = Path(sbe.__file__).parent.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@functools.cache
def stage_classes() -> dict[str, str]:
    """``sbe.stages.STAGE_CLASSES``, read from its source (importing it pulls in numpy)."""
    tree = ast.parse(_source("sbe.stages").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "STAGE_CLASSES":
            return dict(ast.literal_eval(node.value))  # type: ignore[arg-type]
    return {}


def _plain(text: str) -> str:
    text = re.sub(r"^(``sbe [\w ]+``|Stage ``\w+``):\s*", "", text.strip())
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
    return text[:1].upper() + text[1:]


def _docstring_and_class(source: str, cls: str | None) -> ast.Module:
    """The module docstring and the top-level class ``cls`` of ``source``, as one small tree.

    Parsing whole stage modules (15 of them, thousands of lines) was half of ``sbe --help``;
    this parses the lines up to the end of the leading docstring and the text from
    ``class cls(`` on (stage classes close their modules), falling back to the whole file when
    that text does not parse alone.
    """
    skip = {token.ENCODING, token.COMMENT, token.NL, token.NEWLINE}
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    first = next((t for t in tokens if t.type not in skip), None)
    lines = source.splitlines(keepends=True)
    head = "".join(lines[: first.end[0]]) if first and first.type == token.STRING else ""
    start = source.find(f"\nclass {cls}(") if cls else -1
    try:
        return ast.parse(head + (source[start:] if start >= 0 else ""))
    except SyntaxError:
        return ast.parse(source)


@functools.cache
def stage_doc(module: str, cls: str | None) -> tuple[str, tuple[str, ...]]:
    """(summary, examples) of a stage class (or of the module when ``cls`` is ``None``)."""
    tree = _docstring_and_class(_source(module).read_text(), cls)
    doc, examples = ast.get_docstring(tree) or "", ()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            own = ast.get_docstring(node) or ""
            doc = doc if "see the module docstring" in own or not own else own
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and getattr(item.targets[0], "id", "") == "examples"
                ):
                    examples = tuple(ast.literal_eval(item.value))
    return _plain(doc.split("\n\n")[0].replace("\n", " ")), examples


def command_help(name: str, section: str) -> tuple[str, str]:
    """(help, epilog): the stage's summary, its config section's docstring, its examples."""
    module, _, cls = stage_classes().get(name, f"sbe.stages.{name}:").partition(":")
    summary, examples = stage_doc(module, cls or None)
    model = SbeConfig.model_fields[section].annotation
    sec_doc = _plain((model.__doc__ or "").split("\n\n")[0].replace("\n", " "))
    if sec_doc and not sec_doc.startswith("Base of every") and sec_doc != summary:
        summary += f"\n\n{sec_doc}"
    summary += "\n\nAny other setting: --set SECTION.KEY=VALUE (e.g. from a config file's tables)."
    epilog = "Examples:\n\n" + "\n\n".join(f"  {e}" for e in examples) if examples else ""
    return escape(summary), escape(epilog)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(type without ``None``, is a list)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is list:
        return get_args(annotation)[0], True
    return annotation, False


def _bounds(info: FieldInfo) -> str:
    """The field's bounds as help text, e.g. ``(>= 0, <= 1)``; the config model checks them."""
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [
        f"{op} {getattr(m, a)}"
        for m in info.metadata
        for a, op in ops.items()
        if getattr(m, a, None) is not None
    ]
    return f"({', '.join(parts)})" if parts else ""


METAVARS = {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH"}


def field_param(name: str, info: FieldInfo) -> P:
    """The option of one config field (its value ``None`` when not given).

    Values are checked by the config model, so an error names the key (``split.identity: ...``).
    """
    base, many = _unwrap(info.annotation)
    default = info.get_default(call_default_factory=True)
    flag = "--" + name.replace("_", "-")
    decls = list(ALIASES.get(name, ())) if name in REPLACES else [flag, *ALIASES.get(name, ())]
    help_ = f"{info.description or HELP.get(name, '')} {_bounds(info)}".strip()
    kind: Any = base
    extra: dict[str, Any] = {"metavar": METAVARS.get(base, "TEXT")}
    if get_origin(base) is Literal:
        kind, extra["metavar"] = str, "|".join(map(str, get_args(base)))
    elif base is bool:
        decls[0], extra = f"{flag}/--no-{flag[2:]}", {}
    elif many and base is not Path:
        kind, help_ = str, f"{help_} (repeatable, or comma-separated)".lstrip()
    elif many:
        help_ = f"{help_} (repeatable)".lstrip()
    if many:
        kind = list[kind]
    if default is None or default == []:
        kind, extra["show_default"] = kind | None, False
    option = typer.Option(*decls, help=escape(help_[:1].upper() + help_[1:]), **extra)
    return P(f"f_{name}", P.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def opt(name: str, kind: Any, default: Any, *decls: str, **kw: Any) -> P:
    """A keyword parameter carrying a typer option (its default not shown)."""
    option = typer.Option(*decls, show_default=False, **kw)
    return P(name, P.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


#: options some commands have beyond their section's fields
EXTRAS = {
    "train": [
        opt(
            "x_resume",
            bool,
            False,
            "--resume",
            help="Continue the run in --out from its last checkpoint.",
        )
    ],
    "embed": [
        opt(
            "x_shard",
            str | None,
            None,
            "--shard",
            metavar="K/N",
            help="Embed only shard K of N (SLURM arrays).",
        )
    ],
}
common = functools.partial(opt, rich_help_panel="Common options")
COMMON_OPTIONS = [
    common(
        "config",
        Path | None,
        None,
        "--config",
        "-c",
        help="TOML config file (defaults apply when omitted).",
    ),
    common(
        "workdir", Path | None, None, "--workdir", help="Work directory (overrides the config's)."
    ),
    common(
        "set_",
        list[str] | None,
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Any other setting, e.g. --set seed=3 (repeatable).",
    ),
    common("restart", bool, False, "--restart", help="Start over: no up-to-date check, no resume."),
    common("json_", bool, False, "--json", help="Print the result as JSON."),
    common("quiet", bool, False, "--quiet", "-q", help="Only errors and the result."),
    common("verbose", bool, False, "--verbose", "-v", help="Log lines of the stage; tracebacks."),
]


def _split(values: list[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _shard(text: str) -> dict[str, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expects K/N (e.g. 3/16), got {text!r}") from None
    return {"shard_index": k, "shard_count": n}


def run_stage_command(name: str, cfg: SbeConfig, sec: Any, **options: Any) -> tuple[Any, dict]:
    """Run a pipeline stage through the stage protocol."""
    from sbe.stages import get_stage, run_stage

    stage = get_stage(name)
    if options.pop("resume", False):  # `sbe train --resume`: continue whatever left the run
        from sbe.stages.train import TrainStage

        stage = TrainStage(resume=True)
    return run_stage(stage, sec, full_config=cfg, **options)


def _explicit(ctx: typer.Context, param: str) -> bool:
    """Whether the user gave ``param`` (command line or environment), not its default."""
    source = ctx.get_parameter_source(param)
    assert source is not None  # every keyword the command receives is one of its parameters
    return source.name not in ("DEFAULT", "DEFAULT_MAP")


def stage_command(name: str, section: str = "", runner: Runner = run_stage_command) -> Callable:
    """The command of stage ``name`` (options from ``SbeConfig.<section>``)."""
    section = section or name
    fields = SbeConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    params = [P("ctx", P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    if pos := POSITIONAL.get(name):
        many = _unwrap(fields[pos].annotation)[1]
        flag = "in" if many else "out"
        arg = typer.Argument(metavar="PATH", help=f"Same as --{flag}.", show_default=False)
        kind = list[Path] | None if many else Path | None
        params.append(P("a_" + pos, P.KEYWORD_ONLY, default=None, annotation=Annotated[kind, arg]))
    params += [field_param(f, info) for f, info in fields.items()]
    params += [*EXTRAS.get(name, []), *COMMON_OPTIONS]

    @guarded
    def command(ctx: typer.Context, **kw: Any) -> None:
        given = {k: v for k, v in kw.items() if v is not None and _explicit(ctx, k)}
        values: dict[str, Any] = {}
        for key, value in given.items():
            kind, _, field = key.partition("_")
            if kind in ("f", "a") and field in fields:
                many_text = isinstance(value, list) and value and isinstance(value[0], str)
                values[field] = _split(value) if many_text else value
        if "x_shard" in given:
            values.update(_shard(given["x_shard"]))
        overrides = parse_sets(kw["set_"], section)
        overrides.setdefault(section, {}).update(values)
        with verbosity(kw["quiet"], kw["verbose"]) as log:
            cfg = load_cfg(kw["config"], kw["workdir"], overrides, wired=name == "report")
            sec = cfg.section(section)
            options = {"log": log, "restart": kw["restart"]}
            if kw.get("x_resume"):
                options["resume"] = True
            manifest, results = runner(name, cfg, sec, **options)
            printers.show(name, manifest, results, sec, kw["json_"])

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = f"{name}_command"
    return command


def register(app: typer.Typer, name: str, command_name: str = "", **kw: Any) -> None:
    """Add the generated command of stage ``name`` to ``app`` (as ``command_name``)."""
    help_, epilog = command_help(name, kw.get("section") or name)
    app.command(command_name or name, help=help_, epilog=epilog)(stage_command(name, **kw))
