"""Contact layers: agents' group memberships per layer (household, school, ...) and the group sums over them.

The force of infection sums infectiousness over the groups an agent belongs to in each layer,
Σ_{g ∋ i, g in L} (1/|g|) Σ_{j ∈ g} T_j (Quera-Bofarull et al. 2023, GradABM-JUNE). Group sums are one `index_add_` per
membership slot for a draw or few, and from `SPARSE_FROM_DRAWS` draws one sparse (CSR) product with the membership
matrix, which reads the memberships once for all draws: O(agents × layers) per day either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from diffabm.models.autodiff import has_tangent

SPARSE_FROM_DRAWS = 4  # from this many draws, group sums are sparse products shared by the draws (`_members`)


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
    inverse size zero. A layer's ids are labels (any integers ≥ 0, e.g. a census code): they are numbered
    0, 1, … in increasing order, and the groups of all layers share one numbering.
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
            if not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"layer '{name}': group ids have dtype {ids.dtype}, expected integers")
            if ids.size and ids.min() < -1:  # any other id is a label: numbered afresh below
                raise ValueError(f"layer '{name}': group id {ids.min()} (only -1 means none)")
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
        self._matrices: dict[tuple, Tensor] = {}  # CSR membership matrices for many draws (`_members`)

    def group_totals(self, infectiousness: Tensor, isolated: Tensor | None, isolating: Sequence[bool]) -> Tensor:
        """Σ_{j ∈ g} T_j per group (B, G); members of isolating layers contribute `isolated`."""
        split = isolated is not None and any(isolating[layer] for layer in self.slot_layer)
        if self._sparse(infectiousness):
            if not split:
                return self._product(infectiousness)
            return self._product(infectiousness, isolating, False) + self._product(isolated, isolating, True)
        total = infectiousness.new_zeros(infectiousness.shape[0], self.n_groups)
        members = self._nonzero_members(infectiousness, isolated if split else None)
        if members is not None:  # the others add only zeros
            infectiousness = infectiousness.index_select(1, members)
            isolated = isolated.index_select(1, members) if split else None
        for group, layer in zip(self.slot_group, self.slot_layer):
            source = isolated if split and isolating[layer] else infectiousness
            total.index_add_(1, group if members is None else group.index_select(0, members), source)
        return total

    @staticmethod
    def _nonzero_members(values: Tensor, more: Tensor | None = None) -> Tensor | None:
        """The agents (ascending) with a nonzero value in some draw of `values` (or `more`), where they are fewer than
        half, on the CPU: sums over them alone are bit for bit the sums over all agents in agent order (the totals
        start at +0.0 and x + 0 = x), in a fraction of the time (10% of 10^6 agents: 3.3 ms against 7.5 for four
        slots; most agents are not infectious on most days). None (sum over all) for values that carry a gradient
        (autograd, forward-mode duals, `torch.func`), which the zeros carry too, and on accelerators, whose
        `index_add_` is fast and where `nonzero` would wait for the device."""
        tensors = [values] if more is None else [values, more]
        if values.device.type != "cpu" or any(tensor.requires_grad or has_tangent(tensor) for tensor in tensors):
            return None
        nonzero = values.ne(0).any(0)
        if more is not None:
            nonzero |= more.ne(0).any(0)
        members = nonzero.nonzero().squeeze(1)
        return members if 2 * members.shape[0] < values.shape[1] else None

    @staticmethod
    def _sparse(values: Tensor) -> bool:
        """Whether to sum groups by a sparse product: for many draws, and not under `torch.func` transforms (forward
        mode), whose wrapped tensors sparse matrices do not take."""
        return values.shape[0] >= SPARSE_FROM_DRAWS and not torch._C._functorch.is_functorch_wrapped_tensor(values)

    def _members(self, isolating: Sequence[bool], chosen: bool, transposed: bool, dtype: torch.dtype) -> Tensor:
        """The (G, N) membership matrix (CSR; transposed: (N, G)) of the slots whose layer's `isolating` flag is
        `chosen` (all slots if `isolating` is empty), built once and shared by every draw and day."""
        key = (tuple(isolating), chosen, transposed, dtype)
        if key not in self._matrices:
            slots = [k for k, layer in enumerate(self.slot_layer) if not isolating or isolating[layer] == chosen]
            groups, n_agents = self.slot_group[slots], self.slot_group.shape[1]
            index = torch.int32 if groups.numel() < 2**31 else torch.long
            if transposed:  # (N, G): agent i's row holds its groups (the sink may repeat: its entries add up)
                rows = torch.arange(n_agents + 1, device=groups.device) * len(slots)
                columns, shape = groups.t().sort(dim=1).values.reshape(-1), (n_agents, self.n_groups)
            else:  # (G, N): group g's row holds its members
                flat = groups.reshape(-1)
                order = flat.argsort(stable=True)
                rows = torch.zeros(self.n_groups + 1, dtype=torch.long, device=groups.device)
                rows[1:] = torch.bincount(flat, minlength=self.n_groups).cumsum(0)
                columns, shape = order % max(n_agents, 1), (self.n_groups, n_agents)
            ones = torch.ones(columns.shape[0], dtype=dtype, device=groups.device)
            with warnings.catch_warnings():  # torch: "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self._matrices[key] = torch.sparse_csr_tensor(rows.to(index), columns.to(index), ones, shape)
        return self._matrices[key]

    def _product(
        self, values: Tensor, isolating: Sequence[bool] = (), chosen: bool = False, transposed: bool = False
    ) -> Tensor:
        """The membership matrix (`_members`) times each draw's row of `values` (B, N or G): one pass over the
        memberships for all draws (agent-major inside: each membership moves a contiguous vector of B values)."""
        matrix = self._members(isolating, chosen, transposed, values.dtype)
        return (matrix @ values.t().contiguous()).t().contiguous()

    def group_scale(self, layer_weight: Tensor) -> Tensor:
        """w_L(g) / |g| per group (B, G), zero for the sink."""
        return self.inverse_size * layer_weight.index_select(1, self.group_layer)

    def spread(self, per_group: Tensor, isolating: Sequence[bool] = (), keep: Tensor | None = None) -> Tensor:
        """Σ over each agent's groups of a per-group value (B, N); isolating layers scaled by `keep`."""
        split = keep is not None and any(isolating[layer] for layer in self.slot_layer)
        if self._sparse(per_group):
            if not split:
                return self._product(per_group, transposed=True)
            kept = self._product(per_group, isolating, True, True)
            return self._product(per_group, isolating, False, True).add_(kept.mul_(keep))
        spread = kept = None
        for group, layer in zip(self.slot_group, self.slot_layer):
            term = per_group.index_select(1, group)
            if split and isolating[layer]:
                kept = term if kept is None else kept.add_(term)
            else:
                spread = term if spread is None else spread.add_(term)
        if spread is None:
            spread = per_group.new_zeros(per_group.shape[0], self.slot_group.shape[1])
        return spread if kept is None else spread.add_(kept.mul_(keep))

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
