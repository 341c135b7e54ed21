"""A compact on-disk store of gallery local features, read memory-mapped.

Layout of the folder (all written atomically, ``meta.json`` last):

* ``keypoints.npy``  float16 (total, 2): x, y in px of the scaled image (float16 is exact to
  0.25 px up to 1024 px, well inside the RANSAC threshold);
* ``descriptors.npy`` float16 (total, 128);
* ``offsets.npy``    int64 (N + 1,): image i owns rows ``offsets[i]:offsets[i + 1]``;
* ``sizes.npy``      int32 (N, 2): (width, height) of each scaled image;
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kps, descs, sizes, offsets = [], [], [], [0]
    for i, image in enumerate(images):
        f = matcher.extract(image)
        kps.append(f.keypoints.astype(np.float16))
        descs.append(f.descriptors.astype(np.float16))
        sizes.append(f.image_size)
        offsets.append(offsets[-1] + len(f))
        if progress is not None:
            progress(i + 1)
    arrays: dict[str, np.ndarray] = {
        "keypoints.npy": np.concatenate(kps) if kps else np.zeros((0, 2), np.float16),
        "descriptors.npy": np.concatenate(descs) if descs else np.zeros((0, 128), np.float16),
        "offsets.npy": np.asarray(offsets, dtype=np.int64),
        "sizes.npy": np.asarray(sizes, dtype=np.int32).reshape(-1, 2),
    }
    # Remove the old meta first: a crash mid-rewrite leaves no folder that claims to be complete.
    (out / "meta.json").unlink(missing_ok=True)
    for name, arr in arrays.items():
        with atomic_path(out / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    meta = {
        "format": FORMAT,
        "images": len(sizes),
        "keypoints": int(offsets[-1]),
        "bytes": int(sum(a.nbytes for a in arrays.values())),
        "settings": asdict(matcher.settings),
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

    def bytes_per_image(self) -> float:
        """Mean on-disk size of one image's features, bytes."""
        total = sum((self.folder / f).stat().st_size for f in FILES)
        return total / max(1, len(self))
