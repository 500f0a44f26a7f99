"""Stage align: warp every face to the 112x112 ArcFace template using 5 landmarks.

Writes the insightface training layout (train.rec/.idx/property) and the evaluation pair
sets as .bin files: LFW-layout sets are aligned here; .bin sets that the release ships
already aligned (bins/*.bin, as insightface's releases do) are passed through.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from arcflow.align.release import align_lfw, align_training_split
from arcflow.atomic import atomic_dir, write_json
from arcflow.data.binpairs import load_bin
from stages.common import log, params, parser, run


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--raw", type=Path, required=True, help="raw release directory")
    p.add_argument("--out", type=Path, required=True, help="aligned dataset directory")
    p.add_argument("--metrics", type=Path, default=Path("metrics/align.json"))
    args = p.parse_args()
    cfg = params(args, "align").align
    pair_sets: dict[str, int] = {}
    with atomic_dir(args.out) as tmp:
        report = align_training_split(
            args.raw / "train.rec",
            tmp,
            size=cfg.image_size,
            quality=cfg.jpeg_quality,
            max_bad_fraction=cfg.max_bad_fraction,
        )
        if (args.raw / "lfw" / "pairs.txt").exists():
            pair_sets["lfw"] = align_lfw(
                args.raw / "lfw", tmp / "lfw.bin", size=cfg.image_size, quality=cfg.jpeg_quality
            )
        for shipped in sorted((args.raw / "bins").glob("*.bin")):
            pair_sets[shipped.stem] = len(load_bin(shipped))  # validates it, safely
            shutil.copyfile(shipped, tmp / shipped.name)
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
