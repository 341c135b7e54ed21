"""Procedural surface textures: smooth noise, brick, stone, plaster, siding, corrugated metal, panels.

Every texture is a float32 multiplier field (H, W, 3) around 1.0 that is applied to a base colour,
computed with numpy from a seeded generator (never from PIL's unseeded noise), so renders are
byte-identical across runs and processes.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

_BANK_SEED = 20160911  # fixed: the noise bank is part of the renderer, not of the world


@functools.lru_cache(maxsize=8)
def _smooth_bank(cells: int, side: int) -> np.ndarray:
    """A (side, side) float32 field of smooth noise in [-1, 1] with ``cells`` blobs per side."""
    rng = np.random.default_rng([_BANK_SEED, cells, side])
    coarse = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    out = np.asarray(img, dtype=np.float32)
    return out / max(1e-6, float(np.abs(out).max()))


@functools.lru_cache(maxsize=4)
def grain_bank(side: int = 512) -> np.ndarray:
    """(side, side) float32 white noise in [-1, 1] (fixed seed)."""
    rng = np.random.default_rng([_BANK_SEED, 1, side])
    return rng.uniform(-1.0, 1.0, (side, side)).astype(np.float32)


BANK_SIDE = 1536


def _tile(bank: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w) window of ``bank`` at a random offset, tiling (with mirroring) when needed."""
    side = bank.shape[0]
    if h > side or w > side:
        reps_y, reps_x = -(-h // side) + 1, -(-w // side) + 1
        row = np.concatenate([bank, bank[:, ::-1]] * ((reps_x + 1) // 2), axis=1)
        bank = np.concatenate([row, row[::-1]] * ((reps_y + 1) // 2), axis=0)
    y0 = int(rng.integers(0, bank.shape[0] - h + 1))
    x0 = int(rng.integers(0, bank.shape[1] - w + 1))
    return bank[y0 : y0 + h, x0 : x0 + w]


def smooth_noise(h: int, w: int, rng: np.random.Generator, blobs: int = 6) -> np.ndarray:
    """(h, w) smooth noise in about [-1, 1]; ``blobs`` controls the feature size (per 512 px)."""
    return _tile(_smooth_bank(blobs * BANK_SIDE // 512, BANK_SIDE), h, w, rng)


def grain(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w) white noise in [-1, 1]."""
    return _tile(grain_bank(BANK_SIDE), h, w, rng)


def _masonry(
    h: int,
    w: int,
    ppm: float,
    rng: np.random.Generator,
    course_m: float,
    unit_m: float,
    joint_m: float,
    tone: float,
    joint_shade: float,
    colour_var: float,
) -> np.ndarray:
    """Running-bond masonry (bricks or ashlar blocks) as an (h, w, 3) multiplier."""
    y_m = (h - 1 - np.arange(h, dtype=np.float32)) / ppm  # height above the texture bottom
    x_m = np.arange(w, dtype=np.float32) / ppm
    course = np.floor(y_m / course_m).astype(np.int64)
    fy = y_m / course_m - course
    offset = (course % 2) * (unit_m / 2.0)
    xs = x_m[None, :] + offset[:, None].astype(np.float32)
    unit = np.floor(xs / unit_m).astype(np.int64)
    fx = xs / unit_m - unit
    idx = (course % 97)[:, None] * 89 + unit % 89
    tone_tab = rng.normal(0.0, tone, 97 * 89).astype(np.float32)
    hue_tab = rng.normal(0.0, colour_var, 97 * 89).astype(np.float32)
    t = tone_tab[idx]
    hue = hue_tab[idx]
    # joints: soft lines whose darkness fades when they are thinner than a pixel
    line_strength = min(1.0, joint_m * ppm)
    in_joint = (fy[:, None] < joint_m / course_m) | (fx < joint_m / unit_m)
    t = np.where(in_joint, np.float32(joint_shade * line_strength), t)
    hue = np.where(in_joint, np.float32(0.0), hue)
    # warm/cool variation: red up and blue down together (fired-clay colour spread)
    return np.stack([1.0 + t + hue, 1.0 + t, 1.0 + t - hue], axis=-1).astype(np.float32)


def material_field(
    material: str, h: int, w: int, ppm: float, rng: np.random.Generator
) -> np.ndarray:
    """The surface multiplier of ``material`` over an (h, w) pixel area.

    Args:
        material: ``brick``, ``stone``, ``plaster``, ``stucco``, ``siding``, ``corrugated``,
            ``panel`` (unknown names fall back to plaster).
        h, w: size in pixels.
        ppm: pixels per metre.
        rng: generator for per-surface variation (consumed).

    Returns:
        float32 array (h, w, 3), values around 1.
    """
    blot = smooth_noise(h, w, rng, blobs=max(2, int(6 * 40 / max(ppm, 1.0))))
    fine = grain(h, w, rng)
    if material == "brick":
        base = _masonry(h, w, ppm, rng, 0.075, 0.23, 0.012, 0.10, 0.35, 0.04)
        return base * (1.0 + 0.05 * blot)[..., None]
    if material == "stone":
        course = float(rng.uniform(0.35, 0.55))
        base = _masonry(h, w, ppm, rng, course, course * float(rng.uniform(1.6, 2.4)), 0.015,
                        0.05, -0.25, 0.015)  # fmt: skip
        return base * (1.0 + 0.06 * blot + 0.03 * fine)[..., None]
    if material == "siding":
        board = float(rng.uniform(0.14, 0.2))
        y_m = (h - 1 - np.arange(h, dtype=np.float32)) / ppm
        f = (y_m / board) % 1.0
        prof = 0.93 + 0.12 * f - 0.2 * (f < 0.08)  # lighter toward the top of each board
        f = prof[:, None].astype(np.float32) + 0.04 * blot + 0.015 * fine
        return f[..., None].repeat(3, axis=2).astype(np.float32)
    if material == "corrugated":
        period = float(rng.uniform(0.12, 0.18))
        x_m = np.arange(w, dtype=np.float32) / ppm
        rib = 1.0 + 0.09 * np.sin(2.0 * np.pi * x_m / period)
        return ((rib[None, :] + 0.05 * blot + 0.015 * fine)[..., None]).repeat(3, axis=2)
    if material == "panel":
        pw, ph = float(rng.uniform(2.4, 3.6)), float(rng.uniform(1.2, 3.0))
        y_m = (h - 1 - np.arange(h, dtype=np.float32)) / ppm
        x_m = np.arange(w, dtype=np.float32) / ppm
        table = rng.normal(0.0, 0.035, (64, 64)).astype(np.float32)
        tone = table[(y_m // ph).astype(np.int64)[:, None] % 64, (x_m // pw).astype(np.int64) % 64]
        joint = ((y_m % ph) < 0.03)[:, None] | ((x_m % pw) < 0.03)[None, :]
        f = 1.0 + tone + 0.05 * blot + 0.02 * fine - 0.25 * joint * min(1.0, 0.03 * ppm * 2)
        return f[..., None].repeat(3, axis=2).astype(np.float32)
    # plaster / stucco: painted render with stains and a fine grain
    amp = 0.07 if material == "plaster" else 0.05
    f = 1.0 + amp * blot + (0.035 if material == "stucco" else 0.02) * fine
    return f[..., None].repeat(3, axis=2).astype(np.float32)


def grime_field(h: int, w: int, ppm: float, amount: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w) darkening multiplier: dirt near the ground and rain streaks from the top."""
    y = np.arange(h, dtype=np.float32)
    from_bottom = (h - 1 - y) / ppm
    base = 1.0 - amount * 0.12 * np.exp(-from_bottom / 0.8)
    streak = smooth_noise(w, 1 + w // 8, rng, blobs=40)[:, 0] if w > 1 else np.zeros(1)
    streak = np.clip(streak, 0.0, 1.0) * amount * 0.08
    return (base[:, None] - streak[None, :w] * (y[:, None] / max(h, 1)) ** 0.5).astype(np.float32)
