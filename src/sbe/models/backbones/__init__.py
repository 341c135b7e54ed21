"""Frozen image encoders behind one interface (:class:`Backbone`)."""

from sbe.models.backbones.base import Backbone, Preprocess

__all__ = ["Backbone", "Preprocess"]
