"""IJB-B/C, MegaFace, Trillion-Pairs and iQIYI-VID files: layouts, round trips, errors, speed."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from arcflow.data.protocols import ijb, iqiyi, megaface, trillion
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- samples in the official layouts

TID_MID = "1.jpg 1 69544\n2.jpg 1 69544\n3.jpg 1 3721\n4.jpg 2 11532\n"
PAIRS = "1 11065 1\n1 11066 0\n2 18170 1\n3 11065 0\n"
FIVE_PTS = (
    "3043.jpg 1147.004 1399.722 1908.165 1163.138 1793.064 1729.961 1441.275 2220.645"
    " 2059.911 2029.070 0.999\n"
    "3044.jpg 46.060 62.026 87.785 60.323 68.851 77.656 52.162 99.875 86.450 98.648 0.872\n"
    "3045.jpg -3.100 0.000 12.500 -0.000 7.000 9.250 1.000 20.125 11.000 19.875 0.500\n"
)
GALLERY_CSV = (
    "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT\n"
    "1,1,img/1.jpg,1,110.33,71.88,201.09,275.43\n"
    "1,1,frames/29995.png,3,,,,\n"
    "2,7,img/105.jpg,105,96,44,58,80\n"
)
MATCHES = "1,11065\n1,11066\n2,18170\n"
FACESCRUB_JSON = (
    '{"path": ["Michael_Landes/Michael_Landes_43667.png",'
    ' "Martin_Henderson/Martin_Henderson_40591.png"],'
    ' "id": ["Michael_Landes", "Martin_Henderson"]}'
)
MEGAFACE_JSON = (
    '{"path": ["534/53415754@N00/37731000_1.jpg", "389/38989502@N07/4767491946_13.jpg"]}'
)
FACESCRUB_NOISES = "#noisy FaceScrub images\nAaron_Eckhart_134.png\nAdam_Brody_2015.png\n"
MEGAFACE_NOISES = (
    "#noisy MegaFace distractors\n"
    "1\t534/53415754@N00/37731000_1.jpg\n"
    "389/38989502@N07/4767491946_13.jpg\n"
)
TRAIN_GT = "IQIYI_VID_TRAIN_0000001.mp4 4256\nIQIYI_VID_TRAIN_0000002.mp4 17\n"
VAL_GT = (
    "1 IQIYI_VID_VAL_0000038.mp4 IQIYI_VID_VAL_0000412.mp4\n"
    "0 IQIYI_VID_VAL_0000001.mp4\n"
    "17 IQIYI_VID_VAL_0000005.mp4\n"
)
SUBMISSION = (
    "17 IQIYI_VID_TEST_0094168.mp4 IQIYI_VID_TEST_0000003.mp4\n1 IQIYI_VID_TEST_0000002.mp4\n"
)

ROUND_TRIPS: list[tuple[str, str, Callable[[Path], Any], Callable[[Path, Any], None]]] = [
    ("tid_mid", TID_MID, ijb.read_face_tid_mid, ijb.write_face_tid_mid),
    ("pairs", PAIRS, ijb.read_template_pair_label, ijb.write_template_pair_label),
    ("5pts", FIVE_PTS, ijb.read_name_5pts_score, ijb.write_name_5pts_score),
    ("gallery_csv", GALLERY_CSV, ijb.read_template_table, ijb.write_template_table),
    (
        "gallery_csv_crlf",
        GALLERY_CSV.replace("\n", "\r\n"),
        ijb.read_template_table,
        ijb.write_template_table,
    ),
    ("matches", MATCHES, ijb.read_matches, ijb.write_matches),
    (
        "matches_header",
        "REFERENCE_TEMPLATE_ID,PROBE_TEMPLATE_ID\n" + MATCHES,
        ijb.read_matches,
        ijb.write_matches,
    ),
    ("facescrub_json", FACESCRUB_JSON, megaface.read_feature_list, megaface.write_feature_list),
    ("megaface_json", MEGAFACE_JSON, megaface.read_feature_list, megaface.write_feature_list),
    ("fs_noises", FACESCRUB_NOISES, megaface.read_noise_list, megaface.write_noise_list),
    ("mf_noises", MEGAFACE_NOISES, megaface.read_noise_list, megaface.write_noise_list),
    ("filelist", "a/1.jpg\nb/2.jpg\n", trillion.read_file_list, trillion.write_file_list),
    ("train_gt", TRAIN_GT, iqiyi.read_train_gt, iqiyi.write_train_gt),
    ("val_gt", VAL_GT, iqiyi.read_val_gt, iqiyi.write_val_gt),
    ("submission", SUBMISSION, iqiyi.read_submission, iqiyi.write_submission),
]


@pytest.mark.parametrize(
    ("name", "text", "read", "write"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS]
)
def test_round_trip_is_byte_exact(
    tmp_path: Path, name: str, text: str, read: Callable, write: Callable
) -> None:
    src, dst = tmp_path / f"{name}.src", tmp_path / f"{name}.dst"
    src.write_bytes(text.encode())
    write(dst, read(src))
    assert dst.read_bytes() == src.read_bytes()


# ---------------------------------------------------------------- IJB-B / IJB-C


def test_ijb_meta_samples(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(TID_MID)
    meta = ijb.read_face_tid_mid(tmp_path / "t.txt")
    assert meta.names.tolist() == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert meta.template_ids.dtype == np.int64 and meta.template_ids.tolist() == [1, 1, 1, 2]
    assert meta.media_ids.tolist() == [69544, 69544, 3721, 11532]

    (tmp_path / "p.txt").write_text(PAIRS)
    pairs = ijb.read_template_pair_label(tmp_path / "p.txt")
    assert pairs.template1.tolist() == [1, 1, 2, 3] and pairs.template2.dtype == np.int64
    assert pairs.labels.tolist() == [1, 0, 1, 0]

    (tmp_path / "f.txt").write_text(FIVE_PTS)
    pts = ijb.read_name_5pts_score(tmp_path / "f.txt")
    assert pts.landmarks.shape == (3, 5, 2) and pts.landmarks.dtype == np.float32
    np.testing.assert_allclose(pts.landmarks[0, 4], [2059.911, 2029.070])
    np.testing.assert_allclose(pts.scores, [0.999, 0.872, 0.5], rtol=1e-6)
    assert (pts.landmark_decimals, pts.score_decimals) == (3, 3)


def test_ijb_nist_csv_samples(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text(GALLERY_CSV)
    table = ijb.read_template_table(tmp_path / "g.csv")
    assert table.template_ids.tolist() == [1, 1, 2] and table.subject_ids.tolist() == [1, 1, 7]
    assert table.filenames.tolist() == ["img/1.jpg", "frames/29995.png", "img/105.jpg"]
    assert table.column("SIGHTING_ID").tolist() == ["1", "3", "105"]
    assert table.column("FACE_X").tolist() == ["110.33", "", "96"]
    (tmp_path / "m.csv").write_text(MATCHES)
    matches = ijb.read_matches(tmp_path / "m.csv")
    assert matches.reference_ids.tolist() == [1, 1, 2] and matches.probe_ids.tolist() == [
        11065,
        11066,
        18170,
    ]
    assert not matches.header


def test_ijb_write_then_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 500
    names = np.array([f"img/{i}.jpg" for i in range(n)])
    pts = ijb.FivePoints(
        names,
        np.round(rng.normal(0, 2000, (n, 5, 2)), 3).astype(np.float32),
        np.round(rng.random(n), 3).astype(np.float32),
    )
    ijb.write_name_5pts_score(tmp_path / "f.txt", pts)
    back = ijb.read_name_5pts_score(tmp_path / "f.txt")
    assert back.names.tolist() == names.tolist()
    np.testing.assert_array_equal(back.landmarks, pts.landmarks)
    np.testing.assert_array_equal(back.scores, pts.scores)
    line = (tmp_path / "f.txt").read_text().splitlines()[0].split(" ")
    assert line[1] == f"{pts.landmarks[0, 0, 0]:.3f}" and line[11] == f"{pts.scores[0]:.3f}"

    pairs = ijb.TemplatePairs(
        rng.integers(1, 10**6, n), rng.integers(1, 10**6, n), rng.integers(0, 2, n)
    )
    ijb.write_template_pair_label(tmp_path / "p.txt", pairs)
    lines = [
        f"{a} {b} {c}"
        for a, b, c in zip(pairs.template1, pairs.template2, pairs.labels, strict=True)
    ]
    assert (tmp_path / "p.txt").read_text() == "\n".join(lines) + "\n"

    meta = ijb.FaceTidMid(names, np.arange(n) // 3, np.arange(n) + 10**9)
    ijb.write_face_tid_mid(tmp_path / "t.txt", meta)
    back_meta = ijb.read_face_tid_mid(tmp_path / "t.txt")
    np.testing.assert_array_equal(back_meta.media_ids, meta.media_ids)


def test_ijb_canonical_files_take_the_vectorised_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_slow_path(*args: object) -> None:
        raise AssertionError("canonical file fell back to the line-by-line parser")

    monkeypatch.setattr(ijb, "_parse_slow", no_slow_path)
    for name, text, read, write in ROUND_TRIPS[:3] + ROUND_TRIPS[5:7]:
        (tmp_path / name).write_text(text)
        write(tmp_path / f"{name}.out", read(tmp_path / name))
    utf8 = "Zoë/1.jpg 1 2\nÅsa/2.jpg 1 3\n"
    (tmp_path / "utf8.txt").write_text(utf8, encoding="utf-8")
    meta = ijb.read_face_tid_mid(tmp_path / "utf8.txt")
    assert meta.names.tolist() == ["Zoë/1.jpg", "Åsa/2.jpg"]
    ijb.write_face_tid_mid(tmp_path / "utf8.out", meta)
    assert (tmp_path / "utf8.out").read_text(encoding="utf-8") == utf8


def test_ijb_tolerates_other_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TID_MID.replace(" ", "\t").replace("\n", "\r\n").rstrip("\n"))
    meta = ijb.read_face_tid_mid(path)
    assert meta.names.tolist()[-1] == "4.jpg" and meta.media_ids.tolist()[-1] == 11532


@pytest.mark.parametrize(
    ("read", "text", "match"),
    [
        (ijb.read_face_tid_mid, "1.jpg 1 69544\n2.jpg 1\n", r"t\.txt:2: expected 3 fields"),
        (
            ijb.read_face_tid_mid,
            "1.jpg 1 69544\n2.jpg one 3\n",
            r"t\.txt:2: template_id 'one' is not an integer",
        ),
        (
            ijb.read_face_tid_mid,
            "1.jpg 1 69544\n2.jpg 1 3\n3.jpg 1 2 4\n",
            r"t\.txt:3: expected 3 fields",
        ),
        (ijb.read_template_pair_label, "1 2 1\n1 3 0\n1 4 2\n", r"t\.txt:3: label 2 is not 0 or 1"),
        (
            ijb.read_template_pair_label,
            "1 2 1\n1 3.5 0\n",
            r"t\.txt:2: tid2 '3\.5' is not an integer",
        ),
        (
            ijb.read_template_pair_label,
            "1 2 1\n\n1 3 0\n",
            r"t\.txt:2: expected 3 fields \(tid1 tid2 label\), got 0",
        ),
        (ijb.read_name_5pts_score, "a.jpg 1 2 3 4 5 6 7 8 9 10\n", r"t\.txt:1: expected 12 fields"),
        (
            ijb.read_name_5pts_score,
            "a.jpg 1 2 3 4 5 6 7 8 9 x 0.9\n",
            r"t\.txt:1: y5 'x' is not a number",
        ),
        (ijb.read_matches, "1,2\n3;4\n", r"t\.txt:2: expected 2 fields"),
        (
            ijb.read_matches,
            "REFERENCE_TEMPLATE_ID,PROBE_TEMPLATE_ID\n1,2\n3,x\n",
            r"t\.txt:3: probe_template_id",
        ),
        (
            ijb.read_template_table,
            GALLERY_CSV + "3,9,img/9.jpg,9\n",
            r"t\.txt:5: expected 8 fields, got 4",
        ),
        (
            ijb.read_template_table,
            GALLERY_CSV + "3,nine,img/9.jpg,9,1,1,1,1\n",
            r"t\.txt:5: SUBJECT_ID 'nine'",
        ),
        (
            ijb.read_template_table,
            "TEMPLATE_ID,FILENAME\n1,a.jpg\n",
            r"t\.txt:1: header must start with",
        ),
        (ijb.read_face_tid_mid, b"1.jpg 1 2\n\xff.jpg 1 2\n", r"t\.txt: byte offset 10: not UTF-8"),
    ],
)
def test_ijb_malformed_names_file_and_line(
    tmp_path: Path, read: Callable, text: str | bytes, match: str
) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError, match=match):
        read(path)


def test_ijb_pair_label_scale(tmp_path: Path) -> None:
    n = 1_000_000
    rng = np.random.default_rng(1)
    t1, t2, label = rng.integers(1, 200_000, n), rng.integers(1, 200_000, n), rng.integers(0, 2, n)
    path = tmp_path / "ijbc_template_pair_label.txt"
    path.write_text(
        "".join(
            f"{a} {b} {c}\n"
            for a, b, c in zip(t1.tolist(), t2.tolist(), label.tolist(), strict=True)
        )
    )
    start = time.perf_counter()
    pairs = ijb.read_template_pair_label(path)
    elapsed = time.perf_counter() - start
    print(f"read {n:,} template_pair_label lines in {elapsed:.3f} s")
    assert elapsed < 3.0
    np.testing.assert_array_equal(pairs.template2, t2)
    np.testing.assert_array_equal(pairs.labels, label)


def test_ijb_files_layout(tmp_path: Path) -> None:
    files = ijb.ijb_files(tmp_path, "ijbc")
    assert files.template_pair_label == tmp_path / "IJBC/meta/ijbc_template_pair_label.txt"
    assert files.loose_crop == tmp_path / "IJBC/loose_crop"
    assert ijb.ijb_files(tmp_path, "ijbb").gallery2.name == "ijbb_1N_gallery_S2.csv"


# ---------------------------------------------------------------- MegaFace


def insightface_bin(feature: list[float]) -> bytes:
    """A feature file as insightface's gen_megaface.py writes it."""
    return struct.pack("4i", len(feature), 1, 4, 5) + struct.pack(f"{len(feature)}f", *feature)


