"""The .bin, image and RecordIO attacks under an address-space limit (2 GiB above what the
interpreter and its libraries already map): each ends in a clean ArcFlow error or a correct
result, never a MemoryError or the OOM killer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.attacks.test_recordio_attacks import _rec
from tests.conftest import ROOT

pytestmark = [pytest.mark.attack, pytest.mark.integration]

HEADROOM = 2 << 30

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from arcflow.imageio import decode_image
    from arcflow.data.binpairs import load_bin
    from arcflow.data.face_records import read_face_dataset_index
    from arcflow.data.transforms import decode_rgb

    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
    limit = vm * 1024 + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    folder = Path(sys.argv[1])
    attacks = {
        "bin: one array referenced 30,000 times": lambda: load_bin(folder / "refs.bin"),
        "png header declaring 30000x30000, to decode_rgb": lambda: decode_rgb(
            (folder / "bomb.png").read_bytes(), where="bomb.png"),
        "the same, to decode_image": lambda: decode_image(
            (folder / "bomb.png").read_bytes(), where="bomb.png"),
        "16-bit RGBA 7000x7000 (under the pixel limit)": lambda: decode_image(
            (folder / "rgba16.png").read_bytes(), where="rgba16.png").shape,
        "recordio header0 at 2**31": lambda: read_face_dataset_index(folder / "rec"),
    }
    for name, attack in attacks.items():
        try:
            outcome = {"result": str(attack())}
        except MemoryError as exc:
            outcome = {"error": "MemoryError", "message": str(exc)}
        except Exception as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps({"attack": name, **outcome}), flush=True)
    """
)


def _png_bomb(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR declaring ``width x height`` RGB, a token IDAT, IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * width) * 4)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def attack_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pickle

    folder = tmp_path_factory.mktemp("memory-attacks")
    image = np.frombuffer(b"\xff\xd8" + bytes(100_000), np.uint8)
    (folder / "refs.bin").write_bytes(pickle.dumps(([image] * 30_000, [True] * 15_000)))
    _png_bomb(folder / "bomb.png", 30_000, 30_000)
    rgba = np.zeros((7000, 7000, 4), np.uint16)
    rgba[..., 3] = 65535
    rgba[1000:2000, 1000:2000, 2] = 40000
    ok, png = cv2.imencode(".png", rgba)
    assert ok
    (folder / "rgba16.png").write_bytes(png.tobytes())
    _rec(folder / "rec", [0.0, 0.0, 1.0, 1.0], (2.0**31, 2.0**31 + 2))
    return folder


def test_attacks_under_an_address_space_limit_end_cleanly(attack_files: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(attack_files), str(HEADROOM)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = {row["attack"]: row for row in map(json.loads, proc.stdout.splitlines())}
    assert len(outcomes) == 5, proc.stdout
    for name, outcome in outcomes.items():
        assert outcome.get("error") != "MemoryError", (name, outcome)
    refused = {name: o for name, o in outcomes.items() if "error" in o}
    assert set(refused) == set(outcomes) - {"16-bit RGBA 7000x7000 (under the pixel limit)"}
    assert all(o["error"] in ("DataFormatError", "BadImage") for o in refused.values()), refused
    assert "decode to" in refused["bin: one array referenced 30,000 times"]["message"]
    assert "too_large" in refused["the same, to decode_image"]["message"]
    assert "header0 range" in refused["recordio header0 at 2**31"]["message"]
    decoded = outcomes["16-bit RGBA 7000x7000 (under the pixel limit)"]["result"]
    assert decoded == "(7000, 7000, 3)"  # composited in bands: it fits where it did not
