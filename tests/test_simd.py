"""`diffabm.simd`: eight float32 lanes copied and added as a scalar loop would, and nothing but float32 rows."""

import numba
import numpy as np
import pytest
from numba.core.errors import TypingError

from diffabm import simd


@numba.njit
def _accumulate(target: np.ndarray, source: np.ndarray, rows: np.ndarray) -> None:
    """target[0] = source[rows[0]] + source[rows[1]] + ..., eight lanes at a time."""
    for lane in range(0, target.shape[1], simd.LANES):
        simd.copy_lanes(target, 0, source, rows[0], lane)
    for row in rows[1:]:
        for lane in range(0, target.shape[1], simd.LANES):
            simd.add_lanes(target, 0, source, row, lane)


def test_lanes_add_as_a_scalar_loop_bit_for_bit():
    rng = np.random.default_rng(0)
    source = (rng.standard_normal((50, 24)) * 10.0 ** rng.integers(-8, 8, (50, 24))).astype(np.float32)
    rows = rng.integers(0, 50, 7).astype(np.int32)
    target = np.full((2, 24), np.nan, np.float32)
    _accumulate(target, source, rows)
    expected = source[rows[0]].copy()
    for row in rows[1:]:
        expected += source[row]  # float32, lane by lane, in the same order
    assert np.array_equal(target[0], expected)
    assert np.isnan(target[1]).all(), "wrote past its row"


def test_lanes_refuse_other_than_float32_rows():
    with pytest.raises(TypingError):
        _accumulate(np.zeros((1, 8), np.float64), np.zeros((3, 8), np.float64), np.arange(3, dtype=np.int32))
