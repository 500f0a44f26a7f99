"""Face detectors compared: MTCNN (two final thresholds) vs RetinaFace MobileNet-0.25.

PYTHONPATH=. python bench/detector_compare.py                 # ~8 min on 2 CPU cores
PYTHONPATH=. python bench/detector_compare.py --speed-only    # the timings alone
PYTHONPATH=. python bench/detector_compare.py --json out.json --picture docs/images/detectors_t1.jpg

Detectors: ``mtcnn`` as this repo configures it (stage thresholds 0.6, 0.7, 0.9), ``mtcnn``
with facenet-pytorch's default final threshold (0.6, 0.7, 0.7), and ``retinaface_mnet`` at
``max_size`` 640 (``align.retinaface_size``) with its default threshold 0.5.

On insightface's photos (``tests/photos.py``; t1.jpg has 6 people, the portrait 1):

- reference faces: the pairs of detections of the two detectors at their configured
  thresholds whose boxes overlap (IoU >= 0.3, greedy by IoU); the script checks they are
  6 and 1, and the picture is there for an eye to confirm them;
- a *false face* is a detection whose box overlaps no reference face (IoU < 0.3 with both
  detectors' boxes of every reference face); a *missed face* is a reference face without one;
- the *score margin*: the lowest real-face score vs the highest false-face score when the
  final threshold is dropped to 0.05 (MTCNN) / 0.02 (RetinaFace, biubug6's evaluation value);
- landmark disagreement per reference face, point by point, in units of the inter-ocular
  distance (the mean of the two detectors' eye-to-eye distances);
- speed: t1.jpg resized to 640 px on its longer side, with 1 and 2 threads (torch and ONNX
  Runtime alike) and 1 and 4 images per call: images/s and the process's CPU seconds per
  image, medians of ``--rounds`` interleaved runs of >= ``--seconds``. With 2 threads on 2
  cores that other jobs also use, MTCNN's thousands of small ops each wait for a descheduled
  thread and its wall time collapses; the one-thread numbers are the stable ones.

On SynthFace (``arcflow.data.synthface``, exact ground-truth landmarks; 144-px frames,
difficulty 0 = frontal and 0.5 = the default nuisance): detection rate (a detection whose
landmarks' normalised mean error is < 0.5 of the true inter-ocular distance) and that error
(NME: mean over the five points of the distance to the truth / the true inter-ocular distance)
for the detection closest to the truth, also on the frames every detector found; RetinaFace
also at the frames' own size (``max_size=None``) besides 640 px.

The portrait is an insightface-aligned 112x112 crop: its points were put on the ArcFace
template by insightface's own detector, so the NME to the template is reported as a proxy
ground truth (up to that alignment's residual).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from arcflow.align.detectors import Detection, Detector, get_detector
from arcflow.data.synthface import SynthFaceSpec, iter_images
from arcflow.data.synthface_parts import TEMPLATE_112
from arcflow.devices import cpu_model
from tests.photos import insightface_photos

MATCH_IOU = 0.3
POINTS = ("left eye", "right eye", "nose", "left mouth", "right mouth")
MTCNN_REPO, MTCNN_DEFAULT, MNET = "mtcnn 0.6/0.7/0.9", "mtcnn 0.6/0.7/0.7", "retinaface_mnet"
MNET_NATIVE = "retinaface_mnet native size"
#: BGR colours of each detector's drawing.
COLOURS = {MTCNN_REPO: (255, 160, 0), MTCNN_DEFAULT: (0, 0, 255), MNET: (0, 220, 0)}


def build(size: int) -> dict[str, Detector]:
    """The compared detectors at their configured thresholds, and permissive variants."""
    return {
        MTCNN_REPO: get_detector("mtcnn", device="cpu"),
        MTCNN_DEFAULT: get_detector("mtcnn", thresholds=(0.6, 0.7, 0.7), device="cpu"),
        MNET: get_detector("retinaface_mnet", max_size=size, device="cpu"),
        "mtcnn permissive": get_detector("mtcnn", thresholds=(0.6, 0.7, 0.05), device="cpu"),
        "mnet permissive": get_detector(
            "retinaface_mnet", max_size=size, confidence_threshold=0.02, device="cpu"
        ),
        MNET_NATIVE: get_detector("retinaface_mnet", max_size=None, device="cpu"),
    }


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), x1 y1 x2 y2."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def pairs(a: Detection, b: Detection) -> list[tuple[int, int]]:
    """Greedy one-to-one matches (i in a, j in b) with IoU >= MATCH_IOU, best IoU first."""
    overlap = iou(a.boxes, b.boxes) if len(a) and len(b) else np.zeros((len(a), len(b)))
    found: list[tuple[int, int]] = []
    for flat in np.argsort(-overlap, axis=None):
        i, j = np.unravel_index(flat, overlap.shape)
        if overlap[i, j] < MATCH_IOU:
            break
        if all(i != p and j != q for p, q in found):
            found.append((int(i), int(j)))
    return sorted(found)


def inter_ocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[1] - points[0]))


def photo_report(found: dict[str, Detection], permissive: dict[str, Detection]) -> dict:
    """Reference faces, false/missed faces, score margins and landmark disagreement."""
    ref = pairs(found[MTCNN_REPO], found[MNET])
    ref_boxes = [(found[MTCNN_REPO].boxes[i], found[MNET].boxes[j]) for i, j in ref]

    def real(det: Detection) -> np.ndarray:
        """Per detection: does it overlap a reference face?"""
        if not len(det) or not ref:
            return np.zeros(len(det), bool)
        both = np.concatenate(
            [np.stack([m for m, _ in ref_boxes]), np.stack([r for _, r in ref_boxes])]
        )
        return (iou(det.boxes, both) >= MATCH_IOU).any(axis=1)

    out: dict = {"reference_faces": len(ref), "detectors": {}}
    for name, det in found.items():
        is_real = real(det)
        out["detectors"][name] = {
            "faces": len(det),
            "false": int((~is_real).sum()),
            "false_scores": [round(float(x), 3) for x in det.scores[~is_real]],
            "missed": len(ref) - int(is_real.sum()),
            "min_real_score": float(det.scores[is_real].min()) if is_real.any() else None,
        }
    for name, det in permissive.items():
        is_real = real(det)
        out["detectors"][name] = {
            "faces": len(det),
            "best_false_score": float(det.scores[~is_real].max()) if (~is_real).any() else 0.0,
            "min_real_score": float(det.scores[is_real].min()) if is_real.any() else None,
        }
    errors = []
    for i, j in ref:
        a, b = found[MTCNN_REPO].landmarks[i], found[MNET].landmarks[j]
        scale = (inter_ocular(a) + inter_ocular(b)) / 2
        errors.append(np.linalg.norm(a - b, axis=1) / scale)
    errors_array = np.array(errors).reshape(-1, 5)
    out["landmark_disagreement"] = {
        "per_face_mean": [round(float(e), 3) for e in errors_array.mean(axis=1)],
        "mean": float(errors_array.mean()) if errors else None,
        "max": float(errors_array.max()) if errors else None,
        "per_point_mean": {
            point: round(float(e), 3)
            for point, e in zip(POINTS, errors_array.mean(axis=0), strict=True)
        },
    }
    return out


def template_report(found: dict[str, Detection]) -> dict[str, float | None]:
    """NME of each detector's best face vs the ArcFace 112 template, for a photo that is an
    insightface-aligned 112x112 crop (its 5 points were put on the template by insightface's
    own detector, so the template is a proxy ground truth, up to that fit's residual)."""
    truth = TEMPLATE_112
    out: dict[str, float | None] = {}
    for name in (MTCNN_REPO, MNET):
        det = found[name]
        errors = np.linalg.norm(det.landmarks[:1] - truth, axis=2)
        out[name] = float(errors.mean() / inter_ocular(truth)) if len(det) else None
        out[name + " per point"] = [round(float(e) / inter_ocular(truth), 3) for e in errors[0]]
    return out


def synthface_report(detectors: dict[str, Detector], difficulty: float, frames: int) -> dict:
    """Detection rate and NME vs SynthFace's true landmarks, per detector."""
    identities = max(1, frames // 4)
    spec = SynthFaceSpec(num_identities=identities, images_per_identity=4, difficulty=difficulty)
    images, truths = [], []
    for _, _, image, landmarks in iter_images(spec):
        images.append(image)
        truths.append(landmarks)
    out: dict = {"frames": len(images), "frame_size": spec.frame_size}
    per_frame: dict[str, list[float | None]] = {}
    for name in (MTCNN_REPO, MTCNN_DEFAULT, MNET, MNET_NATIVE):
        per_frame[name], offsets, extra = [], [], 0
        for det, truth in zip(detectors[name].detect(images), truths, strict=True):
            errors = np.linalg.norm(det.landmarks - truth, axis=2).mean(axis=1)
            best = float(errors.min()) / inter_ocular(truth) if len(det) else 1.0
            per_frame[name].append(best if best < 0.5 else None)
            extra += len(det) - (best < 0.5)
            if best < 0.5:  # signed offsets of the matched face's points, in IOD units
                offsets.append((det.landmarks[errors.argmin()] - truth) / inter_ocular(truth))
        nmes = [e for e in per_frame[name] if e is not None]
        offset = np.array(offsets).reshape(-1, 5, 2)
        out[name] = {
            "detection_rate": len(nmes) / len(images),
            "nme_mean": float(np.mean(nmes)) if nmes else None,
            "nme_median": float(np.median(nmes)) if nmes else None,
            "false_faces": extra,
            # per point: mean distance, and the mean signed (dx, dy): a bias is a convention
            "nme_per_point": [round(float(e), 3) for e in np.linalg.norm(offset, axis=2).mean(0)],
            "bias_per_point": offset.mean(axis=0).round(3).tolist() if len(offset) else None,
        }
    common = [i for i in range(len(images)) if all(v[i] is not None for v in per_frame.values())]
    out["common_frames"] = len(common)
    for name, values in per_frame.items():
        out[name]["nme_common"] = float(np.mean([values[i] for i in common])) if common else None
    return out


def speeds(
    detectors: dict[str, Detector], image: np.ndarray, batch: int, seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """Per detector, ``batch`` copies of ``image`` a call: the median images/s and CPU seconds
    per image (this process, all threads) over ``rounds`` rounds, each running every detector
    in turn for >= ``seconds`` (interleaved, so a busy machine slows them alike)."""
    images = [image] * batch
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in detectors}
    for detector in detectors.values():
        detector.detect(images)  # warm-up
    for _ in range(rounds):
        for name, detector in detectors.items():
            calls, start, cpu = 0, time.perf_counter(), time.process_time()
            while (elapsed := time.perf_counter() - start) < seconds or calls == 0:
                detector.detect(images)
                calls += 1
            done = calls * batch
            rates[name].append((done / elapsed, (time.process_time() - cpu) / done))
    return {
        name: {
            "images_per_s": statistics.median(r[0] for r in runs),
            "cpu_s_per_image": statistics.median(r[1] for r in runs),
        }
        for name, runs in rates.items()
    }


def draw(image: np.ndarray, found: dict[str, Detection], width: int) -> np.ndarray:
    """``image`` with each detector's boxes, scores and landmarks, resized to ``width``, over
    a strip of the faces both found, enlarged, with both detectors' landmarks."""
    canvas = image.copy()
    for name in (MTCNN_DEFAULT, MTCNN_REPO, MNET):
        colour = COLOURS[name]
        for box, score, points in zip(
            found[name].boxes, found[name].scores, found[name].landmarks, strict=True
        ):
            if name == MTCNN_DEFAULT and (iou(box[None], found[MTCNN_REPO].boxes) > 0.9).any():
                continue  # the same face as the repo's MTCNN: drawn once
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2, cv2.LINE_AA)
            label_y = y2 + 18 if name == MNET else y1 - 6
            font = cv2.FONT_HERSHEY_SIMPLEX
            cv2.putText(canvas, f"{score:.3f}", (x1, label_y), font, 0.55, colour, 2)
            for x, y in points:
                centre = (round(float(x)), round(float(y)))
                cv2.circle(canvas, centre, 4 if name == MNET else 3, colour, -1, cv2.LINE_AA)
    scale = width / canvas.shape[1]
    canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    legend = [
        (MTCNN_REPO + " (repo)", COLOURS[MTCNN_REPO]),
        (MTCNN_DEFAULT + " (its extra boxes)", COLOURS[MTCNN_DEFAULT]),
        (MNET + " 640px", COLOURS[MNET]),
    ]
    for row, (text, colour) in enumerate(legend):
        y = 22 + 22 * row
        cv2.putText(canvas, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4)
        cv2.putText(canvas, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
    return np.vstack([canvas, face_strip(image, found, width)])


def face_strip(image: np.ndarray, found: dict[str, Detection], width: int) -> np.ndarray:
    """The reference faces side by side, each a square around RetinaFace's box, with the
    repo's MTCNN landmarks (blue) and RetinaFace's (green)."""
    matched = sorted(
        pairs(found[MTCNN_REPO], found[MNET]), key=lambda p: found[MNET].boxes[p[1], 0]
    )
    tile = width // max(1, len(matched))
    tiles = []
    for i, j in matched:
        x1, y1, x2, y2 = found[MNET].boxes[j]
        side = 1.3 * max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        zoom = tile / side
        affine = np.array([[zoom, 0, tile / 2 - zoom * cx], [0, zoom, tile / 2 - zoom * cy]])
        face = cv2.warpAffine(image, affine, (tile, tile), flags=cv2.INTER_LINEAR)
        for name, index in ((MTCNN_REPO, i), (MNET, j)):
            for x, y in found[name].landmarks[index]:
                centre = (round(zoom * (x - cx) + tile / 2), round(zoom * (y - cy) + tile / 2))
                cv2.circle(face, centre, 3, COLOURS[name], -1, cv2.LINE_AA)
        tiles.append(face)
    strip = np.hstack(tiles) if tiles else np.zeros((1, width, 3), np.uint8)
    return np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=640, help="RetinaFace max_size; speed image size")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum length of a timed run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--frames", type=int, default=200, help="SynthFace frames per difficulty")
    p.add_argument("--speed-only", action="store_true", help="time the detectors, nothing else")
    p.add_argument("--json", type=Path, help="write all numbers here")
    p.add_argument("--picture", type=Path, help="draw the detections on t1.jpg here (JPEG)")
    args = p.parse_args()

    print(
        f"{cpu_model()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}",
        flush=True,
    )
    detectors = build(args.size)
    photos = {name: cv2.imread(str(path)) for name, path in insightface_photos().items()}
    report: dict = {}
    if not args.speed_only:
        report["photos"], detections = {}, {}
        for photo, image in photos.items():
            found = {name: det.detect([image])[0] for name, det in detectors.items()}
            detections[photo] = found
            permissive = {k: found.pop(k) for k in ("mtcnn permissive", "mnet permissive")}
            report["photos"][photo] = photo_report(found, permissive)
            if image.shape[:2] == (112, 112):
                report["photos"][photo]["template_nme"] = template_report(found)
            print(photo, json.dumps(report["photos"][photo]), flush=True)
        report["synthface"] = {}
        for difficulty in (0.0, 0.5):
            result = synthface_report(detectors, difficulty, args.frames)
            report["synthface"][str(difficulty)] = result
            print(f"synthface {difficulty}", json.dumps(result), flush=True)
        if args.picture:
            picture = draw(photos["t1.jpg"], detections["t1.jpg"], width=960)
            args.picture.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(args.picture), picture, [cv2.IMWRITE_JPEG_QUALITY, 75])
    report["speed"] = speed_report(detectors, photos["t1.jpg"], args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)


