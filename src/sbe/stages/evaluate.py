"""``sbe evaluate``: image-to-image retrieval of a trained run, backbone vs projector.

For one split of the run's input (``test`` by default): Recall@K and mAP@R, queries = every image
whose identity has at least two images in the split, gallery = the whole split, query excluded;
the raw backbone embeddings and the selected projector (``RUN/best``) on the same queries.

When a folder of identity-labelled real photos is available (``cfg.landmarks``, else
``landmarks-mini`` in the shared data folder next to the repository, or ``$SBE_LANDMARKS``), its
photos are embedded with the run's backbone and scored leave-one-out (P@1, mAP) for both.

Writes ``RUN/evaluate/<split>.json`` and ``RUN/evaluate/_manifest.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sbe.config import EvaluateConfig, Section
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.stages.summary import Summary, Table
from sbe.storage import Manifest, fingerprint_paths, write_json_atomic
from sbe.storage.artifacts import EvaluateDir, RunDir
from sbe.training.data import load_split
from sbe.training.evaluation import (
    backbone_from_identity,
    compare_on_split,
    default_landmarks_dir,
    landmarks_check,
)
from sbe.training.loop import resolve_device

STAGE = "evaluate"


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run's ``run.json`` (see :meth:`RunDir.run_record`)."""
    return RunDir(run_dir).run_record().to_dict()


class EvaluateStage(Stage):
    """``sbe evaluate``: see the module docstring."""

    name = "evaluate"
    inputs = (Input("run", "train"),)

    def output_dir(self, cfg: Section) -> Path:
        return RunDir(cfg.run).evaluate_dir().root  # type: ignore[attr-defined]

    def summary(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        res = results or m.extra.get("results", {})
        if "retrieval" not in res:
            return super().summary(m, results, cfg)
        r = res["retrieval"]
        title = f"{res['split']}: {r['queries']:,} queries, gallery {r['images']:,} images"
        table = Table(title, ["metric", "backbone", "projector", "delta"])
        for key, raw in r["backbone"].items():
            proj = r["projector"][key]
            table.rows.append([key, f"{raw:.4f}", f"{proj:.4f}", f"{proj - raw:+.4f}"])
        lm = res.get("landmarks") or {}
        if "skipped" in lm:
            return [table, f"real photos: skipped ({lm['skipped']})"]
        if not lm:
            return [table]
        b, p, n = lm["backbone"], lm["projector"], lm["images"]
        return [
            table,
            f"real photos ({n} images, {lm['landmarks']} landmarks, leave-one-out): P@1 "
            f"{b['correct@1']}/{n} -> {p['correct@1']}/{n}, mAP {b['map']:.4f} -> {p['map']:.4f} "
            f"(lost {lm['lost']}, gained {lm['gained']})",
        ]

    def run(self, cfg: EvaluateConfig, ctx: StageContext) -> Manifest:
        """Evaluate ``cfg.run`` on ``cfg.split`` (and on real photos when available).

        Returns:
            The manifest; ``ctx.results`` (and ``extra["results"]``) has ``retrieval`` (see
            :func:`sbe.training.evaluation.compare_on_split`) and ``landmarks`` (or a
            ``skipped`` reason).
        """
        run = RunDir(cfg.run)
        run_dir = run.root
        record = run.run_record()
        split_dir = run.split_dir(record)
        split_file = split_dir.split_path(cfg.split)
        if not split_file.is_file():
            raise SbeError(
                f"split file not found: {split_file} (the split folder run.json records); "
                "rerun `sbe split`, or `sbe train` on another split"
            )
        lm_dir = Path(cfg.landmarks) if cfg.landmarks is not None else default_landmarks_dir()
        has_landmarks = lm_dir is not None and (lm_dir / "labels.csv").is_file()
        best = run.best
        read = [split_file, run.run_json, *run.best_files()]
        if has_landmarks and lm_dir is not None:
            read.append(lm_dir)
        if (done := ctx.check(fingerprint_paths(read))) is not None:
            ctx.results.update(done.extra.get("results") or {})
            return done
        device = resolve_device(cfg.device)
        projector = Projector.from_pretrained(best, device=device)
        data = load_split(split_dir, cfg.split)
        if data.dim != projector.config.input_dim:
            raise SbeError(
                f"{split_file} has {data.dim}-d embeddings; the projector expects "
                f"{projector.config.input_dim}-d"
            )
        results: dict[str, Any] = {
            "run": str(run_dir),
            "split": cfg.split,
            "retrieval": compare_on_split(projector, data, cfg.ks, device=device),
        }
        identity = run.backbone(record)
        if not has_landmarks:
            results["landmarks"] = {"skipped": "no landmarks folder found"}
        elif identity is None or identity.dim != projector.config.input_dim:
            name = identity.name if identity is not None else None
            results["landmarks"] = {
                "skipped": f"backbone {name!r} does not match the projector input"
            }
        else:
            try:
                backbone = backbone_from_identity(identity, device=str(device))
            except (SbeError, ValueError, KeyError) as e:
                results["landmarks"] = {"skipped": str(e)}
            else:
                results["landmarks"] = {
                    "folder": str(lm_dir),
                    "backbone_name": identity.name,
                    **landmarks_check(lm_dir, backbone, projector.cpu()),  # type: ignore[arg-type]
                }
        write_json_atomic(EvaluateDir(ctx.out_dir).result_path(cfg.split), results)
        ctx.results.update(results)
        retrieval = results["retrieval"]
        return ctx.commit(
            outputs=[EvaluateDir.file_name(cfg.split)],
            rows={"queries": retrieval["queries"], "images": retrieval["images"]},
            extra={"results": results},
        )


def run(cfg: EvaluateConfig, **options: Any) -> tuple[dict[str, Any], Manifest]:
    """Evaluate ``cfg.run`` (the :class:`EvaluateStage` from Python).

    Args:
        cfg: the resolved ``evaluate`` section.
        **options: :func:`sbe.stages.base.run_stage` options.

    Returns:
        ``(results, manifest)``: see :meth:`EvaluateStage.run`.
    """
    manifest, results = run_stage(EvaluateStage(), cfg, **options)
    return results, manifest
