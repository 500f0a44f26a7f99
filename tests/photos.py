"""insightface's sample photos for tests, fetched from PyPI once per machine and cached.

The photos ship in insightface's sdist on PyPI (``insightface/data/images``): the first run on
a machine downloads it with pip (about 0.5 MB, plus the build requirements pip fetches to read
its metadata), checks its SHA-256, extracts only the two images into
``${XDG_CACHE_HOME:-~/.cache}/arcflow/test-assets/insightface-0.7.3/`` and deletes the
archive; later runs use the cache. The images are never committed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

INSIGHTFACE = "insightface==0.7.3"
SDIST = "insightface-0.7.3.tar.gz"
SDIST_SHA256 = "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7"
IMAGES = {  # name in the cache -> (member of the sdist, SHA-256)
    "t1.jpg": (
        "insightface-0.7.3/insightface/data/images/t1.jpg",
        "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
    ),
    "Tom_Hanks_54745.png": (
        "insightface-0.7.3/insightface/data/images/Tom_Hanks_54745.png",
        "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
    ),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arcflow" / "test-assets" / "insightface-0.7.3"


def _fetch_images(cache: Path) -> None:
    """Download the sdist with pip, verify it, extract only the images into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", INSIGHTFACE,
            "--no-deps", "--no-binary", "insightface", "--disable-pip-version-check",
            "-q", "-d", tmp,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        sdist = Path(tmp) / SDIST
        if done.returncode != 0 or not sdist.is_file():
            pytest.fail(f"could not download {INSIGHTFACE} from PyPI:\n{done.stderr[-2000:]}")
        if _sha256(sdist) != SDIST_SHA256:
            pytest.fail(f"{SDIST}: SHA-256 {_sha256(sdist)} is not the pinned {SDIST_SHA256}")
        with tarfile.open(sdist, "r:gz") as archive:
            for name, (member, digest) in IMAGES.items():
                info = archive.getmember(member)
                assert info.isfile(), f"{member} is not a regular file in {SDIST}"
                data = archive.extractfile(info).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == digest, f"{member}: wrong SHA-256"
                part = Path(tmp) / name
                part.write_bytes(data)
                os.replace(part, cache / name)


def insightface_photos() -> dict[str, Path]:
    """Paths of the verified sample photos, downloading them on the first call."""
    cache = _cache_dir()
    if not all(
        (cache / name).is_file() and _sha256(cache / name) == digest
        for name, (_, digest) in IMAGES.items()
    ):
        _fetch_images(cache)
    return {name: cache / name for name in IMAGES}