def test_megaface_feature_lists(tmp_path: Path) -> None:
    (tmp_path / megaface.FACESCRUB_LIST).write_text(FACESCRUB_JSON)
    probes = megaface.read_feature_list(tmp_path / megaface.FACESCRUB_LIST)
    assert probes.paths[0] == "Michael_Landes/Michael_Landes_43667.png" and probes.ids == (
        "Michael_Landes",
        "Martin_Henderson",
    )
    name = megaface.megaface_list_name(1_000_000)
    assert name == "megaface_features_list.json_1000000_1"
    (tmp_path / name).write_text(MEGAFACE_JSON)
    assert megaface.read_feature_list(tmp_path / name).ids is None
    path = megaface.feature_file("/feat", "534/53415754@N00/37731000_1.jpg", "_arcface.bin")
    assert path == Path("/feat/534/53415754@N00/37731000_1.jpg_arcface.bin")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"path": ["a.jpg",\n "b.jpg"\n', r"l\.json:3: Expecting"),
        ('{"id": []}', r"l\.json: expected a JSON object with a 'path' list"),
        (
            '{"path": ["a.jpg", "b.jpg"], "id": ["x"]}',
            r"l\.json: 'id' must list one identity per path \(2\), got 1",
        ),
        ('{"path": ["a.jpg", 3]}', r"l\.json: path\[1\] is 3"),
    ],
)
def test_megaface_feature_list_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "l.json").write_text(text)
    with pytest.raises(DataFormatError, match=match):
        megaface.read_feature_list(tmp_path / "l.json")


