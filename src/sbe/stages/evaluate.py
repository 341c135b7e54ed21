"""``sbe evaluate``: image-to-image retrieval of a trained run, backbone vs projector.

For one split of the run's input (``test`` by default): Recall@K and mAP@R, queries = every image
whose identity has at least two images in the split, gallery = the whole split, query excluded;
the raw backbone embeddings and the selected projector (``RUN/best``) on the same queries.

When a folder of identity-labelled real photos is available (``cfg.landmarks``, else
``landmarks-mini`` in the shared data folder next to the repository, or ``$SBE_LANDMARKS``), its
photos are embedded with the run's backbone and scored leave-one-out (P@1, mAP) for both.

Verification (``[verify]`` settings, :mod:`sbe.verify`):

* ``calibrate`` (default on; cheap: cosine similarities of sampled pairs): the "same building?"
  decision fitted on the pairs of the val split (projector embeddings; every pair up to
  ``calibration_pairs``, a seeded uniform sample beyond) at ``[verify] target_precision``,
  saved as ``RUN/evaluate/calibration.json`` (``sbe publish`` copies it into the model), and its
  precision/recall on the test split's pairs.
* ``rerank`` (off by default: DISK + LightGlue cost ~20 CPU s per query at k = 10 on a CPU): the
  global top-k re-ordered by verified local matches, top-1 before/after, on the landmarks check
  (backbone and projector rankings) and on a seeded sample of ``rerank_queries`` split queries
  (photos read from the ingest output: ``images``, else found through the split's manifests).
* ``vpr``: Recall@1/5/10/20 on a VPR folder (``database/``, ``queries/``), embedded by the run's
  backbone + projector or by a published ``model``, with and without re-ranking.

Writes ``RUN/evaluate/<split>.json`` (+ ``calibration.json``) and ``RUN/evaluate/_manifest.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbe.config import EvaluateConfig, Section, VerifyConfig
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.stages.search import local_settings
from sbe.stages.summary import Summary, Table, number
from sbe.storage import Manifest, fingerprint_paths, write_json_atomic
from sbe.storage.artifacts import EvaluateDir, ImagesDir, ModelDir, RunDir, SplitDir
from sbe.training.data import EmbeddingSet, load_split
from sbe.training.evaluation import (
    backbone_from_identity,
    compare_on_split,
    default_landmarks_dir,
    embed_images,
    landmarks_check,
    read_landmarks,
)
from sbe.training.loop import resolve_device

if TYPE_CHECKING:
    from sbe.models.backbones.base import Backbone
    from sbe.verify.evaluation import ShortlistReranker
    from sbe.verify.local import LocalMatcher
    from sbe.verify.vpr import VprData

STAGE = "evaluate"


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run's ``run.json`` (see :meth:`RunDir.run_record`)."""
    return RunDir(run_dir).run_record().to_dict()


def verify_section(ctx: StageContext) -> VerifyConfig:
    """``[verify]`` of the whole config when the stage was given one, else its defaults."""
    return ctx.full_config.verify if ctx.full_config is not None else VerifyConfig()


def images_dir_of(split_dir: SplitDir) -> Path | None:
    """The ingest output a split's photos come from: split -> backbone -> ingest, by the inputs
    their manifests record (``None`` when the chain cannot be followed)."""
    folder: Path | None = split_dir.root
    for _ in range(2):  # split's input is the backbone output, the backbone's the ingest output
        if folder is None:
            return None
        d = SplitDir(folder)
        m = d.manifest()
        recorded = m.config.get("input") if m is not None else None
        folder = d.resolve(recorded) if isinstance(recorded, str) else None
    return folder if folder is not None and folder.is_dir() else None


def _ingest_parts(images: Path | None) -> list[Path]:
    """The ingest parts photos are read from (none: the re-ranking reports a counted fallback)."""
    try:
        return ImagesDir(images).parts() if images is not None else []
    except SbeError:  # no folder, or no part in it
        return []


def _pair_split(data: EmbeddingSet, projector: Projector) -> tuple[np.ndarray, np.ndarray]:
    x = projector.project(data.embeddings.float().numpy())
    return np.asarray(x, dtype=np.float32), data.building_ids


