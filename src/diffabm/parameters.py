"""Named model parameters with domains: unconstrained vectors <-> natural-scale values.

Natural-scale values are checked against their domain before any transformation: a bijection
would otherwise turn an out-of-domain value into NaN (log of a negative β) or clamp it silently.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

DOMAINS = {
    "nonnegative": constraints.nonnegative,
    "positive": constraints.positive,
    "unit_interval": constraints.unit_interval,
    "real": constraints.real,
}
DOMAIN_TEXT = {"nonnegative": ">= 0", "positive": "> 0", "unit_interval": "in [0, 1]", "real": "finite"}


class ParameterSpace:
    """An ordered set of scalar parameters, each with a domain, flattened to a vector of length d."""

    def __init__(self, domains: Mapping[str, str]):
        unknown = {name: d for name, d in domains.items() if d not in DOMAINS}
        if unknown:
            raise ValueError(f"unknown parameter domains {unknown}; choose from {sorted(DOMAINS)}")
        self.names = list(domains)
        self.domains = dict(domains)
        self.bijections = {name: biject_to(DOMAINS[d]) for name, d in domains.items()}

    def __len__(self) -> int:
        return len(self.names)

    def to_natural(self, unconstrained: Tensor) -> dict[str, Tensor]:
        """Map an unconstrained (B, d) tensor to a dict of natural-scale (B,) tensors."""
        self.check_vector(unconstrained)
        return {name: self.bijections[name](unconstrained[..., i]) for i, name in enumerate(self.names)}

    def to_unconstrained(self, natural: Mapping[str, Tensor | float]) -> Tensor:
        """Map natural-scale values (floats or (B,) tensors) to an unconstrained (B, d) tensor."""
        self.check_natural(natural)
        columns = [torch.as_tensor(natural[name], dtype=torch.float32) for name in self.names]
        columns = torch.broadcast_tensors(*columns)
        return torch.stack([self.bijections[n].inv(c) for n, c in zip(self.names, columns)], dim=-1).reshape(
            -1, len(self.names)
        )

    def check_names(self, natural: Mapping[str, object]) -> None:
        missing = [n for n in self.names if n not in natural]
        extra = [n for n in natural if n not in self.domains]
        if missing or extra:
            raise ValueError(f"parameters: missing {missing}, unknown {extra}; expected {self.names}")

    def check_natural(self, natural: Mapping[str, Tensor | float]) -> None:
        """Names known and complete; every value finite and inside its domain, or a ValueError naming both."""
        self.check_names(natural)
        for name in self.names:
            self.check_value(name, natural[name])

    def check_value(self, name: str, value: Tensor | float) -> None:
        """One parameter's natural-scale values: finite and inside the domain, or a ValueError naming them."""
        value = value.detach().double() if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
        inside = torch.isfinite(value) & DOMAINS[self.domains[name]].check(value)
        if not inside.all():
            bad = value[~inside].reshape(-1)[0].item()
            raise ValueError(
                f"parameter '{name}' has value {bad}, must be finite and {DOMAIN_TEXT[self.domains[name]]}"
            )

    def check_vector(self, unconstrained: Tensor) -> None:
        if unconstrained.shape[-1] != len(self.names):
            raise ValueError(
                f"parameter vector has {unconstrained.shape[-1]} entries, expected {len(self.names)} ({self.names})"
            )
