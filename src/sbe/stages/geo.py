"""``sbe geo``: train the geo heads on frozen embeddings, evaluate them beside baselines, predict.

Output folder (``GEO_DIR``):

- ``config.json`` + ``model.safetensors``: the heads (:class:`sbe.geo.heads.GeoHeads`), with
  the fixed MvMF centres, the gallery of training locations and the backbone identity;
- ``projector/``: a copy of the run's projector when trained with ``--run`` (so predict needs
  nothing else);
- ``metrics.jsonl``: one record per epoch; ``metrics.json``: val and test metrics of the heads and
  of the two baselines; ``_manifest.json``.

Training is minutes on CPU. Every epoch ends with a checkpoint (``_checkpoint/``, removed when the
run finishes); a killed run continues after its last finished epoch when run again with the same
settings and inputs, and ends with the same heads and metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sbe.config import GeoConfig, SbeConfig
from sbe.config.commands import GeoEvaluateOptions, GeoPredictOptions
from sbe.errors import SbeError
from sbe.geo.build import heads_from_config, loss_from_config
from sbe.geo.heads import GeoHeads, GeoPrediction
from sbe.geo.koppen import is_seasonal_fine
from sbe.geo.labels import GeoLabels, labels_from_table
from sbe.geo.metrics import (
    PointPredictions,
    location_metrics,
    most_common_baseline,
    nearest_neighbour_baseline,
    score,
)
from sbe.geo.predict import (
    PROJECTOR_DIR,
    features_of,
    load_geo_dir,
    load_projector,
    predict_embeddings,
)
from sbe.geo.season import (
    angle_to_doy,
    fit_season_readout,
    fit_south_min,
    local_angle,
    season_params,
)
from sbe.geo.trainer import FitSettings, fit, torch_threads
from sbe.sphere import haversine_km, unit_to_latlon
from sbe.stages.base import Input, Stage, StageContext, run_stage, settings_from
from sbe.stages.summary import Summary, Table, number
from sbe.storage import (
    Manifest,
    atomic_path,
    config_hash,
    fingerprint_paths,
    to_numpy_matrix,
    write_json_atomic,
)
from sbe.storage.artifacts import GeoDir, RunDir, SplitDir, relpath

STAGE = "geo"
COLUMNS = ["target_lat", "target_lon", "capture_date", "building_id", "cell_id", "embedding"]


# ---- inputs ---------------------------------------------------------------------------------


@dataclass
class SplitData:
    """One split loaded for the geo heads.

    Attributes:
        features: (N, D) float32 features the heads read (normalised backbone or projector output).
        labels: per-row labels. lat, lon: (N,) degrees. doy: (N,) 0-based day of year or NaN.
    """

    features: np.ndarray
    labels: GeoLabels
    lat: np.ndarray
    lon: np.ndarray
    doy: np.ndarray


def split_file(split_dir: Path, split: str) -> Path:
    """A split's file, checked to exist (the error names ``--in`` and ``sbe split``)."""
    return SplitDir(split_dir).require_split(split)


def backbone_identity(split_dir: Path) -> dict[str, Any] | None:
    """The backbone identity recorded by the split stage (manifest, else a split file's footer)."""
    found = SplitDir(split_dir).backbone()
    return found.to_dict() if found is not None else None


def load_split(
    split_dir: Path, split: str, projector: Any | None, *, fallback_px: int = 5
) -> SplitData:
    """Read one split file and compute its features and labels."""
    path = split_file(split_dir, split)
    names = pq.read_schema(path).names
    missing = [c for c in ("target_lat", "target_lon", "embedding") if c not in names]
    if missing:
        raise SbeError(f"{path}: missing column(s) {', '.join(missing)}")
    table = pq.read_table(path, columns=[c for c in COLUMNS if c in names])
    labels = labels_from_table(table, fallback_px=fallback_px)
    doy = np.where(
        labels.has_date.numpy(), labels.season_theta.numpy() * 365.25 / (2 * np.pi), np.nan
    )
    return SplitData(
        features=features_of(to_numpy_matrix(table.column("embedding")), projector),
        labels=labels,
        lat=table.column("target_lat").to_numpy(),
        lon=table.column("target_lon").to_numpy(),
        doy=doy,
    )


