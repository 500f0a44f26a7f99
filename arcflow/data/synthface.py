"""SynthFace: procedurally rendered, unaligned face-like images with exact 5-point landmarks.

Every identity is a set of appearance parameters drawn from ``(seed, identity)``; every image
is a pure function of ``(seed, identity, index)``. Faces are built as polygons in a face-local
frame (units of the 112x112 ArcFace crop, origin near the nose tip), pushed through a simple
head model (yaw/pitch on an ellipsoid) and a similarity map into the frame, and drawn with
anti-aliased OpenCV primitives. Landmarks go through exactly the same point transform, so they
are exact. Landmark order follows insightface: left eye, right eye, nose tip, left mouth
corner, right mouth corner ("left" = smaller x in a frontal, upright face).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: ArcFace 112x112 template (left eye, right eye, nose, left mouth, right mouth).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
#: Face-local coordinates are template pixels minus this origin (near the nose tip).
LOCAL_ORIGIN = np.array([56.0, 72.0], dtype=np.float32)

_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = float(1 << _SHIFT)
_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, 28, endpoint=False)),
        np.sin(np.linspace(0, 2 * np.pi, 28, endpoint=False)),
    ],
    axis=1,
)
_LID_U = np.linspace(-1.0, 1.0, 11)
_LID_UP = (1.0 - _LID_U**2) ** 0.7
_LID_LO = (1.0 - _LID_U**2) ** 0.9
_LASH = 0.3 + 0.6 * (1.0 - _LID_U**2)
_BROW = 0.55 + 0.45 * np.clip(1.0 - (_LID_U + 0.4) ** 2 / 2.2, 0.0, 1.0)
_MOUTH_U = np.linspace(-1.0, 1.0, 13)
_MOUTH_P = (1.0 - _MOUTH_U**2) ** 0.6
_MOUTH_BOW = np.exp(-((_MOUTH_U * 6.0) ** 2))
_HEAD_TOP = 62.0  # local units from the origin to the top of a typical head (hair included)

#: Marker colours drawn at the landmarks when ``render(..., markers=True)``.
MARKER_COLORS = (
    (255, 0, 0),
    (0, 255, 0),
    (255, 0, 255),
    (0, 0, 255),
    (0, 255, 255),
)

_SKIN = np.array(
    [
        [205, 225, 250],
        [170, 200, 240],
        [120, 170, 225],
        [80, 130, 190],
        [45, 85, 140],
        [30, 55, 90],
    ],
    dtype=np.float64,
)
_HAIR = np.array(
    [
        [22, 20, 20],
        [30, 40, 60],
        [40, 65, 110],
        [70, 110, 160],
        [120, 185, 220],
        [40, 70, 170],
        [150, 150, 155],
        [215, 215, 220],
        [25, 25, 45],
    ],
    dtype=np.float64,
)
_IRIS = np.array(
    [[30, 55, 95], [175, 120, 60], [80, 130, 70], [130, 130, 120], [45, 95, 120], [20, 30, 45]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class SynthFaceSpec:
    """What to generate: identities x images, frame size, seed and nuisance knobs.

    ``difficulty`` in [0, 1] scales per-image nuisance linearly (0: frontal, neutral, no
    photometric nuisance or occluder, only placement and a plain background vary; 0.5: roll
    +-25 deg, yaw +-30 deg, pitch +-12 deg and the default expression/lighting/blur/noise; 1: twice
    that, yaw capped at 45 deg). ``pose_jitter`` further scales roll/yaw/pitch and
    ``occluder_prob`` is the occluder probability at difficulty 0.5.
    """

    num_identities: int = 100
    images_per_identity: int = 10
    frame_size: int = 144
    seed: int = 0
    difficulty: float = 0.5
    pose_jitter: float = 1.0
    occluder_prob: float = 0.2

    def __post_init__(self) -> None:
        if self.num_identities < 1 or self.images_per_identity < 1:
            raise ValueError("num_identities and images_per_identity must be >= 1")
        if self.frame_size < 32:
            raise ValueError(f"frame_size must be >= 32, got {self.frame_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if self.pose_jitter < 0 or not 0.0 <= self.occluder_prob <= 1.0:
            raise ValueError("pose_jitter must be >= 0 and occluder_prob in [0, 1]")


@dataclass(frozen=True)
class Identity:
    """Per-identity appearance; lengths are face-local units (ArcFace-crop pixels)."""

    face_ax: float
    face_ay: float
    face_cy: float
    jaw: float
    depth: float
    skin: tuple[float, float, float]
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    iris_r: float
    iris: tuple[float, float, float]
    brow_gap: float
    brow_len: float
    brow_thick: float
    brow_arch: float
    brow_tilt: float
    brow: tuple[float, float, float]
    nose_y: float
    nose_w: float
    nose_prot: float
    nose_bridge: float
    mouth_y: float
    mouth_hw: float
    lip_up: float
    lip_lo: float
    lip: tuple[float, float, float]
    hair_style: int
    hair: tuple[float, float, float]
    hair_h: float
    hairline: float
    hair_curve: float
    hair_part: float
    ear: float
    glasses: int
    glasses_color: tuple[float, float, float]
    glasses_r: float
    beard: int
    beard_color: tuple[float, float, float]
    mole: tuple[float, float, float]
    blush: float


@dataclass(frozen=True)
class Pose:
    """Where the face lands: pixel position of the local origin, px per unit, angles (rad)."""

    x: float
    y: float
    scale: float
    roll: float
    yaw: float
    pitch: float


@dataclass(frozen=True)
class Expression:
    """Per-image expression (local units) and gaze."""

    smile: float = 0.0
    mouth_open: float = 0.0
    brow_raise: float = 0.0
    blink: float = 1.0
    gaze: tuple[float, float] = (0.0, 0.0)


# --------------------------------------------------------------------------- identities


def _color(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> tuple:
    """A palette colour blended towards a neighbour, with per-channel jitter."""
    i = rng.integers(len(palette))
    j = (i + rng.choice([-1, 1])) % len(palette)
    c = palette[i] + rng.uniform(0.0, 0.4) * (palette[j] - palette[i])
    c = np.clip(c + rng.normal(0.0, jitter, 3), 0, 255)
    return tuple(float(v) for v in c)


def _skin(rng: np.random.Generator) -> tuple:
    """A skin tone interpolated along the palette."""
    t = rng.uniform(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    c = _SKIN[i] + (t - i) * (_SKIN[i + 1] - _SKIN[i]) + rng.normal(0.0, 8.0, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))


def identity_params(seed: int, identity: int) -> Identity:
    """Draw the appearance of ``identity`` deterministically from ``(seed, identity)``."""
    rng = np.random.default_rng([seed, identity])
    u = rng.uniform
    skin = _skin(rng)
    hair = _color(rng, _HAIR, 10.0)
    dark = 0.55 * np.asarray(skin) * rng.uniform(0.6, 1.0)
    brow = tuple(float(v) for v in 0.6 * np.asarray(hair) + 0.4 * dark)
    lip = tuple(
        float(v)
        for v in np.clip(
            np.asarray(skin) * (0.7, 0.72, 1.0) + rng.normal(0, 10, 3) - (10, 10, 0), 0, 255
        )
    )
    beard = int(rng.choice(4, p=[0.7, 0.12, 0.08, 0.1]))
    mole = (u(-24, 24), u(-30, 30), u(1.2, 2.6)) if u() < 0.45 else (0.0, 0.0, 0.0)
    return Identity(
        face_ax=u(35.0, 44.0),
        face_ay=u(46.0, 56.0),
        face_cy=u(-11.0, -5.0),
        jaw=u(0.0, 0.35),
        depth=u(0.45, 0.65),
        skin=skin,
        eye_dx=u(14.5, 21.0),
        eye_y=u(-24.0, -17.0),
        eye_w=u(5.5, 8.5),
        eye_h=u(2.2, 4.2),
        eye_tilt=u(-0.15, 0.2),
        iris_r=u(0.6, 0.85),
        iris=_color(rng, _IRIS, 10.0),
        brow_gap=u(5.0, 10.0),
        brow_len=u(0.9, 1.4),
        brow_thick=u(1.2, 3.8),
        brow_arch=u(-0.5, 3.0),
        brow_tilt=u(-0.25, 0.25),
        brow=brow,
        nose_y=u(-5.0, 3.5),
        nose_w=u(4.0, 8.5),
        nose_prot=u(6.0, 14.0),
        nose_bridge=u(0, 1),
        mouth_y=u(16.5, 24.5),
        mouth_hw=u(10.5, 18.0),
        lip_up=u(1.2, 3.5),
        lip_lo=u(1.5, 4.5),
        lip=lip,
        hair_style=int(rng.integers(6)),
        hair=hair,
        hair_h=u(2.0, 10.0),
        hairline=u(-48.0, -34.0),
        hair_curve=u(-6.0, 8.0),
        hair_part=u(-6.0, 6.0),
        ear=u(0.8, 1.25),
        glasses=int(rng.choice(3, p=[0.72, 0.14, 0.14])),
        glasses_color=_color(rng, _HAIR, 30.0),
        glasses_r=u(8.0, 11.5),
        beard=beard,
        beard_color=hair,
        mole=mole,
        blush=u(0.5, 1.5) if u() < 0.3 else 0.0,
    )


# --------------------------------------------------------------------------- scene

# (start, end, BGR colour or None for the per-image clothes colour, line width (0: fill), closed)
_Cmd = tuple[int, int, "tuple | None", float, bool]


@dataclass(frozen=True)
class _Part:
    """A finished group of draw commands; points are face-local, commands index into them."""

    pts: np.ndarray
    z: np.ndarray
    sil: np.ndarray
    cmds: tuple[_Cmd, ...]


class _Scene:
    """Collects draw commands (polygons/polylines in face-local space) into a ``_Part``."""

    def __init__(self) -> None:
        self.pts: list[np.ndarray] = []
        self.z: list[np.ndarray] = []
        self.sil: list[np.ndarray] = []
        self.cmds: list[_Cmd] = []
        self.n = 0

    def add(
        self,
        pts: np.ndarray,
        color: tuple | None,
        *,
        z: float | np.ndarray = 0.0,
        sil: bool | np.ndarray = False,
        line: float = 0.0,
        closed: bool = False,
    ) -> None:
        """Queue a filled polygon (``line == 0``) or a polyline ``line`` units thick.

        ``z`` is a depth offset (nose tip, glasses) and ``sil`` marks silhouette points, which
        only shrink with head rotation instead of sliding over the head surface.
        """
        k = len(pts)
        self.pts.append(pts)
        self.z.append(z if isinstance(z, np.ndarray) else np.full(k, z))
        self.sil.append(sil if isinstance(sil, np.ndarray) else np.full(k, sil))
        self.cmds.append((self.n, self.n + k, color, line, closed))
        self.n += k

    def finish(self) -> _Part:
        """Freeze the queued commands."""
        if not self.pts:
            return _Part(np.zeros((0, 2)), np.zeros(0), np.zeros(0, bool), ())
        return _Part(
            np.concatenate(self.pts),
            np.concatenate(self.z),
            np.concatenate(self.sil),
            tuple(self.cmds),
        )


class _Projector:
    """Face-local (x, y) + depth offset -> frame pixels via head rotation and similarity map."""

    def __init__(self, ident: Identity, pose: Pose) -> None:
        self.ident, self.pose = ident, pose
        self.d = ident.depth * ident.face_ax
        cy, sy = math.cos(pose.yaw), math.sin(pose.yaw)
        cp, sp = math.cos(pose.pitch), math.sin(pose.pitch)
        self.rot = (cy, sy, cp, sp)
        self.kx = math.hypot(cy, self.d / ident.face_ax * sy)
        self.ky = math.hypot(cp, self.d / ident.face_ay * sp)
        c, s = pose.scale * math.cos(pose.roll), pose.scale * math.sin(pose.roll)
        self.m = np.array([[c, s], [-s, c]])  # transposed rotation, applied as pts @ m
        self.t = np.array([pose.x, pose.y])

    def __call__(self, pts: np.ndarray, zex: np.ndarray, sil: np.ndarray) -> np.ndarray:
        """Project (N, 2) local points to (N, 2) pixel coordinates."""
        idn = self.ident
        x, y = pts[:, 0], pts[:, 1]
        u, v = x / idn.face_ax, (y - idn.face_cy) / idn.face_ay
        z = self.d * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0)) + zex
        cy, sy, cp, sp = self.rot
        out = np.empty_like(pts)
        out[:, 0] = np.where(sil, x * self.kx, x * cy + z * sy)
        y_surf = y * cp + (z * cy - x * sy) * sp
        out[:, 1] = np.where(sil, idn.face_cy + (y - idn.face_cy) * self.ky, y_surf)
        return out @ self.m + self.t


def _draw_parts(
    img: np.ndarray, parts: Sequence[_Part], proj: _Projector, clothes: tuple
) -> np.ndarray:
    """Project all parts at once, draw them in order; returns the projected points."""
    px = proj(
        np.concatenate([p.pts for p in parts]),
        np.concatenate([p.z for p in parts]),
        np.concatenate([p.sil for p in parts]),
    )
    fixed = np.round(px * _ONE).astype(np.int32)
    scale = proj.pose.scale
    off = 0
    for part in parts:
        for a, b, color, line, closed in part.cmds:
            poly = fixed[off + a : off + b]
            col = clothes if color is None else color
            if line <= 0:
                cv2.fillPoly(img, [poly], col, _AA, _SHIFT)
            else:
                th = max(1, round(line * scale))
                cv2.polylines(img, [poly], closed, col, th, _AA, _SHIFT)
        off += len(part.pts)
    return px


# --------------------------------------------------------------------------- face parts


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """(28, 2) polygon of an axis-aligned ellipse."""
    return _CIRCLE * np.array([rx, ry]) + np.array([cx, cy])


def _stroke(center: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Polygon around a polyline with per-point half-thickness (tapered stroke)."""
    d = np.empty_like(center)
    d[1:-1] = center[2:] - center[:-2]
    d[0], d[-1] = center[1] - center[0], center[-1] - center[-2]
    n = d[:, ::-1] * np.array([-1.0, 1.0])
    n *= (half / (np.sqrt((n * n).sum(1)) + 1e-9))[:, None]
    return np.concatenate([center + n, (center - n)[::-1]])


