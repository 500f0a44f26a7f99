"""Stage align: warp every face to the 112x112 ArcFace template using 5 landmarks.

Two layouts: a release with landmark annotations (SynthFace's train.rec; LFW-layout sets with
a 5-point file) is aligned from its annotations; an image-folder dataset
(``<identity>/<image>``) is aligned with a detector (``align.detector``). Writes the
insightface training layout (train.rec/.idx/property), evaluation pair sets as .bin files
(.bin sets shipped already aligned pass through), the counts to metrics/align.json and a
failure list (reason and message of each image that could not be aligned).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from arcflow.align.release import AlignReport, align_lfw, align_training_split
from arcflow.atomic import atomic_dir, atomic_file, write_json
from arcflow.config import AlignParams
from arcflow.data.binpairs import load_bin
from arcflow.errors import ConfigError
from stages.common import log, params, parser, run


def align_release(raw: Path, out: Path, cfg: AlignParams) -> tuple[AlignReport, dict[str, int]]:
    """Annotated release: training frames, LFW-layout pairs, shipped .bin sets."""
    report = align_training_split(
        raw / "train.rec",
        out,
        size=cfg.image_size,
        quality=cfg.jpeg_quality,
        max_bad_fraction=cfg.max_bad_fraction,
    )
    pair_sets: dict[str, int] = {}
    if (raw / "lfw" / "pairs.txt").exists():
        pair_sets["lfw"] = align_lfw(
            raw / "lfw", out / "lfw.bin", size=cfg.image_size, quality=cfg.jpeg_quality
        )
    for shipped in sorted((raw / "bins").glob("*.bin")):
        pair_sets[shipped.stem] = len(load_bin(shipped))  # validates it, safely
        shutil.copyfile(shipped, out / shipped.name)
    return report, pair_sets


def align_folder(raw: Path, out: Path, cfg: AlignParams) -> AlignReport:
    """Image-folder dataset: detect, pick and align one face per image."""
    from arcflow.align.detectors import get_detector
    from arcflow.align.folder import align_image_folder

    if cfg.detector == "annotations":
        raise ConfigError(
            f"{raw}: no train.rec with landmark annotations, so faces must be detected",
            hint="set align.detector to mtcnn (offline) or retinaface",
        )
    options = {"weights": cfg.retinaface_weights} if cfg.detector == "retinaface" else {}
    return align_image_folder(
        raw,
        out,
        get_detector(cfg.detector, **options),
        size=cfg.image_size,
        quality=cfg.jpeg_quality,
        min_score=cfg.min_score,
        centre_weight=cfg.centre_weight,
        batch_size=cfg.detect_batch,
        max_bad_fraction=cfg.max_bad_fraction,
    )


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--raw", type=Path, required=True, help="raw release directory")
    p.add_argument("--out", type=Path, required=True, help="aligned dataset directory")
    p.add_argument("--metrics", type=Path, default=Path("metrics/align.json"))
    p.add_argument(
        "--failures",
        type=Path,
        default=Path("reports/align_failures.tsv"),
        help="reason and message of every image that could not be aligned",
    )
    args = p.parse_args()
    cfg = params(args, "align").align
    if not args.raw.is_dir():
        raise FileNotFoundError(2, "no such directory", str(args.raw))
    pair_sets: dict[str, int] = {}
    with atomic_dir(args.out) as tmp:
        if (args.raw / "train.rec").exists():
            report, pair_sets = align_release(args.raw, tmp, cfg)
        else:
            report = align_folder(args.raw, tmp, cfg)
    with atomic_file(args.failures) as failures:
        failures.write_text("".join(f"{line}\n" for line in report.failure_lines()))
    write_json(args.metrics, {"train": report.to_dict(), "pair_sets": pair_sets})
    for failure in report.failed[:5]:
        log.warning("align: skipped %s", failure)
    log.info(
        "align: %d of %d training crops; pair sets %s -> %s",
        report.aligned,
        report.total,
        pair_sets,
        args.out,
    )


if __name__ == "__main__":
    run(main)
