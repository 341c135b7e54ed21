"""embed_stream: order, failures and NaN handling are the same with one model call or several."""

from __future__ import annotations

import io
import itertools
import threading
import time

import numpy as np
import pytest
from PIL import Image

from sbe.models.backbones.base import Backbone, Preprocess
from sbe.models.backbones.pipeline import ImageReadError, embed_stream


class MeanColour(Backbone):
    """Embeds a batch as its per-image mean RGB; counts how many calls overlap."""

    name = "mean-colour"
    dim = 3
    preprocess = Preprocess(resize=16, crop=16, mean=(0, 0, 0), std=(1, 1, 1))
    runtime = "onnx"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.max_active = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.02)  # long enough for calls to overlap when they can
        out = images.reshape(len(images), -1, 3).mean(1).astype(np.float32)
        out[(images[:, 0, 0, 0] == 7)] = np.nan  # a marker pixel makes the model fail
        with self.lock:
            self.active -= 1
        return out


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _images(n: int) -> list[bytes | None]:
    data: list[bytes | None] = [_jpeg((10 * i % 250, 100, 200)) for i in range(n)]
    data[3] = b"not a jpeg"
    data[5] = None  # unreadable
    data[8] = _jpeg((7, 7, 7))
    return data


def _read(data: list[bytes | None]):
    def read(i: int) -> bytes:
        if data[i] is None:
            raise ImageReadError("gone")
        return data[i]

    return read


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lanes_give_the_same_stream(lanes: int) -> None:
    data = _images(23)
    bb = MeanColour()
    batches = list(embed_stream(bb, len(data), _read(data), batch_size=4, workers=2, lanes=lanes))
    bounds = [(b.start, b.stop) for b in batches]
    assert bounds[0][0] == 0 and bounds[-1][1] == 23
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous, in order
    sizes = [e - s for s, e in bounds]
    if lanes == 1:
        assert sizes == [4, 4, 4, 4, 4, 3]
    else:  # evened out over a multiple of `lanes` batches, none above the batch size
        assert len(sizes) % lanes == 0 and max(sizes) <= 4 and max(sizes) - min(sizes) <= 1
    indices = np.concatenate([b.indices for b in batches])
    failures = {f.index: f.reason for b in batches for f in b.failures}
    assert failures == {3: "corrupt_jpeg", 5: "unreadable_bytes", 8: "non_finite_embedding"}
    assert indices.tolist() == [i for i in range(23) if i not in failures]
    emb = np.concatenate([b.embeddings for b in batches])
    assert emb.shape == (20, 3) and np.isfinite(emb).all()
    # JPEG is lossy: the mean colour comes back within a few levels
    expected = np.array([[10 * i % 250, 100, 200] for i in indices], np.float32)
    assert np.abs(emb - expected).max() < 4
    # one lane: one model call at a time; more: calls overlap
    assert bb.max_active == 1 if lanes == 1 else bb.max_active >= 2


class ListReader:
    """A picklable reader (decoder processes get a copy)."""

    def __init__(self, data: list[bytes | None]) -> None:
        self.data = data

    def __call__(self, i: int) -> bytes:
        if self.data[i] is None:
            raise ImageReadError("gone")
        return self.data[i]


def test_decoder_processes_give_the_same_stream() -> None:
    data = _images(23)
    threads = list(embed_stream(MeanColour(), 23, _read(data), batch_size=4, workers=2))
    procs = list(embed_stream(MeanColour(), 23, ListReader(data), batch_size=4, processes=2))
    assert [(b.start, b.stop) for b in procs] == [(b.start, b.stop) for b in threads]
    for a, b in zip(threads, procs, strict=True):
        assert np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.embeddings, b.embeddings)  # the same decode, bit for bit
        assert [(f.index, f.reason) for f in a.failures] == [
            (f.index, f.reason) for f in b.failures
        ]
    # the pool outlives a stream: a second one reuses it
    again = list(embed_stream(MeanColour(), 5, ListReader(data), batch_size=2, processes=2))
    assert np.concatenate([b.indices for b in again]).tolist() == [0, 1, 2, 4]


def test_decoder_processes_need_no_torch() -> None:
    """What a decoder process unpickles (decode_batch, Preprocess, TarReader) must not pull in
    torch: every spawned worker would pay seconds of import time."""
    import subprocess
    import sys

    code = (
        "import sys, sbe.data.preprocess, sbe.data.tarstream; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