def _curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stack x and y samples into an (N, 2) array."""
    out = np.empty((len(x), 2))
    out[:, 0], out[:, 1] = x, y
    return out


def _face_outline(idn: Identity) -> np.ndarray:
    """Head outline: an ellipse whose lower half tapers into a jaw/chin."""
    p = _CIRCLE * np.array([idn.face_ax, idn.face_ay])
    low = np.clip(p[:, 1] / idn.face_ay, 0.0, 1.0)
    p[:, 0] *= 1.0 - idn.jaw * low**2
    p[:, 1] += idn.face_cy
    return p


def _shade(color: tuple, k: float) -> tuple:
    """Scale a BGR colour by ``k`` (clipped)."""
    return tuple(min(255.0, max(0.0, c * k)) for c in color)


def _body(sc: _Scene, idn: Identity) -> None:
    """Shoulders (per-image clothes colour) and neck, behind the head."""
    neck_w = 0.42 * idn.face_ax
    chin = idn.face_cy + idn.face_ay
    sc.add(_ellipse(0.0, chin + 48.0, 2.1 * idn.face_ax, 34.0), None, sil=True)
    neck = np.array(
        [
            [-neck_w, chin - 15],
            [neck_w, chin - 15],
            [neck_w * 1.1, chin + 22],
            [-neck_w * 1.1, chin + 22],
        ]
    )
    sc.add(neck, _shade(idn.skin, 0.8), sil=True)


def _hair_back(sc: _Scene, idn: Identity) -> None:
    """Long hair falling behind the head (styles 3 and 4), rounded at the ends."""
    if idn.hair_style not in (3, 4):
        return
    ax = idn.face_ax + idn.hair_h + 3.0
    top = idn.face_cy - idn.face_ay - idn.hair_h
    drop = idn.face_cy + idn.face_ay + (20.0 if idn.hair_style == 3 else 2.0)
    t = np.linspace(0.0, np.pi, 15)
    arc = _curve(-ax * np.cos(t), idn.face_cy - (idn.face_cy - top) * np.sin(t))
    ends = np.array([[ax * 0.96, drop], [ax * 0.7, drop + 5.0], [-ax * 0.7, drop + 5.0]])
    poly = np.concatenate([[[-ax * 0.96, drop]], arc, ends])
    sc.add(poly, _shade(idn.hair, 0.85), sil=True)


def _ears(sc: _Scene, idn: Identity) -> None:
    """Two ears on the silhouette at eye/nose height."""
    cy = (idn.eye_y + idn.nose_y) / 2 + 2.0
    for side in (-1.0, 1.0):
        cx = side * idn.face_ax * 0.97
        sc.add(_ellipse(cx, cy, 5.0 * idn.ear, 9.5 * idn.ear), _shade(idn.skin, 0.92), sil=True)
        inner = _ellipse(cx + side * 1.5, cy, 2.2 * idn.ear, 5.5 * idn.ear)
        sc.add(inner, _shade(idn.skin, 0.72), sil=True)


def _head(sc: _Scene, idn: Identity) -> None:
    """Face disc with a darker rim, optional blush."""
    outline = _face_outline(idn)
    sc.add(outline, idn.skin, sil=True)
    sc.add(outline, _shade(idn.skin, 0.75), sil=True, line=0.9, closed=True)
    if idn.blush > 0:
        b, g, r = idn.skin
        k = 0.1 * idn.blush
        col = (b * (1.0 - k), g * (1.0 - 1.5 * k), min(255.0, r * (1.0 + 0.5 * k)))
        for side in (-1.0, 1.0):
            sc.add(_ellipse(side * (idn.eye_dx + 3.0), idn.nose_y + 3.0, 7.0, 4.5), col)


def _nose(sc: _Scene, idn: Identity) -> None:
    """Bridge shadow, nostrils and a tip highlight; the tip protrudes (depth offset)."""
    ny, nw, p = idn.nose_y, idn.nose_w, idn.nose_prot
    shadow = _shade(idn.skin, 0.72)
    if idn.nose_bridge > 0.4:
        ramp = np.linspace(0.0, 1.0, 6)
        bridge = _curve(-1.5 - 0.6 * ramp, idn.eye_y + 2.0 + ramp * (ny - idn.eye_y - 4.0))
        zb = (0.2 + 0.65 * ramp) * p
        sc.add(_stroke(bridge, 0.3 + 0.5 * ramp), shadow, z=np.concatenate([zb, zb[::-1]]))
    base = np.array(
        [
            [-nw, ny + 1.0],
            [-nw * 0.6, ny + 3.0],
            [0.0, ny + 3.6],
            [nw * 0.6, ny + 3.0],
            [nw, ny + 1.0],
        ]
    )
    sc.add(_stroke(base, np.array([0.4, 0.6, 0.5, 0.6, 0.4])), shadow, z=p * 0.45)
    for side in (-1.0, 1.0):
        nostril = _ellipse(side * nw * 0.45, ny + 2.2, 1.5, 0.9)
        sc.add(nostril, _shade(idn.skin, 0.45), z=p * 0.55)
    sc.add(_ellipse(0.0, ny - 1.2, nw * 0.35, 1.4), _shade(idn.skin, 1.12), z=p * 0.95)


def _accessories(sc: _Scene, idn: Identity) -> None:
    """Mole and glasses."""
    mx, my, mr = idn.mole
    if mr > 0:
        sc.add(_ellipse(mx, my, mr, mr), _shade(idn.skin, 0.35))
    if idn.glasses == 0:
        return
    r, col, ey = idn.glasses_r, idn.glasses_color, idn.eye_y
    for side in (-1.0, 1.0):
        cx = side * idn.eye_dx
        if idn.glasses == 1:
            rim = _ellipse(cx, ey, r, r * 0.85)
        else:
            rim = np.array(
                [
                    [cx - r, ey - 0.7 * r],
                    [cx + r, ey - 0.7 * r],
                    [cx + r * 0.9, ey + 0.7 * r],
                    [cx - r * 0.9, ey + 0.7 * r],
                ]
            )
        sc.add(rim, col, z=3.0, line=1.1, closed=True)
        arm = np.array([[side * (idn.eye_dx + r), ey - 1.0], [side * idn.face_ax * 0.99, ey]])
        sc.add(arm, col, z=np.array([3.0, 0.0]), line=1.0)
    bridge = np.array([[-idn.eye_dx + r, ey - 1.0], [0.0, ey - 2.5], [idn.eye_dx - r, ey - 1.0]])
    sc.add(bridge, col, z=4.0, line=1.0)


def _hair_front(sc: _Scene, idn: Identity) -> None:
    """Hair cap over the top of the head down to an (asymmetric) hairline."""
    if idn.hair_style == 0:
        return
    ax, ay, cy = idn.face_ax + idn.hair_h * 0.5, idn.face_ay + idn.hair_h, idn.face_cy
    side_y = cy + (6.0 if idn.hair_style in (2, 3, 4) else -4.0)
    fringe = 9.0 if idn.hair_style == 5 else 0.0
    a0 = math.asin(max(-1.0, min(1.0, (side_y - cy) / ay)))
    t = np.linspace(math.pi - a0, 2 * math.pi + a0, 16)
    outer = _curve(ax * np.cos(t), cy + ay * np.sin(t))
    xn = np.linspace(0.98, -0.98, 13)
    ys = idn.hairline + fringe - idn.hair_curve * (1 - xn**2) + idn.hair_part * xn * (1 - xn**2)
    ys = np.minimum(ys + (side_y - idn.hairline) * xn**6, side_y)
    poly = np.concatenate([outer, _curve(xn * idn.face_ax, ys)])
    sil = np.concatenate([np.ones(len(outer), bool), np.abs(xn) > 0.9])
    sc.add(poly, idn.hair, sil=sil)


@lru_cache(maxsize=256)
def _static_parts(idn: Identity) -> tuple[_Part, _Part, _Part]:
    """Expression-independent parts of an identity: (behind the face, nose, in front)."""
    back, nose, front = _Scene(), _Scene(), _Scene()
    _body(back, idn)
    _hair_back(back, idn)
    _ears(back, idn)
    _head(back, idn)
    _nose(nose, idn)
    _accessories(front, idn)
    _hair_front(front, idn)
    return back.finish(), nose.finish(), front.finish()


def _beard(sc: _Scene, idn: Identity, ex: Expression) -> None:
    """Full beard, goatee or moustache around the mouth."""
    if idn.beard == 0:
        return
    col = idn.beard_color
    my, hw = idn.mouth_y - ex.smile * 0.5, idn.mouth_hw
    chin = idn.face_cy + idn.face_ay
    if idn.beard == 1:
        outline = _face_outline(idn)
        low = outline[outline[:, 1] > idn.nose_y + 4.0]
        low = low[np.argsort(-low[:, 0])]
        top = np.array(
            [[-hw - 4.0, my - 1.0], [0.0, my + 5.0 + ex.mouth_open], [hw + 4.0, my - 1.0]]
        )
        sc.add(np.concatenate([low, top]), col)
    elif idn.beard == 2:
        sc.add(_ellipse(0.0, (my + chin) / 2 + 2.0, hw * 0.55, (chin - my) / 2), col)
    mus = np.array(
        [
            [-hw - 1.5, my + 1.0],
            [-hw * 0.5, my - 6.0],
            [0.0, my - 5.0],
            [hw * 0.5, my - 6.0],
            [hw + 1.5, my + 1.0],
            [0.0, my - 2.5],
        ]
    )
    sc.add(mus, col)


def _iris(idn: Identity, ex: Expression, gaze_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Iris clipped to the eyelids, and the pupil, in the (unmirrored) eye frame."""
    w, h = idn.eye_w, idn.eye_h * ex.blink
    r = idn.iris_r * idn.eye_h
    g = np.array([gaze_x * w * 0.35, ex.gaze[1] * h * 0.3])
    iris = _CIRCLE * r + g
    ix = np.clip(iris[:, 0], -w, w)
    t = np.clip(1.0 - (ix / w) ** 2, 0.0, 1.0)
    iris[:, 0], iris[:, 1] = ix, np.clip(iris[:, 1], -h * t**0.7, 0.75 * h * t**0.9)
    return iris, _CIRCLE * (0.45 * r) + g