def test_megaface_feature_file_round_trip(tmp_path: Path) -> None:
    raw = insightface_bin([0.5, -1.25, 3.0])
    (tmp_path / "a.bin").write_bytes(raw)
    feature = megaface.read_feature(tmp_path / "a.bin")
    assert feature.shape == (3, 1) and feature.dtype == np.float32
    np.testing.assert_array_equal(feature.ravel(), [0.5, -1.25, 3.0])
    megaface.write_feature(tmp_path / "b.bin", feature)
    assert (tmp_path / "b.bin").read_bytes() == raw
    megaface.write_feature(tmp_path / "c.bin", feature.ravel())  # 1-D is stored d x 1
    assert (tmp_path / "c.bin").read_bytes() == raw


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            insightface_bin([1.0, 2.0])[:-3],
            r"byte offset 21: truncated, file is 21 bytes, a 2x1 float32 matrix takes 24",
        ),
        (insightface_bin([1.0, 2.0]) + b"\0\0\0\0", r"byte offset 24: trailing bytes"),
        (struct.pack("4i", 2, 1, 4, 6) + bytes(8), r"byte offset 12: matrix type 6 is not 5"),
        (struct.pack("4i", 2, 1, 8, 5) + bytes(8), r"byte offset 8: row stride 8 != cols \* 4 = 4"),
        (struct.pack("3i", 2, 1, 4), r"byte offset 12: truncated header, file is 12 bytes"),
        (struct.pack("4i", -2, 1, 4, 5), r"byte offset 0: negative shape"),
    ],
)
def test_megaface_feature_file_errors(tmp_path: Path, raw: bytes, match: str) -> None:
    (tmp_path / "x.jpg_a.bin").write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"x\.jpg_a\.bin: " + match):
        megaface.read_feature(tmp_path / "x.jpg_a.bin")


