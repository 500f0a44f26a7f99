"""SynthFace per-image nuisance: background, placement and pose, expression, occluder, light.

Everything is drawn from the image's ``rng`` and scaled by a strength ``s`` (twice the
difficulty); the texture and noise banks are fixed, so an image stays a pure function of its
seed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from arcflow.data.synthface_identity import Expression, Identity, Pose

_AA = cv2.LINE_AA
_HEAD_TOP = 62.0  # local units from the origin to the top of a typical head (hair included)


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


def rand_color(rng: np.random.Generator) -> tuple:
    """Uniform random BGR colour."""
    return tuple(float(v) for v in rng.uniform(0, 255, 3))


def _clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Random rectangles, discs, lines and ellipses (in place)."""
    size = img.shape[0]
    for _ in range(count):
        kind = rng.integers(4)
        p = (rng.uniform(-0.1, 1.1, 4) * size).astype(int).tolist()
        col = rand_color(rng)
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


def background(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    """Textured, randomly tinted background with clutter shapes."""
    base = rng.uniform(20, 235, 3)
    amp = rng.uniform(0.15, 0.45 + 0.8 * s)  # texture std ~ 32 * amp grey levels
    mix = amp * (np.eye(3) + rng.uniform(-0.5, 0.5, (3, 3)))
    m = np.hstack([mix, (base - mix @ np.full(3, 128.0))[:, None]])
    img = cv2.transform(_crop(_texture_bank(size), rng, size), m)
    _clutter(img, rng, int(rng.integers(1, 3 + round(6 * s))))
    return img


def sample_pose(
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


def sample_expression(rng: np.random.Generator, s: float) -> Expression:
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


def occluder(img: np.ndarray, rng: np.random.Generator, lm: np.ndarray, scale: float) -> None:
    """A bar or blob over part of the face, near a random landmark (in place)."""
    size = img.shape[0]
    centre = lm[rng.integers(5)] + rng.normal(0.0, 6.0 * scale, 2)
    col = rand_color(rng)
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


def photometric(img: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
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