def _eyes(sc: _Scene, idn: Identity, ex: Expression) -> None:
    """Almond eyes: sclera, iris clipped to the lids, pupil, lash line."""
    w, h = idn.eye_w, idn.eye_h * ex.blink
    x = _LID_U * w
    up = -h * _LID_UP
    almond = np.concatenate([_curve(x, up), _curve(x, 0.75 * h * _LID_LO)[::-1]])
    lash = _stroke(_curve(x * 1.08, up - 0.2), _LASH)
    for side in (-1.0, 1.0):
        tilt = -side * idn.eye_tilt
        c, s = math.cos(tilt), math.sin(tilt)
        rot = np.array([[side * c, side * s], [-s, c]])  # mirror x for the left eye, then tilt
        centre = np.array([side * idn.eye_dx, idn.eye_y])
        if ex.blink > 0.3:
            iris, pupil = _iris(idn, ex, side * ex.gaze[0])
            sc.add(almond @ rot + centre, (235.0, 238.0, 240.0))
            sc.add(iris @ rot + centre, idn.iris)
            sc.add(pupil @ rot + centre, (15.0, 15.0, 15.0))
        sc.add(lash @ rot + centre, (25.0, 25.0, 30.0))


def _brows(sc: _Scene, idn: Identity, ex: Expression) -> None:
    """Tapered, arched eyebrows above the eyes."""
    half = idn.eye_w * idn.brow_len
    x = _LID_U * half
    arch = -idn.brow_arch * (1.0 - _LID_U**2)
    cy = idn.eye_y - idn.eye_h - idn.brow_gap - ex.brow_raise
    for side in (-1.0, 1.0):
        cx = side * (idn.eye_dx + 0.15 * half)
        line = _curve(cx + x, cy + arch + side * idn.brow_tilt * x)
        thick = idn.brow_thick * (_BROW[::-1] if side < 0 else _BROW)
        sc.add(_stroke(line, thick), idn.brow)


