"""Counter-based uniform noise: Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy
as 1, 2, 3", SC'11; the generator of cuRAND and JAX-like counter-based designs).

A counter-based generator is a keyed bijection of a counter: the noise of agent i in row r under key k is a pure
function of (k, r, i). Any subset of agents can be drawn, in any order, on any thread, and recomputed later
(the adjoint, the fused forward kernel), without storing it or replaying a stream. Block j of row r is
Philox4x32-10 of the counter (j mod 2^32, j div 2^32, r, 0) under the key's two 32-bit halves; its four words
are agents 4j..4j+3. A word x maps to u = (2 ⌊x / 2^9⌋ + 1) 2^-24: 2^23 equally likely float32 values, exact,
symmetric, and strictly inside (0, 1).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

MASK32 = np.uint64(0xFFFFFFFF)
MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))  # Salmon et al. 2011, Table 2
WEYL = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))  # the key schedule's increments (golden ratio, √3 − 1)
ROUNDS = 10
WORD_TO_UNIT = np.float32(2.0**-24)


@numba.njit(inline="always", cache=True)
def philox4x32(
    c0: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64, k0: np.uint64, k1: np.uint64
) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """Philox4x32-10 of a counter (four 32-bit words held in uint64) under a key (two words): four words."""
    for _ in range(ROUNDS):
        product0 = MULTIPLIERS[0] * c0
        product1 = MULTIPLIERS[1] * c2
        c0, c1, c2, c3 = (
            (product1 >> np.uint64(32)) ^ c1 ^ k0,
            product1 & MASK32,
            (product0 >> np.uint64(32)) ^ c3 ^ k1,
            product0 & MASK32,
        )
        k0 = (k0 + WEYL[0]) & MASK32
        k1 = (k1 + WEYL[1]) & MASK32
    return c0, c1, c2, c3


@numba.njit(inline="always", cache=True)
def word_to_uniform(word: np.uint64) -> np.float32:
    """u = (2 ⌊x / 2^9⌋ + 1) 2^-24 in (0, 1), exact in float32."""
    return np.float32((word >> np.uint64(9)) * np.uint64(2) + np.uint64(1)) * WORD_TO_UNIT


@numba.njit(inline="always", cache=True)
def block_uniforms(
    key: np.uint64, row: np.int64, block: np.int64
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """The uniforms of agents 4 block .. 4 block + 3 in `row` under `key`."""
    counter = np.uint64(block)
    w0, w1, w2, w3 = philox4x32(
        counter & MASK32, counter >> np.uint64(32), np.uint64(row), np.uint64(0), key & MASK32, key >> np.uint64(32)
    )
    return word_to_uniform(w0), word_to_uniform(w1), word_to_uniform(w2), word_to_uniform(w3)


@numba.njit(inline="always", cache=True)
def fill_uniforms(
    key: np.uint64, row: np.int64, first_block: np.int64, last_block: np.int64, out: np.ndarray, at: np.int64
) -> None:
    """The uniforms of blocks `first_block`..`last_block` − 1 of `row` into `out[at : at + 4 (last_block −
    first_block)]` (`out` contiguous): a loop without branches, which the compiler vectorises (4× faster)."""
    k0, k1 = key & MASK32, key >> np.uint64(32)
    for block in range(first_block, last_block):
        counter = np.uint64(block)
        words = philox4x32(counter & MASK32, counter >> np.uint64(32), np.uint64(row), np.uint64(0), k0, k1)
        offset = np.uint64(at) + np.uint64(4) * (counter - np.uint64(first_block))  # unsigned: no wraparound test,
        for lane in range(4):  # which would keep the loop from vectorising
            out[offset + np.uint64(lane)] = word_to_uniform(words[lane])


FILL_BLOCKS = 16384  # blocks per task of `_fill`


@numba.njit(parallel=True, cache=True)
def _fill(key: np.uint64, out: np.ndarray, block_offset: np.int64) -> None:
    """Row r of `out` gets the uniforms of blocks `block_offset` onwards of row r: every row's tasks in one parallel
    loop, so that short rows (a chunk of agents) still use every thread."""
    rows, n = out.shape
    whole = n // 4
    per_row = -(-whole // FILL_BLOCKS)
    for task in numba.prange(rows * per_row):
        row, part = task // per_row, task % per_row
        first, last = part * FILL_BLOCKS, min((part + 1) * FILL_BLOCKS, whole)
        fill_uniforms(key, row, block_offset + first, block_offset + last, out[row], 4 * first)
    for row in range(rows):
        u = block_uniforms(key, row, block_offset + whole)
        for lane in range(n - 4 * whole):
            out[row, 4 * whole + lane] = u[lane]


def _first_block(first: int) -> int:
    if first % 4:
        raise ValueError(f"philox: the first agent must be a multiple of 4 (a block's first), not {first}")
    return first // 4


def uniform(key: int, rows: int, n: int, first: int = 0) -> np.ndarray:
    """Uniform noise (rows, n) float32 for agents `first`..`first` + n − 1 (`first` a multiple of 4) of rows
    0..rows−1 under a 64-bit `key` (`diffabm.models.base.stable_seed`)."""
    out = np.empty((rows, n), dtype=np.float32)
    _fill(np.uint64(key), out, np.int64(_first_block(first)))
    return out


def _product_words(multiplier: int, word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of multiplier × word (both < 2^32) in int64 tensors, without overflow: the word in
    16-bit halves, so every partial product stays below 2^49."""
    low_part, high_part = multiplier * (word & 0xFFFF), multiplier * (word >> 16)
    low_sum = low_part + ((high_part & 0xFFFF) << 16)
    return (high_part >> 16) + (low_sum >> 32), low_sum & 0xFFFFFFFF


def uniform_on(key: int, rows: int, n: int, device: torch.device | str, first: int = 0) -> torch.Tensor:
    """`uniform(key, rows, n, first)` computed on `device` with tensor operations (the same bits): for accelerators,
    where the Numba loop cannot run and copying the noise from the host each day would cost 4 bytes per agent and
    row."""
    offset = _first_block(first)
    block = torch.arange(offset, offset + (n + 3) // 4, dtype=torch.int64, device=device)
    c0, c1 = (block & 0xFFFFFFFF).expand(rows, -1), (block >> 32).expand(rows, -1)
    c2 = torch.arange(rows, dtype=torch.int64, device=device)[:, None].expand_as(c0)
    c3 = torch.zeros_like(c0)
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for _ in range(ROUNDS):
        high0, low0 = _product_words(int(MULTIPLIERS[0]), c0)
        high1, low1 = _product_words(int(MULTIPLIERS[1]), c2)
        c0, c1, c2, c3 = high1 ^ c1 ^ k0, low1, high0 ^ c3 ^ k1, low0
        k0, k1 = (k0 + int(WEYL[0])) & 0xFFFFFFFF, (k1 + int(WEYL[1])) & 0xFFFFFFFF
    words = torch.stack([c0, c1, c2, c3], dim=-1).reshape(rows, -1)[:, :n]
    return ((words >> 9) * 2 + 1).to(torch.float32) * float(WORD_TO_UNIT)


def philox4x32_words(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]:
    """One block as Python ints (for the published known-answer tests)."""
    words = philox4x32(*(np.uint64(c) for c in counter), *(np.uint64(k) for k in key))
    return tuple(int(w) for w in words)
