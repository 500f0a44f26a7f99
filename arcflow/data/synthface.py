"""SynthFace: procedurally rendered, unaligned face-like images with exact 5-point landmarks.

Every identity is a set of appearance parameters drawn from ``(seed, identity)``
(:mod:`arcflow.data.synthface_identity`); every image is a pure function of
``(seed, identity, index)``. Faces are built as polygons in a face-local frame (units of the
112x112 ArcFace crop, origin near the nose tip; :mod:`arcflow.data.synthface_parts`), pushed
through a simple head model (yaw/pitch on an ellipsoid) and a similarity map into the frame,
and drawn with anti-aliased OpenCV primitives over per-image nuisance
(:mod:`arcflow.data.synthface_nuisance`). Landmarks go through exactly the same point
transform, so they are exact. Landmark order follows insightface: left eye, right eye, nose
tip, left mouth corner, right mouth corner ("left" = smaller x in a frontal, upright face).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from arcflow.data.synthface_identity import Identity, Pose, identity_params
from arcflow.data.synthface_nuisance import (
    background,
    occluder,
    photometric,
    rand_color,
    sample_expression,
    sample_pose,
)
from arcflow.data.synthface_parts import Part, face_parts, landmarks_local, marker_part

_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = float(1 << _SHIFT)


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


# --------------------------------------------------------------------------- drawing


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
    img: np.ndarray, parts: Sequence[Part], proj: _Projector, clothes: tuple
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
    img = background(rng, frame_size, s)
    pose = sample_pose(rng, identity, frame_size, s, pose_jitter, yaw_deg)
    ex = sample_expression(rng, s)
    clothes = rand_color(rng)
    marks = landmarks_local(identity, ex)
    parts = face_parts(identity, ex)
    if markers:
        parts.append(marker_part(marks, 2.5 / pose.scale))
    px = _draw_parts(img, [*parts, marks], _Projector(identity, pose), clothes)
    lm = px[-5:].astype(np.float32)
    if markers:
        return img, lm
    if rng.random() < min(1.0, occluder_prob * s):
        occluder(img, rng, lm, pose.scale)
    return photometric(img, rng, s), lm


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