def speed_report(detectors: dict[str, Detector], t1: np.ndarray, args: argparse.Namespace) -> dict:
    """Speed on t1.jpg resized to ``--size``, with 1 and 2 threads (torch and ONNX Runtime
    alike), 1 and 4 images per call."""
    scale = args.size / max(t1.shape[:2])
    small = cv2.resize(t1, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out: dict = {"image": f"{small.shape[1]}x{small.shape[0]}", "load_before": os.getloadavg()[0]}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        timed = {
            MTCNN_REPO: detectors[MTCNN_REPO],
            MTCNN_DEFAULT: detectors[MTCNN_DEFAULT],
            MNET: get_detector(
                "retinaface_mnet", max_size=args.size, device="cpu", threads=threads
            ),
        }
        for batch in (1, 4):
            key = f"{threads} threads, {batch} per call"
            out[key] = speeds(timed, small, batch, args.seconds, args.rounds)
            print(f"speed, {key}: {json.dumps(out[key])}", flush=True)
    out["load_after"] = os.getloadavg()[0]
    return out


def print_tables(report: dict) -> None:
    """The report as markdown tables."""
    names = (MTCNN_REPO, MTCNN_DEFAULT, MNET)
    if "photos" in report:
        print_quality(report)
    s = report["speed"]
    print(f"\nspeed on {s['image']}, load {s['load_before']:.1f} -> {s['load_after']:.1f}")
    print("| detector | threads, images per call | images/s | CPU s per image |")
    print("|---|---|---|---|")
    for key, rows in s.items():
        if isinstance(rows, dict):
            for name in names:
                row = rows[name]
                print(f"| {name} | {key} | {row['images_per_s']:.2f} "
                      f"| {row['cpu_s_per_image']:.3f} |")  # fmt: skip


def print_quality(report: dict) -> None:
    """The photo and SynthFace parts of the report as markdown tables."""
    names = (MTCNN_REPO, MTCNN_DEFAULT, MNET)
    print("\n| detector | photo | faces | false | missed | lowest face score | false scores |")
    print("|---|---|---|---|---|---|---|")
    for photo, r in report["photos"].items():
        for name in names:
            d = r["detectors"][name]
            low = "-" if d["min_real_score"] is None else f"{d['min_real_score']:.3f}"
            false = ", ".join(f"{x:.3f}" for x in d["false_scores"]) or "-"
            print(f"| {name} | {photo} | {d['faces']} | {d['false']} | {d['missed']} | {low} "
                  f"| {false} |")  # fmt: skip

    print("\n| photo | best false / lowest face score: MTCNN (final 0.05) | mnet (0.02) "
          "| landmark disagreement (IOD) mean / max | per point (le, re, n, lm, rm) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for photo, r in report["photos"].items():
        m, n = r["detectors"]["mtcnn permissive"], r["detectors"]["mnet permissive"]
        lm = r["landmark_disagreement"]
        points = " / ".join(f"{v:.3f}" for v in lm["per_point_mean"].values())
        print(f"| {photo} | {m['best_false_score']:.3f} / {m['min_real_score']:.3f} "
              f"| {n['best_false_score']:.3f} / {n['min_real_score']:.3f} "
              f"| {lm['mean']:.3f} / {lm['max']:.3f} | {points} |")  # fmt: skip
        if "template_nme" in r:
            t = r["template_nme"]
            print(f"| {photo} vs the 112 template (NME) | MTCNN {t[MTCNN_REPO]:.3f} "
                  f"{t[MTCNN_REPO + ' per point']} | mnet {t[MNET]:.3f} "
                  f"{t[MNET + ' per point']} | | |")  # fmt: skip

    print("\n| detector | SynthFace difficulty | detection rate | NME mean / median "
          "| NME on frames all found | false faces |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for difficulty, r in report["synthface"].items():
        for name in (*names, MNET_NATIVE):
            d = r[name]
            nme = "-" if d["nme_mean"] is None else f"{d['nme_mean']:.3f} / {d['nme_median']:.3f}"
            common = "-" if d["nme_common"] is None else f"{d['nme_common']:.3f}"
            print(f"| {name} | {difficulty} ({r['frames']} frames) | {d['detection_rate']:.3f} "
                  f"| {nme} | {common} ({r['common_frames']}) | {d['false_faces']} |")  # fmt: skip
    print("\n| detector | SynthFace difficulty | NME per point (le, re, n, lm, rm) "
          "| mean signed offset (dx, dy) per point, IOD units |")  # fmt: skip
    print("|---|---|---|---|")
    for difficulty, r in report["synthface"].items():
        for name in (MTCNN_REPO, MNET):
            d = r[name]
            points = " / ".join(f"{v:.3f}" for v in d["nme_per_point"])
            bias = " ".join(f"({x:+.3f}, {y:+.3f})" for x, y in d["bias_per_point"])
            print(f"| {name} | {difficulty} | {points} | {bias} |")


if __name__ == "__main__":
    main()
