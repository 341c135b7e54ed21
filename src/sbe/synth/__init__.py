"""A synthetic street-view world in the raw 3D Street View format (``sbe synth``).

Modules, one concept each:

- :mod:`~sbe.synth.cities`: real cities, their Koppen-Geiger climate and weather odds;
- :mod:`~sbe.synth.styles` (with ``styles.toml``): region-dependent building families;
- :mod:`~sbe.synth.genome`: the per-building plan drawn from a family, and near-duplicates;
- :mod:`~sbe.synth.world`: the world's map regions; :mod:`~sbe.synth.region`: one region's
  street blocks and buildings; :mod:`~sbe.synth.views`: drives, targets and views;
  :mod:`~sbe.synth.plan`: the records of a region's plan;
- :mod:`~sbe.synth.season`: dates, seasons by hemisphere, the sun, weather;
- :mod:`~sbe.synth.difficulty`: the difficulty dial and what it controls;
- :mod:`~sbe.synth.textures`: wall materials; :mod:`~sbe.synth.paint`: drawing in metres;
  :mod:`~sbe.synth.facade`: a whole facade, from :mod:`~sbe.synth.openings` (windows, doors),
  :mod:`~sbe.synth.groundfloor`, :mod:`~sbe.synth.balconies` and :mod:`~sbe.synth.roofs`;
  :mod:`~sbe.synth.props`: street objects;
- :mod:`~sbe.synth.camera`, :mod:`~sbe.synth.metadata`: camera geometry, the `d`/`t` lines;
- :mod:`~sbe.synth.scene`: rendering one view;
- :mod:`~sbe.synth.writers`, :mod:`~sbe.synth.preview`: tars, ground truth, packaged
  parquet, contact sheet.
"""

#: bumped whenever rendering changes the bytes of the output (invalidates existing tars)
RENDER_VERSION = 3
