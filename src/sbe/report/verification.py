"""The "Verification" section: what ``sbe evaluate`` measured of local-feature re-ranking and of
the calibrated "same building?" decision (``RUN/evaluate/test.json``).

Reading follows :mod:`.gather`'s rule: no evaluation, or one without any verification, is
:class:`~sbe.report.readers.Unavailable` (a note on the page); a verification entry present but
not in the shape this version writes is :class:`~sbe.report.readers.Malformed` (the report fails).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from sbe.report.readers import Malformed, Unavailable, need_dir, read_json

#: keys every re-ranking entry of the evaluation has (``sbe.verify.evaluation.rerank_top1``)
RERANK_KEYS = ("queries", "k", "global_correct@1", "reranked_correct@1", "positive_in_top_k")
COST_KEYS = ("per_query_cpu_s", "per_query_wall_s", "pairs_matched", "failed_images")


@dataclass
class RerankRow:
    """One re-ranked evaluation: top-1 before and after, and what it cost."""

    what: str
    queries: int
    k: int
    global_correct: int
    reranked_correct: int
    ceiling: int
    cost: dict[str, Any]


@dataclass
class Verification:
    """The verification results of an evaluation (each part ``None`` when it was not run)."""

    source: str
    calibration: dict[str, Any] | None = None
    reranked: list[RerankRow] = field(default_factory=list)
    vpr: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _need(entry: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise Malformed(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise Malformed(f"{where}: missing {', '.join(missing)}")
    return entry


def _row(what: str, entry: Any, cost: Any, where: str) -> RerankRow:
    e = _need(entry, RERANK_KEYS, where)
    return RerankRow(
        what,
        int(e["queries"]),
        int(e["k"]),
        int(e["global_correct@1"]),
        int(e["reranked_correct@1"]),
        int(e["positive_in_top_k"]),
        _need(cost, COST_KEYS, f"{where} cost"),
    )


def verification(run_dir: Path | None) -> Verification:
    """The verification parts of ``RUN/evaluate/test.json``.

    Raises:
        Unavailable: no evaluation, or one without calibration or re-ranking.
        Malformed: a verification entry without the keys this version writes.
    """
    folder = need_dir(run_dir, "training run")
    path = folder / "evaluate" / "test.json"
    ev = read_json(path, "evaluation (run `sbe evaluate`)")
    if not isinstance(ev, dict):
        raise Malformed(f"{path}: expected a JSON object")
    out = Verification(source=str(path))
    cal = ev.get("calibration")
    if cal is None:
        out.notes.append("no calibration in the evaluation (run `sbe evaluate --calibrate`)")
    elif "skipped" in cal:
        out.notes.append(f"calibration skipped: {cal['skipped']}")
    else:
        out.calibration = _need(cal, ("target_precision", "fit", "test"), f"{path} calibration")
        _need(cal["test"], ("precision", "recall", "called", "pairs"), f"{path} calibration.test")
    lm = ev.get("landmarks")
    lm_rerank = lm.get("rerank") if isinstance(lm, dict) else None
    if lm_rerank is not None:
        where = f"{path} landmarks.rerank"
        r = _need(lm_rerank, ("cost",), where)
        for who in ("backbone", "projector"):
            if who in r:
                out.reranked.append(
                    _row(f"real photos, {who} ranking", r[who], r["cost"], f"{where}.{who}")
                )
    split = ev.get("rerank")
    if split is not None and "skipped" in split:
        out.notes.append(f"split re-ranking skipped: {split['skipped']}")
    elif split is not None:
        s = _need(split, ("split", "cost"), f"{path} rerank")
        out.reranked.append(
            _row(f"{s['split']} split sample, projector", s, s["cost"], f"{path} rerank")
        )
    if lm_rerank is None and split is None:
        out.notes.append("no re-ranking in the evaluation (run `sbe evaluate --rerank`)")
    vpr = ev.get("vpr")
    if vpr is not None:
        out.vpr = _need(vpr, ("folder", "queries", "database", "global"), f"{path} vpr")
    if out.calibration is None and not out.reranked and out.vpr is None:
        raise Unavailable(
            "the evaluation has no verification (run `sbe evaluate --calibrate --rerank`)"
        )
    return out


def verification_section(v: Verification | str) -> Markup:
    """The section's HTML (a "not available" note for a reason string)."""
    from sbe.report.html import fmt, pct, render

    if isinstance(v, str):
        return render("verification.html.j2", v=v)
    rows = [
        [
            r.what,
            fmt(r.queries),
            fmt(r.k),
            f"{r.global_correct}/{r.queries}",
            f"{r.reranked_correct}/{r.queries}",
            f"{r.ceiling}/{r.queries}",
            f"{r.cost['per_query_cpu_s']:.2f}",
            f"{r.cost['per_query_wall_s']:.2f}",
            fmt(r.cost["failed_images"]),
        ]
        for r in v.reranked
    ]
    vpr_rows = []
    if v.vpr is not None:
        g, rr = v.vpr["global"], v.vpr.get("reranked") or {}
        vpr_rows = [[k.replace("recall", "Recall"), pct(g[k]), pct(rr.get(k))] for k in g]
    return render("verification.html.j2", v=v, rerank_rows=rows, vpr_rows=vpr_rows)
