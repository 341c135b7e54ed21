"""A split whose embeddings encode building identity (for calibration tests), and a run evaluated
on it (`sbe evaluate` with its calibration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_identity_split(out: Path, dim: int = 16, noise: float = 0.8) -> None:
    """The geo toy split (which hardly encodes identity) with embeddings that do: a random centre
    per building plus noise, so same-building pairs are mostly, not always, the closest."""
    from geotoy import TOY_BACKBONE, toy_tables

    from sbe.storage import Manifest, fixed_size_list, write_manifest, write_part

    tables = toy_tables(cities=6, buildings_per_city=24, images_per_building=3, dim=dim, seed=0)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10_000, dim))
    identity = {**TOY_BACKBONE, "dim": dim}
    for name, t in tables.items():
        ids = t.column("building_id").to_numpy()
        emb = centres[ids % len(centres)] + noise * rng.normal(size=(len(ids), dim))
        col = t.schema.get_field_index("embedding")
        t = t.set_column(col, t.schema.field(col), fixed_size_list(emb.astype(np.float16)))
        write_part(t, out / f"{name}.parquet", {"backbone": identity})
    write_manifest(out, Manifest(stage="split", outputs=[f"{s}.parquet" for s in tables]))


def calibrate_run(run_dir: Path, target_precision: float = 0.95, **evaluate: object) -> dict:
    """Give a run (``best/`` + ``run.json``, e.g. ``make_run``) an identity split at the place
    its ``run.json`` names and run ``sbe evaluate`` (with its calibration) on it.

    Returns:
        The evaluation results.
    """
    import json

    from sbe.config import load_config
    from sbe.stages.base import run_stage
    from sbe.stages.evaluate import EvaluateStage

    record = json.loads((run_dir / "run.json").read_text())
    split = Path(record["input"])
    if not (split / "val.parquet").is_file():
        write_identity_split(split, dim=int(record["projector"]["input_dim"]))
    cfg = load_config(
        None,
        {
            "evaluate": {"run": run_dir, "landmarks": run_dir / "no-photos", **evaluate},
            "verify": {"target_precision": target_precision},
        },
    )
    _, results = run_stage(EvaluateStage(), cfg.section("evaluate"), full_config=cfg)
    return results