def test_megaface_bulk_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(20, 8)).astype(np.float32)
    paths = []
    for i, f in enumerate(feats):
        paths.append(tmp_path / f"{i}.jpg_x.bin")
        paths[-1].write_bytes(insightface_bin(f.tolist()))
    np.testing.assert_array_equal(megaface.read_features(paths), feats)
    paths[7].write_bytes(insightface_bin(feats[7].tolist())[:-1])
    with pytest.raises(DataFormatError, match=r"7\.jpg_x\.bin: byte offset 47: truncated"):
        megaface.read_features(paths)
    paths[7].write_bytes(insightface_bin(feats[7, :4].tolist()))
    with pytest.raises(
        DataFormatError, match=r"7\.jpg_x\.bin: a 4x1 feature, the first file is 8x1"
    ):
        megaface.read_features(paths)
    raw = bytearray(insightface_bin(feats[9].tolist()))
    raw[12] = 6  # same size, wrong type: found by the vectorised header check
    paths[9].write_bytes(bytes(raw))
    paths[7].write_bytes(insightface_bin(feats[7].tolist()))
    with pytest.raises(DataFormatError, match=r"9\.jpg_x\.bin: byte offset 12: matrix type 6"):
        megaface.read_features(paths)


def test_megaface_noise_lists(tmp_path: Path) -> None:
    (tmp_path / "fs.txt").write_text(FACESCRUB_NOISES)
    fs = megaface.read_noise_list(tmp_path / "fs.txt")
    assert fs.paths == ("Aaron_Eckhart_134.png", "Adam_Brody_2015.png")
    assert fs.comments == ("#noisy FaceScrub images",)
    (tmp_path / "mf.txt").write_text(MEGAFACE_NOISES)
    mf = megaface.read_noise_list(tmp_path / "mf.txt")
    assert mf.paths == ("534/53415754@N00/37731000_1.jpg", "389/38989502@N07/4767491946_13.jpg")
    (tmp_path / "bad.txt").write_text("#c\na\tb\tc\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2:"):
        megaface.read_noise_list(tmp_path / "bad.txt")
    megaface.write_noise_list(
        tmp_path / "new.txt", megaface.NoiseList.of(["a.png"], comment="noise")
    )
    assert (tmp_path / "new.txt").read_text() == "#noise\na.png\n"


