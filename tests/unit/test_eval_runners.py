"""Runners: protocol files in their official formats + aligned crops -> the metric modules.

Each case writes an evaluation folder the way the align stage does (``sets/<name>`` image
sets, ``protocols/<name>/`` files written by the data layer), runs the benchmark through the
suite, and checks it equals calling the metric module directly on the same features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arcflow.config import EvaluateParams
from arcflow.data.imageset import write_image_set
from arcflow.data.protocols import ijb, iqiyi, megaface, trillion
from arcflow.data.transforms import encode_jpeg
from arcflow.evaluate.context import EvalContext
from arcflow.evaluate.embed import l2_normalize
from arcflow.evaluate.ijb import evaluate_ijb
from arcflow.evaluate.iqiyi import evaluate_iqiyi
from arcflow.evaluate.megaface import evaluate_megaface
from arcflow.evaluate.suite import BY_NAME
from arcflow.evaluate.trillion import evaluate_trillion

pytestmark = pytest.mark.unit


class ColourEncoder:
    """Feature = the crop's mean colour, centred: solid crops of nearby colours are 'alike'."""

    key = "colour"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch.mean(axis=(2, 3)) + np.float32(0.01)


def _colour(identity: int, k: int) -> np.ndarray:
    rng = np.random.default_rng([identity, k])
    base = np.random.default_rng(identity).uniform(-0.9, 0.9, 3)
    return base + rng.normal(0, 0.05, 3)


def _crop(colour: np.ndarray) -> bytes:
    rgb = np.clip((colour + 1) * 127.5, 0, 255).astype(np.uint8)
    return encode_jpeg(np.ascontiguousarray(np.broadcast_to(rgb, (112, 112, 3))), quality=100)


