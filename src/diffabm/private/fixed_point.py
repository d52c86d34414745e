"""Fixed-point encoding of reals in the ring Z_{2^64} (torch int64, two's complement, addition wrapping mod 2^64).

x ↦ round(x · 2^F) as a signed 64-bit integer; decoding divides by 2^F. Sums of encodings are exact in the ring
as long as the true sum stays within the signed half-range, |Σ x| · 2^F < 2^63: `encode` checks every value against
the bound that guarantees it for sums of up to `summands` values, and raises rather than letting a sum wrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RING_BITS = 64


@dataclass(frozen=True)
class FixedPoint:
    """Reals as int64 with `frac_bits` fractional bits F: resolution 2^-F, one encoding's error ≤ 2^-(F+1).

    Example:
        >>> import torch
        >>> FixedPoint(20).decode(FixedPoint(20).encode(torch.tensor([1.5, -0.25]), "x")).tolist()
        [1.5, -0.25]
    """

    frac_bits: int = 32

    def __post_init__(self):
        if not 1 <= self.frac_bits <= 52:
            raise ValueError(f"fixed point: frac_bits must be in [1, 52], got {self.frac_bits}")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def resolution(self) -> float:
        """The smallest representable step, 2^-F."""
        return 2.0**-self.frac_bits

    def bound(self, summands: int = 1) -> float:
        """The largest |x| encoded for sums of up to `summands` values: 2^(62−F) / summands (a bit of headroom
        below the ring's signed half-range 2^63 for the rounding of each value)."""
        return 2.0 ** (RING_BITS - 2 - self.frac_bits) / max(int(summands), 1)

    def encode(self, values: Tensor, quantity: str, summands: int = 1) -> Tensor:
        """`values` as int64 ring elements; a ValueError naming `quantity` and the offending value if one is not
        finite or beyond `bound(summands)`."""
        wide = values.detach().to(torch.float64)
        limit = self.bound(summands)
        bad = ~torch.isfinite(wide) | (wide.abs() > limit)
        if bool(bad.any()):
            offending = float(wide[bad][0])
            raise ValueError(
                f"secret sharing: {quantity} value {offending!r} is beyond the fixed-point range |x| ≤ {limit:.6g} "
                f"(F = {self.frac_bits} fractional bits in a 64-bit ring, sums of up to {summands} values); "
                f"lower model.secret_sharing.frac_bits or rescale {quantity}"
            )
        return torch.round(wide * self.scale).to(torch.int64)

    def decode(self, encoded: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """Ring elements back to reals (as `dtype`)."""
        return (encoded.to(torch.float64) / self.scale).to(dtype)
