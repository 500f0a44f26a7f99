"""Attack: archives that unpack to far more than they weigh (zip and tar.gz bombs), or to more
members than any dataset has. Each is refused with one error naming the limit, the partial
output is removed, and an earlier extraction at the same place is left as it was."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from arcflow.data.sources import ExtractLimits
from arcflow.data.sources.extract import extract_archive
from arcflow.errors import SourceError

pytestmark = [pytest.mark.attack, pytest.mark.unit]

ZEROS = 64 << 20  # 64 MiB of zeros: deflate packs them about 1000:1


def _zip_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as f:
        for _ in range(ZEROS >> 20):
            f.write(bytes(1 << 20))
    return path


def _tgz_bomb(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = ZEROS
        tf.addfile(info, io.BufferedReader(io.BytesIO(bytes(ZEROS))))  # type: ignore[arg-type]
    return path


def _many_members(path: Path, count: int) -> Path:
    with tarfile.open(path, "w") as tf:
        for i in range(count):
            tf.addfile(tarfile.TarInfo(f"d/{i}.txt"), io.BytesIO(b""))
    return path


@pytest.fixture()
def previous(tmp_path: Path) -> Path:
    """An earlier, good extraction at the target."""
    target = tmp_path / "raw" / "faces"
    target.mkdir(parents=True)
    (target / "lfw.bin").write_bytes(b"the good data")
    return target


def _assert_untouched(previous: Path) -> None:
    assert sorted(p.name for p in previous.parent.iterdir()) == ["faces"]  # no partial sibling
    assert [p.name for p in previous.iterdir()] == ["lfw.bin"]
    assert (previous / "lfw.bin").read_bytes() == b"the good data"


@pytest.mark.parametrize("bomb", [_zip_bomb, _tgz_bomb], ids=["zip", "tar.gz"])
def test_a_compression_bomb_stops_at_the_ratio(bomb, tmp_path: Path, previous: Path) -> None:
    archive = bomb(tmp_path / ("bomb.zip" if bomb is _zip_bomb else "bomb.tar.gz"))
    assert archive.stat().st_size < ZEROS / 200
    with pytest.raises(SourceError, match=r"data\.extract_limits\.max_ratio") as err:
        extract_archive(archive, previous)
    assert "nothing was extracted" in str(err.value) and "\n" not in str(err.value)
    _assert_untouched(previous)


def test_the_byte_cap_holds_whatever_the_ratio(tmp_path: Path, previous: Path) -> None:
    archive = _zip_bomb(tmp_path / "bomb.zip")
    limits = ExtractLimits(max_bytes=1 << 20, max_ratio=1e9)
    with pytest.raises(SourceError, match=r"more than 1,048,576 bytes .*max_bytes"):
        extract_archive(archive, previous, limits=limits)
    _assert_untouched(previous)


def test_too_many_members_stops_at_the_member_cap(tmp_path: Path, previous: Path) -> None:
    archive = _many_members(tmp_path / "many.tar", 3000)
    with pytest.raises(SourceError, match=r"more than 1,000 members"):
        extract_archive(archive, previous, limits=ExtractLimits(max_members=1000))
    _assert_untouched(previous)


def test_a_zip_declaring_more_than_the_free_disk_is_refused_before_writing(
    tmp_path: Path, previous: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.bin", bytes(5000))
    usage = shutil.disk_usage(tmp_path)._replace(free=4096)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage)
    with pytest.raises(SourceError, match=r"declares 5,000 bytes, 4,096 free"):
        extract_archive(archive, previous)
    _assert_untouched(previous)


def test_honest_archives_within_the_limits_extract(tmp_path: Path) -> None:
    archive = _many_members(tmp_path / "ok.tar", 50)
    extract_archive(archive, tmp_path / "out", limits=ExtractLimits(max_members=60))
    assert len(list((tmp_path / "out" / "d").iterdir())) == 50
