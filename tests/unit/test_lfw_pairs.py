"""LFW pairs.txt: byte-exact round trip and clear errors on malformed lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcflow.data.protocols.lfw import Pair, PairsProtocol, image_path, read_pairs, write_pairs
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit

SAMPLE = (
    "2\t1\n"
    "Abel_Pacheco\t1\t4\n"
    "Abdel_Madi_Shabneh\t1\tDean_Barker\t1\n"
    "Akhmed_Zakayev\t1\t3\n"
    "Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1\n"
)


def test_reads_lfw_layout(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(SAMPLE)
    protocol = read_pairs(path)
    assert (protocol.folds, protocol.per_fold) == (2, 1)
    assert protocol.pairs[0] == Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4)
    assert [p.same for p in protocol.pairs] == [True, False, True, False]
    assert image_path("Abel_Pacheco", 4) == "Abel_Pacheco/Abel_Pacheco_0004.jpg"


def test_round_trip_is_byte_exact(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text(SAMPLE)
    write_pairs(dst, read_pairs(src))
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    ("bad", "line"),
    [("Abel_Pacheco\t1\n", 2), ("Abel_Pacheco\tone\t4\n", 2)],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, line: int) -> None:
    path = tmp_path / "pairs.txt"
    lines = SAMPLE.splitlines(keepends=True)
    lines[line - 1] = bad
    path.write_text("".join(lines))
    with pytest.raises(DataFormatError, match=rf"pairs\.txt:{line}: bad matched pair line"):
        read_pairs(path)


def test_wrong_line_count(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(SAMPLE.rsplit("\n", 2)[0] + "\n")
    with pytest.raises(DataFormatError, match="expected 5 lines"):
        read_pairs(path)


def test_write_then_read(tmp_path: Path) -> None:
    protocol = PairsProtocol(1, 1, (Pair("a", 1, "a", 2), Pair("a", 1, "b", 3)))
    write_pairs(tmp_path / "p.txt", protocol)
    assert read_pairs(tmp_path / "p.txt") == protocol
