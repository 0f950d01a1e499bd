"""Synthetic tabletop scenes with exact ground truth, deterministic by seed.

Each scene is ray-cast analytically with numpy and OpenCV: a camera at a
random height looks down at a textured table; 1-6 coloured solids (cube, ball,
cylinder, cone, mug) stand on it at 0.5-2 m, under a random directional light.
Depth is the true optical-frame ``z`` of every pixel's first surface, so it is
consistent with the pinhole ``K`` by construction.

Ground truth per object:

* ``box``: xyxy in source pixels of the *visible* extent (pixel edges: a
  pixel ``u`` covers ``[u, u + 1)``, so ``x2 = last visible column + 1``);
* ``position``: the surface point seen at the box centre pixel
  ``(int(cx), int(cy))``, back-projected through the stored ``depth_mm`` and
  ``K``.  Layouts are re-drawn until every box centre lies on its own object
  (occlusion included) with valid, locally smooth depth, so back-projecting
  the box centre lands on ``position`` within a few millimetres.

``render_scene(seed, index)`` depends on nothing but its arguments; a 1280x720
scene renders in a few tens of milliseconds on one core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt
from step_perception.core.types import CameraIntrinsics

__all__ = [
    "COLOURS",
    "LABELS",
    "SHAPES",
    "Scene",
    "SceneObject",
    "iter_scenes",
    "render_scene",
]

SHAPES: tuple[str, ...] = ("cube", "ball", "cylinder", "cone", "mug")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "white")
LABELS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)

F32 = npt.NDArray[np.float32]

# Linear-ish base albedo (0..1) per colour; jittered per object.
_ALBEDO: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.10, 0.09),
    "green": (0.13, 0.60, 0.18),
    "blue": (0.10, 0.25, 0.80),
    "yellow": (0.92, 0.80, 0.10),
    "orange": (0.95, 0.45, 0.05),
    "purple": (0.50, 0.16, 0.62),
    "white": (0.90, 0.90, 0.88),
}

_MIN_Z, _MAX_Z = 0.5, 2.0  # [m] object distance range (optical z of the base centre)
_MAX_RANGE_MM = 6000  # sensor range: farther surfaces read 0
_MIN_VISIBLE = 0.45  # visible fraction of each object's silhouette
_LAYOUT_TRIES = 40


@dataclass(frozen=True)
class SceneObject:
    """Ground truth of one object of a scene."""

    label: str  # "<colour> <shape>"
    colour: str
    shape: str
    box: tuple[float, float, float, float]  # xyxy source pixels, visible extent
    position: tuple[float, float, float]  # [m] optical frame, surface point at the box centre


@dataclass(frozen=True)
class Scene:
    """One rendered frame with its ground truth."""

    index: int
    rgb: npt.NDArray[np.uint8]  # (H, W, 3) RGB
    depth_mm: npt.NDArray[np.uint16]  # (H, W), 0 = no reading
    intrinsics: CameraIntrinsics
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True)
class _Solid:
    """An object placed on the table (world frame: x right, y forward, z up)."""

    colour: str
    shape: str
    centre: tuple[float, float]  # base centre on the table [m]
    yaw: float
    size: float  # radius / half-width [m]
    height: float  # [m]
    albedo: tuple[float, float, float]
    shininess: float

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def reach(self) -> float:
        """Radius of the footprint, handle included."""
        if self.shape == "cube":
            return self.size * math.sqrt(2.0)
        if self.shape == "mug":
            return self.size + 0.5 * self.height
        return self.size


@dataclass(frozen=True)
class _Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    rot: F32  # (3, 3) columns = camera x, y, z axes in world
    pos: F32  # (3,) camera centre in world

    def project(self, pw: F32) -> F32:
        """World points (N, 3) -> pixel coords (N, 2) and depth (N,) stacked as (N, 3)."""
        pc = (pw - self.pos) @ self.rot
        z = pc[:, 2]
        return np.stack(
            [self.fx * pc[:, 0] / z + self.cx, self.fy * pc[:, 1] / z + self.cy, z], axis=1
        ).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ray / primitive intersections (local object frame, rays o + s d, s = optical depth)
# ---------------------------------------------------------------------------------------------


def _sphere(o: F32, d: F32, c: tuple[float, float, float], r: float) -> tuple[F32, F32]:
    oc = o - np.asarray(c, np.float32)
    a = np.einsum("ij,ij->i", d, d)
    b = d @ oc
    cc = float(oc @ oc) - r * r
    disc = b * b - a * cc
    hit = disc >= 0
    s = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf).astype(np.float32)
    p = o + s[:, None] * d
    n = ((p - np.asarray(c, np.float32)) / r).astype(np.float32)
    return s, n


def _grazes(o: F32, d: F32, c: tuple[float, float, float], r: float) -> npt.NDArray[np.bool_]:
    """Which rays pass within ``r`` of ``c`` (a cheap bounding-sphere test)."""
    oc = o - np.asarray(c, np.float32)
    a = np.einsum("ij,ij->i", d, d)
    b = d @ oc
    return np.asarray(b * b - a * (float(oc @ oc) - r * r) >= 0)


def _box(o: F32, d: F32, half: float, h: float) -> tuple[F32, F32]:
    lo = np.array([-half, -half, 0.0], np.float32)
    hi = np.array([half, half, h], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (lo - o) * inv
        t2 = (hi - o) * inv
    tn = np.minimum(t1, t2)
    tf = np.maximum(t1, t2)
    tmin = tn.max(axis=1)
    tmax = tf.min(axis=1)
    hit = (tmax >= tmin) & (tmin > 0)
    s = np.where(hit, tmin, np.inf).astype(np.float32)
    axis = tn.argmax(axis=1)
    n = np.zeros_like(d)
    rows = np.arange(d.shape[0])
    n[rows, axis] = -np.sign(d[rows, axis])
    return s, n


def _cyl_side(o: F32, d: F32, r: float, z0: float, z1: float, far: bool = False) -> tuple[F32, F32]:
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[0] * d[:, 0] + o[1] * d[:, 1]
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = ((-b + sq) if far else (-b - sq)) / a
    z = o[2] + s * d[:, 2]
    ok = (disc >= 0) & (a > 1e-12) & (z >= z0) & (z <= z1) & (s > 0)
    s = np.where(ok, s, np.inf).astype(np.float32)
    p = o + np.where(ok, s, 0)[:, None] * d
    n = np.stack([p[:, 0] / r, p[:, 1] / r, np.zeros_like(s)], axis=1)
    return s, n


def _disc(o: F32, d: F32, z: float, r_in: float, r_out: float) -> tuple[F32, F32]:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (z - o[2]) / d[:, 2]
    x = o[0] + s * d[:, 0]
    y = o[1] + s * d[:, 1]
    rr = x * x + y * y
    ok = (s > 0) & (rr <= r_out * r_out) & (rr >= r_in * r_in)
    s = np.where(ok, s, np.inf).astype(np.float32)
    n = np.zeros_like(d)
    n[:, 2] = 1.0
    return s, n


def _cone(o: F32, d: F32, r: float, h: float) -> tuple[F32, F32]:
    k2 = (r / h) ** 2
    q = h - o[2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = o[0] * d[:, 0] + o[1] * d[:, 1] + k2 * q * d[:, 2]
    c = o[0] ** 2 + o[1] ** 2 - k2 * q * q
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0))
    best = np.full(d.shape[0], np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for root in ((-b - sq) / a, (-b + sq) / a):
            z = o[2] + root * d[:, 2]
            ok = (disc >= 0) & (np.abs(a) > 1e-12) & (root > 0) & (z >= 0) & (z <= h)
            best = np.where(ok & (root < best), root, best).astype(np.float32)
    p = o + np.where(np.isfinite(best), best, 0)[:, None] * d
    n = np.stack([p[:, 0], p[:, 1], k2 * (h - p[:, 2])], axis=1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    return best, n.astype(np.float32)


def _nearest(hits: list[tuple[F32, F32, float]]) -> tuple[F32, F32, F32]:
    """Pick the nearest of several (s, normal, shade) candidates per ray."""
    s_all = np.stack([h[0] for h in hits])
    idx = s_all.argmin(axis=0)
    rows = np.arange(s_all.shape[1])
    s = s_all[idx, rows]
    n = np.stack([h[1] for h in hits])[idx, rows]
    shade = np.asarray([h[2] for h in hits], np.float32)[idx]
    return s, n, shade


def _intersect(solid: _Solid, o: F32, d: F32) -> tuple[F32, F32, F32]:
    """Depth, local normal and an albedo factor for rays in the solid's local frame."""
    r, h = solid.size, solid.height
    if solid.shape == "ball":
        s, n = _sphere(o, d, (0.0, 0.0, r), r)
        return s, n, np.ones_like(s)
    if solid.shape == "cube":
        s, n = _box(o, d, r, h)
        return s, n, np.ones_like(s)
    if solid.shape == "cylinder":
        return _nearest([(*_cyl_side(o, d, r, 0.0, h), 1.0), (*_disc(o, d, h, 0.0, r), 1.0)])
    if solid.shape == "cone":
        s, n = _cone(o, d, r, h)
        return s, n, np.ones_like(s)
    # mug: outer wall, rim, and (through the opening) inner wall or floor; handle of spheres
    ri, floor = 0.84 * r, 0.12 * h
    s_out, n_out = _cyl_side(o, d, r, 0.0, h)
    s_rim, n_rim = _disc(o, d, h, ri, r)
    s_open, _ = _disc(o, d, h, 0.0, ri)
    s_in, n_in = _cyl_side(o, d, ri, floor, h, far=True)
    s_in = np.where(np.isfinite(s_open), s_in, np.inf).astype(np.float32)
    s_fl, n_fl = _disc(o, d, floor, 0.0, ri)
    s_fl = np.where(np.isfinite(s_open), s_fl, np.inf).astype(np.float32)
    cands: list[tuple[F32, F32, float]] = [
        (s_out, n_out, 1.0),
        (s_rim, n_rim, 1.0),
        (s_in, -n_in, 0.55),
        (s_fl, n_fl, 0.45),
    ]
    rad, tube = 0.32 * h, 0.075 * h
    near = np.flatnonzero(_grazes(o, d, (r, 0.0, 0.5 * h), 0.55 * rad + rad + tube))
    d_near = d[near]
    for ang in np.linspace(-1.25, 1.25, 9):
        c = (r + 0.55 * rad * math.cos(ang), 0.0, 0.5 * h + rad * math.sin(ang))
        s_n, n_n = _sphere(o, d_near, c, tube)
        s_h = np.full(d.shape[0], np.inf, np.float32)
        n_h = np.zeros_like(d)
        s_h[near] = s_n
        n_h[near] = n_n
        cands.append((s_h, n_h, 1.0))
    return _nearest(cands)


