"""Image decoding: EXIF orientation (with draft-mode decoding kept) and every Pillow mode -> RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sbe.data.images import ImageDecodeError, ImageModeError, decode_rgb, to_rgb
from sbe.data.preprocess import Preprocess, decode_batch
from sbe.modelcode import processing_sbe

ORIENTATION = 0x0112


def facade(w: int = 192, h: int = 128, seed: int = 0) -> np.ndarray:
    """An asymmetric, photo-like uint8 (h, w, 3) picture: gradients, a block, a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + 2 * y) % 256], axis=-1).astype(np.int32)
    img[h // 8 : h // 3, w // 10 : w // 2] = (230, 40, 40)  # a red block, top-left
    img += rng.integers(-6, 7, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "JPEG", orientation: int | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kw["exif"] = exif
    if fmt == "JPEG":
        kw.setdefault("quality", 95)
        kw.setdefault("subsampling", 0)
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- EXIF orientation


#: how the camera stored an upright picture for each Orientation value (its inverse is applied)
STORED = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_orientation_gives_the_upright_pixels(orientation: int) -> None:
    upright = Image.fromarray(facade())
    stored = upright
    for t in STORED[orientation]:
        stored = stored.transpose(t)
    png = encode(stored, "PNG", orientation)  # lossless: the upright pixels come back exactly
    got = decode_rgb(png)
    assert got.size == upright.size
    np.testing.assert_array_equal(np.asarray(got), np.asarray(upright))
    # ... and the same holds for the copy shipped with published models
    np.testing.assert_array_equal(np.asarray(processing_sbe.open_image(png)), np.asarray(upright))


def test_rotated_jpeg_keeps_draft_decoding_and_matches_its_upright_self() -> None:
    upright = Image.fromarray(facade(768, 512))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 512 wide, 768 high
    rotated_jpeg = encode(stored, orientation=6)
    bare_jpeg = encode(stored)  # the same pixels without the tag
    # draft mode still applies (1/4 scale keeps the short side >= 100), then the turn
    got = decode_rgb(rotated_jpeg, min_side=100)
    assert got.size == (192, 128)
    want = decode_rgb(bare_jpeg, min_side=100).transpose(Image.Transpose.ROTATE_270)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # and it is the upright photo, up to JPEG loss (the tagless decode is not)
    ref = np.asarray(decode_rgb(encode(upright), min_side=100), dtype=np.float32)
    assert np.abs(np.asarray(got, dtype=np.float32) - ref).mean() < 4
    sideways = np.asarray(decode_rgb(bare_jpeg, min_side=100))
    assert sideways.shape == (192, 128, 3)


def test_rotated_photo_embeds_like_its_upright_self() -> None:
    from sbe.models.backbones import load_backbone, resolve_spec

    bb = load_backbone(resolve_spec("efficientnet-lite0").identity(), runtime="torch", device="cpu")
    upright = Image.fromarray(facade(448, 336, seed=1))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    blobs = [encode(upright), encode(stored, orientation=6), encode(stored)]
    batch, ok, failures = decode_batch(bb.preprocess, blobs.__getitem__, 0, 3)
    assert ok == [0, 1, 2] and not failures
    emb = bb.embed(batch)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert float(emb[0] @ emb[1]) > 0.99  # oriented: the same picture
    assert float(emb[0] @ emb[2]) < float(emb[0] @ emb[1]) - 0.02  # ignoring the tag is not


def test_pil_inputs_are_oriented_without_being_changed() -> None:
    upright = Image.fromarray(facade())
    stored = Image.open(io.BytesIO(encode(upright.transpose(Image.Transpose.ROTATE_90), "PNG", 6)))
    stored.load()
    got = processing_sbe.open_image(stored)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(upright))
    assert stored.size == (128, 192) and stored.getexif().get(ORIENTATION) == 6
    assert processing_sbe.orient(got) is got  # oriented once: the tag is gone


# --------------------------------------------------------------------------- modes


def test_16bit_png_is_scaled_not_white() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    png = encode(Image.fromarray(ramp), "PNG")
    img = Image.open(io.BytesIO(png))
    assert img.mode in ("I;16", "I")  # Pillow keeps 16 bits
    got = np.asarray(decode_rgb(png))
    assert got.shape == (64, 64, 3)
    want = ((ramp.astype(np.uint32) + 128) // 257).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], want)
    assert 120 < got.mean() < 135  # a ramp, not the near-white 255 of a clipping convert


def test_16bit_through_the_batch_decoder() -> None:
    dark = np.full((40, 40), 20000, dtype=np.uint16)  # ~31% grey
    pp = Preprocess(resize=32, crop=32, mean=(0, 0, 0), std=(1, 1, 1))
    batch, ok, failures = decode_batch(pp, [encode(Image.fromarray(dark), "PNG")].__getitem__, 0, 1)
    assert ok == [0] and not failures
    assert np.all(batch == 78)  # round(20000 / 257)


def solid(mode: str, value, size=(4, 4), **info) -> Image.Image:
    img = Image.new(mode, size, value)
    img.info.update(info)
    return img


@pytest.mark.parametrize(
    ("img", "want"),
    [
        (solid("RGB", (1, 2, 3)), (1, 2, 3)),
        (solid("L", 77), (77, 77, 77)),
        (solid("1", 1), (255, 255, 255)),
        (solid("I;16", 65535), (255, 255, 255)),
        (solid("I;16", 257 * 100), (100, 100, 100)),
        (solid("I;16B", 257 * 50), (50, 50, 50)),
        (solid("I", 257 * 200), (200, 200, 200)),
        (solid("F", 0.5), (128, 128, 128)),
        (solid("F", 1.0), (255, 255, 255)),
        (solid("RGBA", (10, 20, 30, 255)), (10, 20, 30)),
        (solid("RGBA", (10, 20, 30, 0)), (255, 255, 255)),  # transparent -> white background
        (solid("RGBA", (0, 0, 0, 128)), (127, 127, 127)),
        (solid("LA", (100, 255)), (100, 100, 100)),
        (solid("LA", (100, 0)), (255, 255, 255)),
        (solid("CMYK", (0, 255, 255, 0)), (255, 0, 0)),
        (solid("CMYK", (0, 0, 0, 255)), (0, 0, 0)),
        (solid("YCbCr", (255, 128, 128)), (255, 255, 255)),
        (solid("HSV", (0, 255, 255)), (255, 0, 0)),
        (solid("RGB", (9, 9, 9), transparency=(9, 9, 9)), (255, 255, 255)),  # colour key
    ],
    ids=lambda v: v.mode if isinstance(v, Image.Image) else None,
)
def test_mode_converts_to_expected_rgb(img: Image.Image, want: tuple[int, int, int]) -> None:
    got = to_rgb(img)
    assert got.mode == "RGB"
    np.testing.assert_allclose(np.asarray(got)[0, 0], want, atol=1)


def test_palette_with_transparency() -> None:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([200, 10, 10, 0, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)  # index 1 is transparent
    got = np.asarray(decode_rgb(encode(img, "PNG", transparency=1)))
    assert tuple(got[0, 0]) == (255, 255, 255)
    assert tuple(got[1, 1]) == (200, 10, 10)


def test_lab_goes_through_a_colour_transform() -> None:
    white = np.asarray(to_rgb(solid("LAB", (255, 128, 128))))[0, 0]
    grey = np.asarray(to_rgb(solid("LAB", (128, 128, 128))))[0, 0]
    assert white.min() >= 250  # L=100: white (a channel copy would give 255, 128, 128)
    assert abs(int(grey[0]) - int(grey[2])) <= 2 and 100 < grey[0] < 140  # neutral mid grey


def test_cmyk_jpeg() -> None:
    got = np.asarray(decode_rgb(encode(solid("CMYK", (0, 255, 255, 0), (16, 16)))), np.int32)
    assert np.abs(got - np.array([255, 0, 0])).max() <= 6


@pytest.mark.parametrize(
    "img",
    [
        Image.fromarray(np.full((4, 4), 2.0, dtype=np.float32)),  # float outside 0..1
        Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)),
        Image.fromarray(np.full((4, 4), -5, dtype=np.int32)),  # 32-bit outside 0..65535
    ],
    ids=["float-range", "float-nan", "int-negative"],
)
def test_unconvertible_modes_are_failures(img: Image.Image) -> None:
    with pytest.raises(ImageModeError):
        to_rgb(img)
    assert issubclass(ImageModeError, ImageDecodeError)


def test_unconvertible_image_is_a_recorded_failure() -> None:
    tiff = encode(Image.fromarray(np.full((8, 8), 7.5, dtype=np.float32)), "TIFF")
    good = encode(Image.fromarray(facade(40, 40)))
    pp = Preprocess(resize=32, crop=32, mean=(0, 0, 0), std=(1, 1, 1))
    batch, ok, failures = decode_batch(pp, [good, tiff, b"not an image"].__getitem__, 0, 3)
    assert ok == [0] and batch.shape == (1, 32, 32, 3)
    assert [(f.index, f.reason) for f in failures] == [(1, "unsupported_mode"), (2, "corrupt_jpeg")]
