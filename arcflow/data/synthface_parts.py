"""SynthFace face geometry: an identity's parts as polygons in the face-local frame.

Points are in units of the 112x112 ArcFace crop with the origin near the nose tip
(:data:`LOCAL_ORIGIN`); :func:`face_parts` returns draw commands back to front and
:func:`landmarks_local` the 5 landmarks, which :mod:`arcflow.data.synthface` projects into the
frame through the same head model, so the landmarks are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from arcflow.data.synthface_identity import Expression, Identity
from arcflow.face_template import ARCFACE_TEMPLATE

#: ArcFace 112x112 template (left eye, right eye, nose, left mouth, right mouth), float32.
TEMPLATE_112 = ARCFACE_TEMPLATE.astype(np.float32)
#: Face-local coordinates are template pixels minus this origin (near the nose tip).
LOCAL_ORIGIN = np.array([56.0, 72.0], dtype=np.float32)

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

#: Marker colours drawn at the landmarks when ``render(..., markers=True)``.
MARKER_COLORS = (
    (255, 0, 0),
    (0, 255, 0),
    (255, 0, 255),
    (0, 0, 255),
    (0, 255, 255),
)


# --------------------------------------------------------------------------- scene

# (start, end, BGR colour or None for the per-image clothes colour, line width (0: fill), closed)
_Cmd = tuple[int, int, "tuple | None", float, bool]


@dataclass(frozen=True)
class Part:
    """A finished group of draw commands; points are face-local, commands index into them."""

    pts: np.ndarray
    z: np.ndarray
    sil: np.ndarray
    cmds: tuple[_Cmd, ...]


class _Scene:
    """Collects draw commands (polygons/polylines in face-local space) into a ``Part``."""

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

    def finish(self) -> Part:
        """Freeze the queued commands."""
        if not self.pts:
            return Part(np.zeros((0, 2)), np.zeros(0), np.zeros(0, bool), ())
        return Part(
            np.concatenate(self.pts),
            np.concatenate(self.z),
            np.concatenate(self.sil),
            tuple(self.cmds),
        )


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
def _static_parts(idn: Identity) -> tuple[Part, Part, Part]:
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


def landmarks_local(idn: Identity, ex: Expression) -> Part:
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
    return Part(pts, np.array([0.0, 0.0, idn.nose_prot, 1.0, 1.0]), np.zeros(5, bool), ())


def marker_part(marks: Part, radius: float) -> Part:
    """Discs of ``MARKER_COLORS`` centred on the landmarks (debugging/tests)."""
    sc = _Scene()
    for p, z, col in zip(marks.pts, marks.z, MARKER_COLORS, strict=True):
        sc.add(_ellipse(p[0], p[1], radius, radius), col, z=float(z))
    return sc.finish()


def face_parts(idn: Identity, ex: Expression) -> list[Part]:
    """All face parts back to front."""
    back, nose, front = _static_parts(idn)
    mid = _Scene()
    _beard(mid, idn, ex)
    _eyes(mid, idn, ex)
    _brows(mid, idn, ex)
    mouth = _Scene()
    _mouth(mouth, idn, ex)
    return [back, mid.finish(), nose, mouth.finish(), front]