# ---------------------------------------------------------------- Trillion-Pairs


def test_trillion_write_read_memmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(70_000, 4)).astype(np.float32)  # more rows than one write chunk
    path = tmp_path / "features.bin"
    trillion.write_features(path, feats)
    raw = path.read_bytes()
    assert raw == struct.pack("4i", 70_000, 4, 16, 5) + feats.tobytes()
    back = trillion.read_features(path, rows=70_000)
    assert isinstance(back, np.memmap) and back.dtype == np.float32 and not back.flags.writeable
    np.testing.assert_array_equal(back, feats)
    trillion.write_features(tmp_path / "again.bin", back)
    assert (tmp_path / "again.bin").read_bytes() == raw


def test_trillion_create_in_place(tmp_path: Path) -> None:
    path = tmp_path / "sub.bin"
    with trillion.create_features(path, 3, 2) as out:
        assert not path.exists()
        out[1] = [1.5, -2.0]
    np.testing.assert_array_equal(trillion.read_features(path), [[0, 0], [1.5, -2.0], [0, 0]])
    with pytest.raises(RuntimeError), trillion.create_features(tmp_path / "failed.bin", 3, 2):
        raise RuntimeError("extraction crashed")
    assert not (tmp_path / "failed.bin").exists()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            struct.pack("4i", 3, 2, 8, 5) + bytes(20),
            r"byte offset 36: truncated, file is 36 bytes, a 3x2 float32 matrix takes 40",
        ),
        (struct.pack("4i", 3, 2, 8, 4) + bytes(24), r"byte offset 12: matrix type 4 is not 5"),
        (
            struct.pack("4i", 3, 2, 4, 5) + bytes(24),
            r"byte offset 8: row stride 4 != cols \* 4 = 8",
        ),
        (
            struct.pack("4i", 2, 2, 8, 5) + bytes(24),
            r"byte offset 32: trailing bytes, file is 40 bytes",
        ),
        (b"\x03\x00", r"byte offset 2: truncated header"),
    ],
)
def test_trillion_bad_files(tmp_path: Path, raw: bytes, match: str) -> None:
    (tmp_path / "f.bin").write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"f\.bin: " + match):
        trillion.read_features(tmp_path / "f.bin")


