"""Glue from the aligned evaluation folder to each benchmark's metric code.

Each runner reads its protocol files from ``protocols/<name>/``, takes the features of the
images they name from the cache (embedding once), and calls the benchmark's module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from arcflow.config import EvaluateParams
from arcflow.data.protocols.ijb import (
    ijb_files,
    read_face_tid_mid,
    read_name_5pts_score,
    read_template_pair_label,
    read_template_table,
)
from arcflow.data.protocols.iqiyi import read_train_gt, read_val_gt
from arcflow.data.protocols.megaface import FACESCRUB_LIST, read_feature_list, read_noise_list
from arcflow.data.protocols.trillion import (
    FILE_LIST,
    LABELS,
    read_file_list,
    read_probe_labels,
)
from arcflow.data.protocols.ytf import read_splits
from arcflow.errors import DataFormatError
from arcflow.evaluate.context import EvalContext, rows_of
from arcflow.evaluate.ijb import evaluate_ijb
from arcflow.evaluate.iqiyi import evaluate_iqiyi
from arcflow.evaluate.megaface import evaluate_megaface, list_indices, noise_mask
from arcflow.evaluate.result import BenchmarkResult, VerificationScores
from arcflow.evaluate.scores import eer
from arcflow.evaluate.thresholds import cosine_scores
from arcflow.evaluate.trillion import evaluate_trillion, split_merged
from arcflow.evaluate.verification import evaluate_pairs, pair_distances, roc_curve
from arcflow.evaluate.videos import video_features, video_of
from arcflow.evaluate.ytf import evaluate_ytf

Runner = Callable[[EvalContext, EvaluateParams], BenchmarkResult]


def pair_set(name: str) -> Runner:
    """insightface's 10-fold protocol on ``<name>.bin``, plus ROC, AUC and EER.

    The result's ``scores`` are the pairs' cosines (row-wise dot of the unit embeddings).
    """

    def run(ctx: EvalContext, cfg: EvaluateParams) -> BenchmarkResult:
        pairs, features = ctx.pair_set(name)
        emb = features.combined()
        result = evaluate_pairs(emb, pairs.issame, n_folds=cfg.n_folds, far_target=cfg.far_target)
        fpr, tpr, _ = roc_curve(pair_distances(emb), pairs.issame)
        metrics = {k: v for k, v in result.to_dict().items() if not isinstance(v, list)}
        n_pairs = metrics.pop("n_pairs")
        metrics["eer"] = eer(fpr, tpr)
        details = {"pairs": n_pairs, "threshold": float(np.mean(result.best_thresholds))}
        cosines = cosine_scores(emb[0::2], emb[1::2])
        scores = VerificationScores(cosines, np.asarray(pairs.issame, dtype=bool), "image")
        return BenchmarkResult(metrics, (fpr, tpr), details, scores)

    return run


def _video_features(ctx: EvalContext, name: str) -> tuple[list[str], np.ndarray]:
    """Per-video features of the image set ``name``: mean of its frames' flip-test features."""
    frames, features = ctx.image_set(name)
    return video_features(features.combined(), [video_of(frame) for frame in frames])


def ytf(ctx: EvalContext, cfg: EvaluateParams) -> BenchmarkResult:
    """YouTube Faces: video pairs of ``splits.txt``, 10 splits."""
    videos, feats = _video_features(ctx, "ytf")
    return evaluate_ytf(
        videos, feats, read_splits(ctx.protocol("ytf", "splits.txt")), cfg.far_target
    )


def iqiyi_vid(ctx: EvalContext, cfg: EvaluateParams) -> BenchmarkResult:
    """iQIYI-VID: identities of ``val_v2.txt`` retrieved among the non-training videos."""
    videos, feats = _video_features(ctx, "iqiyi_vid")
    train_gt = read_train_gt(ctx.protocol("iqiyi_vid", "gt_v2", "train_v2.txt"))
    eval_gt = read_val_gt(ctx.protocol("iqiyi_vid", "gt_v2", "val_v2.txt"))
    is_train = np.array([video in train_gt for video in videos], dtype=bool)
    gallery = [v for v, t in zip(videos, is_train, strict=True) if not t]
    training = [v for v, t in zip(videos, is_train, strict=True) if t]
    return evaluate_iqiyi(train_gt, training, feats[is_train], eval_gt, gallery, feats[~is_train])


