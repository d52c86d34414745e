"""Contact layers whose group sums are computed by additive secret sharing (`model.privacy: secret_sharing`).

All cross-agent aggregation of the epidemic model goes through `ContactLayers.group_totals` (the forward
neighbourhood aggregate Σ_{j ∈ g} T_j(t), isolating members contributing T_j(t)(1 − c_j)) and `ContactLayers.gather`
(the adjoint's Σ_{j ∈ g} ∂L/∂rate_j ψ_j). `SecretSharedContactLayers` computes both with the P-party protocol of
`diffabm.private`: the agents' infectiousness (and isolated infectiousness) or adjoint terms are shared, each party
sums its shares per group, and only the per-group totals of real groups (not the sink of agents without a group)
are revealed. The infection step then proceeds as in the plain model; the gradient of any output w.r.t. each β is
Σ_g (revealed adjoint sum of g) · T_g / |g| (`transmission._TransmissionDay.backward`), a public function of
secure sums of per-agent local terms (the DecABM calibration; Chopra et al. 2024). Threat model and precision:
`diffabm.private`.

Example:
    >>> import numpy as np, torch
    >>> layers = SecretSharedContactLayers({"household": np.array([0, 0, 1, 1])}, 4)
    >>> layers.group_totals(torch.tensor([[1.0, 0.5, 0.0, 2.0]]), None, [False]).tolist()
    [[1.5, 2.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from diffabm.models.epidemic.contacts import ContactLayers
from diffabm.private import FixedPoint, PartySimulator

PRIVACY = ("none", "secret_sharing")


class SecretSharedContactLayers(ContactLayers):
    """`ContactLayers` whose `group_totals` and `gather` are secure sums over `parties` parties (default 3), the
    forward messages (infectiousness, bounded by the profile's peak) with `frac_bits` fractional bits (default 32),
    the adjoint's terms (dL/d rate_j ψ_j, up to ~1/rate_j with the event-weighted estimator) with
    `adjoint_frac_bits` (default 16: resolution 1.5e-5, |term| ≤ 2^46 / largest group); `record_views` keeps every
    round in the parties' views (`self.protocol.parties`), otherwise the last round only."""

    def __init__(
        self,
        groups: Mapping[str, np.ndarray],
        n_agents: int,
        device: torch.device | str = "cpu",
        parties: int = 3,
        frac_bits: int = 32,
        adjoint_frac_bits: int = 16,
        record_views: bool = False,
    ):
        super().__init__(groups, n_agents, device)
        self.protocol = PartySimulator(parties, FixedPoint(frac_bits), record_views)
        self.adjoint_fixed_point = FixedPoint(adjoint_frac_bits)
        sizes = torch.bincount(self.slot_group.reshape(-1), minlength=self.n_groups)
        self.public_groups = torch.arange(self.n_groups - 1, device=self.slot_group.device)  # all but the sink
        self.largest_group = max(int(sizes[:-1].max()) if self.n_groups > 1 else 1, 1)

    def _secure(
        self, sources: list[Tensor], names: list[str], source_of_layer: Sequence[int], fixed_point: FixedPoint
    ) -> Tensor:
        memberships = [(group, source_of_layer[layer]) for group, layer in zip(self.slot_group, self.slot_layer)]
        return self.protocol.group_sums(
            sources, memberships, self.n_groups, self.public_groups, names, self.largest_group, fixed_point
        )

    def group_totals(self, infectiousness: Tensor, isolated: Tensor | None, isolating: Sequence[bool]) -> Tensor:
        """Σ_{j ∈ g} T_j per group (B, G) from shares (members of isolating layers contribute `isolated`); the sink's
        total is not revealed (zero; its inverse size is zero)."""
        n_layers = len(self.names)
        if isolated is not None and any(isolating[layer] for layer in range(n_layers)):
            sources, names = [infectiousness, isolated], ["infectiousness", "isolated infectiousness"]
            source_of_layer = [int(bool(isolating[layer])) for layer in range(n_layers)]
        else:
            sources, names, source_of_layer = [infectiousness], ["infectiousness"], [0] * n_layers
        return self._secure(sources, names, source_of_layer, self.protocol.fixed_point)

    def gather(self, per_agent: Tensor) -> Tensor:
        """Σ over members of each group of a per-agent adjoint term (B, G), from shares; the sink's is zero."""
        n_layers = len(self.names)
        name = "adjoint term (dL/d rate × susceptibility)"
        return self._secure([per_agent], [name], [0] * n_layers, self.adjoint_fixed_point)


def contact_layers(
    groups: Mapping[str, np.ndarray],
    n_agents: int,
    device: torch.device | str,
    privacy: str = "none",
    secret_sharing: Mapping | None = None,
) -> ContactLayers:
    """The model's contact layers: plain (`privacy: none`) or over secret sharing (`privacy: secret_sharing`, with
    `secret_sharing` settings `parties`, `frac_bits`, `adjoint_frac_bits`)."""
    if privacy == "none":
        return ContactLayers(groups, n_agents, device)
    if privacy == "secret_sharing":
        return SecretSharedContactLayers(groups, n_agents, device, **dict(secret_sharing or {}))
    raise ValueError(f"model.privacy is {privacy!r}, expected one of {list(PRIVACY)}")
