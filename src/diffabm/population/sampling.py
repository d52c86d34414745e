"""Vectorised group-wise sampling: controlled rounding, random ranks within groups, segment draws."""

from __future__ import annotations

import numpy as np


def group_starts(groups_sorted: np.ndarray, n_groups: int) -> np.ndarray:
    """Start offset of each group 0..n_groups-1 in an array sorted by group (length n_groups + 1)."""
    return np.searchsorted(groups_sorted, np.arange(n_groups + 1))


def _sort_key(groups: np.ndarray, low: np.ndarray) -> np.ndarray:
    """One int64 key per element: the group in the high 32 bits, `low` (< 2**32) in the low bits; argsort of it
    is a lexicographic sort by (group, low) several times faster than np.lexsort."""
    return (groups.astype(np.int64) << 32) | low.astype(np.int64)


def random_order_within(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Order that sorts by group (non-negative ints below 2**31), random within groups."""
    return np.argsort(_sort_key(groups, rng.integers(0, 1 << 32, groups.shape[0], dtype=np.int64)))


def rank_within(groups: np.ndarray, keys: np.ndarray, n_groups: int) -> np.ndarray:
    """Rank (0 = largest key; ties by position) of each element among the elements of its group."""
    key_rank = np.empty(keys.shape[0], dtype=np.int64)
    key_rank[np.argsort(-keys, kind="stable")] = np.arange(keys.shape[0])
    order = np.argsort(_sort_key(groups, key_rank))
    sorted_groups = groups[order]
    rank = np.empty(groups.shape[0], dtype=np.int64)
    rank[order] = np.arange(groups.shape[0]) - group_starts(sorted_groups, n_groups)[sorted_groups]
    return rank


def choose_within(
    groups: np.ndarray, k: np.ndarray, n_groups: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """Mask choosing k[g] elements of each group g without replacement (uniformly, or with `weights`)."""
    u = rng.random(groups.shape[0])
    keys = u if weights is None else np.where(weights > 0, np.log(u) / np.where(weights > 0, weights, 1.0), -np.inf)
    return rank_within(groups, keys, n_groups) < k[groups]


def controlled_round(
    values: np.ndarray, groups: np.ndarray, n_groups: int, rng: np.random.Generator, totals: np.ndarray | None = None
) -> np.ndarray:
    """Round non-negative `values` to floor or ceil so that each group sums to `totals` (default: round(its
    total)), at random.

    Cells are rounded up with probability proportional to their fractional part (weighted sampling
    without replacement), so the expected result is close to the values and every group total is exact.
    """
    floor = np.floor(values)
    frac = values - floor
    target = (
        np.floor(np.bincount(groups, weights=values, minlength=n_groups) + 0.5 + 1e-9) if totals is None else totals
    )
    extra = target - np.bincount(groups, weights=floor, minlength=n_groups)
    extra = np.minimum(np.maximum(extra, 0), np.bincount(groups, weights=frac > 1e-12, minlength=n_groups))
    up = choose_within(groups, extra.astype(np.int64), n_groups, rng, weights=np.where(frac > 1e-12, frac, 0.0))
    return (floor + up).astype(np.int64)


def draw_in_segments(segment: np.ndarray, starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each item, a uniformly random index in [starts[segment], starts[segment + 1]) (segments non-empty)."""
    size = starts[segment + 1] - starts[segment]
    return starts[segment] + np.floor(rng.random(segment.shape[0]) * size).astype(np.int64)


def draw_weighted_in_segments(
    segment: np.ndarray, starts: np.ndarray, weights: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each item, an index in its segment drawn with probability proportional to `weights` (positive sums)."""
    cumulative = np.cumsum(weights, dtype=np.float64)
    before = np.concatenate([[0.0], cumulative])
    low, high = before[starts[segment]], before[starts[segment + 1]]
    position = low + rng.random(segment.shape[0]) * (high - low)
    index = np.searchsorted(cumulative, position, side="right")
    return np.clip(index, starts[segment], starts[segment + 1] - 1)