# ---------------------------------------------------------------------------------------------
# scene layout
# ---------------------------------------------------------------------------------------------


def _camera(rng: np.random.Generator, width: int, height: int) -> _Camera:
    f = float(rng.uniform(0.68, 0.78)) * width
    cx = width / 2.0 + float(rng.uniform(-0.01, 0.01)) * width
    cy = height / 2.0 + float(rng.uniform(-0.01, 0.01)) * height
    pitch = math.radians(float(rng.uniform(32.0, 58.0)))
    roll = math.radians(float(rng.uniform(-4.0, 4.0)))
    cam_h = float(rng.uniform(0.45, 0.95))
    z = np.array([0.0, math.cos(pitch), -math.sin(pitch)])
    x = np.array([1.0, 0.0, 0.0])
    y = np.cross(z, x)
    # roll about the optical axis
    xr = math.cos(roll) * x + math.sin(roll) * y
    yr = -math.sin(roll) * x + math.cos(roll) * y
    rot = np.stack([xr, yr, z], axis=1).astype(np.float32)
    return _Camera(f, f, cx, cy, width, height, rot, np.array([0.0, 0.0, cam_h], np.float32))


def _pixel_rays(cam: _Camera, u: F32, v: F32) -> F32:
    """World-frame ray directions scaled so the optical z component is 1."""
    dc = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=1)
    return (dc @ cam.rot.T).astype(np.float32)