def _mouth(sc: _Scene, idn: Identity, ex: Expression) -> None:
    """Lips with a smile curve and an optional open mouth with teeth."""
    u = _MOUTH_U
    x = u * idn.mouth_hw
    mid = idn.mouth_y - ex.smile * u**2
    o = ex.mouth_open * _MOUTH_P
    up_out = mid - o / 2 - idn.lip_up * (_MOUTH_P - 0.5 * _MOUTH_BOW)
    lo_out = mid + o / 2 + idn.lip_lo * _MOUTH_P
    sc.add(np.concatenate([_curve(x, up_out), _curve(x, lo_out)[::-1]]), idn.lip, z=1.0)
    if ex.mouth_open > 0.8:
        inner = np.concatenate([_curve(x, mid - o / 2), _curve(x, mid + o / 2)[::-1]])
        sc.add(inner[1:-1], (40.0, 30.0, 60.0), z=1.0)
        teeth = np.concatenate(
            [_curve(x * 0.7, mid - o / 2), _curve(x * 0.7, mid - o / 2 + 0.35 * o)[::-1]]
        )
        sc.add(teeth[1:-1], (225.0, 230.0, 235.0), z=1.0)
    else:
        sc.add(_curve(x, mid), _shade(idn.lip, 0.55), z=1.0, line=0.7)


