"""Aligning a release: bad images counted and skipped, every set written, sharded and resumable.

The outputs must not depend on how the work was split (workers, shard size, ``--shard i/n``
across processes, an interruption and a resume): each case is compared byte for byte with
one straight run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arcflow.align.dataset import align_dataset, default_work_dir
from arcflow.config import AlignParams
from arcflow.data.binpairs import load_bin
from arcflow.data.face_records import read_face_dataset_index
from arcflow.data.imageset import ImageSet
from arcflow.data.recordio import IRHeader, RecordReader, RecordWriter, pack, unpack
from arcflow.errors import DataFormatError
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _corrupt(src: Path, dst: Path, positions: set[int]) -> None:
    """Copy a release .rec, replacing the JPEG of the records at ``positions`` with junk."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with RecordReader(src) as reader, RecordWriter(dst, dst.with_suffix(".idx")) as writer:
        for position, payload in enumerate(reader):
            header, jpeg = unpack(payload)
            if position in positions:
                jpeg = b"\xff\xd8 not really a jpeg"
            writer.write(pack(IRHeader(header.flag, header.label, header.id, header.id2), jpeg))


def _train_only(tiny_release: Path, tmp_path: Path, bad: set[int]) -> Path:
    raw = tmp_path / "raw"
    _corrupt(tiny_release / "train.rec", raw / "train.rec", bad)
    return raw


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tiny_release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One straight run: one process, one shard per set."""
    out = tmp_path_factory.mktemp("reference") / "out"
    align_dataset(tiny_release, out, AlignParams(workers=1, shard_size=100_000))
    return _tree(out)


def test_bad_images_are_counted_and_skipped(tiny_release: Path, tmp_path: Path) -> None:
    raw = _train_only(tiny_release, tmp_path, {1})
    result = align_dataset(raw, tmp_path / "out", AlignParams(max_bad_fraction=0.1))
    assert result is not None
    assert result.reports["train"].to_dict() == {
        "total": 24,
        "aligned": 23,
        "centre_crops": 0,
        "failed": 1,
        "failed_by_reason": {"corrupt": 1},
    }
    assert result.failure_lines()[0].startswith("train\tcorrupt\t")
    assert "record 1" in result.failure_lines()[0]
    classes, keys, labels = read_face_dataset_index(tmp_path / "out")
    assert (classes, len(keys)) == (6, 23)
    assert np.bincount(labels).tolist() == [3, 4, 4, 4, 4, 4]


def test_whole_identity_lost_keeps_labels_contiguous(tiny_release: Path, tmp_path: Path) -> None:
    raw = _train_only(tiny_release, tmp_path, {4, 5, 6, 7})  # identity 1's four images
    cfg = AlignParams(max_bad_fraction=0.2, shard_size=3)  # the lost identity spans shards
    result = align_dataset(raw, tmp_path / "out", cfg)
    assert result is not None and result.reports["train"].aligned == 20
    classes, _keys, labels = read_face_dataset_index(tmp_path / "out")
    assert classes == 5 and sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]


def test_too_many_bad_images_fail_and_keep_the_shards(tiny_release: Path, tmp_path: Path) -> None:
    raw = _train_only(tiny_release, tmp_path, {0, 9})
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=r"2 of 24 images could not be aligned") as err:
        align_dataset(raw, out, AlignParams(max_bad_fraction=0.05))
    assert "max_bad_fraction=0.05" in str(err.value) and "record 0" in str(err.value)
    assert not out.exists()
    # the aligned shards stay for a rerun with a looser bound, which does no work again
    assert (default_work_dir(out) / "train" / "shard-00000.json").is_file()
    assert align_dataset(raw, out, AlignParams(max_bad_fraction=0.1)) is not None
    assert not default_work_dir(out).exists()


def test_every_set_is_written(tiny_release: Path, tiny_synthface, tmp_path: Path) -> None:
    train, evals = tmp_path / "train", tmp_path / "eval"
    result = align_dataset(tiny_release, train, AlignParams(), eval_out=evals)
    assert result is not None
    assert sorted(p.name for p in train.iterdir()) == ["property", "train.idx", "train.rec"]
    assert set(result.reports) == {"train", "lfw", "ijbc", "megaface", "ytf"}
    n_pairs = tiny_synthface.val_folds * tiny_synthface.val_pairs_per_fold * 2
    assert result.shipped_bins == {"agedb_30": n_pairs, "cfp_fp": n_pairs}
    for name, report in result.reports.items():
        assert report.total == report.aligned > 0 and not report.failures, name
        assert report.centre_crops == 0, name  # every set is annotated
    pairs = load_bin(evals / "lfw.bin")
    assert len(pairs.issame) == n_pairs
    ijb_names = (tiny_release / "ijb/IJBC/meta/ijbc_name_5pts_score.txt").read_text().split("\n")
    with ImageSet(evals / "sets" / "ijbc") as ijbc:
        assert ijbc.names == [line.split(" ")[0] for line in ijb_names if line]
        assert ijbc.crop(ijbc.names[-1])[:2] == b"\xff\xd8"
    with ImageSet(evals / "sets" / "ytf") as ytf:
        assert all(name.startswith("frame_images_DB/") for name in ytf.names)


@pytest.mark.parametrize(("workers", "shard_size"), [(2, 1000), (1, 7), (2, 7)])
def test_output_does_not_depend_on_the_split(
    tiny_release: Path, tmp_path: Path, reference, workers: int, shard_size: int
) -> None:
    out = tmp_path / "out"
    align_dataset(tiny_release, out, AlignParams(workers=workers, shard_size=shard_size))
    assert _tree(out) == reference


def test_shards_split_between_processes_join_to_the_same_output(
    tiny_release: Path, tmp_path: Path, reference, caplog: pytest.LogCaptureFixture
) -> None:
    out, cfg = tmp_path / "out", AlignParams(shard_size=50)
    assert align_dataset(tiny_release, out, cfg, only=(1, 2)) is None
    assert align_dataset(tiny_release, out, cfg, only=(0, 2)) is None
    assert not out.exists()
    done = sorted(p.stem for p in default_work_dir(out).glob("*/shard-*.json"))
    caplog.set_level("INFO", logger="arcflow")
    align_dataset(tiny_release, out, cfg)
    assert f"{len(done)} of {len(done)} shards already done" in caplog.text
    assert _tree(out) == reference


def test_changed_params_discard_old_shards(
    tiny_release: Path, tmp_path: Path, reference, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    align_dataset(tiny_release, out, AlignParams(shard_size=50, jpeg_quality=60), only=(0, 1))
    caplog.set_level("INFO", logger="arcflow")
    align_dataset(tiny_release, out, AlignParams(shard_size=50))
    assert "already done" not in caplog.text
    assert _tree(out) == reference


def test_interrupted_stage_resumes(repo_root: Path, tiny_release: Path, tmp_path: Path, reference):
    """Kill the stage (SIGKILL, no clean-up) after a few shards; the rerun keeps them."""
    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["align"].update(workers=1, shard_size=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stages.align", "--params", "params.yaml"]
    cmd += ["--raw", str(tiny_release), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    shards = default_work_dir(out)
    deadline = time.monotonic() + 120
    while len(list(shards.glob("*/shard-*.json"))) < 10 and first.poll() is None:
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    kept = len(list(shards.glob("*/shard-*.json")))
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert f"resuming, {kept} of" in second.stderr
    assert _tree(out) == reference
    assert not shards.exists()
    metrics = json.loads((tmp_path / "metrics" / "align.json").read_text())
    assert metrics["train"]["aligned"] == 24


def test_bad_shard_argument_is_one_line(repo_root: Path, tmp_path: Path) -> None:
    from tests.conftest import run_stage

    args = ("--raw", tmp_path, "--out", tmp_path / "out", "--shard", "2/2")
    proc = run_stage("align", "--params", repo_root / "params.yaml", *args)
    assert proc.returncode == 2 and "need 0 <= i < n" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_aligned_insightface_release_passes_through(tiny_aligned: Path, tmp_path: Path) -> None:
    """faces_emore's layout: aligned train.rec/.idx/property with .bin sets beside them."""
    raw = tmp_path / "faces_emore"
    shutil.copytree(tiny_aligned, raw)
    shutil.copyfile(tiny_aligned.parent / "eval" / "lfw.bin", raw / "lfw.bin")
    train, evals = tmp_path / "train", tmp_path / "eval"
    result = align_dataset(raw, train, AlignParams(), eval_out=evals)
    assert result is not None and result.reports["train"].to_dict()["aligned"] == 24
    assert result.shipped_bins == {"lfw": 40}
    for name in ("train.rec", "train.idx", "property"):
        assert (train / name).read_bytes() == (raw / name).read_bytes()
    (raw / "property").write_text("7,112,112\n")
    with pytest.raises(DataFormatError, match=r"7 classes, but header0 of .* lists 6"):
        align_dataset(raw, tmp_path / "again", AlignParams())
