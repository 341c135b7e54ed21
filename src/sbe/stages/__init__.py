"""The pipeline's stages, one module each, all behind one protocol (:mod:`sbe.stages.base`).

Stages are looked up by name and imported only when used, so ``sbe --help`` stays light.
"""

from __future__ import annotations

import importlib

from sbe.stages.base import Input, Stage, StageContext, run_stage

#: stage name -> ``module:class``; ``sbe run`` runs ``sbe.config.PIPELINE_STAGES`` in order (tune is
#: run on its own)
STAGE_CLASSES: dict[str, str] = {
    "synth": "sbe.stages.synth:SynthStage",
    "ingest": "sbe.stages.ingest:IngestStage",
    "label": "sbe.stages.label:LabelStage",
    "backbone": "sbe.stages.backbone:BackboneStage",
    "split": "sbe.stages.split:SplitStage",
    "neighbors": "sbe.stages.neighbors:NeighborsStage",
    "train": "sbe.stages.train:TrainStage",
    "evaluate": "sbe.stages.evaluate:EvaluateStage",
    "geo": "sbe.stages.geo:GeoStage",
    "publish": "sbe.stages.publish:PublishStage",
    "embed": "sbe.stages.embed:EmbedStage",
    "aggregate": "sbe.stages.aggregate:AggregateStage",
    "index": "sbe.stages.index:IndexStage",
    "cluster": "sbe.stages.cluster:ClusterStage",
    "report": "sbe.stages.report:ReportStage",
    "tune": "sbe.stages.tune:TuneStage",
}


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (imports its module on first use).

    Raises:
        KeyError: no such stage.
    """
    module_name, _, class_name = STAGE_CLASSES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    stage: Stage = cls()
    return stage


__all__ = ["STAGE_CLASSES", "Input", "Stage", "StageContext", "get_stage", "run_stage"]