def ijb(name: str) -> Runner:
    """IJB-B / IJB-C: 1:1 over the template pairs; 1:N when NIST's 1:N lists are present."""

    def run(ctx: EvalContext, cfg: EvaluateParams) -> BenchmarkResult:
        meta_dir = ctx.protocol(name, "meta")
        meta = read_face_tid_mid(meta_dir / f"{name}_face_tid_mid.txt")
        pairs = read_template_pair_label(meta_dir / f"{name}_template_pair_label.txt")
        points = read_name_5pts_score(meta_dir / f"{name}_name_5pts_score.txt")
        names, features = ctx.image_set(name)
        where = f"{ctx.root / 'sets' / name}"
        rows = rows_of(names, meta.names, where)
        faceness = points.scores[rows_of(list(points.names), meta.names, str(meta_dir))]
        found = ijb_files(ctx.root / "protocols", name)  # type: ignore[arg-type]
        lists = [meta_dir / p.name for p in (found.gallery1, found.gallery2, found.probe_mixed)]
        galleries = probes = None
        if all(path.is_file() for path in lists):
            galleries = {p.stem[-2:]: read_template_table(p) for p in lists[:2]}
            probes = read_template_table(lists[2])
        selected = features.take(rows)
        return evaluate_ijb(
            selected.plain,
            selected.flipped,
            meta,
            faceness,
            pairs,
            galleries,
            probes,
            fars=cfg.ijb_fars,
            rank_pooling=cfg.ijb_rank_pooling,
        )

    return run


def _set_rows(names: list[str], paths: list[str], folder: str, where: str) -> np.ndarray:
    """Rows of protocol ``paths`` in an image set whose names may carry the release's folder."""
    known = set(names)
    full = [f"{folder}/{p}" if f"{folder}/{p}" in known else p for p in paths]
    return rows_of(names, full, where)


def megaface(ctx: EvalContext, cfg: EvaluateParams) -> BenchmarkResult:
    """MegaFace Challenge 1 with every distractor list present; refined (``refined_`` keys) with
    whichever of insightface's noise lists the release ships, each removing only what it names."""
    lists_dir = ctx.protocol("megaface", "templatelists")
    probes = read_feature_list(lists_dir / FACESCRUB_LIST)
    lists = {
        int(path.name.split("_")[-2]): list(read_feature_list(path).paths)
        for path in sorted(lists_dir.glob("megaface_features_list.json_*_1"))
    }
    if not lists:
        raise DataFormatError(f"{lists_dir}: no megaface_features_list.json_<size>_1 list")
    distractors = list(dict.fromkeys(p for paths in lists.values() for p in paths))
    names, features = ctx.image_set("megaface")
    emb = features.combined()
    where = str(ctx.root / "sets" / "megaface")
    probe_feats = emb[_set_rows(names, list(probes.paths), "facescrub_images", where)]
    distractor_feats = emb[_set_rows(names, distractors, "megaface_images", where)]
    noisy_probes: np.ndarray | None = None
    noisy_distractors: np.ndarray | None = None
    if cfg.megaface_refined:
        facescrub_noises = ctx.protocol("megaface", "facescrub_noises.txt")
        megaface_noises = ctx.protocol("megaface", "megaface_noises.txt")
        if facescrub_noises.is_file():
            noisy_probes = noise_mask(list(probes.paths), read_noise_list(facescrub_noises))
        if megaface_noises.is_file():
            noisy_distractors = noise_mask(distractors, read_noise_list(megaface_noises))
    return evaluate_megaface(
        probe_feats,
        np.asarray(probes.ids),
        distractor_feats,
        list_indices(distractors, lists),
        noisy_probes=noisy_probes,
        noisy_distractors=noisy_distractors,
        device=ctx.device,
        chunk=cfg.chunk,
    )


def trillion_pairs(ctx: EvalContext, cfg: EvaluateParams) -> BenchmarkResult:
    """Trillion-Pairs: the probes of ``labels.txt`` against every other listed image."""
    file_list = list(read_file_list(ctx.protocol("trillion_pairs", FILE_LIST)))
    labels = read_probe_labels(ctx.protocol("trillion_pairs", LABELS))
    names, features = ctx.image_set("trillion_pairs")
    merged = features.combined()[rows_of(names, file_list, str(ctx.root / "sets"))]
    probe_feats, distractor_feats = split_merged(merged, file_list, list(labels))
    return evaluate_trillion(
        probe_feats,
        np.asarray(list(labels.values())),
        distractor_feats,
        device=ctx.device,
        chunk=cfg.chunk,
    )