def _sample_solids(rng: np.random.Generator, cam: _Camera) -> list[_Solid]:
    n = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.08, 0.14, 0.2, 0.22, 0.2, 0.16]))
    labels = rng.choice(len(LABELS), size=n, replace=False)
    solids: list[_Solid] = []
    for li in labels:
        colour, shape = LABELS[int(li)].split(" ")
        size = float(rng.uniform(0.028, 0.06))
        height = {
            "cube": 2 * size,
            "ball": 2 * size,
            "cylinder": size * float(rng.uniform(1.6, 4.0)),
            "cone": size * float(rng.uniform(1.8, 3.2)),
            "mug": size * float(rng.uniform(1.7, 2.4)),
        }[shape]
        base = np.asarray(_ALBEDO[colour], np.float32)
        jit = base * float(rng.uniform(0.85, 1.1)) + rng.uniform(-0.04, 0.04, 3)
        albedo = tuple(float(x) for x in np.clip(jit, 0.02, 0.97))
        placed = None
        tuck = bool(solids) and rng.random() < 0.45  # try to stand partly behind another one
        for attempt in range(60):
            if tuck and attempt < 20:
                # behind an existing solid as seen from the camera, shifted sideways
                other = solids[int(rng.integers(0, len(solids)))]
                away = np.array(other.centre, np.float32) - cam.pos[:2]
                away /= max(float(np.linalg.norm(away)), 1e-6)
                side = np.array([-away[1], away[0]], np.float32)
                gap = other.reach + size * 1.5 + float(rng.uniform(0.01, 0.06))
                lateral = float(rng.uniform(-1.2, 1.2)) * (other.reach + size)
                xy = np.array(other.centre, np.float32) + away * gap + side * lateral
                pc = (np.array([xy[0], xy[1], 0.0], np.float32) - cam.pos) @ cam.rot
                if not (_MIN_Z <= float(pc[2]) <= _MAX_Z):
                    continue
                p = np.array([xy[0], xy[1], 0.0], np.float32)
            else:
                u = float(rng.uniform(0.08, 0.92)) * cam.width
                v = float(rng.uniform(0.12, 0.95)) * cam.height
                d = _pixel_rays(cam, np.array([u], np.float32), np.array([v], np.float32))[0]
                if d[2] >= -1e-3:
                    continue
                s = -float(cam.pos[2]) / float(d[2])
                if not (_MIN_Z <= s <= _MAX_Z):
                    continue
                p = cam.pos + s * d
            cand = _Solid(
                colour,
                shape,
                (float(p[0]), float(p[1])),
                float(rng.uniform(-math.pi, math.pi)),
                size,
                height,
                (albedo[0], albedo[1], albedo[2]),
                float(rng.uniform(0.0, 0.6)),
            )
            if any(math.dist(cand.centre, o.centre) < cand.reach + o.reach + 0.01 for o in solids):
                continue
            if not _inside_image(cam, cand):
                continue
            placed = cand
            break
        if placed is not None:
            solids.append(placed)
    return solids


