"""Stages as DVC runs them: real subprocesses, one-line errors, atomic outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from arcflow.data.binpairs import load_bin
from arcflow.data.face_records import read_face_dataset_index
from tests.conftest import run_stage

pytestmark = pytest.mark.integration


def _params(repo_root: Path, tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(error_lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in error_lines[0]


def test_bad_key_fails_with_one_line(repo_root: Path, tmp_path: Path) -> None:
    params = _params(repo_root, tmp_path, lambda p: p["train"].update(lerning_rate=0.1))
    proc = run_stage("train", "--params", params, "--data", tmp_path, "--out", tmp_path / "m")
    _assert_one_line_error(proc, "train.lerning_rate: unknown key", "allowed keys")
    assert "hint: " in proc.stderr
    assert not (tmp_path / "m").exists()


def test_bad_type_fails_with_one_line(repo_root: Path, tmp_path: Path) -> None:
    params = _params(repo_root, tmp_path, lambda p: p["evaluate"].update(n_folds="ten"))
    proc = run_stage(
        "evaluate", "--params", params, "--data", tmp_path, "--model", "x", "--run", "y"
    )
    _assert_one_line_error(proc, "evaluate.n_folds", "'ten'")


def test_missing_section_fails_with_one_line(repo_root: Path, tmp_path: Path) -> None:
    params = _params(repo_root, tmp_path, lambda p: p.pop("align"))
    proc = run_stage("align", "--params", params, "--raw", tmp_path, "--out", tmp_path / "a")
    _assert_one_line_error(proc, "missing section 'align'")


def test_missing_input_names_the_file(repo_root: Path, tmp_path: Path) -> None:
    proc = run_stage(
        "train", "--params", repo_root / "params.yaml", "--data", tmp_path / "none",
        "--out", tmp_path / "models",
    )  # fmt: skip
    _assert_one_line_error(proc, str(tmp_path / "none" / "train.rec"))
    assert not (tmp_path / "models").exists()
    proc = run_stage(
        "align",
        "--params",
        repo_root / "params.yaml",
        "--raw",
        tmp_path / "missing",
        "--out",
        tmp_path / "aligned",
    )
    _assert_one_line_error(proc, str(tmp_path / "missing"), "no such file")
    assert not (tmp_path / "aligned").exists()


def test_download_then_align(repo_root: Path, tmp_path: Path, tiny_synthface) -> None:
    params = _params(
        repo_root,
        tmp_path,
        lambda p: p["data"]["sources"]["synthface"].update(options=tiny_synthface.model_dump()),
    )
    raw, aligned = tmp_path / "raw", tmp_path / "aligned"
    proc = run_stage("download", "--params", params, "--source", "synthface", "--out", raw)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in raw.iterdir()} == {
        "train.rec",
        "train.idx",
        "meta.json",
        "lfw",
        "bins",
        "ijb",
        "megaface",
        "ytf",
    }
    evals = tmp_path / "eval"
    proc = run_stage(
        "align", "--params", params, "--raw", raw, "--out", aligned, "--eval-out", evals
    )
    assert proc.returncode == 0, proc.stderr
    num_classes, keys, labels = read_face_dataset_index(aligned)
    assert num_classes == tiny_synthface.train_identities
    assert len(keys) == tiny_synthface.train_identities * tiny_synthface.train_images_per_identity
    assert sorted(set(labels.tolist())) == list(range(num_classes))
    n_pairs = tiny_synthface.val_folds * tiny_synthface.val_pairs_per_fold * 2
    for name in ("lfw", "cfp_fp", "agedb_30"):
        pairs = load_bin(evals / f"{name}.bin")
        assert len(pairs.issame) == n_pairs, name
        assert pairs.issame.sum() == n_pairs // 2, name
    assert (aligned / "property").read_text().strip() == f"{num_classes},112,112"
    assert sorted(p.name for p in (evals / "sets").glob("*.names")) == [
        "ijbc.names",
        "megaface.names",
        "ytf.names",
    ]


def test_failed_align_leaves_no_output(repo_root: Path, tmp_path: Path, tiny_release: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(tiny_release, raw)
    data = (raw / "train.rec").read_bytes()
    (raw / "train.rec").write_bytes(data[: len(data) // 2])  # truncated mid-record
    out = tmp_path / "aligned"
    proc = run_stage("align", "--params", repo_root / "params.yaml", "--raw", raw, "--out", out)
    _assert_one_line_error(proc, "train.rec")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_failed_align_keeps_previous_output(
    repo_root: Path, tmp_path: Path, tiny_release: Path
) -> None:
    raw, out = tmp_path / "raw", tmp_path / "aligned"
    shutil.copytree(tiny_release, raw)
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    (raw / "lfw" / "pairs.txt").write_text("10\t2\nbroken line\n")
    proc = run_stage("align", "--params", repo_root / "params.yaml", "--raw", raw, "--out", out)
    _assert_one_line_error(proc, "pairs.txt")
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_download_fetches_a_configured_archive(repo_root: Path, tmp_path: Path) -> None:
    import hashlib
    import tarfile

    payload = tmp_path / "payload"
    (payload / "faces").mkdir(parents=True)
    (payload / "faces" / "property").write_text("2,112,112\n")
    archive = tmp_path / "faces.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload / "faces", arcname="faces")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    source = {"uri": archive.as_uri(), "sha256": digest}
    params = _params(repo_root, tmp_path, lambda p: p["data"]["sources"].update(faces=source))
    out, report = tmp_path / "raw" / "faces", tmp_path / "reports" / "faces.json"
    proc = run_stage(
        "download", "--params", params, "--source", "faces", "--out", out, "--report", report
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "faces" / "property").read_text() == "2,112,112\n"
    said = json.loads(report.read_text())
    assert said["verified"] is True and said["checksum"] == "sha256" and said["kind"] == "archive"
    assert said["sha256"] == digest and said["bytes"] == archive.stat().st_size
    assert said["status"] == "verified: sha256 matched the source's checksum"

    bad = {"uri": archive.as_uri(), "sha256": "0" * 64}
    params = _params(repo_root, tmp_path, lambda p: p["data"]["sources"].update(faces=bad))
    bad_report = report.with_name("b.json")
    proc = run_stage(
        "download", "--params", params, "--source", "faces", "--out", out.with_name("b"),
        "--report", bad_report,
    )  # fmt: skip
    _assert_one_line_error(proc, digest, "0" * 64)
    assert not out.with_name("b").exists() and not bad_report.exists()

    # without a checksum the bytes land, and the report says nothing vouched for them
    loose = {"uri": archive.as_uri()}
    params = _params(repo_root, tmp_path, lambda p: p["data"]["sources"].update(faces=loose))
    proc = run_stage(
        "download", "--params", params, "--source", "faces", "--out", out.with_name("c"),
        "--report", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = json.loads(report.read_text())
    assert said["verified"] is False and said["status"].startswith("UNVERIFIED: no checksum")
    assert said["hint"] == f"pin these bytes: data.sources.faces.sha256: {digest}"


def test_download_unknown_source(repo_root: Path, tmp_path: Path) -> None:
    proc = run_stage(
        "download",
        "--params",
        repo_root / "params.yaml",
        "--source",
        "nope",
        "--out",
        tmp_path / "x",
    )
    _assert_one_line_error(proc, "no source 'nope'", "available: synthface")
