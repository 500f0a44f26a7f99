"""Stage align: warp every face to the 112x112 ArcFace template using 5 landmarks.

Writes the insightface training layout (train.rec/.idx/property) and the verification
pair set as a .bin, the formats the train and evaluate stages read.
"""

from __future__ import annotations

from pathlib import Path

from arcflow.align.release import align_pair_set, align_training_split
from arcflow.atomic import atomic_dir, write_json
from stages.common import log, params, parser, run

PAIR_SET = "synth_val.bin"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--raw", type=Path, required=True, help="raw release directory")
    p.add_argument("--out", type=Path, required=True, help="aligned dataset directory")
    p.add_argument("--metrics", type=Path, default=Path("metrics/align.json"))
    args = p.parse_args()
    cfg = params(args, "align").align
    with atomic_dir(args.out) as tmp:
        report = align_training_split(
            args.raw / "train.rec",
            tmp,
            size=cfg.image_size,
            quality=cfg.jpeg_quality,
            max_bad_fraction=cfg.max_bad_fraction,
        )
        pairs = align_pair_set(
            args.raw / "val.rec",
            args.raw / "pairs.txt",
            tmp / PAIR_SET,
            size=cfg.image_size,
            quality=cfg.jpeg_quality,
        )
    write_json(args.metrics, {"train": report.to_dict(), "pairs": {PAIR_SET: pairs}})
    for failure in report.failed[:5]:
        log.warning("align: skipped %s", failure)
    log.info(
        "align: %d of %d training crops, %d pairs -> %s",
        report.aligned,
        report.total,
        pairs,
        args.out,
    )


if __name__ == "__main__":
    run(main)