def _landmarks_local(idn: Identity, ex: Expression) -> _Part:
    """The 5 landmarks as a command-less part (local points plus depth offsets)."""
    my = idn.mouth_y - ex.smile
    pts = np.array(
        [
            [-idn.eye_dx, idn.eye_y],
            [idn.eye_dx, idn.eye_y],
            [0.0, idn.nose_y],
            [-idn.mouth_hw, my],
            [idn.mouth_hw, my],
        ]
    )
    return _Part(pts, np.array([0.0, 0.0, idn.nose_prot, 1.0, 1.0]), np.zeros(5, bool), ())


def _marker_part(marks: _Part, radius: float) -> _Part:
    """Discs of ``MARKER_COLORS`` centred on the landmarks (debugging/tests)."""
    sc = _Scene()
    for p, z, col in zip(marks.pts, marks.z, MARKER_COLORS, strict=True):
        sc.add(_ellipse(p[0], p[1], radius, radius), col, z=float(z))
    return sc.finish()


def _face_parts(idn: Identity, ex: Expression) -> list[_Part]:
    """All face parts back to front."""
    back, nose, front = _static_parts(idn)
    mid = _Scene()
    _beard(mid, idn, ex)
    _eyes(mid, idn, ex)
    _brows(mid, idn, ex)
    mouth = _Scene()
    _mouth(mouth, idn, ex)
    return [back, mid.finish(), nose, mouth.finish(), front]


