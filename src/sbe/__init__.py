"""sbe: Spatial Building Embeddings.

Street-level photos of buildings in, identity embeddings out: images of the same building land
close together, and a geographic expert reads location, climate zone and season from them.
"""

__version__ = "0.1.0"
