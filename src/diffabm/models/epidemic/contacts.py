"""Contact layers: agents' group memberships per layer (household, school, ...) and the group sums over them.

The force of infection sums infectiousness over the groups an agent belongs to in each layer,
Σ_{g ∋ i, g in L} (1/|g|) Σ_{j ∈ g} T_j (Quera-Bofarull et al. 2023, GradABM-JUNE). Group sums are
`index_add_` over flattened (agent, group) memberships: O(agents × layers) per day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


class Agents(Protocol):
    """What the model reads of a population (`diffabm.population.schema.Population` is one): ages,
    group ids per contact layer ((N,) or (N, K), -1 = none) and other attributes by name."""

    age: np.ndarray
    area: np.ndarray
    groups: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]

    @property
    def n_agents(self) -> int: ...


def attribute_groups(population: Agents, attribute_layers: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The population's layers plus one layer per `attribute_layers` entry grouping agents that share an
    attribute (e.g. `community: area`: everyone in the same SA2)."""
    groups = dict(population.groups)
    for layer, attribute in attribute_layers.items():
        if layer in groups:
            raise ValueError(f"model.attribute_layers: layer '{layer}' already exists in the population")
        values = getattr(population, attribute, None)
        values = population.extra.get(attribute) if values is None else values
        if values is None:
            raise ValueError(f"model.attribute_layers.{layer}: population has no attribute '{attribute}'")
        groups[layer] = np.unique(values, return_inverse=True)[1].astype(np.int64)
    return groups


class ContactLayers:
    """Group memberships as slots: each slot gives every agent one group id in one layer.

    A layer with K memberships per agent has K slots; "no group" points to a sink group of
    inverse size zero. Group ids of all layers share one numbering.
    """

    def __init__(self, groups: Mapping[str, np.ndarray], n_agents: int, device: torch.device | str = "cpu"):
        self.names = list(groups)
        slot_groups, slot_layers, group_layer, offset = [], [], [], 0
        for layer_index, (name, ids) in enumerate(groups.items()):
            ids = np.asarray(ids)
            if ids.ndim not in (1, 2) or ids.shape[0] != n_agents:
                raise ValueError(
                    f"layer '{name}': group ids have shape {ids.shape}, expected ({n_agents},) or ({n_agents}, K)"
                )
            ids = ids.reshape(n_agents, -1)
            bad = ids[(ids < -1) | (ids >= max(n_agents, 1))]
            if bad.size:
                raise ValueError(f"layer '{name}': group id {bad[0]} out of range [-1, {n_agents})")
            member = ids >= 0
            contiguous = np.full(ids.shape, -1, dtype=np.int64)
            _, contiguous[member] = np.unique(ids[member], return_inverse=True)
            n_groups = int(contiguous.max()) + 1 if member.any() else 0
            for slot in contiguous.T:
                slot_groups.append(np.where(slot >= 0, slot + offset, -1))
                slot_layers.append(layer_index)
            group_layer.append(np.full(n_groups, layer_index))
            offset += n_groups
        self.n_groups = offset + 1  # the last group is the sink of agents without a group
        groups_by_slot = np.stack(slot_groups)
        groups_by_slot[groups_by_slot < 0] = offset
        self.slot_group = torch.as_tensor(groups_by_slot, dtype=torch.long, device=device)
        self.slot_layer = slot_layers
        self.group_layer = torch.as_tensor(np.concatenate([*group_layer, [0]]), dtype=torch.long, device=device)
        sizes = torch.bincount(self.slot_group.reshape(-1), minlength=self.n_groups).float()
        self.inverse_size = 1.0 / sizes.clamp_min(1.0)
        self.inverse_size[-1] = 0.0

    def group_totals(self, infectiousness: Tensor, isolated: Tensor | None, isolating: Sequence[bool]) -> Tensor:
        """Σ_{j ∈ g} T_j per group (B, G); members of isolating layers contribute `isolated`."""
        total = infectiousness.new_zeros(infectiousness.shape[0], self.n_groups)
        for group, layer in zip(self.slot_group, self.slot_layer):
            source = isolated if isolated is not None and isolating[layer] else infectiousness
            total.index_add_(1, group, source)
        return total

    def group_scale(self, layer_weight: Tensor) -> Tensor:
        """w_L(g) / |g| per group (B, G), zero for the sink."""
        return self.inverse_size * layer_weight.index_select(1, self.group_layer)

    def spread(self, per_group: Tensor, isolating: Sequence[bool] = (), keep: Tensor | None = None) -> Tensor:
        """Σ over each agent's groups of a per-group value (B, N); isolating layers scaled by `keep`."""
        spread = per_group.new_zeros(per_group.shape[0], self.slot_group.shape[1])
        kept = torch.zeros_like(spread) if keep is not None else None
        for group, layer in zip(self.slot_group, self.slot_layer):
            target = kept if kept is not None and isolating[layer] else spread
            target += per_group.index_select(1, group)
        return spread + kept * keep if kept is not None else spread

    def spread_by_layer(self, per_group: Tensor, n_layers: int) -> Tensor:
        """`spread` kept apart by layer (B, N, L): Σ over each agent's groups of layer L."""
        spread = per_group.new_zeros(per_group.shape[0], self.slot_group.shape[1], n_layers)
        for group, layer in zip(self.slot_group, self.slot_layer):
            spread[..., layer] += per_group.index_select(1, group)
        return spread

    def gather(self, per_agent: Tensor) -> Tensor:
        """Σ over members of each group of a per-agent value (B, G): the transpose of `spread`."""
        return self.group_totals(per_agent, None, ())

    def layer_exposure(self, per_group: Tensor, draw: Tensor, agent: Tensor, n_layers: int) -> Tensor:
        """Σ over each chosen (draw, agent)'s groups of a per-group value, by layer (M, L)."""
        exposure = per_group.new_zeros(agent.shape[0], n_layers)
        for group, layer in zip(self.slot_group, self.slot_layer):
            exposure[:, layer] += per_group[draw, group[agent]]
        return exposure

    def layer_sums(self, per_group: Tensor, n_layers: int) -> Tensor:
        """Σ over the groups of each layer (B, L)."""
        return per_group.new_zeros(per_group.shape[0], n_layers).index_add_(1, self.group_layer, per_group)
