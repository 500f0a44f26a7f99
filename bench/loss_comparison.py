"""The paper's loss comparison on SynthFace: each loss trained with the same budget, then
10-fold verification on the held-out identities' pair sets.

python bench/loss_comparison.py                              # arcface vs softmax, params.yaml
python bench/loss_comparison.py --losses arcface softmax cosface --epochs 8

Each row trains ``params.yaml``'s ``train`` section (backbone, schedule, epochs, seed) with
only the loss changed, on the aligned SynthFace training set, and evaluates every ``.bin`` in
the aligned evaluation folder (``dvc repro align`` makes both). Rows are the paper's table:
softmax, norm_softmax, sphereface (m1 1.35), cosface (0.35), arcface (0.5), cm1, cm2 and the
extra-term rows (ns_intra, ns_inter, ns_intra_inter, triplet, arcface_intra, arcface_inter,
arcface_intra_inter, arcface_triplet). Prints a table; ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from arcflow.config import load_params
from arcflow.data.binpairs import load_bin
from arcflow.data.faces import AlignedFaceDataset
from arcflow.data.transforms import train_augmentation
from arcflow.devices import cpu_model, resolve_device
from arcflow.evaluate.embed import embed_crops
from arcflow.evaluate.verification import evaluate_pairs
from arcflow.train.loop import train_model

PK = {"images_per_identity": 4}
ROWS: dict[str, dict[str, object]] = {
    "softmax": {"head": "softmax"},
    "norm_softmax": {"head": "norm_softmax"},
    "sphereface": {"head": "sphereface", "m1": 1.35},
    "cosface": {"head": "cosface", "m": 0.35},
    "arcface": {"head": "arcface", "m": 0.5},
    "cm1": {"head": "combined", "m1": 1.0, "m2": 0.3, "m3": 0.2},
    "cm2": {"head": "combined", "m1": 0.9, "m2": 0.4, "m3": 0.15},
    "ns_intra": {"head": "norm_softmax", "extra_losses": ["intra"]},
    "ns_inter": {"head": "norm_softmax", "extra_losses": ["inter"]},
    "ns_intra_inter": {"head": "norm_softmax", "extra_losses": ["intra", "inter"]},
    "triplet": {"head": "none", "extra_losses": ["triplet"], **PK},
    "arcface_intra": {"head": "arcface", "extra_losses": ["intra"]},
    "arcface_inter": {"head": "arcface", "extra_losses": ["inter"]},
    "arcface_intra_inter": {"head": "arcface", "extra_losses": ["intra", "inter"]},
    "arcface_triplet": {"head": "arcface", "extra_losses": ["triplet"], **PK},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--losses", nargs="+", default=["arcface", "softmax"], choices=list(ROWS))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--data", type=Path, default=Path("data/aligned/train"))
    p.add_argument("--eval", type=Path, default=Path("data/aligned/eval"))
    p.add_argument("--epochs", type=int, help="override train.epochs (same for every row)")
    p.add_argument("--out", type=Path, help="also write the table as JSON")
    args = p.parse_args()
    os.environ.setdefault("CI", "true")  # no progress bars
    base = load_params(args.params, ["train"]).train
    dataset = AlignedFaceDataset(args.data, augment=train_augmentation())
    sets = {path.stem: load_bin(path) for path in sorted(args.eval.glob("*.bin"))}
    print(f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"{len(dataset)} images of {dataset.num_classes} identities; {base.backbone} "
        f"x{base.width}, {args.epochs or base.epochs} epochs, batch {base.batch_size}"
    )
    header = f"{'loss':<20} {'minutes':>7} " + " ".join(f"{n:>9}" for n in sets)
    print(header)
    rows = {}
    for name in args.losses:
        overrides = {"extra_losses": [], "images_per_identity": 0, **ROWS[name]}
        if args.epochs:
            overrides["epochs"] = args.epochs
        cfg = base.model_copy(update=overrides)
        cfg = type(base).model_validate(cfg.model_dump())  # re-check the combination
        start = time.perf_counter()
        result = train_model(cfg, dataset, dataset.num_classes)
        minutes = (time.perf_counter() - start) / 60
        device = resolve_device(cfg.device)
        accuracy = {}
        for set_name, pairs in sets.items():
            emb = embed_crops(result.backbone, pairs.images, batch_size=64, device=device)
            accuracy[set_name] = evaluate_pairs(emb, np.asarray(pairs.issame)).accuracy
        rows[name] = {"minutes": minutes, **accuracy}
        print(f"{name:<20} {minutes:>7.1f} " + " ".join(f"{a:>9.4f}" for a in accuracy.values()))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
