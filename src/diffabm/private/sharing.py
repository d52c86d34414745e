"""Additive secret sharing over Z_{2^64}: x = s_1 + … + s_P (mod 2^64), with s_1 … s_{P−1} uniform.

The random shares come from the operating system's cryptographically secure generator (`os.urandom`, as
`secrets.token_bytes`); the last share is x minus their sum. Any P − 1 shares are then independent and uniform
whatever x is, and every single share is uniform (Cramer, Damgård & Nielsen 2015, §3.2).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def random_ring(shape: Sequence[int] | torch.Size, device: torch.device | str = "cpu") -> Tensor:
    """Uniform int64 ring elements of `shape` from the OS CSPRNG."""
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    values = np.frombuffer(os.urandom(8 * count), dtype=np.int64).reshape(tuple(shape))
    return torch.from_numpy(values.copy()).to(device)


def share(encoded: Tensor, parties: int) -> list[Tensor]:
    """`parties` additive shares of the ring elements `encoded` (int64): P − 1 uniform, the last the remainder."""
    if parties < 2:
        raise ValueError(f"secret sharing needs at least 2 parties, got {parties}")
    if encoded.dtype != torch.int64:
        raise TypeError(f"secret sharing: shares are of int64 ring elements, got {encoded.dtype}")
    shares = [random_ring(encoded.shape, encoded.device) for _ in range(parties - 1)]
    last = encoded.clone()
    for random in shares:
        last -= random  # wraps modulo 2^64
    return [*shares, last]


def reconstruct(shares: Sequence[Tensor]) -> Tensor:
    """The secret Σ_p s_p (mod 2^64) of its shares."""
    total = shares[0].clone()
    for part in shares[1:]:
        total += part
    return total
