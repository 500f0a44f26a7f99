"""CALFW / CPLFW raw pair files (``pairs_CALFW.txt``, ``pairs_CPLFW.txt``), read and written.

Two consecutive lines per pair, ``"<image_name> <label>"`` (e.g. ``Abel_Pacheco_0001.jpg 1``),
both lines carrying the same label. 6,000 pairs: the 3,000 positive pairs first, then the
3,000 negative ones. A negative pair has label 0. A positive pair's label is 1 in CPLFW; in
CALFW it is the pair's fold, 1..10, 300 pairs each, in order (an audit of the official file,
pinned by its SHA-256, asserts exactly that sequence; negatives carry no fold). So in CALFW
"nonzero" means positive and the label is NOT an identity number.

Our writer emits one space, ``\\n`` line ends and a final newline; a file in that form reads
and rewrites byte for byte (other whitespace reads fine and is rewritten in that form;
trailing blank lines are dropped).

Fold order: file order puts all positives first, so contiguous 10-fold cross-validation over
it would give single-class folds. :func:`fold_order` gives the order insightface-style
evaluation needs, fold ``k`` = positives ``[300k, 300k+300)`` then negatives
``[3000+300k, 3000+300k+300)``. For negatives that assignment is an assumption (the file does
not record it); compare with the pair order inside ``calfw.bin`` / ``cplfw.bin`` before
quoting numbers against published ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arcflow.atomic import atomic_file
from arcflow.data.protocols.text import text_lines
from arcflow.errors import DataFormatError

Dataset = Literal["CALFW", "CPLFW"]
FOLDS = 10


@dataclass(frozen=True)
class LabeledPair:
    """A pair of image names and the label both of its lines carry (0 = different)."""

    name1: str
    name2: str
    label: int

    @property
    def same(self) -> bool:
        return self.label != 0


def read_pairs(path: str | Path, dataset: Dataset) -> tuple[LabeledPair, ...]:
    """Parse a CALFW / CPLFW pair file into pairs in file order."""
    if dataset not in ("CALFW", "CPLFW"):
        raise ValueError(f"dataset must be 'CALFW' or 'CPLFW', got {dataset!r}")
    path = Path(path)
    lines = text_lines(path)
    if not lines:
        raise DataFormatError(f"{path}: empty pair file")
    if len(lines) % 2:
        raise DataFormatError(f"{path}:{len(lines)}: odd line count; the last pair is unfinished")
    entries = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError(f"expected '<image_name> <label>', got {len(fields)} fields")
            label = int(fields[1])
            if label < 0 or (dataset == "CPLFW" and label > 1):
                allowed = "0 or 1" if dataset == "CPLFW" else ">= 0"
                raise ValueError(f"label {label} is not {allowed}")
        except ValueError as exc:
            raise DataFormatError(f"{path}:{lineno}: bad pair line {line!r} ({exc})") from None
        entries.append((fields[0], label))
    pairs = []
    for k in range(0, len(entries), 2):
        (name1, label1), (name2, label2) = entries[k], entries[k + 1]
        if label1 != label2:
            raise DataFormatError(
                f"{path}:{k + 2}: label {label2} differs from the pair's first line ({label1})"
            )
        pairs.append(LabeledPair(name1, name2, label1))
    return tuple(pairs)


def write_pairs(path: str | Path, pairs: Sequence[LabeledPair]) -> None:
    """Write pairs in the two-lines-per-pair layout, atomically."""
    lines = []
    for k, pair in enumerate(pairs):
        for name in (pair.name1, pair.name2):
            if not name or any(ch.isspace() for ch in name):
                raise ValueError(f"pair {k}: image name {name!r} must be non-empty, no whitespace")
        if pair.label < 0:
            raise ValueError(f"pair {k}: negative label {pair.label}")
        lines += [f"{pair.name1} {pair.label}", f"{pair.name2} {pair.label}"]
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def fold_order(pairs: Sequence[LabeledPair], folds: int = FOLDS) -> list[int]:
    """Indices into ``pairs`` in 10-fold order (fold k: its positives, then its negatives).

    Requires the release layout: as many positives as negatives, positives first, a multiple
    of ``folds`` each. Where positive labels go beyond 1 (CALFW), each must equal its fold
    number. Raises ValueError otherwise.
    """
    n_pos = sum(p.same for p in pairs)
    n_neg = len(pairs) - n_pos
    if n_pos != n_neg or n_pos % folds or any(not p.same for p in pairs[:n_pos]):
        raise ValueError(
            f"need equal positives and negatives, positives first, a multiple of {folds} each "
            f"(got {n_pos} positive, {n_neg} negative)"
        )
    per_fold = n_pos // folds
    if any(p.label > 1 for p in pairs[:n_pos]):
        for i, pair in enumerate(pairs[:n_pos]):
            if pair.label != i // per_fold + 1:
                raise ValueError(
                    f"pair {i}: positive label {pair.label} is not its fold {i // per_fold + 1}"
                )
    order = []
    for k in range(folds):
        order += range(k * per_fold, (k + 1) * per_fold)
        order += range(n_pos + k * per_fold, n_pos + (k + 1) * per_fold)
    return order
