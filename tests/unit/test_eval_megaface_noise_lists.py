"""The MegaFace runner with one of insightface's two noise lists, or neither (issue #18).

A refined release may ship only ``facescrub_noises.txt`` or only ``megaface_noises.txt``: the
refined metrics then remove only what the list given names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arcflow.config import EvaluateParams
from arcflow.data.protocols import megaface
from arcflow.evaluate.embed import l2_normalize
from arcflow.evaluate.megaface import evaluate_megaface
from arcflow.evaluate.suite import BY_NAME
from tests.unit.test_eval_runners import _assert_same, _colour, _context, _features

pytestmark = pytest.mark.unit

NOISY_PROBE = "id1/id1_2.png"


@pytest.mark.parametrize("present", ["facescrub", "megaface", "neither"])
def test_megaface_runner_with_one_noise_list(tmp_path: Path, present: str) -> None:
    crops, probe_paths, ids = {}, [], []
    for identity in range(3):
        for k in range(3):
            path = f"id{identity}/id{identity}_{k}.png"
            crops[f"facescrub_images/{path}"] = _colour(identity, k)
            probe_paths.append(path)
            ids.append(f"id{identity}")
    distractors = [f"{d % 2}/{d}.jpg" for d in range(8)]
    for d, path in enumerate(distractors):
        crops[f"megaface_images/{path}"] = _colour(300 + d, 0)
    root = tmp_path / "protocols" / "megaface"
    (root / "templatelists").mkdir(parents=True)
    megaface.write_feature_list(
        root / "templatelists" / megaface.FACESCRUB_LIST,
        megaface.FeatureList(tuple(probe_paths), tuple(ids)),
    )
    megaface.write_feature_list(
        root / "templatelists" / megaface.megaface_list_name(10),
        megaface.FeatureList(tuple(distractors)),
    )
    if present == "facescrub":
        noise = megaface.NoiseList.of([NOISY_PROBE.split("/")[1]], "noise")
        megaface.write_noise_list(root / "facescrub_noises.txt", noise)
    if present == "megaface":
        megaface.write_noise_list(
            root / "megaface_noises.txt", megaface.NoiseList.of([distractors[3]])
        )
    ctx = _context(tmp_path, crops, "megaface")
    result = BY_NAME["megaface"].run(ctx, EvaluateParams())

    noisy_p = np.array([p == NOISY_PROBE for p in probe_paths]) if present == "facescrub" else None
    noisy_d = (
        np.array([p == distractors[3] for p in distractors]) if present == "megaface" else None
    )
    expected = evaluate_megaface(
        l2_normalize(_features(crops, [f"facescrub_images/{p}" for p in probe_paths])),
        np.array(ids),
        l2_normalize(_features(crops, [f"megaface_images/{p}" for p in distractors])),
        {10: np.arange(len(distractors))},
        noisy_probes=noisy_p,
        noisy_distractors=noisy_d,
        quiet=True,
    )
    _assert_same(result, expected)
    refined = {k for k in result.metrics if k.startswith("refined_")}
    if present == "neither":
        assert not refined
        return
    assert {"refined_rank1", "refined_rank1_10", "refined_tar_far_1e-6"} <= refined
    assert result.details["n_noisy_probes"] == (present == "facescrub")
    assert result.details["n_noisy_distractors"] == (present == "megaface")