def test_trillion_row_count_and_list(tmp_path: Path) -> None:
    trillion.write_features(tmp_path / "f.bin", np.zeros((2, 3)))
    with pytest.raises(
        DataFormatError, match=r"f\.bin: byte offset 0: header says 2 rows, expected 5"
    ):
        trillion.read_features(tmp_path / "f.bin", rows=5)
    (tmp_path / trillion.FILE_LIST).write_text("a/1.jpg\n\nb/2.jpg\n")
    with pytest.raises(DataFormatError, match=r"filelist\.txt:2: expected one image path"):
        trillion.read_file_list(tmp_path / trillion.FILE_LIST)


# ---------------------------------------------------------------- iQIYI-VID


def test_iqiyi_samples(tmp_path: Path) -> None:
    (tmp_path / "train_v2.txt").write_text(TRAIN_GT)
    assert iqiyi.read_train_gt(tmp_path / "train_v2.txt") == {
        "IQIYI_VID_TRAIN_0000001.mp4": 4256,
        "IQIYI_VID_TRAIN_0000002.mp4": 17,
    }
    (tmp_path / "val_v2.txt").write_text(VAL_GT)
    gt = iqiyi.read_val_gt(tmp_path / "val_v2.txt")
    assert gt[1] == ("IQIYI_VID_VAL_0000038.mp4", "IQIYI_VID_VAL_0000412.mp4")
    assert list(iqiyi.queries(gt)) == [1, 17]
    assert iqiyi.video_labels(gt)["IQIYI_VID_VAL_0000001.mp4"] == 0
    (tmp_path / "sub.txt").write_text(SUBMISSION)
    assert iqiyi.read_submission(tmp_path / "sub.txt")[17][0] == "IQIYI_VID_TEST_0094168.mp4"


