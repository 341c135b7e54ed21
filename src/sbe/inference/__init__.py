"""Embedding new data with a published model: plan row-range chunks, decode, embed, write parts.

Shared by the local engine (``sbe.stages.embed``) and the Ray engine (``sbe.distributed``).
"""

from sbe.inference.pipeline import ChunkResult, ChunkWriter, embed_chunks
from sbe.inference.plan import Chunk, InputInfo, Plan, inspect_input, make_plan, read_chunks

__all__ = [
    "Chunk",
    "ChunkResult",
    "ChunkWriter",
    "InputInfo",
    "Plan",
    "embed_chunks",
    "inspect_input",
    "make_plan",
    "read_chunks",
]
