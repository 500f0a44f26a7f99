"""Chunked exact gallery search equals a brute-force full matrix + stable sort, within budget."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from arcflow.serve.search import (
    BYTES_PER_SCORE,
    FIRST_ROWS,
    SearchResult,
    chunk_rows_for,
    search,
    search_labels,
)

pytestmark = pytest.mark.unit


def reference(
    probes: np.ndarray, gallery: np.ndarray, k: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores): the full score matrix in float64, sorted by (score desc, row asc);
    with labels, each label's first (best) row only."""
    full = probes.astype(np.float64) @ gallery.astype(np.float64).T
    rows = []
    for line in full:
        order = np.lexsort((np.arange(len(line)), -line))
        if labels is not None:
            _, first = np.unique(labels[order], return_index=True)
            order = order[np.sort(first)]
        rows.append(order[:k])
    rows = np.array(rows, dtype=np.int64).reshape(len(probes), -1 if len(probes) else 0)
    return rows, np.take_along_axis(full, rows, axis=1)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 333, 1000, 5000, None])
def test_random_unit_features_equal_brute_force(chunk_rows: int | None) -> None:
    rng = np.random.default_rng(0)
    gallery, probes = unit(rng, 1000, 32), unit(rng, 20, 32)
    result = search(probes, gallery, 10, chunk_rows=chunk_rows)
    rows, scores = reference(probes, gallery, 10)
    assert isinstance(result, SearchResult) and result.identities is None
    assert result.indices.dtype == np.int64 and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.indices, rows)
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)


@pytest.mark.parametrize("chunk_rows", [1, 3, 10, 17, 100, 250])
@pytest.mark.parametrize("k", [1, 4, 25])
def test_integer_features_with_many_ties_are_exact(chunk_rows: int, k: int) -> None:
    """Small integers make every dot product exact and most scores tied: the order must be
    exactly (score desc, row asc) however the chunks fall."""
    rng = np.random.default_rng(k * 1000 + chunk_rows)
    gallery = rng.integers(-2, 3, (250, 6)).astype(np.float32)
    probes = rng.integers(-2, 3, (9, 6)).astype(np.float32)
    result = search(probes, gallery, k, chunk_rows=chunk_rows)
    rows, scores = reference(probes, gallery, k)
    np.testing.assert_array_equal(result.indices, rows)
    np.testing.assert_array_equal(result.scores, scores)


@pytest.mark.parametrize("by_identity", [False, True])
def test_short_first_chunk_then_long_ones(by_identity: bool) -> None:
    rng = np.random.default_rng(9)
    gallery, probes = unit(rng, FIRST_ROWS + 9000, 16), unit(rng, 5, 16)
    labels = rng.integers(0, 500, len(gallery)) if by_identity else None
    result = search(probes, gallery, 8, labels=labels, chunk_rows=FIRST_ROWS + 1000)
    np.testing.assert_array_equal(result.indices, reference(probes, gallery, 8, labels)[0])


def test_all_equal_scores_keep_the_lowest_rows() -> None:
    gallery = np.tile(np.array([[0.6, 0.8]], np.float32), (50, 1))
    result = search(np.array([[1.0, 0.0]], np.float32), gallery, 5, chunk_rows=7)
    np.testing.assert_array_equal(result.indices, [[0, 1, 2, 3, 4]])


def test_k_above_gallery_size_returns_every_row_sorted() -> None:
    rng = np.random.default_rng(1)
    gallery, probes = unit(rng, 6, 8), unit(rng, 3, 8)
    result = search(probes, gallery, 50, chunk_rows=4)
    assert result.indices.shape == (3, 6)
    np.testing.assert_array_equal(result.indices, reference(probes, gallery, 50)[0])


