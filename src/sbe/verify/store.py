"""A compact on-disk store of gallery local features, read memory-mapped.

Layout of the folder (all written atomically, ``meta.json`` last):

* ``keypoints.npy``  float16 (total, 2): x, y in px of the scaled image (float16 is exact to
  0.25 px up to 1024 px, well inside the RANSAC threshold);
* ``descriptors.npy`` float16 (total, 128);
* ``offsets.npy``    int64 (N + 1,): image i owns rows ``offsets[i]:offsets[i + 1]``;
* ``sizes.npy``      int32 (N, 2): (width, height) of each scaled image;
* ``rows.npy``       optional, int64 (R + 1,): index row r owns images ``rows[r]:rows[r + 1]``
  (an index over buildings stores several photos per row; a row without any is a missing one);
* ``meta.json``      settings used (max_keypoints, max_side), counts, format version.

About 260 bytes per keypoint (128 x 2 descriptor + 2 x 2 position), so 1024 keypoints cost
~0.27 MB per image and 512 keypoints ~0.13 MB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sbe.errors import SbeError
from sbe.storage import atomic_path, write_json_atomic
from sbe.verify.local import ImageInput, LocalFeatures, LocalMatcher, LocalSettings

FORMAT = "sbe-local-features/1"
FILES = ("keypoints.npy", "descriptors.npy", "offsets.npy", "sizes.npy", "meta.json")
ROWS_FILE = "rows.npy"


def extract_local_features(
    images: Iterable[ImageInput],
    out_dir: str | os.PathLike[str],
    *,
    settings: LocalSettings | None = None,
    matcher: LocalMatcher | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Extract DISK features of gallery images into a :class:`LocalFeatureStore` folder.

    Args:
        images: the gallery, in index order (row i of the store = image i).
        out_dir: the folder (created; files in it are replaced atomically).
        settings: extraction settings (``max_keypoints``, ``max_side``).
        matcher: an existing :class:`LocalMatcher` to reuse (its settings win).
        device: torch device when no matcher is given.
        progress: called with the number of images done after each image.

    Returns:
        The ``meta.json`` contents: ``{"format", "images", "keypoints", "bytes", "settings"}``.
    """
    matcher = matcher or LocalMatcher(settings, device=device)
    feats = []
    for i, image in enumerate(images):
        feats.append(matcher.extract(image))
        if progress is not None:
            progress(i + 1)
    return write_local_features(
        out_dir,
        feats,
        settings=matcher.settings,
        n_images=len(feats),
        n_keypoints=sum(len(f) for f in feats),
    )


