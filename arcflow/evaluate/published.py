"""Published numbers to print beside ours (fractions, like our metrics).

Sources (see ``shared/reference/benchmarks.md``): the ArcFace paper, arXiv 1801.07698v3, MS1MV2
+ ResNet100 + ArcFace (Tables 4-9); insightface: the model zoo's MXNet R100 MS1MV2 model, the
IJB notebooks (N1D1F1) and arcface_torch's ms1mv2_r100 training log. These are R100 models
trained on 5.8M images: a model trained on the embedded SynthFace default is not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One metric's published values: the paper's and insightface's (None where not given)."""

    paper: float | None
    insightface: float | None


PUBLISHED: dict[str, dict[str, Published]] = {
    "lfw": {"accuracy": Published(0.9983, 0.9977)},
    "cfp_fp": {"accuracy": Published(None, 0.9827)},
    "agedb_30": {"accuracy": Published(None, 0.9828)},
    "calfw": {"accuracy": Published(0.9545, None)},
    "cplfw": {"accuracy": Published(0.9208, None)},
    "ytf": {"accuracy": Published(0.9802, None)},
    "megaface": {
        "rank1": Published(0.8103, None),
        "tar_far_1e-6": Published(0.9698, None),
        "refined_rank1": Published(0.9835, 0.9847),
        "refined_tar_far_1e-6": Published(0.9848, None),
    },
    "ijbb": {
        "tar_far_1e-6": Published(None, 0.4091),
        "tar_far_1e-5": Published(None, 0.9081),
        "tar_far_1e-4": Published(0.942, 0.9477),
        "tar_far_1e-3": Published(None, 0.9636),
        "tar_far_1e-2": Published(None, 0.9755),
        "tar_far_1e-1": Published(None, 0.9863),
    },
    "ijbc": {
        "tar_far_1e-6": Published(None, 0.8997),
        "tar_far_1e-5": Published(None, 0.9434),
        "tar_far_1e-4": Published(0.956, 0.9618),
        "tar_far_1e-3": Published(None, 0.9744),
        "tar_far_1e-2": Published(None, 0.9832),
        "tar_far_1e-1": Published(None, 0.9907),
    },
    "trillion_pairs": {
        "id_tpr_fpr_1e-3": Published(0.80968, None),
        "ver_tpr_fpr_1e-9": Published(0.78600, None),
    },
    "iqiyi_vid": {"map_at_100": Published(0.7980, None)},
}
