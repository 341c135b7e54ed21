"""A synthetic street-view world in the raw 3D Street View format (``sbe synth``).

Modules, one concept each:

- :mod:`~sbe.data.synth.cities`: real cities, their Koppen-Geiger climate and weather odds;
- :mod:`~sbe.data.synth.styles`: region-dependent building families and the per-building plan;
- :mod:`~sbe.data.synth.world`: map regions, street blocks, buildings, targets, panoramas, views;
- :mod:`~sbe.data.synth.season`: dates, seasons by hemisphere, the sun, weather;
- :mod:`~sbe.data.synth.difficulty`: the difficulty dial and what it controls;
- :mod:`~sbe.data.synth.textures`, :mod:`~sbe.data.synth.facade`, :mod:`~sbe.data.synth.props`:
  drawing materials, facades and street objects;
- :mod:`~sbe.data.synth.camera`, :mod:`~sbe.data.synth.metadata`: camera geometry, the `d`/`t` lines;
- :mod:`~sbe.data.synth.scene`: rendering one view;
- :mod:`~sbe.data.synth.writers`, :mod:`~sbe.data.synth.preview`: tars, ground truth, packaged
  parquet, contact sheet.
"""

#: bumped whenever rendering changes the bytes of the output (invalidates existing tars)
RENDER_VERSION = 3
