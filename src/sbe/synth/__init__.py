"""A synthetic street-view world in the raw 3D Street View format (``sbe synth``).

Modules, one concept each:

- :mod:`~sbe.synth.cities`: real cities, their Koppen-Geiger climate and weather odds;
- :mod:`~sbe.synth.styles`: region-dependent building families and the per-building plan;
- :mod:`~sbe.synth.world`: map regions, street blocks, buildings, targets, panoramas, views;
- :mod:`~sbe.synth.season`: dates, seasons by hemisphere, the sun, weather;
- :mod:`~sbe.synth.difficulty`: the difficulty dial and what it controls;
- :mod:`~sbe.synth.textures`, :mod:`~sbe.synth.facade`, :mod:`~sbe.synth.props`:
  drawing materials, facades and street objects;
- :mod:`~sbe.synth.camera`, :mod:`~sbe.synth.metadata`: camera geometry, the `d`/`t` lines;
- :mod:`~sbe.synth.scene`: rendering one view;
- :mod:`~sbe.synth.writers`, :mod:`~sbe.synth.preview`: tars, ground truth, packaged
  parquet, contact sheet.
"""

#: bumped whenever rendering changes the bytes of the output (invalidates existing tars)
RENDER_VERSION = 3