@pytest.mark.parametrize("chunk_rows", [1, 5, 64, None])
def test_identities_count_once_with_their_best_row(chunk_rows: int | None) -> None:
    rng = np.random.default_rng(2)
    centres = unit(rng, 30, 16)
    labels = rng.integers(0, 30, 600)
    gallery = centres[labels] + 0.3 * rng.standard_normal((600, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    names = np.array([f"person{i:02d}" for i in range(30)])[labels]
    probes = unit(rng, 12, 16)
    probes[:6] = centres[:6]  # probes whose own identity has ~20 rows at the top
    result = search(probes, gallery, 5, labels=names, chunk_rows=chunk_rows)
    rows, scores = reference(probes, gallery, 5, names)
    np.testing.assert_array_equal(result.indices, rows)
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)
    np.testing.assert_array_equal(result.identities, names[rows])
    assert all(len(set(line)) == 5 for line in result.identities)


@pytest.mark.parametrize("chunk_rows", [1, 4, 9, 40])
@pytest.mark.parametrize("shift", [0, -100, 10**9])  # codes as they are; sorted by np.unique
def test_identities_with_ties_and_k_above_identity_count(chunk_rows: int, shift: int) -> None:
    rng = np.random.default_rng(3)
    gallery = rng.integers(-1, 2, (40, 3)).astype(np.float32)
    probes = rng.integers(-1, 2, (7, 3)).astype(np.float32)
    labels = rng.choice([0, 1, 3, 4, 5, 8], 40) + shift  # gaps: not every code is used
    for k in (1, 3, 6, 10):
        result = search(probes, gallery, k, labels=labels, chunk_rows=chunk_rows)
        rows, scores = reference(probes, gallery, k, labels)
        assert result.indices.shape == (7, min(k, len(np.unique(labels))))
        np.testing.assert_array_equal(result.indices, rows)
        np.testing.assert_array_equal(result.scores, scores)
        np.testing.assert_array_equal(result.identities, labels[rows])


def test_float64_and_strided_galleries_match_float32() -> None:
    rng = np.random.default_rng(4)
    gallery, probes = unit(rng, 300, 16), unit(rng, 4, 16)
    expected = search(probes, gallery, 7, chunk_rows=50)
    wide = np.zeros((300, 32), np.float32)
    wide[:, ::2] = gallery
    for other in (gallery.astype(np.float64), wide[:, ::2]):
        result = search(probes.astype(np.float64), other, 7, chunk_rows=50)
        np.testing.assert_array_equal(result.indices, expected.indices)


def test_empty_probes_and_empty_gallery() -> None:
    rng = np.random.default_rng(5)
    assert search(np.zeros((0, 8), np.float32), unit(rng, 10, 8), 3).indices.shape == (0, 3)
    result = search(unit(rng, 2, 8), np.zeros((0, 8), np.float32), 3)
    assert result.indices.shape == result.scores.shape == (2, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": True}, "k must be an integer >= 1"),
        ({"k": 2.0}, "k must be an integer >= 1"),
        ({"probes": np.zeros((2, 5), np.float32)}, "probes are 5-d but the gallery is 8-d"),
        ({"probes": np.zeros(8, np.float32)}, "probes must be a \\(P, D\\)"),
        ({"gallery": np.zeros((4, 8), np.int32)}, "gallery must be a \\(N, D >= 1\\) float"),
        ({"labels": np.arange(3)}, "labels must have one value per gallery row \\(10\\)"),
        ({"chunk_rows": 0}, "chunk_rows must be an integer >= 1"),
        ({"budget_bytes": 10}, "memory budget of 10 bytes"),
        ({"probes": np.full((1, 8), np.nan, np.float32)}, "probes contain NaN"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    rng = np.random.default_rng(6)
    args = {"probes": unit(rng, 2, 8), "gallery": unit(rng, 10, 8), "k": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        search(args.pop("probes"), args.pop("gallery"), args.pop("k"), **args)


def test_non_finite_gallery_rows_are_reported() -> None:
    rng = np.random.default_rng(7)
    gallery = unit(rng, 20, 8)
    gallery[13, 2] = np.nan
    with pytest.raises(ValueError, match=r"gallery rows 10\.\.19 give NaN"):
        search(unit(rng, 2, 8), gallery, 3, chunk_rows=10)


def test_minus_infinite_scores_are_reported_when_they_would_be_returned() -> None:
    gallery = np.eye(4, dtype=np.float32)
    gallery[2, 0] = -np.inf
    probe = np.array([[1.0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(search(probe, gallery, 2).indices, [[0, 1]])
    with pytest.raises(ValueError, match="the gallery gives -inf scores"):
        search(probe, gallery, 4)


def test_chunk_rows_follow_the_budget() -> None:
    assert chunk_rows_for(1 << 20, 64, 512) == (1 << 20) // (64 * BYTES_PER_SCORE)
    assert chunk_rows_for(1 << 20, 64, 512, convert=True) == (1 << 20) // (
        64 * BYTES_PER_SCORE + 2048
    )


def test_memmapped_gallery_is_scanned_within_the_budget(tmp_path: Path) -> None:
    """P x N scores would be 25.6 MB; the scan must stay near its 2 MiB budget."""
    rng = np.random.default_rng(8)
    n, d, p = 100_000, 32, 64
    path = tmp_path / "gallery.npy"
    gallery = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 10_000):
        gallery[start : start + 10_000] = unit(rng, 10_000, d)
    gallery.flush()
    del gallery
    mapped = np.load(path, mmap_mode="r")
    probes = unit(rng, p, d)
    budget = 2 << 20
    tracemalloc.start()
    try:
        result = search(probes, mapped, 5, budget_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget + (1 << 20), f"peak {peak} bytes of scratch for a {budget}-byte budget"
    assert peak < p * n * 4 / 8
    expected = search(probes, np.asarray(mapped), 5, chunk_rows=n)
    np.testing.assert_array_equal(result.indices, expected.indices)


def test_search_labels_rank_faces_without_an_identity_one_by_one() -> None:
    """Rows of the "" identity get a label each (K + row); named rows keep their index."""
    names = np.array(["", "ann", "bob"])
    index = np.array([1, 0, 2, 0, 1], np.int32)
    labels, named = search_labels(index, names)
    assert named == 3
    assert labels.tolist() == [1, 3 + 1, 2, 3 + 3, 1]
    gallery = np.eye(5, 4, dtype=np.float32)[[0, 1, 2, 3, 0]]  # rows 0 and 4: one face twice
    found = search(gallery[1:2], gallery, 3, labels=labels)
    assert found.identities[0][0] == 4 and found.indices[0][0] == 1  # the unnamed row itself
    assert set(found.identities[0][1:]) <= {1, 2, 6}

    labels, named = search_labels(np.array([0, 1], np.int32), np.array(["ann", "bob"]))
    assert (named, labels.tolist()) == (2, [0, 1])  # no unnamed rows: the indices as they are
