"""Who a SynthFace face is and how it appears in one image: the face model's parameters.

:class:`Identity` is drawn deterministically from ``(seed, identity)`` by
:func:`identity_params`; :class:`Pose` and :class:`Expression` are per-image
(:mod:`arcflow.data.synthface_nuisance` samples them). Lengths are face-local units: pixels of
the 112x112 ArcFace crop, origin near the nose tip (:mod:`arcflow.data.synthface_parts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
