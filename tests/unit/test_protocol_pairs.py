"""Raw benchmark protocol files (CFP, AgeDB-30, CALFW/CPLFW, YTF): layout, round trip, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arcflow.data.protocols import agedb, calfw, cfp, ytf
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- CFP

# Release layout: lists relative to Protocol/, "i,j" split lines; here 2 subjects x (2 frontal
# + 1 profile) and 2 splits, so read with folds=2.
CFP_FILES = {
    "Pair_list_F.txt": (
        "1 ../Data/Images/001/frontal/01.jpg\n"
        "2 ../Data/Images/001/frontal/02.jpg\n"
        "3 ../Data/Images/002/frontal/01.jpg\n"
        "4 ../Data/Images/002/frontal/02.jpg\n"
    ),
    "Pair_list_P.txt": (
        "1 ../Data/Images/001/profile/01.jpg\n2 ../Data/Images/002/profile/01.jpg\n"
    ),
    "Split/FP/01/same.txt": "1,1\n",
    "Split/FP/01/diff.txt": "2,2\n",
    "Split/FP/02/same.txt": "4,2\n",
    "Split/FP/02/diff.txt": "3,1\n",
    "Split/FF/01/same.txt": "1,2\n",
    "Split/FF/01/diff.txt": "1,3\n",
    "Split/FF/02/same.txt": "3,4\n",
    "Split/FF/02/diff.txt": "2,4\n",
}


def _cfp_root(tmp_path: Path, **override: str) -> Path:
    root = tmp_path / "cfp"
    for name, text in {**CFP_FILES, **override}.items():
        path = root / "Protocol" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cfp_reads_release_layout_in_fold_order(tmp_path: Path) -> None:
    pairs = cfp.read_cfp(_cfp_root(tmp_path), "FP", folds=2)
    assert [(p.fold, p.same) for p in pairs] == [(1, True), (1, False), (2, True), (2, False)]
    assert pairs[0] == cfp.CFPPair(
        "Data/Images/001/frontal/01.jpg", "Data/Images/001/profile/01.jpg", True, 1
    )
    assert pairs[2].path1 == "Data/Images/002/frontal/02.jpg"
    ff = cfp.read_cfp(_cfp_root(tmp_path), "FF", folds=2)
    assert (ff[0].path1, ff[0].path2) == (
        "Data/Images/001/frontal/01.jpg",
        "Data/Images/001/frontal/02.jpg",
    )
    assert cfp.image_entry(1, "profile", 4) == "../Data/Images/001/profile/04.jpg"


def test_cfp_round_trip_is_byte_exact(tmp_path: Path) -> None:
    src = _cfp_root(tmp_path)
    release = cfp.read_cfp_release(src, folds=2)
    dst = tmp_path / "out"
    cfp.write_cfp(dst, release.frontal, release.profile, release.splits)
    assert _tree_bytes(dst) == _tree_bytes(src)
    assert cfp.read_cfp_release(dst, folds=2) == release


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("Split/FP/02/diff.txt", "3,1\n3;1\n", r"Split/FP/02/diff\.txt:2: bad pair line"),
        ("Split/FP/01/same.txt", "1,1,1\n", r"Split/FP/01/same\.txt:1: bad pair line"),
        ("Split/FP/01/same.txt", "1,3\n", r"Split/FP/01/same\.txt:1: index out of range"),
        ("Split/FP/01/same.txt", "0,1\n", r"Split/FP/01/same\.txt:1: index out of range"),
        ("Pair_list_P.txt", "1 a.jpg\n3 b.jpg\n", r"Pair_list_P\.txt:2: expected index 2"),
        ("Pair_list_F.txt", "1 a.jpg extra\n", r"Pair_list_F\.txt:1: expected '<index> <path>'"),
    ],
)
def test_cfp_malformed_names_file_and_line(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    root = _cfp_root(tmp_path, **{name: text})
    with pytest.raises(DataFormatError, match=match):
        cfp.read_cfp(root, "FP", folds=2)


def test_cfp_missing_split_file(tmp_path: Path) -> None:
    root = _cfp_root(tmp_path)
    (root / "Protocol/Split/FP/02/diff.txt").unlink()
    with pytest.raises(DataFormatError, match=r"Split/FP/02/diff\.txt: missing"):
        cfp.read_cfp(root, "FP", folds=2)
    with pytest.raises(DataFormatError, match=r"Split/FP/03/same\.txt: missing"):
        cfp.read_cfp(_cfp_root(tmp_path / "b"), "FP")  # the release has 10 splits


def test_cfp_writer_rejects_out_of_range(tmp_path: Path) -> None:
    bad = {"FP": [cfp.CFPSplit(same=((1, 3),), diff=())]}
    with pytest.raises(ValueError, match="out of range"):
        cfp.write_cfp(tmp_path, ["a.jpg"], ["b.jpg", "c.jpg"], bad)


# --------------------------------------------------------------------------- AgeDB-30


def _agedb_splits() -> tuple[agedb.AgeDBSplit, ...]:
    def image(name: str, age: int) -> agedb.AgeDBImage:
        return agedb.AgeDBImage(name, age)

    return (
        agedb.AgeDBSplit(
            (
                agedb.AgeDBPair(image("AnnaX_1_f_1_a", 20), image("AnnaX_2_f_1_b", 50), True),
                agedb.AgeDBPair(image("BobY_3_m_2_a", 31), image("CarlZ_4_m_3_b", 61), False),
            )
        ),
        agedb.AgeDBSplit(
            (agedb.AgeDBPair(image("DanW_5_m_4_a", 18), image("EveV_6_f_5_b", 48), False),)
        ),
    )


def test_agedb_mat_round_trip(tmp_path: Path) -> None:
    splits = _agedb_splits()
    agedb.write_agedb_protocol(tmp_path / "a.mat", splits)
    assert agedb.read_agedb_protocol(tmp_path / "a.mat") == splits
    agedb.write_agedb_protocol(tmp_path / "b.mat", agedb.read_agedb_protocol(tmp_path / "a.mat"))
    assert (tmp_path / "b.mat").read_bytes() == (tmp_path / "a.mat").read_bytes()


def test_agedb_mat_matches_public_readers_indexing(tmp_path: Path) -> None:
    from scipy.io import loadmat

    agedb.write_agedb_protocol(tmp_path / agedb.PROTOCOL_FILE, _agedb_splits())
    data = loadmat(tmp_path / agedb.PROTOCOL_FILE)["splits"]
    assert data.shape == (2, 1)
    # insightface agedb2pack2.py: split = data[i][0][0][0][0]; item = split[r][c][0][0]
    split = data[0][0][0][0][0]
    assert split.shape == (2, 2)
    item = split[1][0][0][0]
    assert str(item[0][0]) == "AnnaX_2_f_1_b" and int(item[1].item()) == 50
    # the .mat -> pairs.txt converter: fold = data[i][0][0][0]; fold[1][0][c] is +1 / -1
    fold = data[0][0][0][0]
    assert list(fold[1][0]) == [1, -1]
    assert fold[0][0, 1][0][0][0][0] == "BobY_3_m_2_a"


def test_agedb_mat_errors_name_split_and_pair(tmp_path: Path) -> None:
    from scipy.io import loadmat, savemat

    path = tmp_path / "p.mat"
    agedb.write_agedb_protocol(path, _agedb_splits())
    data = loadmat(path)["splits"]
    data[0][0][0, 0]["flag"] = np.array([[1.0, 0.0]])
    savemat(path, {"splits": data})
    with pytest.raises(DataFormatError, match=r"p\.mat: split 1, pair 2: flag"):
        agedb.read_agedb_protocol(path)
    savemat(path, {"other": np.zeros(3)})
    with pytest.raises(DataFormatError, match="no 'splits' variable"):
        agedb.read_agedb_protocol(path)
    path.write_bytes(b"not a mat file")
    with pytest.raises(DataFormatError, match="not a readable MATLAB file"):
        agedb.read_agedb_protocol(path)


def _pts_text(points: np.ndarray) -> str:
    body = "".join(f"{x:.6f} {y:.6f}\n" for x, y in points)
    return f"version: 1\nn_points:  {len(points)}\n{{\n{body}}}\n"


def test_pts_reads_ibug_layout_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    points = np.round(rng.uniform(0, 500, size=(68, 2)), 6)
    text = _pts_text(points)
    assert text.startswith("version: 1\nn_points:  68\n{\n") and text.endswith("}\n")
    src = tmp_path / "0_MariaX_35_f.pts"
    src.write_text(text)
    read = agedb.read_pts(src)
    np.testing.assert_allclose(read, points, atol=1e-9)
    agedb.write_pts(tmp_path / "out.pts", read)
    assert (tmp_path / "out.pts").read_bytes() == src.read_bytes()
    # no final newline after "}" (as some tools write it) reads too
    src.write_text(text.rstrip("\n"))
    np.testing.assert_array_equal(agedb.read_pts(src), read)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("\n0.000000 0.000000\n", "\n1.0\n", 1), r"\.pts:4: bad point"),
        (lambda t: t.replace("n_points:  68", "n_points:  67"), "n_points is 67 but 68"),
        (lambda t: t.replace("}\n", ""), "no closing"),
        (lambda t: t.replace("version: 1", "vers 1"), r"\.pts:1: expected"),
    ],
)
def test_pts_malformed(tmp_path: Path, edit, match: str) -> None:
    path = tmp_path / "x.pts"
    path.write_text(edit(_pts_text(np.zeros((68, 2)))))
    with pytest.raises(DataFormatError, match=match):
        agedb.read_pts(path)


def test_five_points_from_68() -> None:
    pts = np.stack([np.arange(68.0), 2 * np.arange(68.0)], axis=1)
    five = agedb.five_points(pts)
    expected = [[37.5, 75.0], [43.5, 87.0], [33.0, 66.0], [48.0, 96.0], [54.0, 108.0]]
    np.testing.assert_array_equal(five, expected)
    assert five.shape == (5, 2)
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        agedb.five_points(pts[:5])


# --------------------------------------------------------------------------- CALFW / CPLFW

# CALFW: positives first with their fold number as label, then negatives with 0
# (here 2 folds x 1 pair per half).
CALFW_SAMPLE = (
    "Abel_Pacheco_0001.jpg 1\n"
    "Abel_Pacheco_0004.jpg 1\n"
    "Akhmed_Zakayev_0001.jpg 2\n"
    "Akhmed_Zakayev_0003.jpg 2\n"
    "Abdel_Madi_Shabneh_0001.jpg 0\n"
    "Dean_Barker_0001.jpg 0\n"
    "Abdel_Madi_Shabneh_0001.jpg 0\n"
    "Giancarlo_Fisichella_0001.jpg 0\n"
)
CPLFW_SAMPLE = (
    "Abel_Pacheco_1.jpg 1\n"
    "Abel_Pacheco_2.jpg 1\n"
    "Dean_Barker_1.jpg 0\n"
    "Giancarlo_Fisichella_2.jpg 0\n"
)


def test_calfw_reads_layout_and_fold_order(tmp_path: Path) -> None:
    path = tmp_path / "pairs_CALFW.txt"
    path.write_text(CALFW_SAMPLE)
    pairs = calfw.read_pairs(path, "CALFW")
    assert pairs[1] == calfw.LabeledPair("Akhmed_Zakayev_0001.jpg", "Akhmed_Zakayev_0003.jpg", 2)
    assert [p.same for p in pairs] == [True, True, False, False]
    assert calfw.fold_order(pairs, folds=2) == [0, 2, 1, 3]


def test_fold_order_release_size_and_checks() -> None:
    pos = [calfw.LabeledPair("a", "b", 1 + i // 300) for i in range(3000)]
    neg = [calfw.LabeledPair("a", "c", 0) for _ in range(3000)]
    order = calfw.fold_order(pos + neg)
    assert order[:300] == list(range(300)) and order[300:600] == list(range(3000, 3300))
    assert sorted(order) == list(range(6000))
    with pytest.raises(ValueError, match="positives first"):
        calfw.fold_order(neg[:300] + pos[:300], folds=1)
    with pytest.raises(ValueError, match="is not its fold"):
        calfw.fold_order(pos[300:600] + neg[:300], folds=1)


@pytest.mark.parametrize(("dataset", "sample"), [("CALFW", CALFW_SAMPLE), ("CPLFW", CPLFW_SAMPLE)])
def test_calfw_cplfw_round_trip_is_byte_exact(tmp_path: Path, dataset, sample: str) -> None:
    src, dst = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text(sample)
    calfw.write_pairs(dst, calfw.read_pairs(src, dataset))
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    ("dataset", "lineno", "bad", "match"),
    [
        ("CPLFW", 3, "Dean_Barker_1.jpg 2\n", r"pairs\.txt:3: bad pair line .*not 0 or 1"),
        ("CPLFW", 2, "Abel_Pacheco_2.jpg\n", r"pairs\.txt:2: bad pair line .*1 fields"),
        ("CPLFW", 1, "Abel_Pacheco_1.jpg one\n", r"pairs\.txt:1: bad pair line"),
        ("CPLFW", 4, "Giancarlo_Fisichella_2.jpg 1\n", r"pairs\.txt:4: label 1 differs"),
        ("CALFW", 5, "Abdel_Madi_Shabneh_0001.jpg -1\n", r"pairs\.txt:5: bad pair line"),
    ],
)
def test_calfw_malformed_names_file_and_line(
    tmp_path: Path, dataset, lineno: int, bad: str, match: str
) -> None:
    lines = (CALFW_SAMPLE if dataset == "CALFW" else CPLFW_SAMPLE).splitlines(keepends=True)
    lines[lineno - 1] = bad
    path = tmp_path / "pairs.txt"
    path.write_text("".join(lines))
    with pytest.raises(DataFormatError, match=match):
        calfw.read_pairs(path, dataset)


def test_calfw_odd_line_count(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(CPLFW_SAMPLE + "Extra_1.jpg 0\n")
    with pytest.raises(DataFormatError, match=r"pairs\.txt:5: odd line count"):
        calfw.read_pairs(path, "CPLFW")


# --------------------------------------------------------------------------- YTF

YTF_SAMPLE = (
    "split number, pair number, first name, second name, is same\n"
    "1, 1, Aaron_Eckhart/0, Aaron_Eckhart/2, 1\n"
    "1, 2, Aaron_Guiel/5, Aaron_Guiel/6, 1\n"
    "1, 3, Aaron_Eckhart/0, Abdullah/1, 0\n"
    "2, 1, Al_Leiter/4, Al_Leiter/5, 1\n"
)


def test_ytf_reads_splits_layout(tmp_path: Path) -> None:
    path = tmp_path / "splits.txt"
    path.write_text(YTF_SAMPLE)
    splits = ytf.read_splits(path)
    assert splits.header == ytf.DEFAULT_HEADER
    assert splits.pairs[2] == ytf.VideoPair(1, 3, "Aaron_Eckhart/0", "Abdullah/1", False)
    assert [p.number for p in splits.split(1)] == [1, 2, 3]
    assert len(splits.split(2)) == 1


def test_ytf_round_trip_is_byte_exact(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text(YTF_SAMPLE)
    ytf.write_splits(dst, ytf.read_splits(src))
    assert dst.read_bytes() == src.read_bytes()
    headerless = tmp_path / "c.txt"
    headerless.write_text(YTF_SAMPLE.split("\n", 1)[1])
    assert ytf.read_splits(headerless).header is None
    ytf.write_splits(dst, ytf.read_splits(headerless))
    assert dst.read_bytes() == headerless.read_bytes()


@pytest.mark.parametrize(
    ("lineno", "bad", "match"),
    [
        (3, "1, 2, Aaron_Guiel/5, Aaron_Guiel/6\n", r"splits\.txt:3: bad pair line .*got 4"),
        (4, "1, 3, Aaron_Eckhart/0, Abdullah/1, 2\n", r"splits\.txt:4: .*0 or 1"),
        (5, "2, x, Al_Leiter/4, Al_Leiter/5, 1\n", r"splits\.txt:5: bad pair line"),
        (2, "1, 1, Aaron_Eckhart, Aaron_Eckhart/2, 1\n", r"splits\.txt:2: .*'<Name>/<video>'"),
    ],
)
def test_ytf_malformed_names_file_and_line(
    tmp_path: Path, lineno: int, bad: str, match: str
) -> None:
    lines = YTF_SAMPLE.splitlines(keepends=True)
    lines[lineno - 1] = bad
    path = tmp_path / "splits.txt"
    path.write_text("".join(lines))
    with pytest.raises(DataFormatError, match=match):
        ytf.read_splits(path)


def test_ytf_frames_in_frame_order(tmp_path: Path) -> None:
    frames = tmp_path / "frame_images_DB" / "Aaron_Eckhart" / "0"
    aligned = tmp_path / "aligned_images_DB" / "Aaron_Eckhart" / "0"
    for folder, prefix in ((frames, ""), (aligned, "aligned_detect_")):
        folder.mkdir(parents=True)
        for n in (555, 1000, 9, 60):
            (folder / f"{prefix}0.{n}.jpg").write_bytes(b"")
        (folder / ".DS_Store").write_bytes(b"")
        (folder / "Thumbs.db").write_bytes(b"")
    got = ytf.video_frames(tmp_path, "Aaron_Eckhart/0")
    assert [p.name for p in got] == ["0.9.jpg", "0.60.jpg", "0.555.jpg", "0.1000.jpg"]
    got = ytf.video_frames(tmp_path, "Aaron_Eckhart/0", db="aligned_images_DB")
    assert got[0].name == "aligned_detect_0.9.jpg" and len(got) == 4
    (frames / "1.5.jpg").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"1\.5\.jpg: unexpected frame name"):
        ytf.list_video_frames(frames)
    with pytest.raises(DataFormatError, match="no such video folder"):
        ytf.video_frames(tmp_path, "Nobody/0")
