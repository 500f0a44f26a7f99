"""Building blocks of the SynthFace evaluation sets."""

from __future__ import annotations

import numpy as np
import pytest

from arcflow.data.synthface_sets import fold_pairs, jpeg_quality_for
from arcflow.errors import DataFormatError

pytestmark = pytest.mark.unit


def test_jpeg_quality_is_a_deterministic_per_image_nuisance() -> None:
    qualities = [jpeg_quality_for(0, 0.5, 95, 3, j) for j in range(200)]
    assert qualities == [jpeg_quality_for(0, 0.5, 95, 3, j) for j in range(200)]
    assert min(qualities) >= 95 - 23 and max(qualities) <= 95
    assert len(set(qualities)) > 10
    assert {jpeg_quality_for(0, 0.0, 90, 1, j) for j in range(50)} == {90}
    assert min(jpeg_quality_for(0, 1.0, 60, 1, j) for j in range(200)) == 30  # floor


def test_fold_pairs_structure() -> None:
    ids = range(100, 140)
    pairs = fold_pairs(np.random.default_rng(0), ids, 10, 3, 5, 5, distinct=True)
    assert len(pairs) == 60
    used: list[set[int]] = []
    for fold in range(10):
        block = pairs[6 * fold : 6 * fold + 6]
        assert [p[4] for p in block] == [True] * 3 + [False] * 3
        for k1, a, k2, b, same in block:
            assert (k1 == k2) == same and k1 in ids and k2 in ids
            assert 0 <= a < 5 and 0 <= b < 5
            assert not same or a != b  # distinct images within a same pair
        used.append({p[0] for p in block} | {p[2] for p in block})
    for i in range(10):  # folds draw from disjoint identity groups
        for j in range(i + 1, 10):
            assert not used[i] & used[j]


def test_fold_pairs_across_two_lists_and_too_few_identities() -> None:
    pairs = fold_pairs(np.random.default_rng(1), range(20), 10, 4, 10, 4, distinct=False)
    assert all(0 <= a < 10 and 0 <= b < 4 for _, a, _, b, _ in pairs)
    with pytest.raises(DataFormatError, match="at least 20 identities"):
        fold_pairs(np.random.default_rng(1), range(19), 10, 4, 10, 4, distinct=False)