def write_local_features(
    out_dir: str | os.PathLike[str],
    features: Iterable[LocalFeatures],
    *,
    settings: LocalSettings,
    n_images: int,
    n_keypoints: int,
    rows: np.ndarray | None = None,
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """Write features into a store folder, streaming (memory-mapped output, not held in RAM).

    Args:
        out_dir: the folder (created; every file replaced atomically, ``meta.json`` last).
        features: the images' features in store order; exactly ``n_images`` of them holding
            ``n_keypoints`` keypoints in all (counted first so the arrays are sized once).
        settings: the extraction settings, recorded in ``meta.json``.
        rows: optional int64 (R + 1,) row -> image offsets (``rows.npy``; see the module doc).
        extra: more ``meta.json`` entries (e.g. missing-photo counts).

    Returns:
        The ``meta.json`` contents.

    Raises:
        ValueError: the features do not add up to ``n_images`` / ``n_keypoints``.
    """
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or len(rows) < 1 or rows[0] != 0 or rows[-1] != n_images:
            raise ValueError(f"rows must be offsets from 0 to {n_images}")
        if (np.diff(rows) < 0).any():
            raise ValueError("rows must be offsets (non-decreasing)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Remove the old meta first: a crash mid-rewrite leaves no folder that claims to be complete.
    (out / "meta.json").unlink(missing_ok=True)
    offsets = np.zeros(n_images + 1, dtype=np.int64)
    sizes = np.zeros((n_images, 2), dtype=np.int32)
    with (
        atomic_path(out / "keypoints.npy") as kp_tmp,
        atomic_path(out / "descriptors.npy") as desc_tmp,
    ):
        kp = np.lib.format.open_memmap(kp_tmp, "w+", np.float16, (n_keypoints, 2))
        desc = np.lib.format.open_memmap(desc_tmp, "w+", np.float16, (n_keypoints, 128))
        i = at = 0
        for f in features:
            if i >= n_images or at + len(f) > n_keypoints:
                raise ValueError("more features than n_images / n_keypoints")
            kp[at : at + len(f)] = f.keypoints
            desc[at : at + len(f)] = f.descriptors
            at += len(f)
            sizes[i] = f.image_size
            offsets[i + 1] = at
            i += 1
        if i != n_images or at != n_keypoints:
            raise ValueError(f"{i} images / {at} keypoints, expected {n_images} / {n_keypoints}")
        kp.flush()
        desc.flush()
        del kp, desc
    arrays: dict[str, np.ndarray] = {"offsets.npy": offsets, "sizes.npy": sizes}
    if rows is not None:
        arrays[ROWS_FILE] = rows
    else:
        (out / ROWS_FILE).unlink(missing_ok=True)
    for name, arr in arrays.items():
        with atomic_path(out / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    meta = {
        "format": FORMAT,
        "images": n_images,
        "keypoints": n_keypoints,
        "bytes": int(n_keypoints * (2 + 128) * 2 + sum(a.nbytes for a in arrays.values())),
        "settings": asdict(settings),
        **({"rows": len(rows) - 1} if rows is not None else {}),
        **(extra or {}),
    }
    write_json_atomic(out / "meta.json", meta)
    return meta


class LocalFeatureStore:
    """Read-only, memory-mapped access to a folder written by :func:`extract_local_features`.

    Args:
        folder: the store folder.

    Raises:
        SbeError: the folder is missing, incomplete or of another format.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise SbeError(
                f"{meta_path} not found: build the local features first (extract_local_features)"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise SbeError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.keypoints = np.load(self.folder / "keypoints.npy", mmap_mode="r")
        self.descriptors = np.load(self.folder / "descriptors.npy", mmap_mode="r")
        self.offsets = np.load(self.folder / "offsets.npy")
        self.sizes = np.load(self.folder / "sizes.npy")
        if len(self.offsets) != len(self.sizes) + 1 or self.offsets[-1] != len(self.keypoints):
            raise SbeError(f"{self.folder}: arrays disagree; rebuild the local features")
        self.rows: np.ndarray | None = None
        if "rows" in self.meta:
            rows_path = self.folder / ROWS_FILE
            if not rows_path.is_file():
                raise SbeError(f"{rows_path} not found; rebuild the local features")
            self.rows = np.load(rows_path)
            if len(self.rows) != self.meta["rows"] + 1 or self.rows[-1] != len(self.sizes):
                raise SbeError(f"{rows_path}: disagrees with the store; rebuild the local features")

    @property
    def settings(self) -> LocalSettings:
        """The extraction settings the store was written with."""
        return LocalSettings(**self.meta["settings"])

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> LocalFeatures:
        """Features of gallery image ``i`` (copied out of the memory map)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return LocalFeatures(
            keypoints=np.asarray(self.keypoints[a:b], dtype=np.float32),
            descriptors=np.array(self.descriptors[a:b]),
            image_size=(int(self.sizes[i, 0]), int(self.sizes[i, 1])),
        )

    @property
    def num_rows(self) -> int:
        """Index rows the store maps (``rows.npy``); without one, one image per row."""
        return len(self) if self.rows is None else len(self.rows) - 1

    def images_of(self, row: int) -> range:
        """Store images of index row ``row`` (empty: none of its photos is stored)."""
        if self.rows is None:
            return range(row, row + 1)
        return range(int(self.rows[row]), int(self.rows[row + 1]))

    def row_features(self, row: int) -> list[LocalFeatures]:
        """Features of every stored photo of index row ``row`` (maybe none)."""
        return [self[i] for i in self.images_of(row)]

    def bytes_per_image(self) -> float:
        """Mean on-disk size of one image's features, bytes."""
        files = [*FILES, *([ROWS_FILE] if self.rows is not None else [])]
        total = sum((self.folder / f).stat().st_size for f in files)
        return total / max(1, len(self))