def _hull_points(solid: _Solid) -> F32:
    """World points enclosing the solid (for its screen-space bounding box)."""
    r = solid.reach * 1.05
    ang = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    ring = np.stack([np.cos(ang) * r, np.sin(ang) * r], axis=1)
    pts = [
        np.column_stack([ring + solid.centre, np.full(12, z)]) for z in (0.0, solid.height * 1.02)
    ]
    return np.concatenate(pts).astype(np.float32)


def _inside_image(cam: _Camera, solid: _Solid) -> bool:
    """Tell whether the solid is wholly in view and nowhere nearer than the 0.5 m minimum."""
    pix = cam.project(_hull_points(solid))
    m = 4.0
    return bool(
        (pix[:, 2] > _MIN_Z).all()
        and pix[:, 0].min() >= m
        and pix[:, 0].max() <= cam.width - m
        and pix[:, 1].min() >= m
        and pix[:, 1].max() <= cam.height - m
    )


# ---------------------------------------------------------------------------------------------
# appearance
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _noise_field(width: int, height: int) -> npt.NDArray[np.float32]:
    """Return a fixed sensor-noise field, sliced at a random offset per scene."""
    g = np.random.default_rng(12345)
    return g.standard_normal((height + 64, width + 64, 3)).astype(np.float32)


