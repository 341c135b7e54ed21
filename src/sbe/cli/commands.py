"""Commands that are not pipeline stages: config show, geo evaluate/predict, search, tune, run, demo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from sbe.cli import printers
from sbe.cli.base import guarded, load_cfg, out, parse_sets, say, state, verbosity
from sbe.config import PIPELINE_STAGES, SbeConfig, config_to_toml_dict

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (defaults apply).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the result.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log lines of every stage; tracebacks.")
]
RestartOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--restart",
        metavar="STAGE",
        help=f"Run this stage from scratch (repeatable): {', '.join(PIPELINE_STAGES)}.",
    ),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="SECTION.KEY=VALUE on top of the config.")
]
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@guarded
def config_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective configuration (file values over defaults), as TOML or JSON."""
    import tomli_w

    data = config_to_toml_dict(load_cfg(config))
    typer.echo(json.dumps(data, indent=2) if as_json else tomli_w.dumps(data))


@guarded
def geo_evaluate(
    run: Annotated[
        Path | None,
        typer.Option(
            "--run", "--model", help="GEO_DIR of `sbe geo train` (default: the geo stage's output)."
        ),
    ] = None,
    split: Annotated[
        Literal["train", "val", "test"], typer.Option(help="Split to evaluate.")
    ] = "test",
    input: Annotated[
        Path | None,
        typer.Option("--in", "--input", help="Split folder (default: the one trained on)."),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy at 1/25/200/750/2500 km, climate and season errors, beside two baselines."""
    from sbe.stages import geo

    cfg = load_cfg(config).resolved().geo
    report = geo.evaluate(
        run.resolve() if run is not None else Path(cfg.output),
        split=split,
        split_dir=input.resolve() if input is not None else None,
        fallback_px=cfg.coastal_fallback_px,
        threads=cfg.threads,
    )
    if as_json:
        typer.echo(json.dumps(report))
    else:
        out.print(printers.geo_table(report, f"sbe geo evaluate: {split} ({report['n']:,} rows)"))


@guarded
def geo_predict(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files.")] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="GEO_DIR (default: the geo stage's output).")
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", help="Parquet file with a backbone `embedding` column."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Locations per input.")] = 5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-k locations with probabilities, climate class and season for images or embeddings."""
    from sbe.stages import geo

    cfg = load_cfg(config).resolved().geo
    rows = geo.predict(
        model.resolve() if model is not None else Path(cfg.output),
        images=images or None,
        embeddings_file=embeddings,
        top_k=top_k,
        threads=cfg.threads,
    )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="sbe geo predict", title_justify="left")
    right = ("rank", "lat", "lon", "prob", "r50 km", "r90 km")
    for col in ("input", *right, "climate", "season"):
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        c, s = row["climate"], row["season"]
        first = [
            Path(row["source"]).name,
            f"{c['code']} {c['name']} p={c['prob']:.2f}",
            f"{s['date_label']} (day {s['day_of_year']:.0f})",
        ]
        for j, loc in enumerate(row["locations"]):
            name, climate, season = first if j == 0 else ("", "", "")
            cells = (
                f"{loc['lat']:.4f}",
                f"{loc['lon']:.4f}",
                f"{loc['prob']:.3f}",
                f"{loc.get('radius_50_km', float('nan')):,.0f}",
                f"{loc.get('radius_90_km', float('nan')):,.0f}",
            )
            table.add_row(name, str(j + 1), *cells, climate, season)
    out.print(table)


@guarded
def search(
    index: Annotated[
        Path | None, typer.Option(help="Index folder (default: the index stage's output).")
    ] = None,
    id_value: Annotated[
        str | None, typer.Option("--id", help="Query by id (the query itself is excluded).")
    ] = None,
    vector_file: Annotated[
        Path | None, typer.Option(help="Query vectors: .npy, .json or .parquet (embedding).")
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            help="Query image(s): a file, a folder or a glob (repeatable); one model load for all.",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Neighbours per query.")] = 10,
    model: Annotated[
        Path | None, typer.Option(help="Published model folder (default: recorded in the index).")
    ] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search breadth.")] = None,
    include_self: Annotated[
        bool, typer.Option("--include-self", help="With --id: keep the query's own rows.")
    ] = False,
    precision: Annotated[
        Literal["fp32", "int8"],
        typer.Option(help="With --image: backbone precision (int8: CPU, needs --calibration)."),
    ] = "fp32",
    calibration: Annotated[
        str | None,
        typer.Option(help="With int8: the calibration digest in the embed run's _manifest.json."),
    ] = None,
    rerank: Annotated[
        bool,
        typer.Option(
            "--rerank",
            help="Re-order the top --rerank-k by verified local matches (--image or --id; "
            "[verify] settings).",
        ),
    ] = False,
    rerank_k: Annotated[
        int | None,
        typer.Option(min=1, help="Candidates re-ranked per query (default: [verify] rerank_k)."),
    ] = None,
    photos: Annotated[
        Path | None,
        typer.Option(
            help="With --rerank and no stored local features: the photo parquet (default: "
            "found from the index)."
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Nearest neighbours by id, vector or image: similarity, id and location; with --rerank,
    verified local matches; with a calibration.json in the index, same building or not."""
    from sbe.stages import search as stage

    cfg = load_cfg(config).resolved()
    index_dir = index or cfg.index.output
    idx, labels, result = stage.run_query(
        index_dir,
        id_value=id_value,
        vector_file=vector_file,
        images=image,
        k=k,
        model_dir=model,
        ef_search=ef_search,
        exclude_self=not include_self,
        precision=precision,
        calibration=calibration,
        rerank=rerank,
        rerank_k=rerank_k,
        verify=cfg.verify,
        photos=photos,
    )
    payload = stage.to_payload(index_dir, idx, labels, result)
    if as_json:
        typer.echo(json.dumps(payload, default=str))
        return
    print_search(payload, k)


#: columns re-ranking and a calibration add, shown after the similarity
_VERIFY_COLUMNS = ("matches", "score", "same_building", "same_building_probability")


def print_search(payload: dict[str, Any], k: int) -> None:
    """The table of ``sbe search``: one per query (re-ranking's counts under it)."""
    fixed = ("rank", "id", "similarity", "lat", "lon")
    for q in payload["queries"]:
        table = Table(title=f"{q['query']}: top {k}", title_justify="left")
        first = q["hits"][0] if q["hits"] else {}
        verify = [c for c in _VERIFY_COLUMNS if c in first]
        extra = [c for c in first if c not in (*fixed, "row", *verify)]
        for col in (*fixed[:3], *verify, *fixed[3:], *extra):
            name = {"same_building_probability": "p(same)", "same_building": "same"}.get(col, col)
            table.add_column(
                name, justify="left" if col in ("id", *extra) else "right", overflow="fold"
            )
        for h in q["hits"]:
            loc = [f"{h[c]:.6f}" if h[c] is not None else "-" for c in ("lat", "lon")]
            table.add_row(
                str(h["rank"]),
                str(h["id"]),
                f"{h['similarity']:.4f}",
                *(_verify_cell(c, h[c]) for c in verify),
                *loc,
                *(str(h[c]) for c in extra),
            )
        out.print(table)
    rr = payload.get("rerank")
    if rr:
        out.print(
            f"re-ranked the top {rr['k']} by verified matches ({rr['max_keypoints']} keypoints, "
            f"{rr['max_side']} px; photos: {rr['gallery']}) in {rr['seconds']:.2f} s; "
            f"{rr['missing']} candidate(s) without photos kept their global place"
        )


def _verify_cell(col: str, v: Any) -> str:
    if v is None:
        return "-"
    if col == "score":
        return f"{v:.3f}"
    if col == "same_building_probability":
        return f"{v:.3f}"
    if col == "same_building":
        return "yes" if v else "no"
    return str(v)


@guarded
def serve(
    index: Annotated[
        Path | None, typer.Option(help="Index folder (default: the index stage's output).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Published model folder (default: recorded in the index).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; localhost unless told.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    photos: Annotated[
        Path | None, typer.Option(help="Parquet of the indexed photos (default: from the index).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Search service + map explorer: the model and index loaded once (OpenAPI at /docs).

    Example: sbe serve --index work/demo/index --port 8000, then open http://127.0.0.1:8000/
    """
    from sbe.service.command import serve as run_server

    index_dir = index or load_cfg(config).resolved().index.output
    run_server(index_dir, model, host, port, workers, photos=photos)


def run_tune(name: str, cfg: SbeConfig, sec: Any, log: Any = None, **_: Any) -> tuple[Any, dict]:
    """``sbe tune``: trials of the shared study, starting from the ``[train]`` settings."""
    from sbe.stages import tune

    return tune.run(sec, cfg.resolved().train, console=log), {}


def run_and_report(cfg: SbeConfig, restart: list[str], as_json: bool) -> None:
    """Run the pipeline, then print one line per stage (stderr) and the key numbers (stdout).

    Stage lines are dropped with ``--quiet``; the stages' own (indented) lines need ``--verbose``.
    """
    from sbe.pipeline import key_numbers, report_file, run_pipeline

    if unknown := sorted(set(restart) - set(PIPELINE_STAGES)):
        raise typer.BadParameter(f"--restart: no stage {', '.join(unknown)}")
    workdir = cfg.workdir.expanduser().resolve()

    def log(line: str) -> None:
        if not state["quiet"] and (state["verbose"] or not line.startswith(" ")):
            say(line)

    log(f"workdir: {workdir}")
    t0 = time.perf_counter()
    outcomes = run_pipeline(cfg, log=log, restart=restart)
    seconds = time.perf_counter() - t0
    if as_json:
        report = report_file(cfg)
        rows = [
            dict(zip(("what", "value", "compared_with"), r, strict=True)) for r in key_numbers(cfg)
        ]
        payload = {
            "workdir": str(workdir),
            "seconds": round(seconds, 3),
            "report": report and str(report),
        }
        typer.echo(
            json.dumps({**payload, "stages": [o.to_json() for o in outcomes], "key_numbers": rows})
        )
        return
    out.print(f"pipeline finished in {seconds:.1f} s", markup=False)
    printers.key_numbers(cfg)


@guarded
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML config file.")],
    workdir: Annotated[
        Path | None, typer.Option(help="Override the config's work directory.")
    ] = None,
    restart: RestartOpt = None,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the whole pipeline (synth or ingest -> ... -> report); finished stages are skipped.

    An interrupted run resumes: run the same command again.
    """
    with verbosity(quiet, verbose):
        cfg = load_cfg(config, workdir, parse_sets(sets, None))
        run_and_report(cfg, list(restart or []), as_json)


@guarded
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where every output goes (created if missing).")
    ] = Path("work/demo"),
    restart: RestartOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The whole pipeline on built-in synthetic data with the offline backbone (`make demo`)."""
    from sbe.pipeline import demo_config

    with verbosity(quiet, verbose):
        run_and_report(demo_config(workdir), list(restart or []), as_json)
