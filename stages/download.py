"""Stage download: fetch (here: generate) the raw dataset release.

The default dataset, SynthFace, is generated deterministically from params with no
network; its release uses real formats (RecordIO frames with landmarks, LFW pairs.txt).
"""

from __future__ import annotations

from arcflow.atomic import atomic_dir
from arcflow.data.synthface_release import write_release
from stages.common import log, params, parser, run


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="directory of the raw release")
    args = p.parse_args()
    cfg = params(args, "data").data
    with atomic_dir(args.out) as tmp:
        counts = write_release(cfg.synthface, tmp)
    log.info("download: %s -> %s", counts, args.out)


if __name__ == "__main__":
    run(main)
