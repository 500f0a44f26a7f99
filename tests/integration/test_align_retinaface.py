"""RetinaFace's weights travel like data: a ``data.sources`` entry downloads them (checksum
verified) and the align stage detects with the file, nothing fetched from a hub.

Real weights cannot be downloaded here, so the file holds a randomly initialised ResNet-50
RetinaFace in the real state-dict layout (loaded strictly: every key and shape must match).
Its "faces" are noise; what is checked is the wiring: download, checksum, strict loading,
detection on every image, counts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from arcflow.data.imageset import ImageSet
from infra.local.processes import free_port, running_server
from tests.conftest import run_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def weights_server(tmp_path_factory: pytest.TempPathFactory):
    """A real HTTP server (``python -m http.server``) serving a RetinaFace weights file."""
    import torch

    from arcflow.align.detectors.retinaface import build_network

    served = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    torch.save(build_network().state_dict(), served / "Resnet50_Final.pth")
    port = free_port()
    url = f"http://127.0.0.1:{port}/Resnet50_Final.pth"
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    cmd += ["--directory", str(served)]
    with running_server(cmd, url, served.parent / "http.log"):
        yield url, hashlib.sha256((served / "Resnet50_Final.pth").read_bytes()).hexdigest()


def _release(root: Path) -> Path:
    """One training identity (two frames) and a YTF-layout set without annotations."""
    rng = np.random.default_rng(0)
    for rel in ("alice/1.jpg", "alice/2.jpg", "ytf/frame_images_DB/bob/0/0.1.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), rng.integers(0, 255, (96, 80, 3), dtype=np.uint8))
    (root / "ytf" / "splits.txt").write_text("split number, pair number, ...\n")
    return root


def test_download_weights_then_align_with_retinaface(
    repo_root: Path, tmp_path: Path, weights_server
) -> None:
    url, sha256 = weights_server
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["data"]["sources"] = {"retinaface": {"uri": url, "sha256": sha256}}
    params["align"].update(
        detector="retinaface",
        retinaface_weights="data/raw/retinaface/Resnet50_Final.pth",
        retinaface_size=64,  # a random ResNet-50 is slow on CPU; the wiring is what counts
        min_score=0.0,
        max_bad_fraction=1.0,
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    raw = _release(tmp_path / "raw")

    proc = run_stage(
        "download", "--source", "retinaface", "--out", "data/raw/retinaface", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data/raw/retinaface/Resnet50_Final.pth").is_file()

    args = ("--raw", raw, "--out", "aligned", "--eval-out", "eval")
    proc = run_stage("align", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((tmp_path / "metrics" / "align.json").read_text())
    # random weights are confident about noise: with min_score 0 every image has a "face"
    assert counts["train"]["total"] == counts["train"]["aligned"] == 2
    assert (counts["ytf"]["total"], counts["ytf"]["centre_crops"]) == (1, 0)
    with ImageSet(tmp_path / "eval" / "sets" / "ytf") as ytf:
        assert ytf.names == ["frame_images_DB/bob/0/0.1.jpg"]


def test_wrong_checksum_never_reaches_the_detector(
    repo_root: Path, tmp_path: Path, weights_server
) -> None:
    url, sha256 = weights_server
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["data"]["sources"] = {"retinaface": {"uri": url, "sha256": "0" * 64}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(
        "download", "--source", "retinaface", "--out", "data/raw/retinaface", cwd=tmp_path
    )
    assert proc.returncode == 1 and sha256 in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data/raw/retinaface").exists()


def test_missing_weights_file_is_one_clear_line(repo_root: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["align"].update(detector="retinaface", retinaface_weights="nowhere/weights.pth")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    raw = _release(tmp_path / "raw")
    proc = run_stage("align", "--raw", raw, "--out", "aligned", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "nowhere/weights.pth: no such file or directory" in proc.stderr
