"""Result printing, the one part of the CLI written by hand: a manifest table per stage, plus a few
lines (or a table) where the manifest alone does not say what matters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sbe.cli.base import out

Lines = Callable[[Any, dict[str, Any], Any], list[str]]


def manifest_table(m: Any) -> Table:
    """A stage's summary: rows, skips by reason, wall time."""
    table = Table(title=f"sbe {m.stage}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    if m.up_to_date:
        table.add_row("status", "up to date (inputs and config unchanged): nothing redone")
    for k, v in m.rows.items():
        table.add_row(k, f"{v:,}")
    if m.skipped:
        table.add_row("skipped", ", ".join(f"{k}: {v:,}" for k, v in m.skipped.items()))
    table.add_row("wall time", f"{m.wall_seconds:.1f} s")
    return table


def comparison_table(results: dict[str, Any]) -> Table:
    """``sbe evaluate``: backbone vs projector per retrieval metric."""
    r = results["retrieval"]
    title = f"{results['split']}: {r['queries']:,} queries, gallery {r['images']:,} images"
    table = Table(title=title, title_justify="left")
    for col in ("metric", "backbone", "projector", "delta"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, raw in r["backbone"].items():
        proj = r["projector"][key]
        table.add_row(key, f"{raw:.4f}", f"{proj:.4f}", f"{proj - raw:+.4f}")
    return table


def _landmarks(results: dict[str, Any]) -> list[str]:
    lm = results.get("landmarks") or {}
    if "skipped" in lm:
        return [f"real photos: skipped ({lm['skipped']})"]
    if not lm:
        return []
    b, p, n = lm["backbone"], lm["projector"], lm["images"]
    return [
        f"real photos ({n} images, {lm['landmarks']} landmarks, leave-one-out): P@1 "
        f"{b['correct@1']}/{n} -> {p['correct@1']}/{n}, mAP {b['map']:.4f} -> {p['map']:.4f} "
        f"(lost {lm['lost']}, gained {lm['gained']})"
    ]


def _pct(v: Any) -> str:
    return "-" if v is None or v != v else f"{100 * float(v):.1f}%"


def _verification(results: dict[str, Any]) -> list[str]:
    """``sbe evaluate``: the calibrated decision, the re-ranking and the VPR lines."""
    lines = []
    cal = results.get("calibration") or {}
    if "skipped" in cal:
        lines.append(f"same-building calibration: skipped ({cal['skipped']})")
    elif cal:
        t, f = cal["test"], cal["fit"]
        sim, p = cal.get("similarity_threshold"), cal.get("threshold")
        at = (
            f"cosine >= {sim:.3f}"
            if sim is not None
            else (f"p >= {p:.3f}" if p is not None else "no threshold reaches it: none called")
        )
        lines.append(
            f"same building? calibrated on val for precision {cal['target_precision']:.2f} "
            f"({at}): val precision {_pct(f['precision'])} recall {_pct(f['recall'])}; "
            f"test precision {_pct(t['precision'])} recall {_pct(t['recall'])} "
            f"({t['called']:,} of {t['pairs']:,} pairs called) -> {cal['file']}"
        )
    lm = (results.get("landmarks") or {}).get("rerank")
    if lm:
        for who in ("backbone", "projector"):
            r = lm[who]
            lines.append(
                f"real photos re-ranked ({who} top {r['k']}): correct@1 "
                f"{r['global_correct@1']}/{r['queries']} -> {r['reranked_correct@1']}/"
                f"{r['queries']} (ceiling {r['positive_in_top_k']}, gained {r['gained']}, "
                f"lost {r['lost']})"
            )
        lines.append(_cost(lm["cost"]))
    rr = results.get("rerank") or {}
    if "skipped" in rr:
        lines.append(f"split re-ranking: skipped ({rr['skipped']})")
    elif rr:
        n = rr["queries"]
        lines.append(
            f"{rr['split']} sample re-ranked ({n} queries, projector top {rr['k']}): Recall@1 "
            f"{_pct(rr['global_correct@1'] / n)} -> {_pct(rr['reranked_correct@1'] / n)} "
            f"(ceiling {_pct(rr['positive_in_top_k'] / n)}, gained {rr['gained']}, "
            f"lost {rr['lost']})"
        )
        lines.append(_cost(rr["cost"]))
    vpr = results.get("vpr") or {}
    if vpr:
        g, r = vpr["global"], vpr.get("reranked")
        cells = ", ".join(
            f"R@{k.split('@')[1]} {_pct(v)}" + (f" -> {_pct(r[k])}" if r else "")
            for k, v in g.items()
        )
        lines.append(
            f"VPR {vpr['folder']} ({vpr['queries']} queries, {vpr['database']} database, "
            f"{vpr['queries_without_positive']} without a positive within 25 m): {cells}"
        )
        if "cost" in vpr:
            lines.append(_cost(vpr["cost"]))
    return lines


def _cost(c: dict[str, Any]) -> str:
    fallbacks = (
        f", {c['fallback_queries']} queries kept the global order" if c["fallback_queries"] else ""
    )
    failed = f", {c['failed_images']} photos unreadable" if c["failed_images"] else ""
    if c.get("failed_pairs"):
        failed += f", {c['failed_pairs']} pairs without a RANSAC model"
    return (
        f"  re-ranking cost: {c['per_query_cpu_s']:.2f} CPU s / {c['per_query_wall_s']:.2f} s "
        f"wall per re-ranked shortlist ({c['pairs_matched']:,} pairs matched{failed}{fallbacks})"
    )


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
    """The geo heads beside both baselines, one metric per row."""
    base = report["baselines"]
    predictors = {
        "geo heads": report["model"],
        "most common": base["most_common"],
        "nearest neighbour": base["nearest_neighbour"],
    }
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    for name in predictors:
        table.add_column(name, justify="right")
    for group, key, label, kind in GEO_ROWS:
        cells = []
        for m in predictors.values():
            v = m.get(group, {}).get(key)
            if v is None or (isinstance(v, float) and v != v):
                cells.append("-")
            else:
                cells.append({"%": f"{100 * v:.1f}%", "f": f"{v:.3f}"}.get(kind, f"{v:,.1f}"))
        table.add_row(label, *cells)
    return table


def _publish(m: Any, r: dict, sec: Any) -> list[str]:
    cal = m.extra.get("calibration")
    if not cal:
        return ["same building?: no calibration in the run (`sbe evaluate --calibrate` first)"]
    sim, test = cal.get("similarity_threshold"), cal.get("test") or {}
    at = f"cosine >= {sim:.4f}" if sim is not None else "no threshold reached the target"
    return [
        f"calibration.json: same building? at {at} (target precision "
        f"{cal['target_precision']:.2f}; test precision {_pct(test.get('precision'))}, "
        f"recall {_pct(test.get('recall'))})"
    ]


def _synth(m: Any, r: dict, sec: Any) -> list[str]:
    pk = m.extra.get("packaged")
    if not pk:
        return []
    return [
        f"packaged: {pk['rows']:,} rows of {pk['buildings']:,} buildings -> {pk['path']} "
        f"(corrupt rows {pk['corrupt_rows']})"
    ]


def _ingest(m: Any, r: dict, sec: Any) -> list[str]:
    warnings = m.extra.get("warnings") or {}
    lines = (
        ["warnings: " + ", ".join(f"{k}: {v:,}" for k, v in warnings.items())] if warnings else []
    )
    damaged = (m.extra.get("damaged_tars") or {}).items()
    return lines + [f"damaged: {t}: {d} (rows before the damage kept)" for t, d in damaged]


def _backbone(m: Any, r: dict, sec: Any) -> list[str]:
    i, x = m.extra.get("backbone") or {}, m.extra
    line = f"backbone {i.get('name')} ({i.get('dim')}-d, {i.get('pooling')} pooling)"
    if x.get("images_per_second") and not m.up_to_date:
        line += f", {x['runtime']} on {x['device']}: {x['images_per_second']:,.1f} images/s"
    return [line]


def _split(m: Any, r: dict, sec: Any) -> list[str]:
    lines = [
        f"{name}: {s['images']:,} images, {s['identities']:,} identities, {s['cells']:,} cells"
        for name, s in (m.extra.get("splits") or {}).items()
    ]
    return lines + [
        f"leakage {pair}: nearest {v['min_distance_m']} m, "
        f"{v['identities_within_group_radius']:,} identities within the grouping radius"
        for pair, v in (m.extra.get("leakage") or {}).items()
    ]


def _neighbors(m: Any, r: dict, sec: Any) -> list[str]:
    edges = ", ".join(f"{e:.3g}" for e in m.extra.get("band_edges", []))
    lines = [f"band edges (distance / local scale): {edges}"]
    for name, s in (m.extra.get("splits") or {}).items():
        idx = s.get("index") or {}
        how = idx.get("kind", "?")
        if how == "ivf_flat":
            how += (
                f" (nlist {idx['nlist']}, nprobe {idx['nprobe']}, recall {idx['measured_recall']})"
            )
        if idx.get("fallback"):
            how += f" (exact: {idx['fallback']})"
        lines.append(f"{name}: {s['rows']:,} rows, {how}")
    return lines


def _train(m: Any, r: dict, sec: Any) -> list[str]:
    return [f"best val mAP@R {m.extra.get('best_val_map@r', float('nan')):.4f}"]


def _tune(m: Any, r: dict, sec: Any) -> list[str]:
    best = f"best val mAP@R {m.extra['best_value']:.4f} (trial {m.extra['best_trial']})"
    return [f"{best} -> {Path(sec.output) / 'best_params.toml'}"]


def _index(m: Any, r: dict, sec: Any) -> list[str]:
    info = m.extra.get("index", {})
    p = info.get("parameters", {})
    detail = f"{info.get('kind')} {info.get('faiss_class')}, dim {info.get('dim')}"
    if info.get("kind") == "hnsw":
        detail += f", M {p.get('hnsw_m')}, efConstruction {p.get('ef_construction')}, efSearch {p.get('ef_search')}"
    return [f"index: {detail}; built in {info.get('build_seconds', 0):.1f} s"]


def _cluster(m: Any, r: dict, sec: Any) -> list[str]:
    sizes = m.extra.get("sizes", [])
    shown = ", ".join(str(s) for s in sizes[:20]) + (" ..." if len(sizes) > 20 else "")
    return [f"cluster sizes: {shown} (noise {m.extra.get('noise', 0)})"]


def _report(m: Any, r: dict, sec: Any) -> list[str]:
    missing = {k: v for k, v in m.extra.get("sections", {}).items() if v}
    lines = [f"{name}: not available: {'; '.join(why)}" for name, why in missing.items()]
    return [*lines, f"report: {Path(sec.output) / 'report.html'}"]


LINES: dict[str, Lines] = {
    "synth": _synth,
    "ingest": _ingest,
    "backbone": _backbone,
    "split": _split,
    "neighbors": _neighbors,
    "train": _train,
    "tune": _tune,
    "index": _index,
    "cluster": _cluster,
    "report": _report,
    "publish": _publish,
}


def show(name: str, m: Any, results: dict[str, Any], sec: Any, as_json: bool) -> None:
    """Print a stage's result: JSON (results, then the manifest) or its tables and lines."""
    if as_json:
        typer.echo(json.dumps({**results, "up_to_date": m.up_to_date, **m.model_dump(mode="json")}))
        return
    if name == "evaluate" and "retrieval" in (res := results or m.extra.get("results", {})):
        out.print(comparison_table(res))
        for line in _landmarks(res) + _verification(res):
            out.print(line, markup=False, soft_wrap=True)
        return
    out.print(manifest_table(m))
    for line in LINES.get(name, lambda *_: [])(m, results, sec):
        out.print(line, markup=False, soft_wrap=True)
    if name == "geo":
        path = Path(sec.output) / "metrics.json"
        test = results.get("test") or (json.loads(path.read_text()) if path.is_file() else {}).get(
            "test"
        )
        if test:
            out.print(geo_table(test, f"test split ({test['n']:,} rows)"))
    if name != "report" and (dest := getattr(sec, "output", None)) is not None:
        out.print(f"-> {dest}", markup=False, soft_wrap=True)


def key_numbers(cfg: Any) -> None:
    """The headline numbers of a finished run; the report's path in full below the table."""
    from sbe.pipeline import key_numbers as rows
    from sbe.pipeline import report_file

    table = Table(title="key numbers", title_justify="left")
    for col in ("what", "value", "compared with"):
        table.add_column(col, style="bold" if col == "what" else None)
    for row in rows(cfg):
        table.add_row(*row)
    out.print(table)
    if (report := report_file(cfg)) is not None:
        out.print(f"report: {report}", markup=False, soft_wrap=True)