# --------------------------------------------------------------------------- nuisance


@lru_cache(maxsize=4)
def _texture_bank(size: int) -> np.ndarray:
    """Smooth colour noise (2*size, 2*size, 3) uint8 around 128 (std ~32); fixed seed."""
    rng = np.random.default_rng(20240611)
    big = 2 * size
    coarse = rng.normal(0.0, 1.0, (big // 8 + 2, big // 8 + 2, 3)).astype(np.float32)
    fine = rng.normal(0.0, 0.5, (big // 2, big // 2, 3)).astype(np.float32)
    tex = cv2.resize(coarse, (big, big), interpolation=cv2.INTER_CUBIC)
    tex += cv2.resize(fine, (big, big), interpolation=cv2.INTER_LINEAR)
    return np.clip(128.0 + 32.0 * tex, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """White Gaussian noise (2*size, 2*size, 3) uint8 around 128 (std 32); fixed seed."""
    rng = np.random.default_rng(777)
    noise = rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
    return np.clip(128.0 + 32.0 * noise, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _ramps(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical ramps (size, size, 3) uint8: 128 + 127 * [-1, 1]."""
    a = np.round(128.0 + 127.0 * np.linspace(-1.0, 1.0, size)).astype(np.uint8)
    rx = np.ascontiguousarray(np.broadcast_to(a[None, :, None], (size, size, 3)))
    ry = np.ascontiguousarray(np.broadcast_to(a[:, None, None], (size, size, 3)))
    return rx, ry


def _crop(bank: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random size x size window of a bank."""
    oy, ox = rng.integers(0, bank.shape[0] - size, 2)
    return bank[oy : oy + size, ox : ox + size]


def _rand_color(rng: np.random.Generator) -> tuple:
    """Uniform random BGR colour."""
    return tuple(float(v) for v in rng.uniform(0, 255, 3))


def _clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Random rectangles, discs, lines and ellipses (in place)."""
    size = img.shape[0]
    for _ in range(count):
        kind = rng.integers(4)
        p = (rng.uniform(-0.1, 1.1, 4) * size).astype(int).tolist()
        col = _rand_color(rng)
        th = int(rng.integers(1, max(2, size // 20)))
        if kind == 0:
            cv2.rectangle(img, (p[0], p[1]), (p[2], p[3]), col, -1, _AA)
        elif kind == 1:
            r = int(rng.uniform(0.03, 0.25) * size)
            cv2.circle(img, (p[0], p[1]), r, col, -1 if rng.random() < 0.6 else th, _AA)
        elif kind == 2:
            cv2.line(img, (p[0], p[1]), (p[2], p[3]), col, th, _AA)
        else:
            axes = (int(rng.uniform(0.03, 0.3) * size), int(rng.uniform(0.03, 0.15) * size))
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(img, (p[0], p[1]), axes, ang, 0, 360, col, -1, _AA)


def _background(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    """Textured, randomly tinted background with clutter shapes."""
    base = rng.uniform(20, 235, 3)
    amp = rng.uniform(0.15, 0.45 + 0.8 * s)  # texture std ~ 32 * amp grey levels
    mix = amp * (np.eye(3) + rng.uniform(-0.5, 0.5, (3, 3)))
    m = np.hstack([mix, (base - mix @ np.full(3, 128.0))[:, None]])
    img = cv2.transform(_crop(_texture_bank(size), rng, size), m)
    _clutter(img, rng, int(rng.integers(1, 3 + round(6 * s))))
    return img


def _sample_pose(
    rng: np.random.Generator,
    idn: Identity,
    size: int,
    s: float,
    jitter: float,
    yaw_deg: tuple[float, float] | None = None,
) -> Pose:
    """Random position/scale (head spans 45-75% of the frame) and head rotation.

    ``yaw_deg`` = (lo, hi) forces |yaw| into that range (random side), e.g. (0, 5) for a
    frontal and (35, 45) for a near-profile view, as cross-pose protocols need.
    """
    span = rng.uniform(0.45, 0.75)
    scale = span * size / (_HEAD_TOP + idn.face_cy + idn.face_ay)
    k = s * jitter
    roll = math.radians(float(np.clip(rng.uniform(-25.0, 25.0) * k, -90.0, 90.0)))
    yaw = math.radians(float(np.clip(rng.uniform(-30.0, 30.0) * k, -45.0, 45.0)))
    if yaw_deg is not None:
        side = 1.0 if rng.random() < 0.5 else -1.0
        yaw = side * math.radians(float(np.clip(rng.uniform(*yaw_deg), 0.0, 45.0)))
    pitch = math.radians(float(np.clip(rng.uniform(-12.0, 12.0) * k, -30.0, 30.0)))
    mid_y = (idn.face_cy + idn.face_ay - _HEAD_TOP) / 2  # local y of the head's centre
    radius = 0.5 * span * size * 0.92
    lo, hi = radius, size - radius
    cx, cy = rng.uniform(lo, hi, 2) if hi > lo else np.full(2, size / 2.0)
    # shift so that the head centre (not the local origin) lands at (cx, cy)
    ox = cx + scale * math.sin(roll) * mid_y
    oy = cy - scale * math.cos(roll) * mid_y
    return Pose(float(ox), float(oy), float(scale), roll, yaw, pitch)


def _sample_expression(rng: np.random.Generator, s: float) -> Expression:
    """Random smile, open mouth, brow raise, blink and gaze scaled by strength ``s``."""
    s1 = min(s, 1.5)
    opened = rng.random() < 0.35 * s1
    closed = rng.random() < 0.12 * s1
    blink = rng.uniform(0.05, 0.5) if closed else rng.uniform(1 - 0.3 * s1, 1.1)
    return Expression(
        smile=float(rng.uniform(-1.0, 3.5) * s1),
        mouth_open=float(rng.uniform(1.5, 7.0) * s1) if opened else 0.0,
        brow_raise=float(rng.uniform(-1.0, 3.5) * s1),
        blink=float(blink),
        gaze=(float(rng.uniform(-1, 1) * s1), float(rng.uniform(-1, 1) * s1)),
    )


def _occluder(img: np.ndarray, rng: np.random.Generator, lm: np.ndarray, scale: float) -> None:
    """A bar or blob over part of the face, near a random landmark (in place)."""
    size = img.shape[0]
    centre = lm[rng.integers(5)] + rng.normal(0.0, 6.0 * scale, 2)
    col = _rand_color(rng)
    if rng.random() < 0.5:
        ang = rng.uniform(0, np.pi)
        d = np.array([math.cos(ang), math.sin(ang)]) * rng.uniform(15.0, 45.0) * scale
        a, b = (centre - d).round().astype(int).tolist(), (centre + d).round().astype(int).tolist()
        th = max(2, round(rng.uniform(4.0, 10.0) * scale))
        cv2.line(img, tuple(a), tuple(b), col, th, _AA)
    else:
        axes = tuple((rng.uniform(5.0, 14.0, 2) * scale).round().astype(int).tolist())
        c = tuple(np.clip(centre, 0, size - 1).round().astype(int).tolist())
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, _AA)


def _photometric(img: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    """Blur, directional light, brightness/contrast, colour jitter and Gaussian noise."""
    size, s1 = img.shape[0], min(s, 1.6)
    if rng.random() < 0.6 * s1:
        k = 3 if size < 200 else 5
        w = min(1.0, rng.uniform(0.3, 1.0) * s1)
        img = cv2.addWeighted(img, 1.0 - w, cv2.blur(img, (k, k)), w, 0.0)
        if rng.random() < 0.3 * s1:
            img = cv2.blur(img, (k, k))
    # directional light: gain 1 + mag * (cos a * x + sin a * y), stored as uint8 (128 = 1.0)
    ang, mag = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.4) * s1
    rx, ry = _ramps(size)
    gx, gy = mag * math.cos(ang), mag * math.sin(ang)
    gain = cv2.addWeighted(rx, gx, ry, gy, 128.0 * (1.0 - gx - gy))
    img = cv2.multiply(img, gain, scale=1.0 / 128.0)
    # brightness, contrast and colour jitter as one affine colour transform
    contrast = 1.0 + rng.uniform(-0.35, 0.2) * s1
    bright = 1.0 + rng.uniform(-0.2, 0.15) * s1
    mix = contrast * bright * (np.eye(3) + rng.uniform(-0.06, 0.06, (3, 3)) * s)
    bias = 128.0 * (1.0 - contrast) * bright + rng.uniform(-8.0, 8.0, 3) * s
    img = cv2.transform(img, np.hstack([mix, bias[:, None]]))
    sigma = rng.uniform(0.0, 7.0) * s  # grey levels
    if sigma > 0.5:
        beta = sigma / 32.0
        img = cv2.addWeighted(img, 1.0, _crop(_noise_bank(size), rng, size), beta, -128.0 * beta)
    return img


# --------------------------------------------------------------------------- public API


def render(
    identity: Identity,
    rng: np.random.Generator,
    frame_size: int = 144,
    *,
    difficulty: float = 0.5,
    pose_jitter: float = 1.0,
    occluder_prob: float = 0.2,
    markers: bool = False,
    yaw_deg: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one unaligned image of ``identity`` with per-image nuisance drawn from ``rng``.

    Returns a (frame_size, frame_size, 3) BGR uint8 image and (5, 2) float32 landmarks in
    pixels. ``markers=True`` (debugging/tests) paints each landmark as a disc of
    ``MARKER_COLORS`` through the same projection and skips occluder and photometric
    nuisance, so the pixel under each landmark has exactly that colour. ``yaw_deg`` forces
    the head's |yaw| into a range of degrees (cross-pose sets).
    """
    s = 2.0 * difficulty
    img = _background(rng, frame_size, s)
    pose = _sample_pose(rng, identity, frame_size, s, pose_jitter, yaw_deg)
    ex = _sample_expression(rng, s)
    clothes = _rand_color(rng)
    marks = _landmarks_local(identity, ex)
    parts = _face_parts(identity, ex)
    if markers:
        parts.append(_marker_part(marks, 2.5 / pose.scale))
    px = _draw_parts(img, [*parts, marks], _Projector(identity, pose), clothes)
    lm = px[-5:].astype(np.float32)
    if markers:
        return img, lm
    if rng.random() < min(1.0, occluder_prob * s):
        _occluder(img, rng, lm, pose.scale)
    return _photometric(img, rng, s), lm


@lru_cache(maxsize=1024)
def _cached_identity(seed: int, identity: int) -> Identity:
    """``identity_params`` memoised for ``render_one``."""
    return identity_params(seed, identity)


def _render_kwargs(spec: SynthFaceSpec) -> dict:
    """The nuisance keyword arguments of ``render`` taken from a spec."""
    return {
        "difficulty": spec.difficulty,
        "pose_jitter": spec.pose_jitter,
        "occluder_prob": spec.occluder_prob,
    }


def render_one(spec: SynthFaceSpec, identity: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of ``identity``: a pure function of ``(spec.seed, identity, index)``."""
    rng = np.random.default_rng([spec.seed, identity, index, 1])
    idn = _cached_identity(spec.seed, identity)
    return render(idn, rng, spec.frame_size, **_render_kwargs(spec))


def iter_images(
    spec: SynthFaceSpec, identities: range | Sequence[int] | None = None
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(identity, image_index, bgr, landmarks)``; identities default to all of spec."""
    ids = range(spec.num_identities) if identities is None else identities
    kwargs = _render_kwargs(spec)
    for k in ids:
        idn = identity_params(spec.seed, int(k))
        for j in range(spec.images_per_identity):
            rng = np.random.default_rng([spec.seed, int(k), j, 1])
            img, lm = render(idn, rng, spec.frame_size, **kwargs)
            yield int(k), j, img, lm


def contact_sheet(
    images: list[np.ndarray], landmarks: list[np.ndarray] | None = None, cols: int = 8
) -> np.ndarray:
    """Tile equally sized BGR images into one sheet; draw landmarks as small coloured dots."""
    if not images:
        raise ValueError("no images to tile")
    h, w = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = img.copy() if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if landmarks is not None:
            for p, col in zip(np.asarray(landmarks[i]), MARKER_COLORS, strict=False):
                centre = (round(float(p[0]) * 4), round(float(p[1]) * 4))
                cv2.circle(tile, centre, 6, col, -1, _AA, 2)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return sheet