# ---- train ----------------------------------------------------------------------------------


CHECKPOINT_DIR = GeoDir.CHECKPOINT


def _inputs(cfg: GeoConfig) -> list[Path]:
    paths = [split_file(Path(cfg.input), s) for s in ("train", "val", "test")]
    if cfg.run is not None:
        paths += RunDir(cfg.run).best_files()
    return paths


def fit_settings(cfg: GeoConfig) -> FitSettings:
    """The optimisation settings of a ``[geo]`` section."""
    return settings_from(FitSettings, cfg)


def _epoch_line(rec: dict[str, Any]) -> str:
    return (
        f"geo epoch {rec['epoch']:3d}  train {rec['train_loss']:.3f}  val {rec['val_loss']:.3f}"
        f"  {rec['seconds']:.1f} s" + ("  *" if rec["best"] else "")
    )


def _train(
    cfg: GeoConfig, ctx: StageContext, on_record: Callable[[dict[str, Any]], None] | None
) -> Manifest:
    """The body of :class:`GeoStage` (inside ``ctx``, with the thread count set)."""
    out_dir = ctx.out_dir
    if (done := ctx.check(fingerprint_paths(_inputs(cfg)))) is not None:
        return done
    ckpt = out_dir / CHECKPOINT_DIR
    if not ctx.resuming:
        shutil.rmtree(ckpt, ignore_errors=True)
    # what the checkpoint must match to be continued: settings and inputs
    key = config_hash({"config": ctx.hash, "inputs": [i.model_dump() for i in ctx.inputs]})
    torch.manual_seed(cfg.seed)
    projector = load_projector(RunDir(cfg.run).best) if cfg.run is not None else None
    split_dir = Path(cfg.input)
    fb = cfg.coastal_fallback_px
    tr = load_split(split_dir, "train", projector, fallback_px=fb)
    va = load_split(split_dir, "val", projector, fallback_px=fb)
    if len(tr.lat) == 0 or len(va.lat) == 0:
        raise SbeError(f"{split_dir}: the train and val splits must both have rows")
    heads = heads_from_config(
        cfg,
        tr.lat,
        tr.lon,
        tr.features.shape[1],
        # the features are frozen here: the season direction is read out in closed form
        season_readout=True,
        input_space="projector" if projector is not None else "backbone",
        backbone=backbone_identity(split_dir),
        # relative to the heads' folder, so a moved work folder keeps working (GeoDir resolves)
        extra={
            "split_dir": relpath(split_dir, out_dir),
            "run": relpath(cfg.run, out_dir) if cfg.run else None,
        },
    )
    head_cfg = heads.config
    w, b, lam = season_readout_of(tr, va)
    heads.set_season_readout(w, b)
    head_cfg.extra["season_readout_lambda"] = lam
    criterion = loss_from_config(cfg)
    records: list[dict[str, Any]] = []

    def on_resume(history: list[dict[str, Any]]) -> None:
        records[:] = history
        ctx.log(f"geo: resumed after epoch {len(history)}")

    def on_epoch(rec: dict[str, Any]) -> None:
        records.append(rec)
        with atomic_path(out_dir / GeoDir.HISTORY) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        if on_record is not None:
            on_record(rec)
        else:
            ctx.log(_epoch_line(rec))

    def val_median(model: GeoHeads) -> float:
        p = model.predict(torch.from_numpy(va.features), top_k=1)
        return location_metrics(p.modes.lat[:, 0], p.modes.lon[:, 0], va.lat, va.lon)["median_km"]

    result = fit(
        heads,
        torch.from_numpy(tr.features),
        tr.labels,
        torch.from_numpy(va.features),
        va.labels,
        criterion,
        fit_settings(cfg),
        on_epoch=on_epoch,
        median_km=val_median,
        checkpoint=ckpt,
        checkpoint_key=key,
        on_resume=on_resume,
    )
    heads.cpu()
    heads.config.extra.update(
        best_epoch=result.best_epoch, best_score=result.best_score, select_on=cfg.select_on
    )
    heads.config.spread_log_scale = fit_spread(heads, va)
    if heads.config.season_hemisphere:
        heads.config.season_south_min = south_min_of(heads, va)
    heads.save_pretrained(out_dir)
    outputs = [GeoDir.CONFIG, GeoDir.WEIGHTS, GeoDir.HISTORY, GeoDir.METRICS]
    if projector is not None:
        projector.save_pretrained(out_dir / PROJECTOR_DIR)
        outputs += [f"{PROJECTOR_DIR}/config.json", f"{PROJECTOR_DIR}/model.safetensors"]
    else:  # a copy from an earlier run with --run would no longer match these heads
        shutil.rmtree(out_dir / PROJECTOR_DIR, ignore_errors=True)
    te = load_split(split_dir, "test", projector, fallback_px=fb)
    metrics = {
        "selection": {
            "select_on": cfg.select_on,
            "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
        },
        "val": evaluate_data(heads, va, tr),
        "test": evaluate_data(heads, te, tr) if len(te.lat) else None,
    }
    write_json_atomic(out_dir / GeoDir.METRICS, metrics)
    shutil.rmtree(ckpt, ignore_errors=True)  # the finished outputs replace it
    return ctx.commit(
        outputs=outputs,
        rows={"train": len(tr.lat), "val": len(va.lat), "test": len(te.lat)},
        extra={
            "backbone": head_cfg.backbone,
            "input_space": head_cfg.input_space,
            "centres": {
                "data": head_cfg.num_data_centres,
                "background": head_cfg.num_centres - head_cfg.num_data_centres,
            },
            "gallery": head_cfg.num_gallery,
            "best_epoch": result.best_epoch,
            "test": _headline(metrics["test"]),
        },
    )


