"""The ``sbe report`` page: gather stage outputs (:mod:`.gather`), render them (:mod:`.html`,
:mod:`.svg`, :mod:`.worldmap`, :mod:`.thumbs`) and assemble one self-contained file (:mod:`.build`)."""
