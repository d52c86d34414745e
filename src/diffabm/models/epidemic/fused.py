"""The transmission days without gradients, fused into compiled loops (Numba; Lam, Pitrou & Seibert 2015)
instead of some thirty tensor passes over all agents a day.

A day of `transmission._TransmissionDay` (hard estimators: infected where u < 1 − exp(−rate)) is three loops:
`_group_totals` adds the infectiousness of the active agents only (infected, not yet past their infectious period;
a sorted list per draw, kept up to date by `_merge`) into a (groups, draws) table, in agent order as
`ContactLayers.group_totals` adds them; `_forces` scales the totals by w_L / |g|; `_infect` visits every agent once,
reads its group ids once for all draws, sums its groups' forces in slot order as `ContactLayers.spread` does,
multiplies by its susceptibility and compares the day's counter-based noise (`diffabm.philox`) with the probability.
The float32 operations are those of the tensor path, in its order, so the infections are the same (a uniform within
an ulp of its probability could differ where the two libraries' `expm1` round differently, none did in the tests;
layers with several memberships per agent may add in another order). New infections and their split by setting are
counted per fixed chunk of agents, so the result does not depend on the number of threads.

`EpidemicModel.simulate` uses it whenever nothing needs a gradient (no parameter or control requires grad, no
forward-mode transform), the estimator is hard, the group sums are plain (no secret sharing) and the device is the
CPU (`EpidemicModel.fused_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch
from torch import Tensor

from diffabm import philox
from diffabm.models.base import stable_seed
from diffabm.models.epidemic.transmission import NEVER

if TYPE_CHECKING:  # for annotations only
    from diffabm.models.epidemic.contacts import ContactLayers
    from diffabm.models.epidemic.transmission import _DayState

# Numba's cache (`cache=True`) is invalidated by changes to this file only: after editing `diffabm.philox` or
# `transmission.NEVER`, which the kernels inline, delete the cached `fused.*.nbi` / `*.nbc` in __pycache__.
CHUNK = 4096  # agents per chunk of `_infect` (a multiple of 4: the noise comes in blocks of four agents)
_NEVER = np.int32(NEVER)
_ONE = np.float32(1.0)
_TINY = np.float32(1e-30)
_ABOVE_RATE = np.float32(1.0 + 2.0**-16)


@numba.njit(parallel=True, cache=True)
def _group_totals(
    day: int,
    active: np.ndarray,  # (M,) int64: per draw, the infected agents not yet past their infectious period, ascending
    starts: np.ndarray,  # (B + 1,) int64: draw b's agents are active[starts[b]:starts[b + 1]]
    infection_day: np.ndarray,  # (N, B) int32, agent-major
    memberships: np.ndarray,  # (N, K) int32 group ids, agent-major
    slot_isolating: np.ndarray,  # (K,) bool
    profile: np.ndarray,  # (days since infection + 1,) float32, zero at the end
    relative: np.ndarray,  # (B, N) float32
    infectious_from: np.ndarray,  # (B, N) int32
    end: np.ndarray,  # (B, N) int32
    complies: np.ndarray,  # (B, N) float32
    isolated_from: np.ndarray,  # (B, N) int32
    isolating: bool,
    totals: np.ndarray,  # (G, B) float32, zero on entry
    kept: np.ndarray,  # (B,) int64, out: how many of each draw's agents stay active (at the front of its segment)
) -> None:
    """Adds the infectiousness of the `active` agents to their groups (agent order within each draw, as the tensor
    path's `index_add_`; the draws in parallel, each its own column) and drops from `active`, in place, the agents
    past their infectious period."""
    beyond = profile.shape[0] - 1
    for draw in numba.prange(starts.shape[0] - 1):
        count = starts[draw]
        for position in range(starts[draw], starts[draw + 1]):
            agent = active[position]
            since = min(day - infection_day[agent, draw], beyond)
            if since >= end[draw, agent] or since == beyond:
                continue  # recovered (or dead) for good, or past the profile's end: infectious no more
            active[count] = agent
            count += 1
            if since < infectious_from[draw, agent]:
                continue
            value = profile[since] * relative[draw, agent]
            isolated = value
            if isolating and since >= isolated_from[draw, agent]:
                isolated = value * (_ONE - complies[draw, agent])
            for slot in range(memberships.shape[1]):
                totals[memberships[agent, slot], draw] += isolated if slot_isolating[slot] else value
        kept[draw] = count - starts[draw]


@numba.njit(cache=True)
def _merge(
    active: np.ndarray, starts: np.ndarray, kept: np.ndarray, fresh: np.ndarray, new: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each draw's kept active agents (`_group_totals`) and its new infections of the day (`fresh` (chunks, B,
    CHUNK): agent offsets within each chunk, ascending, `new` (chunks, B) of them), merged in ascending order; and
    the draws' new starts."""
    chunks, draws = new.shape
    merged = np.empty(kept.sum() + new.sum(), dtype=np.int64)
    merged_starts = np.zeros(draws + 1, dtype=np.int64)
    count = 0
    for draw in range(draws):
        position, stop = starts[draw], starts[draw] + kept[draw]
        for chunk in range(chunks):
            for k in range(new[chunk, draw]):
                agent = chunk * CHUNK + fresh[chunk, draw, k]
                while position < stop and active[position] < agent:
                    merged[count] = active[position]
                    count += 1
                    position += 1
                merged[count] = agent
                count += 1
        while position < stop:
            merged[count] = active[position]
            count += 1
            position += 1
        merged_starts[draw + 1] = count
    return merged, merged_starts


@numba.njit(parallel=True, cache=True)
def _forces(
    totals: np.ndarray,  # (G, B) float32, zeroed for the next day once read
    inverse_size: np.ndarray,  # (G,) float32, 0 for the sink
    group_layer: np.ndarray,  # (G,) int64
    weight: np.ndarray,  # (B, L) float32
    force: np.ndarray,  # (G, B) float32, out: totals × (1/|g| × w_L), as `ContactLayers.group_scale` multiplies
    per_member: np.ndarray,  # (G, B) float32, out: totals / |g| (the exposures by setting)
) -> None:
    for group in numba.prange(totals.shape[0]):
        layer = group_layer[group]
        for draw in range(totals.shape[1]):
            force[group, draw] = totals[group, draw] * (inverse_size[group] * weight[draw, layer])
            per_member[group, draw] = totals[group, draw] * inverse_size[group]
            totals[group, draw] = 0


@numba.njit(inline="always", cache=True)
def _record(
    day: int,
    chunk: int,
    draw: int,
    agent: int,
    infection_day: np.ndarray,
    memberships: np.ndarray,
    slot_layer: np.ndarray,
    per_member: np.ndarray,
    weight: np.ndarray,
    new: np.ndarray,
    fresh: np.ndarray,
    by_setting: np.ndarray,
    exposure: np.ndarray,  # (L,) float32 scratch
) -> None:
    """Infects `agent` in `draw` on `day`: its infection day, its place among the chunk's new infections, and its
    split by setting, w_L E_L / Σ_K w_K E_K (`EpidemicModel.infections_by_setting`)."""
    infection_day[agent, draw] = day
    fresh[chunk, draw, new[chunk, draw]] = agent - chunk * CHUNK
    new[chunk, draw] += 1
    exposure[:] = 0
    for slot in range(memberships.shape[1]):
        exposure[slot_layer[slot]] += per_member[memberships[agent, slot], draw]
    weighted = np.float32(0)
    for layer in range(weight.shape[1]):
        weighted += weight[draw, layer] * exposure[layer]
    weighted = max(weighted, _TINY)
    for layer in range(weight.shape[1]):
        by_setting[chunk, draw, layer] += weight[draw, layer] * exposure[layer] / weighted


@numba.njit(parallel=True, cache=True)
def _infect_one_draw(
    day: int,
    key: np.uint64,
    rows: np.ndarray,
    infection_day: np.ndarray,
    memberships: np.ndarray,
    slot_layer: np.ndarray,
    force: np.ndarray,
    per_member: np.ndarray,
    weight: np.ndarray,
    susceptibility: np.ndarray,
    factor: np.ndarray,
    new: np.ndarray,
    fresh: np.ndarray,
    by_setting: np.ndarray,
) -> None:
    """`_infect` for one draw (same arguments): agent by agent, drawing the noise only for agents still susceptible
    and exposed, which a loop over a single draw cannot share."""
    agents = infection_day.shape[0]
    slots = memberships.shape[1]
    scaled = factor.shape[0] > 0
    for chunk in numba.prange(new.shape[0]):
        exposure = np.zeros(weight.shape[1], dtype=np.float32)
        first_block = chunk * (CHUNK // 4)
        last_block = min(first_block + CHUNK // 4, (agents + 3) // 4)
        for block in range(first_block, last_block):
            drawn = False
            noise = (_ONE, _ONE, _ONE, _ONE)
            for lane in range(min(4, agents - 4 * block)):
                agent = 4 * block + lane
                if infection_day[agent, 0] != _NEVER:
                    continue
                total = force[memberships[agent, 0], 0]
                for slot in range(1, slots):
                    total += force[memberships[agent, slot], 0]
                rate = (susceptibility[agent] * factor[0, agent] if scaled else susceptibility[agent]) * total
                if not rate > 0:
                    continue
                if not drawn:
                    noise = philox.block_uniforms(key, rows[0], block)
                    drawn = True
                if noise[lane] < rate * _ABOVE_RATE and noise[lane] < -np.expm1(-rate):
                    _record(
                        day, chunk, 0, agent, infection_day, memberships, slot_layer, per_member, weight, new, fresh,
                        by_setting, exposure,
                    )  # fmt: skip


@numba.njit(parallel=True, cache=True)
def _infect(
    day: int,
    key: np.uint64,
    rows: np.ndarray,  # (B,) int64: each draw's noise row (all 0 with common random numbers)
    infection_day: np.ndarray,  # (N, B) int32, agent-major, updated in place
    memberships: np.ndarray,  # (N, K) int32
    slot_layer: np.ndarray,  # (K,) int64
    force: np.ndarray,  # (G, B) float32: totals × w_L / |g|
    per_member: np.ndarray,  # (G, B) float32: totals / |g| (the exposures by setting)
    weight: np.ndarray,  # (B, L) float32
    susceptibility: np.ndarray,  # (N,) float32
    factor: np.ndarray,  # (B, N) float32, or (0, 0): none
    new: np.ndarray,  # (chunks, B) int64, zero on entry
    fresh: np.ndarray,  # (chunks, B, CHUNK) int32: the new infections' offsets within their chunk
    by_setting: np.ndarray,  # (chunks, B, L) float32, zero on entry
) -> None:
    """Infects susceptible agents with probability 1 − exp(−rate), rate = ψ Σ_slots force (in slot order).

    Agent-major, and without branches over the draws (so the compiler vectorises them): each agent's group ids are
    read once for all draws, a group's forces for all draws are contiguous, and the noise of four agents comes from
    one Philox block per draw. As 1 − exp(−rate) ≤ rate, only draws with u < rate (with a margin for an ulp of
    `expm1`'s error) are candidates; `expm1` decides those few."""
    agents, draws = infection_day.shape
    slots, layers = memberships.shape[1], weight.shape[1]
    scaled = factor.shape[0] > 0
    k0, k1 = key & philox.MASK32, key >> np.uint64(32)
    for chunk in numba.prange(new.shape[0]):
        exposure = np.zeros(layers, dtype=np.float32)
        noise = np.empty((4, draws), dtype=np.float32)
        total = np.empty(draws, dtype=np.float32)
        rate = np.empty(draws, dtype=np.float32)
        candidate = np.empty(draws, dtype=np.bool_)
        first_block = chunk * (CHUNK // 4)
        last_block = min(first_block + CHUNK // 4, (agents + 3) // 4)
        for block in range(first_block, last_block):
            counter = np.uint64(block)
            for draw in range(draws):
                words = philox.philox4x32(
                    counter & philox.MASK32, counter >> np.uint64(32), np.uint64(rows[draw]), np.uint64(0), k0, k1
                )
                for lane in range(4):
                    noise[lane, draw] = philox.word_to_uniform(words[lane])
            for lane in range(min(4, agents - 4 * block)):
                agent = 4 * block + lane
                group = memberships[agent, 0]
                for draw in range(draws):
                    total[draw] = force[group, draw]
                for slot in range(1, slots):
                    group = memberships[agent, slot]
                    for draw in range(draws):
                        total[draw] += force[group, draw]
                psi = susceptibility[agent]
                any_candidate = False
                for draw in range(draws):
                    rate[draw] = (psi * factor[draw, agent] if scaled else psi) * total[draw]
                    candidate[draw] = (infection_day[agent, draw] == _NEVER) & (
                        noise[lane, draw] < rate[draw] * _ABOVE_RATE
                    )
                    any_candidate |= candidate[draw]
                if not any_candidate:
                    continue
                for draw in range(draws):
                    if candidate[draw] and noise[lane, draw] < -np.expm1(-rate[draw]):
                        _record(
                            day, chunk, draw, agent, infection_day, memberships, slot_layer, per_member, weight, new,
                            fresh, by_setting, exposure,
                        )  # fmt: skip


@dataclass
class FusedLayers:
    """The contact layers as the kernels read them: group ids agent-major (N, K), each slot's layer, each group's
    inverse size and layer."""

    memberships: np.ndarray
    slot_layer: np.ndarray
    inverse_size: np.ndarray
    group_layer: np.ndarray

    @classmethod
    def of(cls, contacts: ContactLayers) -> FusedLayers:
        return cls(
            np.ascontiguousarray(contacts.slot_group.t().cpu().numpy(), dtype=np.int32),
            np.asarray(contacts.slot_layer, dtype=np.int64),
            contacts.inverse_size.cpu().numpy(),
            contacts.group_layer.cpu().numpy(),
        )


def _array(values: Tensor, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(values.detach().cpu().numpy(), dtype=dtype)


def transmission_days(
    state: _DayState, layers: FusedLayers, infection_day: Tensor, weights: Tensor, first: int, last: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Days `first`..`last` − 1 as `EpidemicModel._transmission_days` computes them without gradients: the infected
    (B, N) and infection days after them, each day's new infections (B, k) and infections by setting (B, k, L)."""
    model = state.model
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    day_of_infection = _array(infection_day.t(), np.int32)  # agent-major (N, B): an agent's draws in one cache line
    agents, draws = day_of_infection.shape
    course = {
        name: _array(getattr(state, name).expand(draws, agents), dtype)
        for name, dtype in (
            ("relative", np.float32),
            ("infectious_from", np.int32),
            ("end", np.int32),
            ("complies", np.float32),
            ("isolated_from", np.int32),
        )
    }
    slot_isolating = np.asarray([model.isolating[layer] for layer in layers.slot_layer], dtype=np.bool_)
    profile, susceptibility = _array(model.profile, np.float32), _array(model.susceptibility, np.float32)
    rows = np.zeros(draws, np.int64) if model.common_random_numbers else np.arange(draws, dtype=np.int64)
    chunks = max(1, -(-agents // CHUNK))
    n_layers = weights.shape[-1]
    daily_new = np.zeros((draws, last - first), np.float32)
    by_setting = np.zeros((draws, last - first, n_layers), np.float32)
    infected_at_start = day_of_infection.T != _NEVER
    active = np.flatnonzero(infected_at_start) % agents  # per draw, ascending
    starts = np.concatenate([[0], np.cumsum(infected_at_start.sum(1))])
    kept = np.empty(draws, np.int64)
    totals = np.zeros((layers.inverse_size.shape[0], draws), np.float32)
    force, per_member = np.empty_like(totals), np.empty_like(totals)
    fresh = np.empty((chunks, draws, CHUNK), np.int32)
    for index, day in enumerate(range(first, last)):
        weight = _array(weights[:, day], np.float32)
        _group_totals(
            day,
            active,
            starts,
            day_of_infection,
            layers.memberships,
            slot_isolating,
            profile,
            *course.values(),
            state.isolating,
            totals,
            kept,
        )
        _forces(totals, layers.inverse_size, layers.group_layer, weight, force, per_member)
        factor = state.susceptibility_factor(day)
        factor = np.zeros((0, 0), np.float32) if factor is None else _array(factor.expand(draws, agents), np.float32)
        new = np.zeros((chunks, draws), np.int64)
        by_chunk = np.zeros((chunks, draws, n_layers), np.float32)
        key = np.uint64(stable_seed(state.seed, f"day{day}"))
        (_infect if draws > 1 else _infect_one_draw)(
            day,
            key,
            rows,
            day_of_infection,
            layers.memberships,
            layers.slot_layer,
            force,
            per_member,
            weight,
            susceptibility,
            factor,
            new,
            fresh,
            by_chunk,
        )
        active, starts = _merge(active, starts, kept, fresh, new)
        daily_new[:, index] = new.sum(0)
        by_setting[:, index] = by_chunk.sum(0)
    device = infection_day.device
    infection_day = torch.from_numpy(day_of_infection.T.copy()).to(device=device, dtype=infection_day.dtype)
    infected = (infection_day != NEVER).to(weights.dtype)
    new, by_setting = (
        torch.from_numpy(array).to(device=device, dtype=weights.dtype) for array in (daily_new, by_setting)
    )
    return infected, infection_day, new, by_setting