def _features(crops: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """What the runner should compute: the encoder on each decoded crop, flip-summed."""
    from arcflow.evaluate.embed import to_batch

    batch = to_batch([_crop(crops[n]) for n in names], "t")
    enc = ColourEncoder()
    return enc(batch) + enc(np.ascontiguousarray(batch[..., ::-1]))


def _context(root: Path, crops: dict[str, np.ndarray], name: str) -> EvalContext:
    (root / "sets").mkdir(parents=True, exist_ok=True)
    write_image_set(root / "sets" / name, [(n, _crop(c)) for n, c in crops.items()])
    return EvalContext(root, ColourEncoder(), batch_size=5)


def _assert_same(result, expected) -> None:
    assert result.metrics.keys() == expected.metrics.keys()
    for key, value in expected.metrics.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_iqiyi_runner(tmp_path: Path) -> None:
    crops, train, val = {}, {}, {}
    for label in (1, 2, 3, 0):
        videos = [f"IQIYI_VID_{label}_{v}.mp4" for v in range(4)]
        for v, video in enumerate(videos):
            for f in range(2):
                crops[f"{video}/{f:06d}.jpg"] = _colour(label + 10, 10 * v + f)
        if label:
            train.update(dict.fromkeys(videos[:2], label))
        val[label] = tuple(videos[2:] if label else videos)
    gt = tmp_path / "protocols" / "iqiyi_vid" / "gt_v2"
    gt.mkdir(parents=True)
    iqiyi.write_train_gt(gt / "train_v2.txt", train)
    iqiyi.write_val_gt(gt / "val_v2.txt", val)
    ctx = _context(tmp_path, crops, "iqiyi_vid")
    result = BY_NAME["iqiyi_vid"].run(ctx, EvaluateParams())
    assert result.metrics["map_at_100"] == 1.0  # colours of one identity are nearest
    names = list(crops)
    frames = l2_normalize(_features(crops, names))
    videos = list(dict.fromkeys(n.split("/")[0] for n in names))
    feats = l2_normalize(
        np.stack([frames[[n.startswith(v + "/") for n in names]].mean(0) for v in videos])
    )
    is_train = np.array([v in train for v in videos])
    expected = evaluate_iqiyi(
        train, [v for v in videos if v in train], feats[is_train], val,
        [v for v in videos if v not in train], feats[~is_train],
    )  # fmt: skip
    _assert_same(result, expected)


def test_trillion_runner(tmp_path: Path) -> None:
    crops, labels = {}, {}
    for identity in range(3):
        for k in range(2):
            name = f"probe/{identity}/{k}.jpg"
            crops[name], labels[name] = _colour(identity, k), str(identity)
    for d in range(6):
        crops[f"distractors/{d}.jpg"] = _colour(100 + d, 0)
    files = sorted(crops, reverse=True)  # the file list, not the set, fixes the order
    proto = tmp_path / "protocols" / "trillion_pairs"
    proto.mkdir(parents=True)
    trillion.write_file_list(proto / trillion.FILE_LIST, files)
    trillion.write_probe_labels(proto / trillion.LABELS, labels)
    assert trillion.read_probe_labels(proto / trillion.LABELS) == labels
    ctx = _context(tmp_path, crops, "trillion_pairs")
    result = BY_NAME["trillion_pairs"].run(ctx, EvaluateParams())
    probes = list(labels)
    distractors = [n for n in files if n not in labels]
    expected = evaluate_trillion(
        l2_normalize(_features(crops, probes)),
        np.array(list(labels.values())),
        l2_normalize(_features(crops, distractors)),
        quiet=True,
    )
    _assert_same(result, expected)


def test_megaface_runner_scores_both_variants_with_noise_lists(tmp_path: Path) -> None:
    crops, probe_paths, ids = {}, [], []
    for identity in range(4):
        for k in range(3):
            path = f"id{identity}/id{identity}_{k}.png"
            crops[f"facescrub_images/{path}"] = _colour(identity, k)
            probe_paths.append(path)
            ids.append(f"id{identity}")
    distractors = [f"{d % 3}/{d}.jpg" for d in range(12)]
    for d, path in enumerate(distractors):
        crops[f"megaface_images/{path}"] = _colour(200 + d, 0)
    lists = tmp_path / "protocols" / "megaface" / "templatelists"
    lists.mkdir(parents=True)
    megaface.write_feature_list(
        lists / megaface.FACESCRUB_LIST, megaface.FeatureList(tuple(probe_paths), tuple(ids))
    )
    for size, members in ((10, distractors[2:]), (100, distractors)):  # not prefixes
        megaface.write_feature_list(
            lists / megaface.megaface_list_name(size), megaface.FeatureList(tuple(members))
        )
    root = tmp_path / "protocols" / "megaface"
    megaface.write_noise_list(
        root / "facescrub_noises.txt", megaface.NoiseList.of(["id1_2.png"], "noise")
    )
    megaface.write_noise_list(root / "megaface_noises.txt", megaface.NoiseList.of([distractors[5]]))
    ctx = _context(tmp_path, crops, "megaface")
    result = BY_NAME["megaface"].run(ctx, EvaluateParams())
    assert {"rank1_10", "rank1_100", "refined_rank1"} <= set(result.metrics)
    noisy_probes = np.array([p == "id1/id1_2.png" for p in probe_paths])
    union = [*distractors[2:], *distractors[:2]]  # list order: size 10 first, then the rest
    expected = evaluate_megaface(
        l2_normalize(_features(crops, [f"facescrub_images/{p}" for p in probe_paths])),
        np.array(ids),
        l2_normalize(_features(crops, [f"megaface_images/{p}" for p in union])),
        {10: np.arange(10), 100: np.array([10, 11, *range(10)])},
        noisy_probes=noisy_probes,
        noisy_distractors=np.array([p == distractors[5] for p in union]),
        quiet=True,
    )
    _assert_same(result, expected)
    plain = BY_NAME["megaface"].run(ctx, EvaluateParams(megaface_refined=False))
    assert not any(k.startswith("refined_") for k in plain.metrics)


def test_ijbb_runner_reads_s1_s2_galleries(tmp_path: Path) -> None:
    names, tids, mids, crops = [], [], [], {}
    for subject in range(4):
        for t in range(2):
            for k in range(2):
                name = f"{len(names) + 1}.jpg"
                names.append(name)
                tids.append(2 * subject + t + 1)
                mids.append(4 * subject + 2 * t + k)
                crops[name] = _colour(subject, len(names))
    meta_dir = tmp_path / "protocols" / "ijbb" / "meta"
    meta_dir.mkdir(parents=True)
    meta = ijb.FaceTidMid(np.array(names), np.array(tids), np.array(mids))
    ijb.write_face_tid_mid(meta_dir / "ijbb_face_tid_mid.txt", meta)
    t1 = np.array([1, 3, 5, 7, 1, 3, 5, 7])
    t2 = np.array([2, 4, 6, 8, 4, 6, 8, 2])
    pairs = ijb.TemplatePairs(t1, t2, np.array([1, 1, 1, 1, 0, 0, 0, 0], np.int8))
    ijb.write_template_pair_label(meta_dir / "ijbb_template_pair_label.txt", pairs)
    scores = np.linspace(0.5, 0.9, len(names)).astype(np.float32)
    points = ijb.FivePoints(np.array(names[::-1]), np.zeros((len(names), 5, 2), np.float32), scores)
    ijb.write_name_5pts_score(meta_dir / "ijbb_name_5pts_score.txt", points)
    tids_arr, header = np.array(tids), (*ijb.CSV_KEY_COLUMNS, "SIGHTING_ID")
    for suffix, rows in (
        ("gallery_S1", (tids_arr % 2 == 1) & (tids_arr < 5)),
        ("gallery_S2", (tids_arr % 2 == 1) & (tids_arr >= 5)),
        ("probe_mixed", tids_arr % 2 == 0),
    ):
        table = ijb.TemplateTable(
            header, tids_arr[rows], (tids_arr[rows] - 1) // 2, np.array(names)[rows],
            np.zeros((rows.sum(), 1), dtype=str),
        )  # fmt: skip
        ijb.write_template_table(meta_dir / f"ijbb_1N_{suffix}.csv", table)
    ctx = _context(tmp_path, crops, "ijbb")
    result = BY_NAME["ijbb"].run(ctx, EvaluateParams())
    assert {"tar_far_1e-4", "plain_tar_far_1e-4", "1n_rank1"} <= set(result.metrics)
    enc = ColourEncoder()
    from arcflow.evaluate.embed import to_batch

    batch = to_batch([_crop(crops[n]) for n in names], "t")
    expected = evaluate_ijb(
        enc(batch), enc(np.ascontiguousarray(batch[..., ::-1])), meta, scores[::-1], pairs,
        {g: ijb.read_template_table(meta_dir / f"ijbb_1N_gallery_{g}.csv") for g in ("S1", "S2")},
        ijb.read_template_table(meta_dir / "ijbb_1N_probe_mixed.csv"),
    )  # fmt: skip
    _assert_same(result, expected)
