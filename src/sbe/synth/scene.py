"""Render one street-level view: sky, ground, the street side's facades, light, props, weather, camera.

A :class:`SceneRenderer` renders every view of one map region; it caches facade textures and
sprites, so a building is drawn once and then only warped. Layers, back to front:

1. sky gradient (weather-dependent, clouds when partly cloudy) and the ground plane (road,
   kerb, sidewalk; snow or wet by conditions), with the building's cast shadow;
2. distant buildings seen through gaps between facades;
3. facades of the street side, each warped with the camera's plane homography into its own
   bounding box, lit by the sun (facing it or not, shadow line of the buildings across the street)
   or by overcast light;
4. props in front of the facade (trees with seasonal foliage, poles, parked cars of that drive,
   pedestrians of that moment), each a billboard at its distance from the facade;
5. fog, rain streaks or falling snow; then exposure, white balance, contrast, saturation, blur,
   sensor noise, vignetting and JPEG encoding.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from sbe.synth.camera import Camera, pil_perspective_coeffs, texture_to_plane
from sbe.synth.capture import camera_model_for
from sbe.synth.difficulty import Knobs
from sbe.synth.facade import render_facade, with_snow
from sbe.synth.metadata import ViewGeometry, view_geometry
from sbe.synth.paint import FacadeTexture, mix, shade
from sbe.synth.plan import DatasetPlan, Line, View
from sbe.synth.projection import line_points, project_polygon, project_segments
from sbe.synth.props import (
    Sprite,
    car_sprite,
    pedestrian_sprite,
    pole_sprite,
    tree_sprite,
)
from sbe.synth.season import (
    Conditions,
    foliage_by_latitude,
    foliage_state,
    season_grade,
    verge_colour,
)
from sbe.synth.textures import smooth_noise

_UP = np.array([0.0, 0.0, 1.0])

_SKY = {  # (zenith, horizon)
    "clear": ((62, 118, 196), (172, 203, 236)),
    "partly_cloudy": ((88, 136, 204), (190, 212, 235)),
    "overcast": ((160, 165, 174), (204, 207, 212)),
    "rain": ((108, 114, 125), (156, 161, 170)),
    "fog": ((186, 189, 194), (204, 206, 209)),
    "snowfall": ((170, 174, 182), (208, 210, 215)),
}
_FOG_COLOUR = (201, 204, 208)


def facade_ppm(image_size: int) -> float:
    """Facade texture resolution (pixels per metre) for an output size."""
    return float(min(32.0, max(8.0, image_size / 18.0)))


@dataclass(frozen=True)
class RenderSettings:
    """How to render: output side in pixels, JPEG quality, difficulty knobs."""

    image_size: int
    jpeg_quality: int
    knobs: Knobs


@dataclass(frozen=True)
class RenderedView:
    """One rendered image and what the ground truth needs to know about it."""

    jpeg: bytes
    geometry: ViewGeometry
    occlusion: float
    sun_on_facade: bool


@functools.lru_cache(maxsize=256)
def _lut(
    gains: tuple[float, float, float],
    gamma: float = 1.0,
    contrast: float = 1.0,
    alpha: bool = False,
) -> list[int]:
    """A per-channel lookup table: ((x/255)^gamma * gain - 0.5) * contrast + 0.5, clipped."""
    x = np.arange(256, dtype=np.float64) / 255.0
    out: list[int] = []
    for g in gains:
        y = ((x**gamma) * g - 0.5) * contrast + 0.5
        out.extend(np.clip(np.round(y * 255.0), 0, 255).astype(int).tolist())
    if alpha:
        out.extend(range(256))
    return out


@functools.lru_cache(maxsize=8)
def _overlay_bank(kind: str, size: int) -> Image.Image:
    """Cached full-frame overlays (2x the image side, cropped at random offsets per view)."""
    side = 2 * size
    rng = np.random.default_rng([7, size, len(kind)])
    if kind == "noise":
        arr = np.clip(rng.normal(128.0, 4.0, (side, side, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if kind == "rain":
        for _ in range(int(side * side / 900)):
            x, y = (float(v) for v in rng.uniform(0, side, 2))
            length = float(rng.uniform(0.03, 0.08)) * size
            d.line(
                [(x, y), (x + 0.18 * length, y + length)],
                fill=(215, 220, 228, int(rng.integers(40, 110))),
                width=1,
            )
    elif kind == "snow":
        for _ in range(int(side * side / 700)):
            x, y = (float(v) for v in rng.uniform(0, side, 2))
            r = float(rng.uniform(0.6, 2.2)) * size / 400
            d.ellipse(
                (x - r, y - r, x + r, y + r), fill=(250, 250, 252, int(rng.integers(140, 235)))
            )
    return img


@functools.lru_cache(maxsize=4)
def _vignette(size: int) -> Image.Image:
    """Darkening toward the corners (lens falloff), as an RGB multiplier image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - size / 2, yy - size / 2) / (size / 2)
    arr = np.clip(255 * (1.0 - 0.28 * np.clip(r - 0.35, 0, None) ** 2), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L").convert("RGB")


def _crop_bank(bank: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    x, y = (int(v) for v in rng.integers(0, bank.size[0] - size + 1, 2))
    return bank.crop((x, y, x + size, y + size))


class SceneRenderer:
    """Renders the views of one map region (caches textures and sprites between views)."""

    def __init__(self, plan: DatasetPlan, settings: RenderSettings) -> None:
        self.plan = plan
        self.settings = settings
        self.size = settings.image_size
        self.ppm = facade_ppm(settings.image_size)
        self.style = plan.style_info
        self._textures: dict[tuple[int, bool, int], tuple[Image.Image, FacadeTexture]] = {}
        self._info: dict[int, FacadeTexture] = {}
        self._sprites: dict[tuple, Sprite] = {}

    # -- caches ----------------------------------------------------------------------------------

    def texture(self, facade: int, snow: bool, level: int = 0) -> tuple[Image.Image, float]:
        """The facade's texture (snowy or not) at mip ``level``, and its pixels per metre.

        Textures are kept premultiplied (``RGBa``): PIL's bilinear transform of an ``RGBA``
        image would convert the whole source to premultiplied and back on every call.
        """
        key = (facade, snow, level)
        if key not in self._textures:
            if level > 0:
                if (facade, snow, 0) not in self._textures:
                    self.texture(facade, snow, 0)
                base, tex = self._textures[(facade, snow, 0)]
                f = 2**level
                img = base.resize(
                    (max(2, base.size[0] // f), max(2, base.size[1] // f)), Image.Resampling.BOX
                )
                self._textures[key] = (img, tex)
            else:
                if facade not in self._info:
                    fac = self.plan.facades[facade]
                    genome = self.plan.buildings[fac.building].genome
                    self._info[facade] = render_facade(genome, fac.width, self.ppm, side=fac.side)
                info = self._info[facade]
                rgba = with_snow(info, np.random.default_rng([facade, 3])) if snow else info.image
                self._textures[key] = (rgba.convert("RGBa"), info)
        img, tex = self._textures[key]
        return img, tex.ppm * img.size[0] / tex.image.size[0]

    def texture_info(self, facade: int) -> FacadeTexture:
        """The facade's :class:`FacadeTexture` (drawn on first use)."""
        if facade not in self._info:
            self.texture(facade, False, 0)
        return self._info[facade]

    def drop_line_cache(self, keep_lines: set[int]) -> None:
        """Forget textures of facades not on ``keep_lines`` (bounded memory per worker)."""
        for key in [k for k in self._textures if self.plan.facades[k[0]].line not in keep_lines]:
            del self._textures[key]
        for f in [f for f in self._info if self.plan.facades[f].line not in keep_lines]:
            del self._info[f]

    def _foliage(self, kind: str, date, lat: float) -> str:
        """Foliage state: by latitude for gazetteer places, the ten cities' calendar otherwise."""
        if self.plan.place is not None:
            return foliage_by_latitude(kind, date, lat)
        return foliage_state(kind, date, lat)

    def _sprite(self, key: tuple, make) -> Sprite:
        if key not in self._sprites:
            if len(self._sprites) > 400:
                self._sprites.clear()
            spr = make()
            # premultiplied, so that bilinear warps do not convert the source on every call
            self._sprites[key] = Sprite(spr.image.convert("RGBa"), spr.width_m, spr.height_m)
        return self._sprites[key]

    # -- rendering -------------------------------------------------------------------------------

    def render(self, view: View) -> RenderedView:
        """Render ``view`` and encode it as JPEG."""
        plan, size = self.plan, self.size
        rng = np.random.default_rng([view.seed, 5])
        knobs = self.settings.knobs
        geom = view_geometry(plan, view)
        cam = geom.camera(view, size)
        target = plan.targets[view.target_id]
        line = plan.lines[target.line]
        drive = plan.drives[plan.panoramas[view.panorama_id].drive]
        cond = drive.conditions
        weather = cond.weather
        # partly cloudy: the sun may be behind a cloud at this moment
        sun_out = cond.sunny and (weather == "clear" or rng.random() < 0.55)
        n3 = np.array([line.normal[0], line.normal[1], 0.0])
        sun = np.array([
            math.cos(math.radians(cond.sun_elevation_deg)) * math.sin(math.radians(cond.sun_azimuth_deg)),
            math.cos(math.radians(cond.sun_elevation_deg)) * math.cos(math.radians(cond.sun_azimuth_deg)),
            math.sin(math.radians(cond.sun_elevation_deg)),
        ])  # fmt: skip
        cos_inc = float(sun @ n3)
        lit = sun_out and cos_inc > 0.06
        img = self._sky(cam, cond, sun_out, rng)
        u_lo, u_hi = self._visible_u(cam, line, target.u)
        self._ground(img, cam, line, drive, cond, u_lo, u_hi, lit, sun_out, cos_inc)
        self._backdrop(img, cam, line, u_lo, u_hi, weather, rng)
        img = img.convert("RGBA")  # background drawn in RGB (so translucent shapes blend)
        # light on the facades: direct sun (with the shadow line of the buildings across the
        # street), the street side in its own shadow, or diffuse light under clouds
        warm = 1.0 + 0.12 * max(0.0, 1.0 - cond.sun_elevation_deg / 25.0)
        shadow: tuple[list[int], list[tuple[float, float]]] | None = None
        # seasonal gazetteer places: less light under a low winter sun; x1.0 keeps the cities' bytes
        dim = 1.0
        if plan.seasonal:
            dim = 0.6 + 0.4 * min(1.0, max(0.0, cond.sun_elevation_deg / 40.0))
        if lit:
            k = (0.92 + 0.32 * cos_inc) * dim
            main_lut = _lut((k * 1.03 * warm, k, k * 0.94 / warm), alpha=True)
            street_w = plan.streets[line.street].width
            v_sh = (
                line.opposite_height_m
                - street_w * math.sin(math.radians(cond.sun_elevation_deg)) / cos_inc
            )
            if v_sh > 0.0:
                poly = project_polygon(
                    cam,
                    np.array(
                        [
                            line.point(u_lo),
                            line.point(u_hi),
                            line.point(u_hi, v_sh),
                            line.point(u_lo, v_sh),
                        ]
                    ),
                )
                if poly:
                    shadow = (_lut((0.56, 0.6, 0.72), alpha=True), poly)
        elif sun_out:
            main_lut = _lut((0.62 * dim, 0.66 * dim, 0.78 * dim), alpha=True)
        else:
            g = {
                "rain": (0.64, 0.66, 0.7),
                "fog": (0.86, 0.87, 0.89),
                "snowfall": (0.84, 0.86, 0.9),
            }.get(weather, (0.83, 0.84, 0.87))
            g = (g[0] * dim, g[1] * dim, g[2] * dim)
            main_lut = _lut(g, contrast=0.9 if weather != "rain" else 1.05, alpha=True)
        self._facades(img, cam, line, u_lo, u_hi, cond.snow_cover, main_lut, shadow)
        occ = Image.new("L", (size, size), 0)
        self._props(img, occ, cam, line, view, drive, cond, target.u, u_lo, u_hi, main_lut, rng)
        img = self._weather(img, geom, cond, rng)
        if plan.seasonal:
            img = self._season_grade(img, cond)
        img = self._camera_effects(img.convert("RGB"), rng, knobs, weather, cond.date.year)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=self.settings.jpeg_quality)
        c0, c1 = int(size * 0.3), int(size * 0.7)
        occlusion = float((np.asarray(occ)[c0:c1, c0:c1] > 127).mean())
        return RenderedView(buf.getvalue(), geom, occlusion, lit)

    def _visible_u(self, cam: Camera, line: Line, u_t: float) -> tuple[float, float]:
        """Range of ``u`` on the line's plane inside the image (clipped to +-60 m of the target)."""
        s = self.size
        o = line.point(0.0)
        n3 = np.array([line.normal[0], line.normal[1], 0.0])
        t3 = np.array([line.tangent[0], line.tangent[1], 0.0])
        c = np.asarray(cam.position)
        us: list[float] = []
        lo, hi = u_t - 60.0, u_t + 60.0
        for x, y in (
            (0, 0),
            (s / 2, 0),
            (s, 0),
            (s, s / 2),
            (s, s),
            (s / 2, s),
            (0, s),
            (0, s / 2),
        ):
            r = cam.ray(x, y)
            denom = float(n3 @ r)
            if denom < -1e-9:
                lam = float(n3 @ (o - c)) / denom
                us.append(float((c + lam * r - o) @ t3))
            else:  # the ray never reaches the plane: the plane extends to the horizon that way
                us.append(hi if float(r @ t3) > 0 else lo)
        return max(lo, min(us) - 1.0), min(hi, max(us) + 1.0)

    def _sky(
        self, cam: Camera, cond: Conditions, sun_out: bool, rng: np.random.Generator
    ) -> Image.Image:
        s = self.size
        zen, hor = _SKY.get(cond.weather, _SKY["overcast"])
        if cond.weather == "clear" and cond.sun_elevation_deg < 15:
            hor = mix(hor, (238, 206, 168), 0.5)
        f = cam.focal_px
        ys = np.arange(s, dtype=np.float64)
        elev = cam.pitch_deg + np.degrees(np.arctan((s / 2 + cam.shift[1] - ys) / f))
        t = np.clip(elev / 55.0, 0.0, 1.0)[:, None] ** 0.7
        col = (1 - t) * np.asarray(hor, dtype=np.float64) + t * np.asarray(zen, dtype=np.float64)
        img = Image.fromarray(col.astype(np.uint8)[:, None, :], "RGB").resize(
            (s, s), Image.Resampling.NEAREST
        )
        if cond.weather in ("partly_cloudy", "overcast"):
            # cumulus: two noise scales with crisp edges, grey undersides; overcast: a textured deck
            partly = cond.weather == "partly_cloudy"
            big = smooth_noise(s, s, rng, blobs=4)
            fine = smooth_noise(s, s, rng, blobs=16)
            c = 0.7 * big + 0.3 * fine
            if partly:
                a = np.clip((c - float(rng.uniform(0.0, 0.3))) * 5.0, 0.0, 1.0)
                tone = np.clip(235.0 + 22.0 * fine, 195.0, 250.0)
            else:
                a = np.clip((c + 0.6) * 0.9, 0.0, 0.9)
                tone = np.clip(182.0 + 14.0 * fine, 160.0, 200.0)
            sky = np.asarray(img, dtype=np.float32)
            cloud = np.stack([tone, tone + 1.5, tone + 4.0], axis=-1)
            covered = sky * (1.0 - a[..., None]) + cloud * a[..., None]
            img = Image.fromarray(np.clip(covered, 0, 255).astype(np.uint8), "RGB")
        return img

    def _ground(self, img: Image.Image, cam: Camera, line: Line, drive, cond: Conditions,
                u_lo: float, u_hi: float, lit: bool, sun_out: bool, cos_inc: float) -> None:  # fmt: skip
        st = self.plan.streets[line.street]
        d = ImageDraw.Draw(img)
        sw = line.sidewalk_m
        far_w = st.width + 2.0
        wet = cond.weather == "rain"
        asphalt: tuple[int, ...] = self.style.asphalt
        paving: tuple[int, ...] = self.style.paving
        kerb: tuple[int, ...] = self.style.kerb
        if cond.snow_cover:
            asphalt, paving, kerb = (178, 180, 185), (226, 230, 236), (232, 235, 240)
        elif wet:
            asphalt, paving, kerb = shade(asphalt, 0.62), shade(paving, 0.7), shade(kerb, 0.75)

        def poly(u0: float, u1: float, w0: float, w1: float, fill) -> None:
            pts = np.array(
                [
                    line.point(u0, 0, w0),
                    line.point(u1, 0, w0),
                    line.point(u1, 0, w1),
                    line.point(u0, 0, w1),
                ]
            )
            p = project_polygon(cam, pts)
            if p:
                d.polygon(p, fill=fill)

        poly(u_lo - 20, u_hi + 20, 0.0, far_w, asphalt)
        poly(u_lo - 20, u_hi + 20, 0.0, sw, paving)
        poly(u_lo - 20, u_hi + 20, sw - 0.18, sw, kerb)
        if cond.snow_cover:
            for w0 in (sw + 1.4, sw + 3.2):
                poly(u_lo - 20, u_hi + 20, w0, w0 + 0.35, (120, 120, 124))
        else:
            # paving joints and the dashed centre line
            jc = shade(paving, 0.82)
            us = np.arange(math.floor(u_lo), u_hi, 1.2)
            if len(us):
                a = line_points(line, us, 0.0)
                b = line_points(line, us, sw - 0.18)
                for p0, p1 in project_segments(cam, a, b):
                    d.line([p0, p1], fill=jc, width=1)
            cw = st.width / 2
            dash = (215, 212, 200) if not wet else (150, 150, 145)
            us = np.arange(math.floor(u_lo / 9) * 9, u_hi, 9.0)
            if len(us):
                lw = max(1, round(cam.focal_px * 0.12 / max(1.0, st.width / 2)))
                for p0, p1 in project_segments(
                    cam, line_points(line, us, cw), line_points(line, us + 3.0, cw)
                ):
                    d.line([p0, p1], fill=dash, width=lw)
        place = self.plan.place
        if place is not None:  # a planting strip along the kerb: fresh, lush, leaf-strewn, dormant
            verge = (
                (226, 230, 236)
                if cond.snow_cover
                else verge_colour(place.koppen, cond.date, place.lat)
            )
            poly(u_lo - 20, u_hi + 20, max(0.3, 0.3 * sw), sw - 0.18, verge)
        if sun_out and not lit:
            # the street side is in the shadow of its own buildings
            el = max(3.0, cond.sun_elevation_deg)
            depth = min(far_w, 10.0 / math.tan(math.radians(el)))
            pts = np.array([line.point(u_lo - 20, 0, 0), line.point(u_hi + 20, 0, 0),
                            line.point(u_hi + 20, 0, depth), line.point(u_lo - 20, 0, depth)])  # fmt: skip
            p = project_polygon(cam, pts)
            if p:
                ImageDraw.Draw(img, "RGBA").polygon(p, fill=(12, 14, 24, 100))

    def _backdrop(self, img: Image.Image, cam: Camera, line: Line, u_lo: float, u_hi: float,
                  weather: str, rng: np.random.Generator) -> None:  # fmt: skip
        """Distant buildings where the street side has gaps (between detached houses, cross streets)."""
        d = ImageDraw.Draw(img)
        hor = _SKY.get(weather, _SKY["overcast"])[1]
        edges = [(self.plan.facades[f].u0, self.plan.facades[f].u1) for f in line.facades]
        gaps = []
        prev = u_lo - 30.0
        for a, b in edges:
            if a - prev > 0.2:
                gaps.append((prev, a))
            prev = max(prev, b)
        gaps.append((prev, u_hi + 30.0))
        base_col = mix(self.style.families[0].walls[0], (120, 120, 120), 0.5)
        for a, b in gaps:
            if b < u_lo or a > u_hi:
                continue
            grng = np.random.default_rng([int(a * 10) & 0xFFFF, line.id, 9])
            u = a
            while u < b:
                w = float(grng.uniform(4.0, 14.0))
                h = float(grng.uniform(5.0, 22.0))
                col = mix(shade(base_col, float(grng.uniform(0.7, 1.2))), hor, 0.55)
                pts = np.array([line.point(u, 0, -8.0), line.point(min(b, u + w), 0, -8.0),
                                line.point(min(b, u + w), h, -8.0), line.point(u, h, -8.0)])  # fmt: skip
                p = project_polygon(cam, pts)
                if p:
                    d.polygon(p, fill=col)
                u += w

    def _facades(self, img: Image.Image, cam: Camera, line: Line, u_lo: float, u_hi: float, snow: bool,
                 lut: list[int], shadow: tuple[list[int], list[tuple[float, float]]] | None) -> None:  # fmt: skip
        """Warp, light and composite every facade of the line that is in view onto ``img``."""
        size = self.size
        t3 = np.array([line.tangent[0], line.tangent[1], 0.0])
        rot = cam.rotation()
        for f in line.facades:
            fac = self.plan.facades[f]
            if fac.u1 < u_lo or fac.u0 > u_hi:
                continue
            info = self.texture_info(f)
            corners = np.array(
                [
                    line.point(fac.u0),
                    line.point(fac.u1),
                    line.point(fac.u1, info.height_m),
                    line.point(fac.u0, info.height_m),
                ]
            )
            poly = project_polygon(cam, corners)
            if not poly:
                continue
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            x0, y0 = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
            x1, y1 = min(size, math.ceil(max(xs))), min(size, math.ceil(max(ys)))
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            # mip level: minified facades get a pre-filtered texture (no aliasing, less work)
            centre = line.point((fac.u0 + fac.u1) / 2, info.height_m / 2)
            depth = float((centre - np.asarray(cam.position)) @ rot[2])
            px_per_m = cam.focal_px / max(depth, 0.5)
            level = 0
            while level < 3 and px_per_m * 2 ** (level + 1) < self.ppm * 0.9:
                level += 1
            tex, tppm = self.texture(f, snow, level)
            h = cam.plane_homography(line.point(fac.u0), t3, _UP) @ texture_to_plane(
                tppm, 0.0, tex.size[1] / tppm
            )
            coeffs = pil_perspective_coeffs(h, (x0, y0))
            part = tex.transform(
                (x1 - x0, y1 - y0),
                Image.Transform.PERSPECTIVE,
                coeffs,
                Image.Resampling.BILINEAR,
                fillcolor=(0, 0, 0, 0),
            )
            part = part.convert("RGBA")
            lit_part = part.point(lut)
            if shadow is not None:
                mask = Image.new("L", part.size, 0)
                ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in shadow[1]], fill=255)
                lit_part = Image.composite(part.point(shadow[0]), lit_part, mask)
            img.alpha_composite(lit_part, dest=(x0, y0))

    def _place_sprite(self, img: Image.Image, occ: Image.Image | None, cam: Camera, line: Line,
                      u: float, w: float, sprite: Sprite, lut: list[int]) -> None:  # fmt: skip
        size = self.size
        t3 = np.array([line.tangent[0], line.tangent[1], 0.0])
        origin = line.point(u - sprite.width_m / 2, 0.0, w)
        corners = np.array(
            [
                origin,
                origin + sprite.width_m * t3,
                origin + sprite.width_m * t3 + sprite.height_m * _UP,
                origin + sprite.height_m * _UP,
            ]
        )
        cam_pts = (corners - np.asarray(cam.position)) @ cam.rotation().T
        if (cam_pts[:, 2] < 0.5).any():
            return
        poly = project_polygon(cam, corners)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0 = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
        x1, y1 = min(size, math.ceil(max(xs))), min(size, math.ceil(max(ys)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            return
        sppm = sprite.image.size[0] / sprite.width_m
        h = cam.plane_homography(origin, t3, _UP) @ texture_to_plane(
            sppm, 0.0, sprite.image.size[1] / sppm
        )
        part = sprite.image.transform(
            (x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, pil_perspective_coeffs(h, (x0, y0)),
            Image.Resampling.BILINEAR, fillcolor=(0, 0, 0, 0),
        ).convert("RGBA").point(lut)  # fmt: skip
        img.alpha_composite(part, dest=(x0, y0))
        if occ is not None:
            occ.paste(255, (x0, y0), part.getchannel("A"))

    def _props(self, img, occ, cam, line, view, drive, cond, u_t, u_lo, u_hi, lut, rng) -> None:
        items: list[tuple[float, float, Sprite]] = []
        sw = line.sidewalk_m
        lat = self.plan.lat0
        for i, p in enumerate(line.props):
            if p.u < u_lo - 8 or p.u > u_hi + 8:
                continue
            if p.kind == "tree":
                state = self._foliage(p.tree_kind, cond.date, lat)
                spr = self._sprite(("tree", line.id, i, state, cond.snow_cover),
                                   lambda p=p, state=state: tree_sprite(p.tree_kind, state, p.height, p.seed, cond.snow_cover))  # fmt: skip
                items.append((max(0.5, sw - 0.8), p.u, spr))
            else:
                spr = self._sprite(("pole", line.id, i), lambda p=p: pole_sprite(p.kind, p.seed))
                items.append((max(0.3, sw - 0.35), p.u, spr))
        # parked cars of this drive along the kerb
        crng = np.random.default_rng([drive.car_seed, line.id])
        rate = self.settings.knobs.cars_per_10m / 10.0
        if rate > 0 and line.facades:
            u = self.plan.facades[line.facades[0]].u0 + float(crng.exponential(1.0 / rate))
            end = self.plan.facades[line.facades[-1]].u1
            while u < end:
                seed = int(crng.integers(2**31))
                if u_lo - 6 < u < u_hi + 6:
                    spr = self._sprite(
                        ("car", seed, cond.snow_cover),
                        lambda s=seed: car_sprite(s, cond.snow_cover),
                    )
                    items.append((sw + 1.9, u, spr))
                u += 5.0 + float(crng.exponential(1.0 / rate))
        # people on the sidewalk at this moment
        n_ped = int(rng.poisson(self.settings.knobs.pedestrians_per_view))
        cold = cond.winterness > 0.6 and self.plan.city_info.climate_group in "CDE"
        for _ in range(n_ped):
            seed = int(rng.integers(2**31))
            spr = pedestrian_sprite(seed, cold, cond.weather == "rain")
            spr = Sprite(spr.image.convert("RGBa"), spr.width_m, spr.height_m)
            items.append(
                (float(rng.uniform(0.4, max(0.6, sw - 0.3))), u_t + float(rng.normal(0, 4.0)), spr)
            )
        for w, u, spr in sorted(items, key=lambda it: it[0]):
            self._place_sprite(img, occ, cam, line, u, w, spr, lut)

    def _weather(
        self, img: Image.Image, geom: ViewGeometry, cond: Conditions, rng: np.random.Generator
    ) -> Image.Image:
        """Fog (by distance), rain streaks or falling snow, on the RGBA frame."""
        s = self.size
        vis = {"fog": float(rng.uniform(25.0, 70.0)), "snowfall": float(rng.uniform(60.0, 150.0)),
               "rain": float(rng.uniform(150.0, 400.0))}.get(cond.weather, 2000.0)  # fmt: skip
        f = 1.0 - math.exp(-geom.distance_m / vis)
        if f > 0.01:
            img = Image.blend(img, Image.new("RGBA", img.size, (*_FOG_COLOUR, 255)), min(0.8, f))
        if cond.weather == "rain":
            img.alpha_composite(_crop_bank(_overlay_bank("rain", s), s, rng))
        elif cond.weather == "snowfall":
            img.alpha_composite(_crop_bank(_overlay_bank("snow", s), s, rng))
        return img

    def _season_grade(self, img: Image.Image, cond: Conditions) -> Image.Image:
        """The season's light where the climate has one: warm and saturated in summer, cool and
        drab in winter, golden in autumn (:func:`~sbe.synth.season.season_grade`)."""
        place = self.plan.place
        assert place is not None
        summer, autumn = season_grade(place.koppen, cond.date, place.lat)
        gains = (
            1.0 + 0.13 * summer + 0.14 * autumn,
            1.0 + 0.04 * summer + 0.05 * autumn,
            1.0 - 0.15 * summer - 0.16 * autumn,
        )
        img = img.point(
            _lut((round(gains[0], 3), round(gains[1], 3), round(gains[2], 3)), alpha=True)
        )
        sat = 1.0 + 0.45 * summer + 0.15 * autumn
        grey = img.convert("L").convert(img.mode)
        return Image.blend(grey, img, max(0.0, sat))

    def _camera_effects(
        self, img: Image.Image, rng: np.random.Generator, knobs: Knobs, weather: str, year: int
    ) -> Image.Image:
        """The camera: its generation's look, exposure and white balance of the moment,
        saturation, tone curve, softness or sharpening, vignetting, compression, sensor noise."""
        s = self.size
        cm = camera_model_for(year)
        k = knobs.camera_strength

        def toward(neutral: float, value: float) -> float:
            return neutral + k * (value - neutral)

        er, cc = knobs.exposure_range, knobs.colour_cast
        exposure = float(np.exp(rng.uniform(-er, er)))
        wb = (
            exposure
            * (1.0 + rng.uniform(-cc, cc, 3))
            * np.array([toward(1.0, g) for g in cm.gains])
        )
        sat = float(rng.uniform(0.85, 1.15)) * toward(1.0, cm.saturation)
        if weather in ("overcast", "fog", "rain", "snowfall"):
            sat *= 0.85
        # one colour matrix: saturation around the luma axis, then per-channel gains
        luma = np.array([0.299, 0.587, 0.114])
        m = wb[:, None] * (sat * np.eye(3) + (1.0 - sat) * np.tile(luma, (3, 1)))
        img = img.convert(
            "RGB",
            tuple(float(v) for v in np.concatenate([m, np.zeros((3, 1))], axis=1).reshape(-1)),
        )
        gamma = round(float(rng.uniform(0.92, 1.08)) * toward(1.0, cm.gamma), 2)
        contrast = round(float(rng.uniform(0.9, 1.1)) * toward(1.0, cm.contrast), 2)
        img = img.point(_lut((1.0, 1.0, 1.0), gamma=gamma, contrast=contrast))
        soft = toward(1.0, cm.softness)
        if rng.random() < knobs.blur_prob:
            soft *= float(rng.uniform(1.3, 2.2))
        if soft > 1.05:
            small = max(8, round(s / soft))
            img = img.resize((small, small), Image.Resampling.BILINEAR).resize(
                (s, s), Image.Resampling.BILINEAR
            )
        elif cm.sharpen and k > 0.5:
            img = img.filter(ImageFilter.SHARPEN)
        if rng.random() < toward(0.25, cm.vignette):
            img = ImageChops.multiply(img, _vignette(s))
        if cm.jpeg_quality is not None and k > 0.3:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=round(toward(95, cm.jpeg_quality)))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        return ImageChops.add(
            img, _crop_bank(_overlay_bank("noise", s), s, rng), scale=1.0, offset=-128
        )
