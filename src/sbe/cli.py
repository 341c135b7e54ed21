"""The ``sbe`` command line: parses flags, loads the config, calls one stage function.

Each command is thin on purpose: the work lives in ``sbe.stages.<name>.run(section)`` so that
everything here is also usable from Python without the CLI.
"""

from __future__ import annotations

import json
import sys
import time
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


def show_manifest(m: Manifest, as_json: bool) -> bool:
    """Print a stage's manifest as JSON (returns True: the caller prints nothing else) or a table."""
    if as_json:
        typer.echo(json.dumps({"up_to_date": m.up_to_date, **m.model_dump(mode="json")}))
        return True
    print_manifest(m)
    return False


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


@app.command("synth")
def synth_cmd(
    out_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Output folder for the tars (default: [synth] output).", show_default=False
        ),
    ] = None,
    buildings: Annotated[
        int | None, typer.Option("--buildings", "-n", min=1, help="Buildings that carry targets.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", "-s", help="World seed.")] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=64, max=2048, help="Image side in pixels.")
    ] = None,
    difficulty: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="0 = easy, 1 = hard (near-duplicates, occlusion, nuisances)."
        ),
    ] = None,
    packaged: Annotated[
        Path | None,
        typer.Option(help="Also write a packaged_images.parquet of new buildings to this path."),
    ] = None,
    packaged_buildings: Annotated[
        int | None, typer.Option(min=1, help="Buildings in the packaged parquet.")
    ] = None,
    preview: Annotated[
        bool | None, typer.Option("--preview/--no-preview", help="Write OUT/preview.png.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=0, help="Processes; 0 = one per core.")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic street-view world: OUT/NNNN.tar (raw format), truth.parquet."""
    from sbe.stages import synth as stage

    cfg = section(
        config,
        "synth",
        output=out_dir,
        buildings=buildings,
        seed=seed,
        image_size=image_size,
        difficulty=difficulty,
        packaged=packaged,
        packaged_buildings=packaged_buildings,
        preview=preview,
        workers=workers,
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    pk = m.extra.get("packaged")
    if pk:
        out.print(
            f"packaged: {pk['rows']:,} rows of {pk['buildings']:,} buildings -> {pk['path']} "
            f"(corrupt rows {pk['corrupt_rows']})"
        )
    out.print(f"-> {cfg.output}")


# ---- ingest ----


@app.command("ingest")
def ingest_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Raw tars or folders of tars (default: [ingest] inputs).", show_default=False
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: [ingest] output).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=0, help="Processes; 0 = one per core.")
    ] = None,
    decode_threads: Annotated[
        int | None, typer.Option(min=0, help="JPEG decode threads per tar; 0 = automatic.")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="local (a process per core) or ray (a Ray task per tar, $RAY_ADDRESS)."),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Raw tars -> OUT/<tar stem>.parquet (metadata, tar offsets, fingerprints), no extraction."""
    from sbe.stages import ingest as stage

    cfg = section(
        config,
        "ingest",
        inputs=inputs or None,
        output=out_dir,
        workers=workers,
        decode_threads=decode_threads,
        engine=engine,
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    warnings = m.extra.get("warnings") or {}
    if warnings:
        out.print("warnings: " + ", ".join(f"{k}: {v:,}" for k, v in warnings.items()))
    for tar, damage in (m.extra.get("damaged_tars") or {}).items():
        out.print(f"[yellow]damaged:[/] {tar}: {damage} (rows before the damage kept)")
    out.print(f"-> {cfg.output}")


# ---- backbone ----


@app.command("backbone")
def backbone_cmd(
    in_dir: Annotated[
        Path | None,
        typer.Option("--in", help="Ingest output folder (default: [backbone] input)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: [backbone] output).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="efficientnet-lite0 (default), efficientnet-lite2 or hf:<id|path>.",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    runtime: Annotated[
        str | None, typer.Option(help="auto (ONNX Runtime on CPU, torch on GPU), torch or onnx.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "-b", min=0, help="Images per batch; 0 = auto.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Stored embedding dtype: float16 (default) or float32.")
    ] = None,
    pooling: Annotated[
        str | None, typer.Option(help="auto, cls, pooler, mean or gem (hf: models).")
    ] = None,
    decode_workers: Annotated[
        int | None,
        typer.Option(min=0, help="JPEG decoders: threads, or processes on a GPU; 0 = automatic."),
    ] = None,
    part_rows: Annotated[
        int | None, typer.Option(min=1, help="Rows per output part (a kill loses one part).")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="local, or ray (a Ray task per part, a GPU each; $RAY_ADDRESS)."),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest parts + tars -> OUT/<tar stem>-<first row>.parquet with one embedding per image."""
    from sbe.stages import backbone as stage

    cfg = section(
        config,
        "backbone",
        input=in_dir,
        output=out_dir,
        model=model,
        device=device,
        runtime=runtime,
        batch_size=batch_size,
        dtype=dtype,
        pooling=pooling,
        decode_workers=decode_workers,
        part_rows=part_rows,
        engine=engine,
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    ident = m.extra.get("backbone") or {}
    line = f"backbone {ident.get('name')} ({ident.get('dim')}-d, {ident.get('pooling')} pooling)"
    if m.extra.get("images_per_second") and not m.up_to_date:
        line += (
            f", {m.extra['runtime']} on {m.extra['device']}: "
            f"{m.extra['images_per_second']:,.1f} images/s"
        )
    out.print(line)
    out.print(f"-> {cfg.output}")


# ---- split ----


@app.command("split")
def split_cmd(
    in_dir: Annotated[
        Path | None, typer.Option("--in", help="Backbone output folder (default: [split] input).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: [split] output).")
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option(help="Identity unit: building (grouped targets, default) or target."),
    ] = None,
    cell_size_m: Annotated[
        float | None, typer.Option(help="Side of the geographic split cells, metres.")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Backbone parts -> OUT/{train,val,test}.parquet, split by building and by geography."""
    from sbe.stages import split as stage

    cfg = section(
        config, "split", input=in_dir, output=out_dir, identity=identity, cell_size_m=cell_size_m
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    for name, s in (m.extra.get("splits") or {}).items():
        out.print(
            f"{name}: {s['images']:,} images, {s['identities']:,} identities, {s['cells']:,} cells"
        )
    for pair, leak in (m.extra.get("leakage") or {}).items():
        out.print(
            f"leakage {pair}: nearest {leak['min_distance_m']} m, "
            f"{leak['identities_within_group_radius']:,} identities within the grouping radius"
        )
    out.print(f"-> {cfg.output}")


# ---- neighbors ----


@app.command("neighbors")
def neighbors_cmd(
    in_dir: Annotated[
        Path | None, typer.Option("--in", help="Split folder (default: [neighbors] input).")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: [neighbors] output)."),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(help="Mine in fingerprint (thumbnail) or embedding (backbone) space."),
    ] = None,
    k: Annotated[int | None, typer.Option("--k", min=1, help="Neighbours per image.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split files -> OUT/<split>.parquet: k visual neighbours of other identities, with bands."""
    from sbe.stages import neighbors as stage

    cfg = section(config, "neighbors", input=in_dir, output=out_dir, space=space, k=k)
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    edges = ", ".join(f"{e:.3g}" for e in m.extra.get("band_edges", []))
    out.print(f"band edges (distance / local scale): {edges}")
    for name, s in (m.extra.get("splits") or {}).items():
        idx = s.get("index") or {}
        how = idx.get("kind", "?")
        if how == "ivf_flat":
            how += (
                f" (nlist {idx['nlist']}, nprobe {idx['nprobe']}, recall {idx['measured_recall']})"
            )
        if idx.get("fallback"):
            how += f" (exact: {idx['fallback']})"
        out.print(f"{name}: {s['rows']:,} rows, {how}")
    out.print(f"-> {cfg.output}")


# ---- train / evaluate / tune ----


def _stderr_line(message: str) -> None:
    err.print(message, highlight=False, soft_wrap=True)


@app.command("train")
def train_cmd(
    in_dir: Annotated[
        Path | None, typer.Option("--in", help="Split folder (default: \\[train] input).")
    ] = None,
    neighbors: Annotated[
        Path | None,
        typer.Option(
            help="Neighbours folder for the band curriculum (default: \\[train] neighbors)."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default: \\[train] output).")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="triplet | multi_similarity | supcon.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum epochs.")] = None,
    curriculum: Annotated[
        str | None, typer.Option(help="none | bands (UCB-chosen difficulty bands).")
    ] = None,
    geo_weight: Annotated[
        float | None,
        typer.Option(min=0, help="Train geo heads jointly on the projector output (0 = off)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split files -> RUN/: train the projection head, select it on val mAP@R, test it once."""
    from sbe.stages import train as stage

    cfg = section(
        config,
        "train",
        input=in_dir,
        neighbors=neighbors,
        output=out_dir,
        loss=loss,
        epochs=epochs,
        curriculum=curriculum,
        geo_weight=geo_weight,
        device=device,
    )
    m = stage.run(cfg, resume=resume, console=None if as_json else _stderr_line)
    if show_manifest(m, as_json):
        return
    out.print(f"best val mAP@R {m.extra.get('best_val_map@r', float('nan')):.4f} -> {cfg.output}")


def _print_comparison(results: dict[str, Any]) -> None:
    r = results["retrieval"]
    table = Table(
        title=f"{results['split']}: {r['queries']:,} queries, gallery {r['images']:,} images",
        title_justify="left",
    )
    table.add_column("metric", style="bold")
    table.add_column("backbone", justify="right")
    table.add_column("projector", justify="right")
    table.add_column("delta", justify="right")
    for key, raw in r["backbone"].items():
        proj = r["projector"][key]
        table.add_row(key, f"{raw:.4f}", f"{proj:.4f}", f"{proj - raw:+.4f}")
    out.print(table)
    lm = results.get("landmarks") or {}
    if "skipped" in lm:
        out.print(f"real photos: skipped ({lm['skipped']})")
    elif lm:
        b, p = lm["backbone"], lm["projector"]
        out.print(
            f"real photos ({lm['images']} images, {lm['landmarks']} landmarks, leave-one-out): "
            f"P@1 {b['correct@1']}/{lm['images']} -> {p['correct@1']}/{lm['images']}, "
            f"mAP {b['map']:.4f} -> {p['map']:.4f} (lost {lm['lost']}, gained {lm['gained']})"
        )


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="Run folder (default: \\[evaluate] run).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="train | val | test.")] = None,
    landmarks: Annotated[
        Path | None, typer.Option(help="Folder of labelled real photos (labels.csv).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval Recall@K and mAP@R of a run: raw backbone vs projector on the same queries."""
    from sbe.stages import evaluate as stage

    cfg = section(config, "evaluate", run=run_dir, split=split, landmarks=landmarks, device=device)
    results, _ = stage.run(cfg)
    if as_json:
        typer.echo(json.dumps(results))
        return
    _print_comparison(results)


@app.command("tune")
def tune_cmd(
    in_dir: Annotated[
        Path | None, typer.Option("--in", help="Split folder (default: \\[tune] input).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: \\[tune] output).")
    ] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials run by this worker.")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL shared by workers (default sqlite in --out)."),
    ] = None,
    neighbors: Annotated[
        Path | None, typer.Option(help="Neighbours folder (enables the band curriculum).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs per trial.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed (differ per worker).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Optuna search (seeded TPE, median pruning, shared SQLite study) -> OUT/best_params.toml."""
    from sbe.stages import tune as stage

    cfg = load(
        config,
        tune={
            "input": in_dir,
            "output": out_dir,
            "trials": trials,
            "storage": storage,
            "neighbors": neighbors,
            "epochs": epochs,
            "study_name": study,
            "seed": seed,
            "device": device,
        },
    )
    m = stage.run(cfg.section("tune"), cfg.section("train"), console=_stderr_line)
    if as_json:
        typer.echo(json.dumps(m.model_dump(mode="json")))
        return
    print_manifest(m)
    out.print(
        f"best val mAP@R {m.extra['best_value']:.4f} (trial {m.extra['best_trial']}) -> "
        f"{Path(cfg.tune.output)}/best_params.toml"
    )


# ---- geo ----
geo_app = typer.Typer(
    help="Geographic expert: location, climate zone and season heads on the embeddings.",
    no_args_is_help=True,
)
app.add_typer(geo_app, name="geo")


def _geo_report_table(report: dict[str, Any], title: str) -> Table:
    """Model beside both baselines, one metric per row."""
    predictors = {
        "geo heads": report["model"],
        "most common": report["baselines"]["most_common"],
        "nearest neighbour": report["baselines"]["nearest_neighbour"],
    }
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    for name in predictors:
        table.add_column(name, justify="right")
    rows: list[tuple[str, str, str, str]] = [
        *(("location", f"acc_{t}km", f"within {t} km", "%") for t in (1, 25, 200, 750, 2500)),
        ("location", "median_km", "median error (km)", "km"),
        ("location", "mean_km", "mean error (km)", "km"),
        ("climate", "fine_acc", "climate fine acc", "%"),
        ("climate", "fine_macro_f1", "climate fine macro-F1", "f"),
        ("climate", "coarse_acc", "climate coarse acc", "%"),
        ("climate", "coarse_macro_f1", "climate coarse macro-F1", "f"),
        ("season", "mean_error_days", "season mean error (days)", "d"),
        ("season", "north_mean_error_days", "  northern hemisphere", "d"),
        ("season", "south_mean_error_days", "  southern hemisphere", "d"),
    ]
    for group, key, label, kind in rows:
        cells = []
        for m in predictors.values():
            v = m[group].get(key)
            if v is None or (isinstance(v, float) and v != v):
                cells.append("-")
            elif kind == "%":
                cells.append(f"{100 * v:.1f}%")
            elif kind == "f":
                cells.append(f"{v:.3f}")
            else:
                cells.append(f"{v:,.1f}")
        table.add_row(label, *cells)
    return table


@geo_app.command("train")
def geo_train(
    input: Annotated[
        Path | None, typer.Option("--in", help="split folder (train/val/test.parquet)")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option("--run", help="train run folder: heads read its projector's outputs"),
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", help="output folder GEO_DIR")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the location (MvMF), climate and season heads on frozen embeddings."""
    from sbe.stages import geo as geo_stage

    cfg = section(
        config, "geo", input=input, run=run, output=output, epochs=epochs, device=device, seed=seed
    )

    def log(rec: dict[str, Any]) -> None:
        if not as_json:
            err.print(
                f"epoch {rec['epoch']:3d}  train {rec['train_loss']:.3f}  val {rec['val_loss']:.3f}"
                f"  (loc {rec['val_location']:.2f}, climate {rec['val_climate']:.2f},"
                f" season {rec['val_season']:.2f})  {rec['seconds']:.1f} s"
                + ("  *" if rec["best"] else ""),
                highlight=False,
                soft_wrap=True,
            )

    manifest = geo_stage.train(cfg, log=log)  # type: ignore[arg-type]
    metrics_path = Path(cfg.output) / "metrics.json"  # type: ignore[attr-defined]
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if as_json:
        out.print_json(json.dumps({"manifest": manifest.model_dump(mode="json"), **metrics}))
        return
    print_manifest(manifest)
    if metrics.get("test"):
        out.print(_geo_report_table(metrics["test"], f"test split ({metrics['test']['n']:,} rows)"))


@geo_app.command("evaluate")
def geo_evaluate(
    run: Annotated[
        Path | None, typer.Option("--run", "--model", help="GEO_DIR written by `sbe geo train`")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    input: Annotated[
        Path | None, typer.Option("--in", help="split folder (default: the one trained on)")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy at 1/25/200/750/2500 km, climate and season errors, beside two baselines."""
    from sbe.stages import geo as geo_stage

    if split not in ("train", "val", "test"):
        _fail(f"--split must be train, val or test, not {split!r}", code=2)
    cfg = section(config, "geo")
    geo_dir = run.resolve() if run is not None else Path(cfg.output)  # type: ignore[attr-defined]
    report = geo_stage.evaluate(
        geo_dir,
        split=split,
        split_dir=input.resolve() if input is not None else None,
        fallback_px=cfg.coastal_fallback_px,  # type: ignore[attr-defined]
        threads=cfg.threads,  # type: ignore[attr-defined]
    )
    if as_json:
        out.print_json(json.dumps(report))
    else:
        out.print(_geo_report_table(report, f"sbe geo evaluate: {split} ({report['n']:,} rows)"))


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@geo_app.command("predict")
def geo_predict(
    images: Annotated[list[Path] | None, typer.Argument(help="image files")] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="GEO_DIR (default: the config's geo output)")
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", help="parquet file with a backbone `embedding` column"),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="locations per input")] = 5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-k locations with probabilities, climate class and season for images or embeddings."""
    from sbe.stages import geo as geo_stage

    cfg = section(config, "geo")
    geo_dir = model.resolve() if model is not None else Path(cfg.output)  # type: ignore[attr-defined]
    rows = geo_stage.predict(
        geo_dir,
        images=images or None,
        embeddings_file=embeddings,
        top_k=top_k,
        threads=cfg.threads,  # type: ignore[attr-defined]
    )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="sbe geo predict", title_justify="left")
    for col in ("input", "rank", "lat", "lon", "prob", "climate", "season"):
        table.add_column(col, justify="right" if col in ("rank", "lat", "lon", "prob") else "left")
    for row in rows:
        c, s = row["climate"], row["season"]
        climate = f"{c['code']} p={c['prob']:.2f}"
        season = f"day {s['day_of_year']:.0f} ({_MONTHS[s['month'] - 1]})"
        for j, loc in enumerate(row["locations"]):
            first = j == 0
            table.add_row(
                Path(row["source"]).name if first else "",
                str(j + 1),
                f"{loc['lat']:.4f}",
                f"{loc['lon']:.4f}",
                f"{loc['prob']:.3f}",
                climate if first else "",
                season if first else "",
            )
    out.print(table)


# ---- publish / embed / aggregate ----


def _shard(value: str | None) -> tuple[int | None, int | None]:
    """``K/N`` -> (K, N)."""
    if value is None:
        return None, None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        _fail(f"--shard expects K/N (e.g. 3/16), got {value!r}", code=2)
        raise  # unreachable
    return k, n


@app.command("publish")
def publish_cmd(
    run: Annotated[
        Path | None, typer.Option("--run", help="Training run folder (default: [publish] run).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Model folder to write (default: model).")
    ] = None,
    geo: Annotated[
        Path | None, typer.Option("--geo", help="Geo stage folder whose heads ship too.")
    ] = None,
    bundle_backbone: Annotated[
        bool | None,
        typer.Option(
            "--bundle-backbone/--reference-backbone",
            help="Copy the backbone weights into the folder (default: reference them).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Training run -> Hugging Face model folder (AutoModel + trust_remote_code, model card)."""
    from sbe.stages import publish as stage

    cfg = section(
        config, "publish", run=run, output=out_dir, geo=geo, bundle_backbone=bundle_backbone
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    out.print(f"-> {cfg.output}")


@app.command("embed")
def embed_cmd(
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Packaged parquet: image_bytes, OSMID.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output dataset folder.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Published model folder.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=0, help="Embed only the first N selected rows.")
    ] = None,
    filter_valid: Annotated[
        bool | None,
        typer.Option(
            "--filter-valid/--no-filter-valid",
            help="Skip rows whose is_valid is False (null counts as valid).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[str | None, typer.Option(help="local or ray.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=0, help="Images per forward pass; 0 = automatic.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    runtime: Annotated[
        str | None, typer.Option(help="Backbone runtime: auto (ONNX on CPU), torch or onnx.")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(min=1, help="Input rows per output part.")
    ] = None,
    decode_workers: Annotated[
        int | None, typer.Option(min=0, help="Decoding threads; 0 = one per core.")
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option(min=1, help="Ray engine: actors (one model each).")
    ] = None,
    ray_gpus: Annotated[
        float | None, typer.Option(min=0, help="Ray engine: GPUs per actor (default auto).")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="K/N: embed only shard K of N (SLURM arrays).")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Packaged parquet of new images -> per-image embeddings (resumable, per-image failures)."""
    from sbe.stages import embed as stage

    shard_index, shard_count = _shard(shard)
    cfg = section(
        config,
        "embed",
        input=input,
        output=output,
        model=model,
        limit=limit,
        filter_valid=filter_valid,
        engine=engine,
        batch_size=batch_size,
        device=device,
        runtime=runtime,
        chunk_rows=chunk_rows,
        decode_workers=decode_workers,
        ray_workers=ray_workers,
        ray_gpus_per_worker=ray_gpus,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    out.print(f"-> {cfg.output}")


@app.command("aggregate")
def aggregate_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--in", help="Embed output folder (repeat for the shards of one run)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (buildings.parquet).")
    ] = None,
    locations: Annotated[
        Path | None, typer.Option("--locations", help="Parquet with OSMID, lat, lon.")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per-image embeddings -> one vector per OSMID (mean, re-normalised) [+ GeoParquet]."""
    from sbe.stages import aggregate as stage

    cfg = section(config, "aggregate", input=inputs or None, output=out_dir, locations=locations)
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    out.print(f"-> {cfg.output}")


# ---- index / search / cluster ----

index_app = typer.Typer(help="Build a faiss index over embeddings.", no_args_is_help=True)
app.add_typer(index_app, name="index")


def _split_names(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


@index_app.command("build")
def index_build(
    input_: Annotated[
        Path | None,
        typer.Option("--in", "--input", help="Parquet file or folder (parts/ found recursively)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", "--output", help="Index folder.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="auto (exact up to --exact-max-rows), exact or hnsw.")
    ] = None,
    exact_max_rows: Annotated[int | None, typer.Option(help="auto: HNSW above this.")] = None,
    hnsw_m: Annotated[int | None, typer.Option("--hnsw-m", help="HNSW graph degree M.")] = None,
    ef_construction: Annotated[int | None, typer.Option(help="HNSW build breadth.")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW default search breadth.")] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Id column (default OSMID, building_id, image_id).")
    ] = None,
    embedding_column: Annotated[str | None, typer.Option(help="Embedding column.")] = None,
    metadata: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns to keep (default: location and known ids)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Published model that made the vectors (for --image).")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an exact or HNSW index + id table: index.faiss, ids.parquet, index.json."""
    from sbe.stages import index as stage

    cfg = section(
        config,
        "index",
        input=input_,
        output=output,
        kind=kind,
        exact_max_rows=exact_max_rows,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        id_column=id_column,
        embedding_column=embedding_column,
        metadata_columns=_split_names(metadata),
        model=model,
    )
    m = stage.run(cfg)
    info = m.extra.get("index", {})
    if show_manifest(m, as_json):
        return
    p = info.get("parameters", {})
    detail = f"{info.get('kind')} {info.get('faiss_class')}, dim {info.get('dim')}"
    if info.get("kind") == "hnsw":
        detail += f", M {p.get('hnsw_m')}, efConstruction {p.get('ef_construction')}"
        detail += f", efSearch {p.get('ef_search')}"
    out.print(f"index: {detail}; built in {info.get('build_seconds', 0):.1f} s -> {cfg.output}")


@app.command("search")
def search_cmd(
    index: Annotated[
        Path | None, typer.Option(help="Index folder (default: [index] output of the config).")
    ] = None,
    id_value: Annotated[
        str | None, typer.Option("--id", help="Query by id (the query itself is excluded).")
    ] = None,
    vector_file: Annotated[
        Path | None, typer.Option(help="Query vectors: .npy, .json or .parquet (embedding).")
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="Query image(s), embedded by the published model."),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Neighbours per query.")] = 10,
    model: Annotated[
        Path | None, typer.Option(help="Published model folder (default: recorded in the index).")
    ] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search breadth.")] = None,
    include_self: Annotated[
        bool, typer.Option("--include-self", help="With --id: keep the query's own rows.")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Nearest neighbours by id, vector or image: similarity, id and location."""
    from sbe.stages import search as stage

    index_dir = index or section(config, "index").output
    idx, labels, result = stage.run_query(
        index_dir,
        id_value=id_value,
        vector_file=vector_file,
        images=image,
        k=k,
        model_dir=model,
        ef_search=ef_search,
        exclude_self=not include_self,
    )
    payload = stage.to_payload(index_dir, idx, labels, result)
    if as_json:
        typer.echo(json.dumps(payload, default=str))
        return
    for q in payload["queries"]:
        table = Table(title=f"{q['query']}: top {k}", title_justify="left")
        for col in ("rank", "id", "similarity", "lat", "lon"):
            table.add_column(col, justify="left" if col == "id" else "right", overflow="fold")
        extra = [
            c
            for c in (q["hits"][0] if q["hits"] else {})
            if c not in ("rank", "id", "similarity", "lat", "lon", "row")
        ]
        for col in extra:
            table.add_column(col)
        for h in q["hits"]:
            loc = [f"{h[c]:.6f}" if h[c] is not None else "-" for c in ("lat", "lon")]
            table.add_row(
                str(h["rank"]),
                str(h["id"]),
                f"{h['similarity']:.4f}",
                *loc,
                *(str(h[c]) for c in extra),
            )
        out.print(table)


@app.command("cluster")
def cluster_cmd(
    input_: Annotated[
        Path | None, typer.Option("--in", "--input", help="Buildings (or any embeddings).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", "--output", help="Output folder.")] = None,
    method: Annotated[str | None, typer.Option(help="kmeans or hdbscan.")] = None,
    k: Annotated[int | None, typer.Option("--k", "-k", help="k-means: clusters.")] = None,
    min_cluster_size: Annotated[int | None, typer.Option(help="HDBSCAN: smallest cluster.")] = None,
    min_samples: Annotated[int | None, typer.Option(help="HDBSCAN: core neighbourhood.")] = None,
    pca_components: Annotated[
        int | None, typer.Option(help="HDBSCAN: PCA dimensions first (0 = off).")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Id column.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cluster vectors: assignments.parquet, clusters.parquet (sizes, centroids)."""
    from sbe.stages import cluster as stage

    cfg = section(
        config,
        "cluster",
        input=input_,
        output=output,
        method=method,
        k=k,
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        pca_components=pca_components,
        id_column=id_column,
        seed=seed,
    )
    m = stage.run(cfg)
    if show_manifest(m, as_json):
        return
    sizes = m.extra.get("sizes", [])
    shown = ", ".join(str(s) for s in sizes[:20]) + (" ..." if len(sizes) > 20 else "")
    out.print(f"cluster sizes: {shown} (noise {m.extra.get('noise', 0)}) -> {cfg.output}")


# ---- report / run / demo ----


@app.command("report")
def report_cmd(
    workdir: Annotated[
        Path | None, typer.Option(help="Work directory whose stage outputs are reported.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--out", "--output", help="Output folder (report.html).")
    ] = None,
    gallery_queries: Annotated[
        int | None, typer.Option(help="Test queries in the retrieval gallery.")
    ] = None,
    landmarks: Annotated[
        Path | None, typer.Option(help="Real-photo folder with labels.csv (default: auto).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the gallery and map samples.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One self-contained HTML page (no network needed) over the other stages' outputs."""
    from sbe.pipeline import wire
    from sbe.stages import report as stage

    cfg = load(
        config,
        report={
            "output": output,
            "gallery_queries": gallery_queries,
            "landmarks": landmarks,
            "seed": seed,
        },
    )
    if workdir is not None:
        cfg.workdir = workdir.resolve()
    sec = wire(cfg).section("report")
    m = stage.run(sec)
    if show_manifest(m, as_json):
        return
    missing = {k: v for k, v in m.extra.get("sections", {}).items() if v}
    for name, reasons in missing.items():
        out.print(f"[yellow]{name}[/]: not available: {'; '.join(reasons)}", highlight=False)
    out.print(f"report: {Path(sec.output) / stage.REPORT_FILE}")


def _print_key_numbers(cfg: SbeConfig) -> None:
    from sbe.pipeline import key_numbers

    table = Table(title="key numbers", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_column("compared with")
    for what, value, versus in key_numbers(cfg):
        table.add_row(what, value, versus)
    out.print(table)


def _run_pipeline(cfg: SbeConfig) -> None:
    from sbe.pipeline import run_pipeline

    workdir = cfg.workdir.expanduser().resolve()
    out.print(f"workdir: {workdir}")
    t0 = time.perf_counter()
    from sbe.progress import log_line

    run_pipeline(cfg, log=log_line)
    out.print(f"pipeline finished in {time.perf_counter() - t0:.1f} s")
    _print_key_numbers(cfg)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML config file.")],
    workdir: Annotated[
        Path | None, typer.Option(help="Override the config's work directory.")
    ] = None,
) -> None:
    """Run the whole pipeline (synth or ingest -> ... -> report), skipping up-to-date stages."""
    cfg = load(config)
    if workdir is not None:
        cfg.workdir = workdir.resolve()
    _run_pipeline(cfg)


@app.command("demo")
def demo_cmd(
    workdir: Annotated[
        Path, typer.Option(help="Where every output goes (created if missing).")
    ] = Path("work/demo"),
) -> None:
    """The whole pipeline on built-in synthetic data with the offline backbone (what `make demo` runs)."""
    from sbe.pipeline import demo_config

    try:
        cfg = demo_config(workdir)
    except ConfigError as e:
        _fail(f"config: {e}", code=2)
        raise
    _run_pipeline(cfg)


if __name__ == "__main__":
    main()
