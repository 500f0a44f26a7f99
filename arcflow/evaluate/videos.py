"""Video features from frame features, shared by the YTF and iQIYI-VID benchmarks.

A video's feature is the mean of its L2-normalised frame features, L2-normalised again
(insightface's YTF procedure and the iQIYI-VID baseline).

Aligned frames are named so that :func:`video_of` can tell their video:

- YTF: ``frame_images_DB/<Name>/<video>/<video>.<frame>.jpg`` or
  ``aligned_images_DB/<Name>/<video>/aligned_detect_<video>.<frame>.jpg`` -> ``<Name>/<video>``
  (the name ``splits.txt`` uses).
- iQIYI-VID: ``<video_name>/<frame>.jpg``, ``<frame>`` decimal digits, e.g.
  ``IQIYI_VID_VAL_0000001.mp4/000012.jpg`` -> ``IQIYI_VID_VAL_0000001.mp4`` (the name the
  ground truth uses, kept verbatim with its ``.mp4``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from arcflow.data.protocols.ytf import FRAME_DIRS, frame_number
from arcflow.errors import DataFormatError

#: Frames normalised and summed per chunk, bounding the float64 working copy.
_CHUNK = 1 << 16


def video_of(name: str) -> str:
    """The video an aligned frame name belongs to (YTF ``<Name>/<video>``, or iQIYI video)."""
    parts = name.split("/")
    if len(parts) == 4 and parts[0] in FRAME_DIRS:
        _, person, video, filename = parts
        try:
            frame_number(filename, video)
        except ValueError as exc:
            raise DataFormatError(f"frame {name!r}: {exc}") from None
        if person:
            return f"{person}/{video}"
    elif len(parts) == 2:
        video, filename = parts
        stem, dot, ext = filename.rpartition(".")
        if video and dot and ext.lower() == "jpg" and stem.isascii() and stem.isdigit():
            return video
    raise DataFormatError(
        f"frame {name!r} is neither '<frames_DB>/<Name>/<video>/<frame file>' (YTF) "
        "nor '<video_name>/<frame>.jpg' (iQIYI-VID)"
    )


def checked_l2_normalise(rows: np.ndarray, label: Callable[[int], str]) -> np.ndarray:
    """Rows divided by their L2 norm; a zero or non-finite row is an error naming it."""
    norms = np.linalg.norm(rows, axis=1)
    bad = np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))
    if bad.size:
        raise ValueError(f"{label(int(bad[0]))} has a zero or non-finite norm")
    return rows / norms[:, None]


def _video_index(
    video_of_frame: Sequence[str], videos: Sequence[str] | None
) -> tuple[list[str], np.ndarray]:
    """Video names (first-appearance order, or ``videos``) and each frame's video index."""
    names = np.asarray(video_of_frame, dtype=object)
    if videos is None:
        uniq, first, inverse = np.unique(names, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return [str(v) for v in uniq[order]], rank[inverse.reshape(-1)]
    position = {video: i for i, video in enumerate(videos)}
    if len(position) != len(videos):
        raise ValueError("videos lists a video twice")
    index = np.empty(len(names), dtype=np.intp)
    for i, video in enumerate(video_of_frame):
        if video not in position:
            raise DataFormatError(f"frame {i} belongs to video {video!r}, not in the video list")
        index[i] = position[video]
    return list(videos), index


class EmptyGroupError(ValueError):
    """A group of :func:`normalised_means` has no row; ``group`` is its index."""

    def __init__(self, message: str, group: int) -> None:
        super().__init__(message)
        self.group = group


def normalised_means(
    feats: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    name: Callable[[int], str] = lambda g: f"group {g}",
) -> np.ndarray:
    """Per group ``g`` in ``range(n_groups)``: mean of the L2-normalised rows with
    ``group == g``, L2-normalised again; shape ``(n_groups, D)``.

    Sums run in float64 over chunks of rows; the result has the input's float dtype
    (float32 at least). An empty group raises :class:`EmptyGroupError`, a zero or
    non-finite row or mean ValueError; ``name(g)`` names group ``g`` in messages.
    """
    feats, group = np.asarray(feats), np.asarray(group, dtype=np.intp)
    if feats.ndim != 2 or feats.shape[1] == 0:
        raise ValueError(f"features must be a (rows, D) array, got shape {feats.shape}")
    if group.shape != (feats.shape[0],):
        raise ValueError(f"{feats.shape[0]} feature rows but {group.shape} group indices")
    counts = np.bincount(group, minlength=n_groups)
    if counts.size > n_groups:
        raise ValueError(f"group index {counts.size - 1} out of range({n_groups})")
    if (counts == 0).any():
        empty = int(np.flatnonzero(counts == 0)[0])
        raise EmptyGroupError(f"{name(empty)} has no rows", empty)
    sums = np.zeros((n_groups, feats.shape[1]))
    for lo in range(0, feats.shape[0], _CHUNK):
        chunk = feats[lo : lo + _CHUNK].astype(np.float64)
        normed = checked_l2_normalise(chunk, lambda i, lo=lo: f"feature row {lo + i}")
        np.add.at(sums, group[lo : lo + _CHUNK], normed)
    means = checked_l2_normalise(sums / counts[:, None], lambda g: f"mean of {name(g)}")
    dtype = np.result_type(feats.dtype, np.float32) if feats.dtype.kind == "f" else np.float32
    return means.astype(dtype)


def video_features(
    frame_feats: np.ndarray,
    video_of_frame: Sequence[str],
    videos: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """``(videos, feats)``: per video, the re-normalised mean of its normalised frame features.

    ``video_of_frame[i]`` names the video of row ``i``; frames may come in any order.
    ``videos`` fixes the output order and the set of videos expected (a listed video with
    no frame raises DataFormatError naming it); by default videos come in order of first
    appearance. Sums run in float64; the result has the input's float dtype (float32 at least).
    """
    feats = np.asarray(frame_feats)
    if feats.ndim != 2 or feats.shape[1] == 0:
        raise ValueError(f"frame_feats must be a (frames, D) array, got shape {feats.shape}")
    if len(video_of_frame) != feats.shape[0]:
        raise ValueError(f"{feats.shape[0]} frame features but {len(video_of_frame)} video names")
    names, index = _video_index(video_of_frame, videos)
    try:
        return names, normalised_means(feats, index, len(names), lambda g: f"video {names[g]!r}")
    except EmptyGroupError as exc:
        raise DataFormatError(f"video {names[exc.group]!r} has no frame features") from None
