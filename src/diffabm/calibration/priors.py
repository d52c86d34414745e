"""Priors over calibrated parameters, given on the natural scale and used on the unconstrained one.

Each parameter gets an independent natural-scale distribution (`Normal`, `LogNormal`, `Uniform`,
`Beta`, ... from `torch.distributions`), pushed through the model's inverse bijection (log for
positive, logit for unit-interval parameters): the density on the unconstrained scale includes
the log-Jacobian, so KL(q‖prior) computed there equals the natural-scale KL.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution, TransformedDistribution

from diffabm.parameters import ParameterSpace


class Prior:
    """Independent priors for `names`: natural-scale distributions, log-densities on the unconstrained scale."""

    def __init__(self, natural: Mapping[str, Distribution], space: ParameterSpace):
        unknown = [name for name in natural if name not in space.domains]
        if unknown:
            raise ValueError(f"calibration.prior: unknown parameters {unknown}; the model has {space.names}")
        self.names = list(natural)
        self.natural = dict(natural)
        self.unconstrained = {
            name: TransformedDistribution(dist, [space.bijections[name].inv], validate_args=False)
            for name, dist in natural.items()
        }

    def __len__(self) -> int:
        return len(self.names)

    def log_prob(self, theta: Tensor) -> Tensor:
        """log π(θ) of unconstrained (B, d) parameters (columns in `names` order): (B,)."""
        return sum(self.unconstrained[name].log_prob(theta[..., i]) for i, name in enumerate(self.names))

    def sample(self, n: int, generator_seed: int) -> Tensor:
        """n unconstrained draws (n, d), reproducible from `generator_seed`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator_seed)
            return torch.stack([self.unconstrained[name].sample((n,)) for name in self.names], dim=-1)


def build_prior(config: Mapping[str, Mapping], space: ParameterSpace, device: torch.device | str = "cpu") -> Prior:
    """A Prior from `{name: {distribution: LogNormal, <its arguments>...}}`, its arguments on `device` (the
    model's, so that densities and draws live where the parameters do)."""
    natural = {}
    for name, spec in config.items():
        spec = dict(spec)
        kind = spec.pop("distribution")
        family = getattr(torch.distributions, kind, None)
        if not (isinstance(family, type) and issubclass(family, Distribution)):
            raise ValueError(f"calibration.prior.{name}: unknown distribution {kind!r} (torch.distributions)")
        arguments = {key: torch.tensor(float(value), device=device) for key, value in spec.items()}
        family(**arguments, validate_args=True)  # raises on invalid arguments
        natural[name] = family(**arguments, validate_args=False)  # log π = -inf outside the support
    return Prior(natural, space)