def _table_texture(rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], float]:
    """Make a tileable-enough RGB texture (0..1); return it with its size in metres."""
    n = 512
    kind = int(rng.integers(0, 4))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    low = cv2.resize(rng.random((8, 8)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(
        rng.random((64, 64)).astype(np.float32), (n, n), interpolation=cv2.INTER_LINEAR
    )
    if kind == 0:  # wood grain
        base = np.array(rng.uniform([0.35, 0.22, 0.12], [0.6, 0.42, 0.27]), np.float32)
        grain = 0.5 + 0.5 * np.sin(xx * float(rng.uniform(40, 90)) + low * 8 + fine * 1.5)
        lum = 0.75 + 0.3 * grain**3 + 0.1 * (fine - 0.5)
        size = float(rng.uniform(0.8, 1.6))
    elif kind == 1:  # checker / tiles
        base = np.array(rng.uniform([0.45, 0.45, 0.45], [0.75, 0.75, 0.72]), np.float32)
        k = int(rng.integers(4, 12))
        chk = ((np.floor(xx * k) + np.floor(yy * k)) % 2).astype(np.float32)
        lum = 0.8 + 0.22 * chk + 0.08 * (fine - 0.5)
        size = float(rng.uniform(1.0, 2.5))
    elif kind == 2:  # speckled laminate
        base = np.array(rng.uniform([0.3, 0.3, 0.3], [0.7, 0.68, 0.65]), np.float32)
        speck = rng.random((n, n)).astype(np.float32)
        lum = 0.85 + 0.2 * (low - 0.5) + 0.12 * (speck - 0.5)
        size = float(rng.uniform(0.4, 1.0))
    else:  # cloth / felt: dull, fine noise and a weave
        base = np.array(rng.uniform([0.2, 0.22, 0.22], [0.45, 0.45, 0.4]), np.float32)
        weave = 0.5 + 0.5 * np.sin(xx * 700) * np.sin(yy * 700)
        lum = 0.85 + 0.15 * (fine - 0.5) + 0.1 * weave + 0.1 * (low - 0.5)
        size = float(rng.uniform(0.5, 1.2))
    tex = lum[..., None] * base[None, None, :]
    return np.clip(tex, 0, 1).astype(np.float32), size


def _render_background(rng: np.random.Generator, cam: _Camera, light: F32) -> tuple[F32, F32]:
    """Table (plane z=0) and back wall: colour (H, W, 3) in 0..1 and depth z [m] (H, W).

    Depth is exact per pixel; the colour is shaded at half resolution and scaled up
    (texture detail at table distances survives, and it halves the frame's cost).
    """
    w, h = cam.width, cam.height
    cam_h = float(cam.pos[2])
    wall_y = float(rng.uniform(2.2, 3.5))
    # world ray direction (optical z = 1) is linear in (u, v): d = a u + b v + c
    a = (cam.rot[:, 0] / cam.fx).astype(np.float32)
    b = (cam.rot[:, 1] / cam.fy).astype(np.float32)
    c = (cam.rot[:, 2] - a * cam.cx - b * cam.cy).astype(np.float32)

    def plane_depth(u: F32, v: F32) -> tuple[F32, F32, F32, npt.NDArray[np.bool_]]:
        dz = (a[2] * u)[None, :] + (b[2] * v + c[2])[:, None]
        dy = (a[1] * u)[None, :] + (b[1] * v + c[1])[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            s_table = np.where(dz < -1e-6, -cam_h / dz, np.inf)
            s_wall = np.where(dy > 1e-6, wall_y / dy, np.inf)
        on_table = s_table <= s_wall
        depth = np.minimum(s_table, s_wall)
        return depth.astype(np.float32), dy, dz, on_table

    u = np.arange(w, dtype=np.float32)
    v = np.arange(h, dtype=np.float32)
    depth, _, _, _ = plane_depth(u, v)
    depth[~np.isfinite(depth)] = 0.0

    hw, hh = (w + 1) // 2, (h + 1) // 2
    uh = np.arange(hw, dtype=np.float32) * 2 + 0.5
    vh = np.arange(hh, dtype=np.float32) * 2 + 0.5
    dh, dyh, _, on_table = plane_depth(uh, vh)
    dh[~np.isfinite(dh)] = 0.0
    dxh = (a[0] * uh)[None, :] + (b[0] * vh + c[0])[:, None]
    wx = dxh * dh + float(cam.pos[0])
    wy = dyh * dh + float(cam.pos[1])

    tex, size = _table_texture(rng)
    n = tex.shape[0]
    ox, oy = rng.uniform(0, size, 2)
    mx = ((wx + ox) * (n / size)).astype(np.float32)
    my = ((wy + oy) * (n / size)).astype(np.float32)
    table = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    # a spot of light on the table: brighter around a random point, fading with distance
    spot = np.array(rng.uniform([-0.8, 0.3], [0.8, 2.0]), np.float32)
    dist2 = (wx - spot[0]) ** 2 + (wy - spot[1]) ** 2
    diffuse = max(float(light[2]), 0.0)
    table_lum = (0.55 + 0.45 * diffuse) * (0.75 + 0.45 * np.exp(-dist2 / 0.8))
    table *= table_lum[..., None]

    wall_col = np.array(rng.uniform([0.45, 0.45, 0.45], [0.85, 0.83, 0.8]), np.float32)
    grad = (0.7 + 0.3 * (vh / hh))[:, None, None]
    wall = np.broadcast_to(wall_col[None, None, :] * grad, (hh, hw, 3))
    small = np.where(on_table[..., None], table, wall).astype(np.float32)
    img = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    return img, depth


def _shadow(img: F32, cam: _Camera, solid: _Solid, light: F32, strength: float) -> None:
    """Darken the table where the solid casts a soft shadow (in place)."""
    horiz = light[:2] / max(float(np.linalg.norm(light[:2])), 1e-6)
    tilt = min(math.sqrt(max(1 - float(light[2]) ** 2, 0)) / max(float(light[2]), 0.2), 2.5)
    off = -horiz * solid.height * 0.5 * tilt
    ang = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    r = solid.reach * 0.9
    stretch = 1.0 + 0.6 * tilt
    ex = np.cos(ang) * r
    ey = np.sin(ang) * r
    # stretch the ellipse along the light direction
    along = ex * horiz[0] + ey * horiz[1]
    pts = np.stack(
        [
            solid.centre[0] + off[0] + ex + horiz[0] * along * (stretch - 1),
            solid.centre[1] + off[1] + ey + horiz[1] * along * (stretch - 1),
            np.zeros_like(ex),
        ],
        axis=1,
    ).astype(np.float32)
    pix = cam.project(pts)
    if (pix[:, 2] <= 0).any():
        return
    x0 = max(int(pix[:, 0].min()) - 12, 0)
    x1 = min(int(pix[:, 0].max()) + 12, cam.width)
    y0 = max(int(pix[:, 1].min()) - 12, 0)
    y1 = min(int(pix[:, 1].max()) + 12, cam.height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    poly = np.round(pix[:, :2] - [x0, y0]).astype(np.int32)
    cv2.fillPoly(mask, [poly], 1.0)
    mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), 5), np.float32)
    img[y0:y1, x0:x1] *= (1.0 - strength * mask)[..., None]


def _render_solid(
    cam: _Camera, solid: _Solid, light: F32, region: tuple[int, int, int, int]
) -> tuple[F32, F32]:
    """Depth (inf = miss) and colour of the solid over the pixel region (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = region
    cy, sy = math.cos(solid.yaw), math.sin(solid.yaw)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], np.float32)  # local -> world
    o_l = (cam.pos - np.array([solid.centre[0], solid.centre[1], 0], np.float32)) @ rz
    # local ray direction (optical z = 1) is linear in the pixel: d = A u + B v + C
    m = (rz.T @ cam.rot).astype(np.float32)
    u = np.arange(x0, x1, dtype=np.float32)
    v = np.arange(y0, y1, dtype=np.float32)
    d_l = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for i in range(3):
        a_i, b_i = m[i, 0] / cam.fx, m[i, 1] / cam.fy
        c_i = m[i, 2] - a_i * cam.cx - b_i * cam.cy
        d_l[..., i] = (a_i * u)[None, :] + (b_i * v + c_i)[:, None]
    rays = d_l.reshape(-1, 3)
    o_l = o_l.astype(np.float32)
    # cull with the bounding sphere first: most of the region's rays miss the solid
    bound = math.hypot(solid.reach, 0.5 * solid.height) * 1.02
    cand = np.flatnonzero(_grazes(o_l, rays, (0.0, 0.0, 0.5 * solid.height), bound))
    s = np.full(rays.shape[0], np.inf, np.float32)
    s_c, n_c, shade_c = _intersect(solid, o_l, rays[cand])
    s[cand] = s_c
    hit_c = np.isfinite(s_c)
    hit = np.zeros(rays.shape[0], bool)
    hit[cand[hit_c]] = True
    n_w = n_c[hit_c] @ rz.T
    shade = shade_c[hit_c]
    dh = rays[hit] @ rz.T
    ndl = np.clip(n_w @ light, 0, 1)
    view = -dh / np.linalg.norm(dh, axis=1, keepdims=True)
    half = light[None, :] + view
    half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-6)
    spec = np.clip(np.einsum("ij,ij->i", n_w, half), 0, 1) ** 40 * solid.shininess
    alb = np.asarray(solid.albedo, np.float32)
    h, w = y1 - y0, x1 - x0
    col = np.zeros((h * w, 3), np.float32)
    col[hit] = alb[None, :] * (shade * (0.35 + 0.75 * ndl))[:, None] + spec[:, None]
    return s.reshape(h, w), col.reshape(h, w, 3)


def _region(cam: _Camera, solid: _Solid) -> tuple[int, int, int, int]:
    pix = cam.project(_hull_points(solid))
    x0 = max(math.floor(pix[:, 0].min()) - 2, 0)
    x1 = min(math.ceil(pix[:, 0].max()) + 2, cam.width)
    y0 = max(math.floor(pix[:, 1].min()) - 2, 0)
    y1 = min(math.ceil(pix[:, 1].max()) + 2, cam.height)
    return x0, y0, x1, y1


def _visible_truth(
    cam: _Camera,
    solids: list[_Solid],
    ids: npt.NDArray[np.int16],
    depth_mm: npt.NDArray[np.uint16],
    full_area: list[int],
    regions: list[tuple[int, int, int, int]],
) -> list[SceneObject] | int:
    """Ground truth for every solid, or the index of the first one without clean truth."""
    out: list[SceneObject] = []
    for k, solid in enumerate(solids):
        rx0, ry0, rx1, ry1 = regions[k]
        mask = ids[ry0:ry1, rx0:rx1] == k
        area = int(np.count_nonzero(mask))
        if full_area[k] == 0 or area < _MIN_VISIBLE * full_area[k] or area < 60:
            return k
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        x1, x2 = float(rx0 + cols[0]), float(rx0 + cols[-1] + 1)
        y1, y2 = float(ry0 + rows[0]), float(ry0 + rows[-1] + 1)
        u, v = int((x1 + x2) / 2), int((y1 + y2) / 2)
        patch_ids = ids[v - 1 : v + 2, u - 1 : u + 2]
        patch_d = depth_mm[v - 1 : v + 2, u - 1 : u + 2].astype(np.int32)
        if patch_ids.shape != (3, 3) or (patch_ids != k).any() or (patch_d == 0).any():
            return k
        if int(patch_d.max() - patch_d.min()) > 6:
            return k
        z = float(depth_mm[v, u]) / 1000.0
        pos = ((u - cam.cx) * z / cam.fx, (v - cam.cy) * z / cam.fy, z)
        out.append(SceneObject(solid.label, solid.colour, solid.shape, (x1, y1, x2, y2), pos))
    return out


def render_scene(seed: int, index: int, width: int = 1280, height: int = 720) -> Scene:
    """Render scene ``index`` of the stream ``seed``; identical arguments give identical scenes."""
    if width < 64 or height < 64:
        raise ValueError(f"scene size {width}x{height} is too small (min 64x64)")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF, 7])
    cam = _camera(rng, width, height)
    el = math.radians(float(rng.uniform(35, 80)))
    az = float(rng.uniform(-math.pi, math.pi))
    light = np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)], np.float32
    )
    exposure = float(rng.uniform(0.7, 1.25))
    tint = np.array(rng.uniform([0.88, 0.92, 0.85], [1.08, 1.02, 1.12]), np.float32)
    shadow_strength = float(rng.uniform(0.25, 0.55))
    noise_sigma = float(rng.uniform(1.0, 4.0))
    noise_off = rng.integers(0, 64, 2)
    depth_noise = float(rng.uniform(0.0, 1.5))  # [mm]

    bg, bg_depth = _render_background(rng, cam, light)
    solids: list[_Solid] = []
    for _ in range(_LAYOUT_TRIES):
        if not solids:
            solids = _sample_solids(rng, cam)
            if not solids:
                continue
        img = bg.copy()
        zbuf = np.where(bg_depth > 0, bg_depth, np.inf).astype(np.float32)
        ids = np.full((height, width), -1, np.int16)
        full_area: list[int] = []
        regions = [_region(cam, solid) for solid in solids]
        for solid in solids:
            _shadow(img, cam, solid, light, shadow_strength)
        for k, solid in enumerate(solids):
            x0, y0, x1, y1 = regions[k]
            s, col = _render_solid(cam, solid, light, (x0, y0, x1, y1))
            full_area.append(int(np.isfinite(s).sum()))
            zb = zbuf[y0:y1, x0:x1]
            front = s < zb
            zb[front] = s[front]
            img[y0:y1, x0:x1][front] = col[front]
            ids[y0:y1, x0:x1][front] = k
        depth_mm = _to_mm(zbuf, rng, depth_noise)
        truth = _visible_truth(cam, solids, ids, depth_mm, full_area, regions)
        if isinstance(truth, list):
            break
        # drop the object whose truth is not clean (too hidden, centre off it) and redraw
        solids = solids[:truth] + solids[truth + 1 :]
    else:  # pragma: no cover - practically unreachable: one-object layouts always pass
        raise RuntimeError(f"no valid layout for scene seed={seed} index={index}")

    noise = _noise_field(width, height)[
        noise_off[1] : noise_off[1] + height, noise_off[0] : noise_off[0] + width
    ]
    # exposure and white balance, then gamma 2.0 (cheap sqrt) and sensor noise
    img *= (exposure * tint)[None, None, :]
    np.clip(img, 0.0, 1.0, out=img)
    cv2.sqrt(img, img)
    noisy = cv2.scaleAdd(noise, noise_sigma / 255.0, img)
    rgb8 = np.asarray(cv2.convertScaleAbs(noisy, alpha=255.0), np.uint8)
    intr = CameraIntrinsics(cam.fx, cam.fy, cam.cx, cam.cy, width, height)
    return Scene(int(index), rgb8, depth_mm, intr, tuple(truth))


def _to_mm(zbuf: F32, rng: np.random.Generator, noise_mm: float) -> npt.NDArray[np.uint16]:
    """Metres -> uint16 millimetres with a little smooth noise; out of range reads 0."""
    mm = zbuf * 1000.0
    if noise_mm > 0:
        h, w = zbuf.shape
        low = rng.standard_normal((h // 32 + 2, w // 32 + 2)).astype(np.float32)
        mm = mm + cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR) * noise_mm
    valid = np.isfinite(mm) & (mm > 0) & (mm < _MAX_RANGE_MM)
    return np.where(valid, np.round(mm), 0).astype(np.uint16)


def iter_scenes(seed: int, count: int, width: int = 1280, height: int = 720) -> Iterator[Scene]:
    """Scenes ``0 .. count-1`` of the stream ``seed``."""
    for i in range(count):
        yield render_scene(seed, i, width, height)
