"""LFW ``pairs.txt``: the 10-fold verification protocol file, read and written byte-exact.

Layout: a header ``"<folds>\\t<n>"``; then per fold ``n`` matched lines ``name\\tn1\\tn2``
followed by ``n`` mismatched lines ``name1\\tn1\\tname2\\tn2``. Image numbers are 1-based;
the image path is ``name/name_%04d.jpg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arcflow.atomic import atomic_file
from arcflow.errors import DataFormatError


@dataclass(frozen=True)
class Pair:
    """One verification pair: (name1, number1) vs (name2, number2)."""

    name1: str
    n1: int
    name2: str
    n2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


@dataclass(frozen=True)
class PairsProtocol:
    """All pairs in file order (fold k = pairs[2nk : 2n(k+1)])."""

    folds: int
    per_fold: int
    pairs: tuple[Pair, ...]


def image_path(name: str, number: int) -> str:
    """LFW's relative image path of ``name``'s ``number``-th image."""
    return f"{name}/{name}_{number:04d}.jpg"


def _parse_line(fields: list[str], same: bool) -> Pair:
    if same:
        name, n1, n2 = fields
        return Pair(name, int(n1), name, int(n2))
    name1, n1, name2, n2 = fields
    return Pair(name1, int(n1), name2, int(n2))


def read_pairs(path: str | Path) -> PairsProtocol:
    """Parse ``pairs.txt``; a malformed line raises DataFormatError naming file and line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    try:
        folds, per_fold = (int(v) for v in lines[0].split())
    except (IndexError, ValueError):
        raise DataFormatError(f"{path}:1: header must be '<folds>\\t<pairs per half>'") from None
    expected = 1 + folds * 2 * per_fold
    if len([ln for ln in lines if ln.strip()]) != expected:
        raise DataFormatError(f"{path}: expected {expected} lines for {folds}x{per_fold}")
    pairs = []
    for lineno, line in enumerate(lines[1:expected], start=2):
        same = (lineno - 2) % (2 * per_fold) < per_fold
        fields = line.split()
        try:
            if len(fields) != (3 if same else 4):
                raise ValueError(f"expected {3 if same else 4} fields, got {len(fields)}")
            pairs.append(_parse_line(fields, same))
        except ValueError as exc:
            kind = "matched" if same else "mismatched"
            raise DataFormatError(
                f"{path}:{lineno}: bad {kind} pair line {line!r} ({exc})"
            ) from None
    return PairsProtocol(folds, per_fold, tuple(pairs))


def write_pairs(path: str | Path, protocol: PairsProtocol) -> None:
    """Write ``protocol`` in LFW's layout, atomically."""
    lines = [f"{protocol.folds}\t{protocol.per_fold}"]
    for pair in protocol.pairs:
        if pair.same:
            lines.append(f"{pair.name1}\t{pair.n1}\t{pair.n2}")
        else:
            lines.append(f"{pair.name1}\t{pair.n1}\t{pair.name2}\t{pair.n2}")
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