def train(
    cfg: GeoConfig, *, log: Callable[[dict[str, Any]], None] | None = None, **options: Any
) -> Manifest:
    """Train the geo heads on ``cfg.input`` (optionally through the projector of ``cfg.run``).

    A killed run continues after its last finished epoch when run again with the same settings
    and inputs (and ends with the same heads as an uninterrupted run).

    Args:
        cfg: the resolved ``geo`` config section.
        log: optional callable receiving each epoch's record (for progress output).
        **options: :func:`sbe.stages.base.run_stage` options (``restart``, ``show_progress``...).

    Returns:
        The manifest (``up_to_date`` when inputs and config did not change).
    """
    return run_stage(GeoStage(on_record=log), cfg, **options)[0]


def run(cfg: GeoConfig, **options: Any) -> Manifest:
    """Train the geo heads (the :class:`GeoStage` from Python); see :func:`train`."""
    return train(cfg, **options)


def _headline(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {}
    m = report["model"]
    return {
        "acc_200km": m["location"]["acc_200km"],
        "acc_750km": m["location"]["acc_750km"],
        "median_km": m["location"]["median_km"],
        "climate_fine_acc": m["climate"]["fine_acc"],
        "season_mean_error_days": m["season"]["mean_error_days"],
    }


# ---- evaluate -------------------------------------------------------------------------------


def model_points(pred: GeoPrediction) -> PointPredictions:
    """The heads' point predictions (top mode, top fine class, coarse argmax, mean day)."""
    return PointPredictions(
        lat=pred.modes.lat[:, 0],
        lon=pred.modes.lon[:, 0],
        fine=pred.fine,
        doy=pred.doy,
        coarse=pred.coarse,
    )


def season_readout_of(tr: SplitData, va: SplitData) -> tuple[np.ndarray, np.ndarray, float]:
    """The closed-form season read-out (:func:`sbe.geo.season.fit_season_readout`) of the
    training rows with a date, its ridge weight chosen on the validation rows with one."""

    def rows(d: SplitData) -> tuple[np.ndarray, np.ndarray]:
        m = d.labels.has_date.numpy()
        south = d.labels.xyz.numpy()[:, 2] < 0
        return d.features[m], local_angle(d.labels.season_theta.numpy()[m], south[m])

    (tx, tl), (vx, vl) = rows(tr), rows(va)
    return fit_season_readout(tx, tl, vx, vl)


def south_min_of(heads: GeoHeads, va: SplitData) -> float:
    """The P(south) threshold for shifting predicted dates, fit on the validation rows."""
    with torch.no_grad():
        out = heads.eval()(torch.from_numpy(va.features))
    assert out.hemisphere is not None
    mu = angle_to_doy(season_params(out.season)[0].numpy())
    theta = va.labels.season_theta.numpy().astype(np.float64)
    true = np.where(va.labels.has_date.numpy(), angle_to_doy(theta), np.nan)
    return fit_south_min(mu, out.hemisphere[:, 1].exp().numpy(), true)


def fit_spread(heads: GeoHeads, data: SplitData, level: float = 0.9, steps: int = 10) -> float:
    """The shift of every log κ that makes the ``level`` highest-density region of the location
    mixture hold ``level`` of ``data``'s true places (bisection; coverage falls as κ grows).

    Returns:
        ``GeoHeadsConfig.spread_log_scale`` in [-6, 3]; 0 when ``data`` is empty.
    """
    if not len(data.lat):
        return 0.0
    x = torch.from_numpy(data.features)
    saved = heads.config.spread_log_scale
    lo, hi = -6.0, 3.0
    try:
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            heads.config.spread_log_scale = mid
            inside = heads.predict(x, top_k=1, truth_xyz=data.labels.xyz, levels=(level,)).inside
            assert inside is not None
            if float(np.mean(inside[:, 0])) >= level:
                lo = mid  # wide enough: try tighter
            else:
                hi = mid
    finally:
        heads.config.spread_log_scale = saved
    return round(lo, 4)


def calibration(pred: GeoPrediction, data: SplitData) -> dict[str, Any]:
    """How well the predicted spread holds the true places.

    Returns:
        ``hpd50_coverage`` / ``hpd90_coverage``: share of rows whose true location lies inside
        the mixture's highest-density region of 50 % / 90 % (calibrated: about 0.5 / 0.9);
        ``disk90_coverage``: share within the top mode's 90 % radius; ``median_radius50_km`` /
        ``median_radius90_km`` of the top mode.
    """
    if pred.inside is None or pred.regions is None or not len(data.lat):
        return {}
    r = pred.regions.radius_km[:, 0, :]  # (N, L) radii of the top mode
    err = haversine_km(pred.modes.lat[:, 0], pred.modes.lon[:, 0], data.lat, data.lon)
    return {
        "hpd50_coverage": float(np.mean(pred.inside[:, 0])),
        "hpd90_coverage": float(np.mean(pred.inside[:, -1])),
        "disk90_coverage": float(np.mean(err <= r[:, -1])),
        "median_radius50_km": float(np.nanmedian(r[:, 0])),
        "median_radius90_km": float(np.nanmedian(r[:, -1])),
    }


def evaluate_data(heads: GeoHeads, data: SplitData, train: SplitData) -> dict[str, Any]:
    """Metrics of the heads and of both baselines on the same rows.

    Returns:
        ``{"n", "model", "baselines": {"most_common", "nearest_neighbour"}}``, each predictor with
        ``location`` / ``climate`` / ``season`` metric dicts.
    """
    true_fine = data.labels.fine.numpy()
    train_fine = train.labels.fine.numpy()
    pred = heads.predict(torch.from_numpy(data.features), top_k=1, truth_xyz=data.labels.xyz)
    mc = most_common_baseline(train.lat, train.lon, train_fine, train.doy, len(data.lat))
    nn = nearest_neighbour_baseline(
        data.features, train.features, train.lat, train.lon, train_fine, train.doy
    )
    args = (data.lat, data.lon, true_fine, data.doy, is_seasonal_fine(true_fine))
    return {
        "n": len(data.lat),
        "model": {**score(model_points(pred), *args), "calibration": calibration(pred, data)},
        "baselines": {"most_common": score(mc, *args), "nearest_neighbour": score(nn, *args)},
    }


def evaluate(
    geo_dir: str | Path,
    *,
    split: str = "test",
    split_dir: str | Path | None = None,
    fallback_px: int = 5,
    threads: int = 1,
) -> dict[str, Any]:
    """Evaluate saved heads on one split beside the two baselines (fit on the train split).

    Args:
        geo_dir: output of :func:`train`.
        split: ``train``, ``val`` or ``test``.
        split_dir: the split folder; default the one the heads were trained on.
        fallback_px: coastal fallback of the climate labels, in raster pixels.
        threads: CPU threads for the heads (0 = torch default).

    Returns:
        The report of :func:`evaluate_data` plus ``split`` and ``geo_dir``.
    """
    geo_dir = Path(geo_dir)
    heads, projector = load_geo_dir(geo_dir)
    sdir = (
        Path(split_dir)
        if split_dir is not None
        else GeoDir(geo_dir).resolve(heads.config.extra.get("split_dir")) or Path()
    )
    train_data = load_split(sdir, "train", projector, fallback_px=fallback_px)
    data = (
        train_data
        if split == "train"
        else load_split(sdir, split, projector, fallback_px=fallback_px)
    )
    with torch_threads(threads):
        report = evaluate_data(heads, data, train_data)
    return {"split": split, "geo_dir": str(geo_dir), "split_dir": str(sdir), **report}


# ---- predict --------------------------------------------------------------------------------


def embed_images(
    paths: list[Path], identity: dict[str, Any] | None, device: str = "auto"
) -> np.ndarray:
    """Backbone embeddings (N, dim) of image files, with the backbone the heads were trained on."""
    from sbe.data.images import decode_rgb

    if not identity or identity.get("name") in (None, "toy"):
        raise SbeError(
            "these geo heads were trained on embeddings without a known backbone; "
            "pass --embeddings PARQUET instead of images"
        )
    from sbe.models.backbones import load_backbone

    images = []  # decode first: a bad path fails before the model loads
    for p in paths:
        try:
            images.append(decode_rgb(Path(p).read_bytes()))
        except (OSError, ValueError) as e:  # ImageDecodeError is a ValueError
            raise SbeError(f"{p}: not a readable image ({e})") from None
    backbone = load_backbone(identity, device=device)
    return np.concatenate(
        [backbone.embed_pil(images[s : s + 32]) for s in range(0, len(images), 32)]
    )


def predict(
    geo_dir: str | Path,
    *,
    images: list[Path] | None = None,
    embeddings_file: Path | None = None,
    top_k: int = 5,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Predict for image files or for the ``embedding`` column of a parquet file.

    Each returned dict also has ``source`` (the image path, or the parquet row index).
    """
    geo_dir = Path(geo_dir)
    if (images is None) == (embeddings_file is None):
        raise SbeError("give image files or --embeddings PARQUET (one of the two)")
    if images is not None:
        heads_cfg = GeoHeads.from_pretrained(geo_dir).config
        emb = embed_images(list(images), heads_cfg.backbone)
        sources: list[str] = [str(p) for p in images]
    else:
        assert embeddings_file is not None
        try:
            table = pq.read_table(embeddings_file, columns=["embedding"])
        except (OSError, pa.ArrowInvalid, KeyError) as e:
            raise SbeError(f"{embeddings_file}: cannot read an embedding column ({e})") from None
        emb = to_numpy_matrix(table.column("embedding"), np.float32)
        sources = [str(i) for i in range(len(emb))]
    rows = predict_embeddings(geo_dir, emb, top_k=top_k, threads=threads)
    for src, row in zip(sources, rows, strict=True):
        row["source"] = src
    return rows


def centre_latlon(heads: GeoHeads) -> tuple[np.ndarray, np.ndarray]:
    """Lat/lon (degrees) of the heads' MvMF centres."""
    # a registered buffer, which nn.Module types as Tensor | Module; as_tensor neither copies nor casts
    return unit_to_latlon(torch.as_tensor(heads.centres).numpy())


GEO_ROWS = [
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
    ("season_seasonal", "mean_error_days", "  seasonal climates", "d"),
    ("season_flat", "mean_error_days", "  climates without seasons", "d"),
    ("calibration", "hpd90_coverage", "true place in the 90% region", "%"),
    ("calibration", "hpd50_coverage", "true place in the 50% region", "%"),
    ("calibration", "median_radius90_km", "median 90% radius of the top mode (km)", "km"),
]


def geo_table(report: dict[str, Any], title: str) -> Table:
    """:func:`evaluate`'s report as a table: the geo heads beside both baselines, a metric a row."""
    base = report["baselines"]
    predictors = [report["model"], base["most_common"], base["nearest_neighbour"]]
    table = Table(title, ["metric", "geo heads", "most common", "nearest neighbour"])
    for group, key, label, kind in GEO_ROWS:
        table.rows.append([label, *(number(m.get(group, {}).get(key), kind) for m in predictors)])
    return table


def predictions_table(rows: list[dict[str, Any]]) -> Table:
    """:func:`predict`'s rows as a table: one line per location guess, climate and season first."""
    columns = ["input", "rank", "lat", "lon", "prob", "r50 km", "r90 km", "climate", "season"]
    table = Table("sbe geo predict", columns)
    for row in rows:
        c, s = row["climate"], row["season"]
        first = [
            Path(row["source"]).name,
            f"{c['code']} {c['name']} p={c['prob']:.2f}",
            f"{s['date_label']} (day {s['day_of_year']:.0f})",
        ]
        for j, loc in enumerate(row["locations"]):
            name, climate, season = first if j == 0 else ("", "", "")
            radii = [f"{loc.get(f'radius_{p}_km', float('nan')):,.0f}" for p in (50, 90)]
            where = [f"{loc['lat']:.4f}", f"{loc['lon']:.4f}", f"{loc['prob']:.3f}"]
            table.rows.append([name, str(j + 1), *where, *radii, climate, season])
    return table


class GeoStage(Stage):
    """``sbe geo``: see the module docstring.

    Args:
        on_record: receives each epoch's record (``None``: a summary line goes to ``ctx.log``).
    """

    name = "geo"
    inputs = (Input("input", "split"),)

    def __init__(self, on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.on_record = on_record

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        test = results.get("test") or (GeoDir(cfg.output).metrics_record() or {}).get("test")
        return [geo_table(test, f"test split ({test['n']:,} rows)")] if test else []

    def run(self, cfg: GeoConfig, ctx: StageContext) -> Manifest:
        """Train, evaluate and save the heads into ``cfg.output``; resumes a killed run."""
        with torch_threads(cfg.threads):
            return _train(cfg, ctx, self.on_record)


def evaluate_command(opts: GeoEvaluateOptions, cfg: SbeConfig, **_: Any) -> tuple[dict, Summary]:
    """``sbe geo evaluate``: :func:`evaluate` of the heads in ``--model`` (or the geo output)."""
    sec = cfg.resolved().geo
    report = evaluate(
        opts.model.resolve() if opts.model is not None else Path(sec.output),
        split=opts.split,
        split_dir=opts.input.resolve() if opts.input is not None else None,
        fallback_px=sec.coastal_fallback_px,
        threads=sec.threads,
    )
    return report, [geo_table(report, f"sbe geo evaluate: {opts.split} ({report['n']:,} rows)")]


def predict_command(opts: GeoPredictOptions, cfg: SbeConfig, **_: Any) -> tuple[list, Summary]:
    """``sbe geo predict``: :func:`predict` for image files or an embeddings parquet."""
    sec = cfg.resolved().geo
    rows = predict(
        opts.model.resolve() if opts.model is not None else Path(sec.output),
        images=opts.images or None,
        embeddings_file=opts.embeddings,
        top_k=opts.top_k,
        threads=sec.threads,
    )
    return rows, [predictions_table(rows)]
