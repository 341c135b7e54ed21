"""The code a published model ships: copied into the model folder by ``sbe publish`` and run there
by ``AutoModel.from_pretrained(..., trust_remote_code=True)``.

Each module is self-contained (torch, transformers, numpy and Pillow; nothing of ``sbe``: an
import-linter contract checks it), so it sits in the base layer, and the library imports it as the
one implementation of the projector, pooling and preprocessing (``sbe.models``, ``sbe.data``).
"""
