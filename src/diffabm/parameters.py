"""Named model parameters with domains: unconstrained vectors <-> natural-scale values."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.distributions import constraints, biject_to

DOMAINS = {
    "positive": constraints.positive,
    "unit_interval": constraints.unit_interval,
    "real": constraints.real,
}


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
        self.check_names(natural)
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

    def check_vector(self, unconstrained: Tensor) -> None:
        if unconstrained.shape[-1] != len(self.names):
            raise ValueError(
                f"parameter vector has {unconstrained.shape[-1]} entries, expected {len(self.names)} ({self.names})"
            )