def _videos(n: int) -> str:
    return " ".join(f"IQIYI_VID_TEST_{i:07d}.mp4" for i in range(n))


@pytest.mark.parametrize(
    ("read", "text", "match"),
    [
        (
            iqiyi.read_submission,
            f"1 {_videos(100)}\n2 {_videos(101)}\n",
            r"f\.txt:2: label 2 lists 101 videos, at most 100",
        ),
        (
            iqiyi.read_submission,
            f"1 {_videos(3)}\n5 {_videos(1)}\n1 {_videos(2)}\n",
            r"f\.txt:3: label 1 already",
        ),
        (
            iqiyi.read_submission,
            f"0 {_videos(3)}\n",
            r"f\.txt:1: label 0 \(unknown\) is not a query",
        ),
        (iqiyi.read_submission, "3 a.mp4 b.mp4 a.mp4\n", r"f\.txt:1: label 3 lists a video twice"),
        (iqiyi.read_submission, "x a.mp4\n", r"f\.txt:1: label 'x' is not a non-negative integer"),
        (
            iqiyi.read_val_gt,
            "1 a.mp4 b.mp4\n2 b.mp4\n",
            r"f\.txt:2: video b\.mp4 already under label 1",
        ),
        (iqiyi.read_val_gt, "1 a.mp4\n4\n", r"f\.txt:2: label 4 lists no videos"),
        (iqiyi.read_train_gt, "a.mp4 1\nb.mp4\n", r"f\.txt:2: expected 'video_name label'"),
        (iqiyi.read_train_gt, "a.mp4 1\na.mp4 2\n", r"f\.txt:2: video a\.mp4 listed twice"),
    ],
)
def test_iqiyi_malformed(tmp_path: Path, read: Callable, text: str, match: str) -> None:
    (tmp_path / "f.txt").write_text(text)
    with pytest.raises(DataFormatError, match=match):
        read(tmp_path / "f.txt")


def test_iqiyi_writer_validates(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"sub\.txt: label 3 lists 101 videos"):
        iqiyi.write_submission(tmp_path / "sub.txt", {3: _videos(101).split()})
    assert not (tmp_path / "sub.txt").exists()
    iqiyi.write_submission(tmp_path / "sub.txt", {3: ["b.mp4", "a.mp4"]})
    assert (tmp_path / "sub.txt").read_text() == "3 b.mp4 a.mp4\n"


def test_json_written_like_json_dumps(tmp_path: Path) -> None:
    fl = megaface.FeatureList(("a/1.png",), (7,))
    megaface.write_feature_list(tmp_path / "l.json", fl)
    assert (tmp_path / "l.json").read_text() == json.dumps({"path": ["a/1.png"], "id": [7]})
    assert megaface.read_feature_list(tmp_path / "l.json") == fl