class EvaluateStage(Stage):
    """``sbe evaluate``: see the module docstring."""

    name = "evaluate"
    inputs = (Input("run", "train"), Input("images", "ingest"))

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
        lines: Summary = [table]
        if "skipped" in lm:
            lines.append(f"real photos: skipped ({lm['skipped']})")
        elif lm:
            b, p, n = lm["backbone"], lm["projector"], lm["images"]
            lines.append(
                f"real photos ({n} images, {lm['landmarks']} landmarks, leave-one-out): P@1 "
                f"{b['correct@1']}/{n} -> {p['correct@1']}/{n}, mAP {b['map']:.4f} -> "
                f"{p['map']:.4f} (lost {lm['lost']}, gained {lm['gained']})"
            )
        return lines + verification_lines(res)

    def run(self, cfg: EvaluateConfig, ctx: StageContext) -> Manifest:
        """Evaluate ``cfg.run`` on ``cfg.split`` (and on real photos when available).

        Returns:
            The manifest; ``ctx.results`` (and ``extra["results"]``) has ``retrieval`` (see
            :func:`sbe.training.evaluation.compare_on_split`), ``landmarks`` (or a ``skipped``
            reason; with ``rerank`` its ``rerank`` entry), ``calibration`` (with ``calibrate``),
            ``rerank`` (the split sample) and ``vpr`` (with ``vpr``).

        Raises:
            SbeError: a missing split file or VPR folder, embeddings of another size.
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
        verify = verify_section(ctx)
        lm_dir = Path(cfg.landmarks) if cfg.landmarks is not None else default_landmarks_dir()
        has_landmarks = lm_dir is not None and (lm_dir / "labels.csv").is_file()
        best = run.best
        read = [split_file, run.run_json, *run.best_files()]
        if has_landmarks and lm_dir is not None:
            read.append(lm_dir)
        if cfg.calibrate:
            read += [p for s in ("val", "test") if (p := split_dir.split_path(s)).is_file()]
        images = Path(cfg.images) if cfg.images is not None else images_dir_of(split_dir)
        if cfg.rerank:
            read += _ingest_parts(images)
        vpr_data = None
        if cfg.vpr is not None:
            from sbe.verify.vpr import read_vpr_folder

            # read (and refused: no folders, no coordinates) before any work is done
            vpr_data = read_vpr_folder(cfg.vpr)
            read.append(Path(cfg.vpr))
        if cfg.model is not None:
            read.append(ModelDir(cfg.model).require_model(flag="--model"))
        # what of [verify] decides the output: the target with calibrate, all of it with rerank
        verify_hash: dict[str, Any] = {}
        if cfg.calibrate:
            verify_hash["target_precision"] = verify.target_precision
        if cfg.rerank:
            verify_hash.update(verify.hashed_settings())
        if (
            done := ctx.check(fingerprint_paths(sorted(set(read))), verify=verify_hash or None)
        ) is not None:
            ctx.results.update(done.extra.get("results") or {})
            return done
        if not cfg.calibrate:  # a calibration of an earlier run must not outlive its evaluation
            EvaluateDir(ctx.out_dir).path(EvaluateDir.CALIBRATION).unlink(missing_ok=True)
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
        projector = projector.cpu()
        matcher = self._matcher(cfg, verify, ctx) if cfg.rerank else None
        identity = run.backbone(record)
        backbone: Backbone | None = None
        backbone_problem = ""
        if identity is None or identity.dim != projector.config.input_dim:
            name = identity.name if identity is not None else None
            backbone_problem = f"backbone {name!r} does not match the projector input"
        elif has_landmarks or (cfg.vpr is not None and cfg.model is None):
            try:
                backbone = backbone_from_identity(identity, device=str(device))
            except (SbeError, ValueError, KeyError) as e:
                backbone_problem = str(e)
        if not has_landmarks:
            results["landmarks"] = {"skipped": "no landmarks folder found"}
        elif backbone is None:
            results["landmarks"] = {"skipped": backbone_problem}
        elif lm_dir is not None:
            results["landmarks"] = self._landmarks(
                lm_dir, identity.name if identity else "", backbone, projector, matcher, verify
            )
        outputs = [EvaluateDir.file_name(cfg.split)]
        out = EvaluateDir(ctx.out_dir)
        if cfg.calibrate:
            results["calibration"] = self._calibrate(
                cfg, split_dir, projector, verify, out, loaded={cfg.split: data}
            )
            if "skipped" not in results["calibration"]:
                outputs.append(EvaluateDir.CALIBRATION)
        if matcher is not None:
            results["rerank"] = self._rerank_split(cfg, data, projector, images, matcher, verify)
        if vpr_data is not None:
            results["vpr"] = self._vpr(
                cfg, vpr_data, backbone, backbone_problem, projector, matcher, verify, device
            )
        write_json_atomic(out.result_path(cfg.split), results)
        ctx.results.update(results)
        retrieval = results["retrieval"]
        return ctx.commit(
            outputs=outputs,
            rows={"queries": retrieval["queries"], "images": retrieval["images"]},
            extra={"results": results},
        )

    # -- verification --------------------------------------------------------------------------

    @staticmethod
    def _matcher(cfg: EvaluateConfig, verify: VerifyConfig, ctx: StageContext) -> LocalMatcher:
        from sbe.verify.local import LocalMatcher

        device = "cuda" if str(resolve_device(cfg.device)).startswith("cuda") else "cpu"
        ctx.log(
            f"evaluate: re-ranking the top {verify.rerank_k} by verified local matches "
            f"({verify.max_keypoints} keypoints, {verify.max_side} px, {device})"
        )
        return LocalMatcher(local_settings(verify), device=device)

    @staticmethod
    def _landmarks(
        lm_dir: Path,
        name: str,
        backbone: Backbone,
        projector: Projector,
        matcher: LocalMatcher | None,
        verify: VerifyConfig,
    ) -> dict[str, Any]:
        paths, labels, _ = read_landmarks(lm_dir)
        x = embed_images(backbone, paths)
        found: dict[str, Any] = {
            "folder": str(lm_dir),
            "backbone_name": name,
            **landmarks_check(lm_dir, backbone, projector, cached_embeddings=x),
        }
        if matcher is None:
            return found
        from sbe.verify.evaluation import rerank_top1, shortlists

        # one memo for both rankings: their shortlists share most pairs
        reranker = _reranker(matcher, _read_path, verify)
        keys = [str(p) for p in paths]
        everyone = np.arange(len(paths))
        rerank: dict[str, Any] = {"k": verify.rerank_k}
        for who, vecs in (("projector", projector.project(x)), ("backbone", x)):
            rows, sims = shortlists(vecs, everyone, verify.rerank_k)
            rerank[who] = rerank_top1(reranker, keys, labels, everyone, rows, sims)
        found["rerank"] = {**rerank, "cost": reranker.counts.to_dict()}
        return found

    @staticmethod
    def _calibrate(
        cfg: EvaluateConfig,
        split_dir: SplitDir,
        projector: Projector,
        verify: VerifyConfig,
        out: EvaluateDir,
        loaded: dict[str, EmbeddingSet],
    ) -> dict[str, Any]:
        """Fit on val, check on test; ``loaded``: splits already read (not read again)."""
        from sbe.verify.evaluation import calibrate_splits

        missing = [s for s in ("val", "test") if not split_dir.split_path(s).is_file()]
        if missing:
            return {"skipped": f"no {' or '.join(missing)} split in {split_dir.root}"}
        fit, check = (
            _pair_split(loaded[s] if s in loaded else load_split(split_dir, s), projector)
            for s in ("val", "test")
        )
        try:
            cal, summary = calibrate_splits(
                fit,
                check,
                target_precision=verify.target_precision,
                max_pairs=cfg.calibration_pairs,
                seed=cfg.seed,
            )
        except SbeError as e:  # e.g. a split without a same-building pair
            return {"skipped": str(e)}
        cal.fit["split"] = "val"
        path = out.path(EvaluateDir.CALIBRATION)
        # an identical fit is not rewritten: publish, which reads the file, stays up to date
        if not (path.is_file() and _same_calibration(path, cal)):
            cal.save(path)
        return {
            "file": EvaluateDir.CALIBRATION,
            "embedding": "projector",
            "fit_split": "val",
            "test_split": "test",
            **summary,
        }

    @staticmethod
    def _rerank_split(
        cfg: EvaluateConfig,
        data: EmbeddingSet,
        projector: Projector,
        images: Path | None,
        matcher: LocalMatcher,
        verify: VerifyConfig,
    ) -> dict[str, Any]:
        import pyarrow.parquet as pq

        from sbe.report.gallery import image_bytes_by_id, pick_queries
        from sbe.verify.evaluation import rerank_top1, shortlists

        split_file = RunDir(cfg.run).split_dir().split_path(cfg.split)
        image_ids = pq.read_table(split_file, columns=["image_id"]).column(0).to_numpy()
        queries = pick_queries(data.building_ids, cfg.rerank_queries, cfg.seed)
        if len(queries) == 0:
            return {"skipped": f"no {cfg.split} building has two images"}
        z = projector.project(data.embeddings.float().numpy())
        rows, sims = shortlists(z, queries, verify.rerank_k)
        wanted = np.unique(np.concatenate([image_ids[queries], image_ids[rows.reshape(-1)]]))
        blobs = image_bytes_by_id(images, wanted.tolist())

        def read(key: Hashable) -> bytes | str:
            return blobs.get(int(key), "not in the ingest output")  # type: ignore[call-overload]

        reranker = _reranker(matcher, read, verify)
        found = rerank_top1(
            reranker, [int(i) for i in image_ids], data.building_ids, queries, rows, sims
        )
        return {
            "split": cfg.split,
            "embedding": "projector",
            "sample_seed": cfg.seed,
            "images_dir": str(images) if images is not None else None,
            **found,
            "cost": reranker.counts.to_dict(),
        }

    @staticmethod
    def _vpr(
        cfg: EvaluateConfig,
        data: VprData,
        backbone: Backbone | None,
        backbone_problem: str,
        projector: Projector,
        matcher: LocalMatcher | None,
        verify: VerifyConfig,
        device: Any,
    ) -> dict[str, Any]:
        from sbe.verify.vpr import evaluate_vpr

        if cfg.model is not None:
            from sbe.models.published import load_embedder

            embedder = load_embedder(cfg.model, device=str(device))

            def embed(paths: list[Path]) -> np.ndarray:
                from sbe.data.images import ImageDecodeError

                try:
                    return embedder.embed_images(paths)
                except ImageDecodeError as e:  # "image <i>: why": name the file
                    i, _, why = str(e).removeprefix("image ").partition(": ")
                    name = paths[int(i)] if i.isdigit() and int(i) < len(paths) else cfg.vpr
                    raise SbeError(f"--vpr: cannot decode {name}: {why or e}") from None

            source = f"model {cfg.model}"
        elif backbone is not None:
            bb = backbone

            def embed(paths: list[Path]) -> np.ndarray:
                return projector.project(embed_images(bb, paths))

            source = "run (backbone + projector)"
        else:
            raise SbeError(
                f"--vpr: cannot embed with the run's backbone ({backbone_problem}); "
                "pass --model MODEL_DIR"
            )
        if matcher is None:
            found = evaluate_vpr(data, embed, rerank_k=verify.rerank_k)
            return {"folder": str(cfg.vpr), "embedding": source, **found}
        reranker = _reranker(matcher, _read_path, verify)

        def rerank(query: Path, candidates: list[Path], sims: np.ndarray) -> np.ndarray:
            return reranker.order(query, candidates, sims)

        found = evaluate_vpr(data, embed, rerank=rerank, rerank_k=verify.rerank_k)
        return {
            "folder": str(cfg.vpr),
            "embedding": source,
            **found,
            "cost": reranker.counts.to_dict(),
        }


def _same_calibration(path: Path, cal: Any) -> bool:
    from sbe.verify.calibration import Calibration

    try:
        old = Calibration.load(path).to_dict()
    except SbeError:
        return False
    # compared as JSON text: a NaN (nothing called on the fitting pairs) equals itself there
    return json.dumps(old, sort_keys=True) == json.dumps(cal.to_dict(), sort_keys=True)


def _reranker(
    matcher: LocalMatcher, read: Callable[[Hashable], bytes | str], verify: VerifyConfig
) -> ShortlistReranker:
    from sbe.verify.evaluation import ShortlistReranker

    return ShortlistReranker(matcher, read, combine=verify.combine, min_matches=verify.min_matches)


def _read_path(key: Hashable) -> bytes | str:
    try:
        return Path(str(key)).read_bytes()
    except OSError as e:
        return f"cannot read: {e.strerror}"


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


def verification_lines(results: dict[str, Any]) -> list[str]:
    """``sbe evaluate``: the calibrated decision, the re-ranking and the VPR lines."""
    lines: list[str] = []
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
            f"({at}): val precision {number(f['precision'], '%')} recall {number(f['recall'], '%')}; "
            f"test precision {number(t['precision'], '%')}{_interval(t)} "
            f"recall {number(t['recall'], '%')} "
            f"({t['called']:,} of {t['pairs']:,} pairs called) -> {cal['file']}"
        )
    lm = (results.get("landmarks") or {}).get("rerank")
    if lm:
        for who in ("backbone", "projector"):
            lines.append(_top1_line(f"real photos re-ranked ({who}", lm[who], counts=True))
        lines.append(_cost(lm["cost"]))
    rr = results.get("rerank") or {}
    if "skipped" in rr:
        lines.append(f"split re-ranking: skipped ({rr['skipped']})")
    elif rr:
        label = f"{rr['split']} sample re-ranked ({rr['queries']} queries, projector"
        lines.append(_top1_line(label, rr, counts=False))
        lines.append(_cost(rr["cost"]))
    vpr = results.get("vpr") or {}
    if vpr:
        g, r = vpr["global"], vpr.get("reranked")
        cells = ", ".join(
            f"R@{k.split('@')[1]} {number(v, '%')}" + (f" -> {number(r[k], '%')}" if r else "")
            for k, v in g.items()
        )
        lines.append(
            f"VPR {vpr['folder']} ({vpr['queries']} queries, {vpr['database']} database, "
            f"{vpr['queries_without_positive']} without a positive within 25 m): {cells}"
        )
        if "cost" in vpr:
            lines.append(_cost(vpr["cost"]))
    return lines


def _interval(counts: dict[str, Any]) -> str:
    """`` (95% CI 95.7-99.2%)`` for a precision with its Wilson interval (none: ``""``)."""
    ci = counts.get("precision_ci95")
    return f" (95% CI {ci[0] * 100:.1f}-{ci[1] * 100:.1f}%)" if ci else ""


def _top1_line(label: str, r: dict[str, Any], *, counts: bool) -> str:
    """One re-ranking result (:func:`sbe.verify.evaluation.rerank_top1`): as counts of the
    queries (``22/26``) or as shares (``Recall@1 55.0 %``)."""
    n = r["queries"]

    def show(v: int) -> str:
        return f"{v}/{n}" if counts else number(v / n, "%")

    return (
        f"{label} top {r['k']}): {'correct@1' if counts else 'Recall@1'} "
        f"{show(r['global_correct@1'])} -> {show(r['reranked_correct@1'])} "
        f"(ceiling {show(r['positive_in_top_k'])}, gained {r['gained']}, lost {r['lost']})"
    )


def _cost(c: dict[str, Any]) -> str:
    fallbacks = (
        f", {c['fallback_queries']} queries kept the global order" if c["fallback_queries"] else ""
    )
    failed = f", {c['failed_images']} photos unreadable" if c["failed_images"] else ""
    return (
        f"  re-ranking cost: {c['per_query_cpu_s']:.2f} CPU s / {c['per_query_wall_s']:.2f} s "
        f"wall per re-ranked shortlist ({c['pairs_matched']:,} pairs matched{failed}{fallbacks})"
    )
