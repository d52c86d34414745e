"""The transmission days and outputs without gradients, fused into compiled loops (Numba; Lam, Pitrou & Seibert 2015)
instead of some thirty tensor passes over all agents a day.

A day of `transmission._TransmissionDay` (hard estimators: infected where u < 1 − exp(−rate)) is three loops:
`_group_totals` adds the infectiousness of the active agents only (infected, not yet past their infectious period; a
sorted list per draw, merged with the new infections on the way) into a (draws, groups) table, in agent order as
`ContactLayers.group_totals` adds them (with fewer draws than threads in two parallel passes: segments of the agents
list the infectious ones, then parts of the layers add them; `FusedLayers.parts`); `_forces` scales the totals by w_L /
|g|; `_infect` (`_infect_one_draw` for one draw) visits every agent once, sums its groups' forces in slot order as
`ContactLayers.spread` does, multiplies by its susceptibility and compares the day's counter-based noise
(`diffabm.philox`, a chunk's noise at once, in a vectorised loop) with the probability. The rates are computed for every
agent without branches on its state, which is unpredictable once the epidemic has spread; only the few candidates u <
rate, listed without a branch, are then looked at, and infected if still susceptible (a bit per agent and draw). One
draw's pass reads the group ids as 16-bit offsets from a base per chunk where all of them fit (`chunk_offsets`). A
vaccine's factor of the susceptibility (without waning or by-group controls) is picked from the days each dose protects
(`kernel_dose_days`), not computed by a dozen tensor passes a day (Auckland at full scale: 0.65 of 2.1 s a forward run).
With several draws, a chunk's rates come first: an agent's group ids are read once for all draws and each group's forces
for all draws are added eight at a time (`diffabm.simd`); then, draw by draw, the noise and the candidates. Everything a
draw's own agents carry (infection days, course) is laid out draw-major (B, N), so a draw's pass reads one row and not
every draw's cache lines. The float32 operations are those of the tensor path, in its order, so the infections are the
same (a uniform within an ulp of its probability could differ where the two libraries' `expm1` round differently, none
did in the tests; layers with several memberships per agent may add in another order; the split by setting is equal to
rounding). New infections and their split by setting are counted per fixed chunk of agents, so the result does not
depend on the number of threads. After the days, `event_counts` counts every daily output in one pass over the agents.

`EpidemicModel.simulate` uses them whenever nothing needs a gradient (no parameter or control requires grad, no
forward-mode transform), the estimator is hard, the group sums are plain (no secret sharing) and the device is the
CPU (`EpidemicModel.fused_layers`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch
from torch import Tensor

from diffabm import philox, simd
from diffabm.models.base import stable_seed
from diffabm.models.epidemic import transmission
from diffabm.models.epidemic.transmission import NEVER

if TYPE_CHECKING:  # for annotations only
    from diffabm.models.epidemic.contacts import ContactLayers
    from diffabm.models.epidemic.transmission import _DayState


def drop_stale_kernels(cache: Path, dependencies: Sequence[Path]) -> None:
    """Deletes this module's cached kernels (`fused.*.nbi` / `*.nbc` in `cache`) where a module they inline is newer
    than their index: Numba's cache (`cache=True`) checks this file alone, and would keep running kernels compiled
    with an older `diffabm.philox`, `diffabm.simd` or `transmission.NEVER`."""
    indexes = list(cache.glob(f"{Path(__file__).stem}.*.nbi"))
    try:
        newest = max((path.stat().st_mtime for path in dependencies), default=0.0)
        stale = any(index.stat().st_mtime < newest for index in indexes)
    except FileNotFoundError:  # another process is deleting them
        stale = True
    except OSError:  # unreadable: leave the cache to Numba
        stale = False
    if stale:
        for path in (*indexes, *cache.glob(f"{Path(__file__).stem}.*.nbc")):
            with contextlib.suppress(OSError):  # gone already (another process), or a cache this user cannot write
                path.unlink()


CHUNK = 4096  # agents per chunk of `_infect` (a multiple of 4: the noise comes in blocks of four agents)
_NEVER = np.int32(NEVER)
_ONE = np.float32(1.0)
_TINY = np.float32(1e-30)
_ABOVE_RATE = np.float32(1.0 + 2.0**-16)
_NO_GROUPS = np.zeros((0, 0), np.int32)  # `_group_totals`' slot-major group ids where it has no parts


@numba.njit(parallel=True, cache=True)
def _group_totals(
    day: int,
    active: np.ndarray,  # (≥ M,) int32: per list, the infected agents not yet past their infectious period, ascending
    begins: np.ndarray,  # (B × S,) int64: list t's agents are active[begins[t] : begins[t] + counts[t]]
    counts: np.ndarray,  # (B × S,) int64; list t = b × S + s holds draw b's agents in segment s
    segments: np.ndarray,  # (S + 1,) int64: segment s is the agents of chunks segments[s] to segments[s + 1] − 1
    fresh: np.ndarray,  # (chunks, B, CHUNK) int32: yesterday's new infections (`_infect`), offsets in their chunk
    new: np.ndarray,  # (chunks, B) int64: how many
    infection_day: np.ndarray,  # (B, N) int32: a draw's agents together, apart from the other draws'
    memberships: np.ndarray,  # (N, K) int32 group ids, agent-major
    slot_groups: np.ndarray,  # (K, N) int32: the same, slot-major (with `parts`)
    slot_isolating: np.ndarray,  # (K,) bool
    profile: np.ndarray,  # (days since infection + 1,) float32, zero at the end
    relative: np.ndarray,  # (B, N) float32
    infectious_from: np.ndarray,  # (B, N) int32
    end: np.ndarray,  # (B, N) int32
    complies: np.ndarray,  # (B, N) float32
    isolated_from: np.ndarray,  # (B, N) int32
    isolating: bool,
    parts: np.ndarray,  # (P, ≤ K) int64: each part's slots (-1: none); (0, 0): no parts, the draws in parallel
    part_groups: np.ndarray,  # (P, R, 2) int64: each part's groups as ranges [first, stop) (empty ones [0, 0))
    listed_agents: np.ndarray,  # (≥ M + new infections,) int32 scratch (with `parts`): the infectious agents
    listed_values: np.ndarray,  # (≥ M + new infections, 2) float32 scratch: their value, and isolated
    listed_counts: np.ndarray,  # (B × S,) int64 scratch
    totals: np.ndarray,  # (B, G) float32, out (draw-major: the draws in parallel write apart)
    merged: np.ndarray,  # (≥ M + new infections,) int32, out: the agents still active, per list, ascending
    merged_begins: np.ndarray,  # (B × S,) int64: where each list's agents go in `merged` (room for all of them)
    merged_counts: np.ndarray,  # (B × S,) int64, out: how many
) -> None:
    """Adds the infectiousness of each draw's active agents to their groups, in agent order as the tensor path's
    `index_add_` (the draws in parallel): the active list merged with yesterday's new infections on the way, and
    written to `merged` without the agents past their infectious period.

    With `parts` (fewer draws than threads), the segments' infectious agents and their values are listed first, the
    segments of a draw in parallel, then each (draw, part) adds them through the part's slots in parallel,
    slot-major: a part owns its layers' groups and its slots' sinks, and adds in agent order as well (segment by
    segment), so every total is the same float32 sum. Without parts, one segment."""
    beyond = profile.shape[0] - 1
    direct = parts.shape[0] == 0
    n_segments = segments.shape[0] - 1
    for task in numba.prange(begins.shape[0]):
        draw, segment = task // n_segments, task % n_segments
        if direct:
            totals[draw] = 0  # yesterday's, zeroed by the thread that adds today's: the row is then in its cache
        out = listed = merged_begins[task]
        position, stop = begins[task], begins[task] + counts[task]
        chunk, k, chunks = segments[segment], 0, segments[segment + 1]
        while True:
            while chunk < chunks and k == new[chunk, draw]:
                chunk, k = chunk + 1, 0
            if position < stop and (chunk == chunks or active[position] < chunk * CHUNK + fresh[chunk, draw, k]):
                agent = active[position]
                position += 1
            elif chunk < chunks:
                agent = chunk * CHUNK + fresh[chunk, draw, k]
                k += 1
            else:
                break
            since = min(day - infection_day[draw, agent], beyond)
            if since >= end[draw, agent] or since == beyond:
                continue  # recovered (or dead) for good, or past the profile's end: infectious no more
            merged[out] = agent
            out += 1
            if since < infectious_from[draw, agent]:
                continue
            value = profile[since] * relative[draw, agent]
            isolated = value
            if isolating and since >= isolated_from[draw, agent]:
                isolated = value * (_ONE - complies[draw, agent])
            if direct:
                for slot in range(memberships.shape[1]):
                    totals[draw, memberships[agent, slot]] += isolated if slot_isolating[slot] else value
            else:
                listed_agents[listed] = agent
                listed_values[listed, 0], listed_values[listed, 1] = value, isolated
                listed += 1
        merged_counts[task] = out - merged_begins[task]
        listed_counts[task] = listed - merged_begins[task]
    n_parts = parts.shape[0]
    for task in numba.prange(totals.shape[0] * n_parts):
        draw, part = task // n_parts, task % n_parts
        for index in range(part_groups.shape[1]):
            totals[draw, part_groups[part, index, 0] : part_groups[part, index, 1]] = 0
        for listing in range(draw * n_segments, (draw + 1) * n_segments):
            for position in range(merged_begins[listing], merged_begins[listing] + listed_counts[listing]):
                agent = listed_agents[position]
                for index in range(parts.shape[1]):
                    slot = parts[part, index]
                    if slot >= 0:
                        totals[draw, slot_groups[slot, agent]] += listed_values[position, int(slot_isolating[slot])]


@numba.njit(parallel=True, cache=True)
def _forces(
    totals: np.ndarray,  # (B, G) float32
    inverse_size: np.ndarray,  # (G,) float32, 0 for the sink
    group_layer: np.ndarray,  # (G,) int32
    weight: np.ndarray,  # (B, L) float32
    force: np.ndarray,  # (G, ≥ B) float32, out: totals × (1/|g| × w_L), as `ContactLayers.group_scale` multiplies
) -> None:
    for group in numba.prange(totals.shape[1]):
        layer = group_layer[group]
        for draw in range(totals.shape[0]):
            force[group, draw] = totals[draw, group] * (inverse_size[group] * weight[draw, layer])


@numba.njit(inline="always", cache=True)
def _susceptibility_factor(
    day: int, draw: int, agent: int, factor: np.ndarray, protected: np.ndarray, kept: np.ndarray
) -> np.float32:
    """The agent's multiplier of its susceptibility: with `protected` (2, B, N), the days from which its first and
    second dose protect, 1 − e of its latest protecting dose (`kept` (B, 2)) or 1 (the floats of
    `VaccineProtection.susceptibility_factor`); else its entry of `factor` (B, N)."""
    if protected.shape[0] > 0:
        if day >= protected[1, draw, agent]:
            return kept[draw, 1]
        return kept[draw, 0] if day >= protected[0, draw, agent] else _ONE
    return factor[draw, agent]


@numba.njit(inline="always", cache=True)
def _infect_candidates(
    day: int,
    chunk: int,
    draw: int,
    noise: np.ndarray,  # (≥ count,) float32: the chunk's uniforms in `draw`
    rate: np.ndarray,  # (≥ count,) float32: the chunk's rates in `draw` (a column of the rates, or the rates)
    count: int,
    infection_day: np.ndarray,
    susceptible: np.ndarray,
    new: np.ndarray,
    fresh: np.ndarray,
    candidates: np.ndarray,  # (≥ count,) int32 scratch
) -> None:
    """Infects the chunk's susceptible agents with u < 1 − exp(−rate) in `draw` on `day`: the candidates u < rate
    (with a margin for an ulp of `expm1`'s error, as 1 − exp(−rate) ≤ rate) listed first without a branch (a store
    and an add per agent: a branch on each, taken for a few percent of the agents at random, was mispredicted often
    enough to cost 0.07-0.37 ms of 1.9-2.5 ms a day at 10^6 agents), then among them the susceptible (a bit each), and
    among those `expm1` decides. A bit and not the infection day (4 bytes an agent, a fresh row of memory for each
    chunk and draw) says who is susceptible: with `_split_by_setting` after the scan, the 16-draw pass is 1.1-1.5x
    faster (BENCHMARKS.md, "Susceptible bits")."""
    first = chunk * CHUNK
    bits = susceptible[draw, first // 8 : (first + count + 7) // 8]  # CHUNK is a multiple of 8: whole bytes
    listed = 0
    for k in range(count):
        candidates[listed] = k
        listed += noise[k] < rate[k] * _ABOVE_RATE
    infected = 0
    for index in range(listed):
        k = candidates[index]
        if (bits[k >> 3] >> (k & 7)) & 1 and noise[k] < -np.expm1(-rate[k]):
            bits[k >> 3] &= ~np.uint8(1 << (k & 7))
            infection_day[draw, first + k] = day
            fresh[chunk, draw, infected] = k
            infected += 1
    new[chunk, draw] = infected


@numba.njit(inline="always", cache=True)
def _split_by_setting(
    chunk: int,
    draw: int,
    memberships: np.ndarray,
    slot_layer: np.ndarray,
    totals: np.ndarray,
    inverse_size: np.ndarray,
    weight: np.ndarray,
    new: np.ndarray,
    fresh: np.ndarray,
    by_setting: np.ndarray,
    exposure: np.ndarray,  # (L,) float32 scratch
) -> None:
    """Adds the split by setting of the chunk's new infections in `draw`, in agent order: w_L E_L / Σ_K w_K E_K with
    E_L = Σ_{g ∋ agent in L} T_g / |g|, in the float32 operations of `EpidemicModel.infections_by_setting`. After
    the candidates and not among them: the loads of independent agents overlap, where a mispredicted candidate
    branch would flush them."""
    first = chunk * CHUNK
    for index in range(new[chunk, draw]):
        agent = first + fresh[chunk, draw, index]
        exposure[:] = 0
        for slot in range(memberships.shape[1]):
            group = memberships[agent, slot]
            exposure[slot_layer[slot]] += totals[draw, group] * inverse_size[group]
        weighted = np.float32(0)
        for layer in range(weight.shape[1]):
            weighted += weight[draw, layer] * exposure[layer]
        weighted = max(weighted, _TINY)
        for layer in range(weight.shape[1]):
            by_setting[chunk, draw, layer] += weight[draw, layer] * exposure[layer] / weighted


UNROLLED_SLOTS = 8  # up to this many slots (memberships per agent), the passes are compiled for their number


def unrolled_slots(slots: int) -> tuple:
    """The infection passes' `slots` argument: K zeros for K ≤ `UNROLLED_SLOTS` (the length of a tuple's type is a
    compile-time constant, so the loop over the slots unrolls; one compiled variant per K, cached on disk), else ()
    (a loop over `memberships.shape[1]`: one variant for all the larger K, e.g. a network's edges as pairs)."""
    return (0,) * slots if slots <= UNROLLED_SLOTS else ()


@numba.njit(parallel=True, cache=True)
def _infect_one_draw(
    day: int,
    key: np.uint64,
    rows: np.ndarray,
    infection_day: np.ndarray,
    susceptible: np.ndarray,
    memberships: np.ndarray,
    bases: np.ndarray,  # (chunks, K) uint64: per chunk of agents and slot, the least group id (`chunk_offsets`)
    offsets: np.ndarray,  # (N, K) uint16 or uint32: each agent's group ids less its chunk's bases
    slot_layer: np.ndarray,
    force: np.ndarray,
    totals: np.ndarray,
    inverse_size: np.ndarray,
    weight: np.ndarray,
    susceptibility: np.ndarray,
    factor: np.ndarray,
    protected: np.ndarray,
    kept: np.ndarray,
    new: np.ndarray,
    fresh: np.ndarray,
    by_setting: np.ndarray,
    slots: tuple,  # `unrolled_slots`
) -> None:
    """`_infect` for one draw (the same arguments, and the group ids as offsets for the rates): per chunk, the noise
    of all its agents (a vectorised loop), then every agent's rate without branches (the loop over the slots
    unrolled), then the new infections among the few candidates u < rate (`_infect_candidates`) and their split by
    setting (`_split_by_setting`). Branching on each agent's state costs more than computing the rates of infected
    agents too: the state is unpredictable once the epidemic has spread."""
    agents = infection_day.shape[1]
    scaled = factor.shape[0] > 0 or protected.shape[0] > 0
    group_force = force[:, 0]
    for chunk in numba.prange(new.shape[0]):
        exposure = np.zeros(by_setting.shape[2], dtype=np.float32)
        noise = np.empty(CHUNK, dtype=np.float32)
        rate = np.empty(CHUNK, dtype=np.float32)
        candidates = np.empty(CHUNK, dtype=np.int32)
        first = chunk * CHUNK
        count = min(agents, first + CHUNK) - first
        philox.fill_uniforms(key, rows[0], first // 4, (first + count + 3) // 4, noise, 0)
        groups, base = offsets[first : first + count], bases[chunk]  # unsigned: no test for negative indices
        psi = susceptibility[first : first + count]
        if scaled:  # ψ × factor before the rates' loop: a branch in it made the loop 5-10% slower
            factored = np.empty(count, dtype=np.float32)
            for k in range(count):
                factored[k] = psi[k] * _susceptibility_factor(day, 0, first + k, factor, protected, kept)
            psi = factored
        for k in range(count):
            total = group_force[base[0] + np.uint64(groups[k, 0])]
            for slot in range(1, len(slots) or memberships.shape[1]):
                total += group_force[base[slot] + np.uint64(groups[k, slot])]
            rate[k] = psi[k] * total
        _infect_candidates(day, chunk, 0, noise, rate, count, infection_day, susceptible, new, fresh, candidates)
        _split_by_setting(
            chunk, 0, memberships, slot_layer, totals, inverse_size, weight, new, fresh, by_setting, exposure
        )


@numba.njit(parallel=True, cache=True)
def _infect(
    day: int,
    key: np.uint64,
    rows: np.ndarray,  # (B,) int64: each draw's noise row (all 0 with common random numbers)
    infection_day: np.ndarray,  # (B, N) int32, updated in place
    susceptible: np.ndarray,  # (B, ⌈N / 8⌉) uint8: agent i of draw b is susceptible if bit i % 8 of byte i // 8 is set
    memberships: np.ndarray,  # (N, K) int32
    slot_layer: np.ndarray,  # (K,) int64
    force: np.ndarray,  # (G, `padded_draws(B)`) float32: totals × w_L / |g|, zero past the B draws
    totals: np.ndarray,  # (B, G) float32: the groups' infectiousness (the exposures by setting)
    inverse_size: np.ndarray,  # (G,) float32
    weight: np.ndarray,  # (B, L) float32
    susceptibility: np.ndarray,  # (N,) float32
    factor: np.ndarray,  # (B, N) float32, or (0, 0): none
    protected: np.ndarray,  # (2, B, N) int32: the days the doses protect from, or (0, 0, 0): `factor` (or none)
    kept: np.ndarray,  # (B, 2) float32: 1 − each dose's efficacy against infection (with `protected`)
    new: np.ndarray,  # (chunks, B) int64, out: the new infections per chunk
    fresh: np.ndarray,  # (chunks, B, CHUNK) int32, out: the new infections' offsets within their chunk
    by_setting: np.ndarray,  # (chunks, B, L) float32, zero on entry
    slots: tuple,  # `unrolled_slots`
) -> None:
    """Infects susceptible agents with probability 1 − exp(−rate), rate = ψ Σ_slots force (in slot order).

    Per chunk, first every agent's rates for all draws: its group ids read once, each group's forces for all draws
    added eight lanes at a time (`diffabm.simd`: LLVM left them scalar). Then draw by draw, as `_infect_one_draw`:
    the chunk's noise, the new infections (`_infect_candidates`) and their split by setting (`_split_by_setting`)."""
    draws, agents = infection_day.shape
    lanes = force.shape[1]
    if lanes % simd.LANES or lanes < draws:
        raise ValueError("_infect: the forces' columns must be padded_draws(draws)")
    scaled = factor.shape[0] > 0 or protected.shape[0] > 0
    for chunk in numba.prange(new.shape[0]):
        exposure = np.zeros(by_setting.shape[2], dtype=np.float32)
        noise = np.empty(CHUNK, dtype=np.float32)
        rate = np.empty((CHUNK, lanes), dtype=np.float32)  # agent-major, as the forces
        candidates = np.empty(CHUNK, dtype=np.int32)
        first = chunk * CHUNK
        count = min(agents, first + CHUNK) - first
        for k in range(count):
            agent = first + k
            group = memberships[agent, 0]
            for lane in range(0, lanes, simd.LANES):
                simd.copy_lanes(rate, k, force, group, lane)
            for slot in range(1, len(slots) or memberships.shape[1]):
                group = memberships[agent, slot]
                for lane in range(0, lanes, simd.LANES):
                    simd.add_lanes(rate, k, force, group, lane)
            psi = susceptibility[agent]
            if scaled:
                for draw in range(draws):
                    rate[k, draw] = (psi * _susceptibility_factor(day, draw, agent, factor, protected, kept)) * rate[
                        k, draw
                    ]
            else:
                for draw in range(draws):
                    rate[k, draw] = psi * rate[k, draw]
        for draw in range(draws):
            philox.fill_uniforms(key, rows[draw], first // 4, (first + count + 3) // 4, noise, 0)
            _infect_candidates(
                day, chunk, draw, noise, rate[:, draw], count, infection_day, susceptible, new, fresh, candidates
            )
            _split_by_setting(
                chunk, draw, memberships, slot_layer, totals, inverse_size, weight, new, fresh, by_setting, exposure
            )


def padded_draws(draws: int) -> int:
    """The forces' columns for `_infect`: the draws rounded up to whole `simd.LANES`."""
    return -(-draws // simd.LANES) * simd.LANES


# The histograms of `outputs.daily_outputs`, in the kernel's column order: name, (event day, weight) of each agent.
DAILY_COUNTS = (
    "exposed_in",  # infection day, infected
    "exposed_out",  # onset, infected
    "asymptomatic_in",  # onset, infected and asymptomatic
    "asymptomatic_out",  # end of the infectious days, infected and asymptomatic
    "cases",  # onset, symptomatic
    "symptomatic_out",  # end, symptomatic
    "hospitalisations",  # end, admitted
    "discharged",  # discharge, admitted
    "deaths",  # discharge, admitted and dies
)
COUNT_CHUNK = 65536  # agents per chunk of `_event_counts`


@numba.njit(parallel=True, cache=True)
def _event_counts(
    infection_day: np.ndarray,  # (B, N) int32, NEVER if not infected
    latent: np.ndarray,  # (B, N) int32
    infectious_days: np.ndarray,  # (B, N) int32
    stay: np.ndarray,  # (B, N) int32
    infected: np.ndarray,  # (B, N) float32
    symptomatic: np.ndarray,  # (B, N) float32
    hospitalised: np.ndarray,  # (B, N) float32
    dies: np.ndarray,  # (B, N) float32
    groups: tuple,  # per grouping, each agent's group (N,) int64
    offsets: np.ndarray,  # (groupings,) int64: a grouping's first column among the `columns`
    columns: int,  # groups of all groupings
    counts: np.ndarray,  # (chunks, B, days + 1, 9 + 4 × columns) float32, zero on entry; day `days`: later
) -> None:
    """Counts `DAILY_COUNTS` and each event (infections, cases, hospitalisations, deaths) by group, per chunk of
    agents, in one pass: the weights are those of `outputs.daily_outputs` (the same float32 products); hard
    estimators make them 0 or 1, so the sums are exact in any order (below 2**24 a cell)."""
    draws, agents = infected.shape
    days = counts.shape[2] - 1
    for chunk in numba.prange(counts.shape[0]):
        for draw in range(draws):
            cell = counts[chunk, draw]
            for agent in range(chunk * COUNT_CHUNK, min((chunk + 1) * COUNT_CHUNK, agents)):
                weight = infected[draw, agent]
                if weight == 0:
                    continue  # adds nothing to any cell
                symptomatic_weight = weight * symptomatic[draw, agent]
                asymptomatic_weight = weight - symptomatic_weight
                admitted = symptomatic_weight * hospitalised[draw, agent]
                died = admitted * dies[draw, agent]
                infection = np.int64(infection_day[draw, agent])
                onset = infection + latent[draw, agent]
                end = onset + infectious_days[draw, agent]
                discharge = end + stay[draw, agent]
                infection, onset, end, discharge = (
                    min(infection, days), min(onset, days), min(end, days), min(discharge, days)
                )  # fmt: skip
                cell[infection, 0] += weight
                cell[onset, 1] += weight
                cell[onset, 2] += asymptomatic_weight
                cell[end, 3] += asymptomatic_weight
                cell[onset, 4] += symptomatic_weight
                cell[end, 5] += symptomatic_weight
                cell[end, 6] += admitted
                cell[discharge, 7] += admitted
                cell[discharge, 8] += died
                for grouping in range(len(groups)):
                    column = 9 + offsets[grouping] + groups[grouping][agent]
                    cell[infection, column] += weight
                    cell[onset, column + columns] += symptomatic_weight
                    cell[end, column + 2 * columns] += admitted
                    cell[discharge, column + 3 * columns] += died


def event_counts(
    days: int,
    infection_day: Tensor,
    latent: Tensor,
    infectious_days: Tensor,
    stay: Tensor,
    infected: Tensor,
    symptomatic: Tensor,
    hospitalised: Tensor,
    dies: Tensor,
    groupings: Mapping[str, tuple[Tensor, int]],
) -> tuple[dict[str, Tensor], list[list[Tensor]]]:
    """`outputs.daily_outputs`' histograms (B, days) by name (`DAILY_COUNTS`), and each event's (infections, cases,
    hospitalisations, deaths) histograms (B, days, groups) per grouping, in the order of `groupings`."""
    _follow_torch_threads()
    sizes = [groups for _, groups in groupings.values()]
    offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
    columns = sum(sizes)
    draws, agents = infected.shape
    counts = np.zeros((max(1, -(-agents // COUNT_CHUNK)), draws, days + 1, 9 + 4 * columns), np.float32)
    _event_counts(
        *(_array(values, np.int32) for values in (infection_day, latent, infectious_days, stay)),
        *(_array(values, np.float32) for values in (infected, symptomatic, hospitalised, dies)),
        tuple(_array(group, np.int64) for group, _ in groupings.values()),
        offsets,
        columns,
        counts,
    )
    totals = torch.from_numpy(counts.sum(0)[:, :days]).to(device=infected.device, dtype=infected.dtype)
    daily = {name: totals[..., column] for column, name in enumerate(DAILY_COUNTS)}
    bounds = np.cumsum([0, *sizes])
    by_group = [
        [totals[..., 9 + event * columns + bounds[k] : 9 + event * columns + bounds[k + 1]] for k in range(len(sizes))]
        for event in range(4)
    ]
    return daily, by_group


@dataclass
class FusedLayers:
    """The contact layers as the kernels read them: group ids agent-major (N, K) (and slot-major, `slot_groups`),
    each slot's layer, each group's inverse size and layer. The agents without a group in slot k point to a sink of
    that slot alone (inverse size 0, after the groups), so that slots adding in parallel never add to one total."""

    memberships: np.ndarray
    slot_layer: np.ndarray
    inverse_size: np.ndarray
    group_layer: np.ndarray

    @functools.cached_property
    def slot_groups(self) -> np.ndarray:
        """The group ids slot-major (K, N), as the group totals' parts read them: built where they are used (fewer
        draws than threads; `prepared`), as they double the memberships' memory (4 bytes per agent and slot)."""
        return np.ascontiguousarray(self.memberships.T)

    @functools.cached_property
    def chunk_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """`_infect_one_draw`'s `bases` and `offsets` (`chunk_offsets`: half the memberships' bytes where every chunk's
        ids fit 16 bits, as many otherwise)."""
        return chunk_offsets(self.memberships)

    @classmethod
    def of(cls, contacts: ContactLayers) -> FusedLayers:
        sink = contacts.n_groups - 1  # `ContactLayers`' one sink, the last group
        slot_layer = np.asarray(contacts.slot_layer, dtype=np.int64)
        groups = contacts.slot_group.cpu().numpy()
        slot_groups = np.where(groups == sink, sink + np.arange(len(slot_layer))[:, None], groups).astype(np.int32)
        return cls(
            np.ascontiguousarray(slot_groups.T),
            slot_layer,
            np.concatenate([contacts.inverse_size.cpu().numpy()[:sink], np.zeros(len(slot_layer), np.float32)]),
            np.concatenate([contacts.group_layer.cpu().numpy()[:sink], slot_layer]).astype(np.int32),
        )

    def prepared(self, draws: int, threads: int) -> FusedLayers:
        """These layers, with what `draws` on `threads` will read built now (`chunk_offsets` for one draw;
        `slot_groups` if they have `parts`)."""
        if draws == 1:
            _ = self.chunk_offsets
        if self.parts(draws, threads)[0].shape[0]:
            _ = self.slot_groups
        return self

    def parts(self, draws: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """`_group_totals`' `parts` and `part_groups` for `draws` on `threads`: with fewer draws than threads, the
        layers in up to threads ÷ draws parts of about equal slot counts (a layer's slots, which may add to one
        group, in one part); else none (the draws in parallel)."""
        layers = list(dict.fromkeys(self.slot_layer.tolist()))
        count = min(threads // max(draws, 1), len(layers))
        if count < 2:
            return np.zeros((0, 0), np.int64), np.zeros((0, 0, 2), np.int64)
        slots_of = {layer: np.flatnonzero(self.slot_layer == layer).tolist() for layer in layers}
        members: list[list[int]] = [[] for _ in range(count)]  # each part's layers, the most slots first
        for layer in sorted(layers, key=lambda layer: -len(slots_of[layer])):
            min(members, key=lambda part: sum(len(slots_of[other]) for other in part)).append(layer)
        sink = len(self.group_layer) - len(self.slot_layer)
        slots = [[slot for layer in part for slot in slots_of[layer]] for part in members]
        ranges = [
            [
                *(np.searchsorted(self.group_layer[:sink], [layer, layer + 1]).tolist() for layer in part),
                *([sink + slot, sink + slot + 1] for slot in part_slots),
            ]
            for part, part_slots in zip(members, slots)
        ]
        parts = np.full((count, max(map(len, slots))), -1, np.int64)
        part_groups = np.zeros((count, max(map(len, ranges)), 2), np.int64)
        for index, (part_slots, part_ranges) in enumerate(zip(slots, ranges)):
            parts[index, : len(part_slots)] = part_slots
            part_groups[index, : len(part_ranges)] = part_ranges
        return parts, part_groups


def chunk_offsets(memberships: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The group ids (N, K) as the one-draw infection pass reads them: per chunk of `CHUNK` agents and slot, the
    least id (chunks, K) uint64, and each id less its chunk's (N, K), uint16 where every chunk's ids in every slot
    lie within 2^16 of their least, else uint32. Half the bytes the one-draw pass streams each day where they fit
    (16 MB at 10^6 agents and four slots; the toy population's chunks span at most 1,571 household, 38,065 school
    and 26,879 workplace ids), which took its rates from 1.03 to 0.64 ms a day on a replay. The pass over several
    draws reads the int32 ids: it spends its time adding the draws' forces, and was 6-28% slower with the offsets
    (BENCHMARKS.md, "Candidates without a branch; group ids as offsets")."""
    agents, slots = memberships.shape
    if agents == 0:
        return np.zeros((1, slots), np.uint64), memberships.astype(np.uint32)
    starts = np.arange(0, agents, CHUNK)
    bases = np.minimum.reduceat(memberships, starts, axis=0)
    span = (np.maximum.reduceat(memberships, starts, axis=0) - bases).max(initial=0)
    offsets = np.empty(memberships.shape, np.uint16 if span < 2**16 else np.uint32)
    whole = agents // CHUNK * CHUNK  # the whole chunks as (chunks, CHUNK, K), then the rest: no (N, K) temporaries
    np.subtract(
        memberships[:whole].reshape(-1, CHUNK, slots),
        bases[: whole // CHUNK, None],
        out=offsets[:whole].reshape(-1, CHUNK, slots),
        casting="unsafe",
    )
    np.subtract(memberships[whole:], bases[whole // CHUNK :], out=offsets[whole:], casting="unsafe")
    return bases.astype(np.uint64), offsets


def _follow_torch_threads() -> None:
    """The kernels run on as many threads as torch (the job's `threads`), within Numba's pool."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _array(values: Tensor, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(values.detach().cpu().numpy(), dtype=dtype)


def kernel_dose_days(state: _DayState, draws: int, agents: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' `protected` (2, B, N), the days from which each agent's doses protect (`_NEVER`: never), and
    `kept` (B, 2), 1 − each dose's efficacy against infection, where the kernels pick the day's susceptibility
    factor themselves: a vaccine without waning and no `transmission_by_<grouping>` control (a dozen tensor passes
    over the agents a day saved; `VaccineProtection.susceptibility_factor` computes the same floats, as
    1 − (e·1 + e'·0)). Else empty, and the factor comes from `state.susceptibility_factor`."""
    vaccine = state.vaccine
    if vaccine is None or vaccine.vaccination.waning_half_life_days is not None or state.group_transmission:
        return np.zeros((0, 0, 0), np.int32), np.zeros((0, 2), np.float32)
    delay = vaccine.vaccination.effect_delay_days
    protected = np.empty((2, draws, agents), np.int32)
    for dose, days in enumerate((vaccine.first, vaccine.second)):
        days = _array(days.expand(draws, agents), np.int32)
        protected[dose] = np.where(days != vaccine.never, days + delay, _NEVER)
    return protected, _array((1.0 - vaccine.efficacy_infection).expand(draws, 2), np.float32)


def _reserve(buffer: np.ndarray, size: int) -> np.ndarray:
    """`buffer` if it holds `size` rows, else a new one of at least 1.5 times its rows: the daily active lists
    reuse two buffers instead of mapping fresh memory each day (64 MB a day at 16 draws × 10^6 agents, faulted in
    4 KiB or 2 MiB pages on first touch)."""
    if buffer.shape[0] >= size:
        return buffer
    return np.empty((max(size, buffer.shape[0] * 3 // 2), *buffer.shape[1:]), buffer.dtype)


def transmission_days(
    state: _DayState, layers: FusedLayers, infection_day: Tensor, weights: Tensor, first: int, last: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Days `first`..`last` − 1 as `EpidemicModel._transmission_days` computes them without gradients: the infected
    (B, N) and infection days after them, each day's new infections (B, k) and infections by setting (B, k, L)."""
    model = state.model
    _follow_torch_threads()
    day_of_infection = np.array(infection_day.detach().cpu().numpy(), np.int32, order="C")  # a copy: updated in place
    draws, agents = day_of_infection.shape
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
    infected_at_start = day_of_infection != _NEVER
    active = (np.flatnonzero(infected_at_start) % agents).astype(np.int32)  # per draw, ascending
    merged = np.empty(0, np.int32)  # the next day's active list: the two swap, and grow when they must
    parts, part_groups = layers.parts(draws, numba.get_num_threads())
    listed_agents, listed_values = np.empty(0, np.int32), np.empty((0, 2), np.float32)  # with `parts`: swap-free
    n_segments = min(numba.get_num_threads() // draws, chunks) if parts.shape[0] else 1  # lists per draw
    segments = np.arange(n_segments + 1, dtype=np.int64) * chunks // n_segments  # none empty: S ≤ chunks
    listed_counts = np.zeros(draws * n_segments, np.int64)
    bounds = np.minimum(segments * CHUNK, agents)
    counts = np.stack([infected_at_start[:, a:b].sum(1) for a, b in itertools.pairwise(bounds)], 1).reshape(-1)
    begins = np.cumsum(counts) - counts
    totals = np.empty((draws, layers.inverse_size.shape[0]), np.float32)
    force = np.zeros((totals.shape[1], padded_draws(draws) if draws > 1 else 1), np.float32)
    fresh = np.empty((chunks, draws, CHUNK), np.int32)
    new = np.zeros((chunks, draws), np.int64)
    susceptible = np.packbits(~infected_at_start, axis=1, bitorder="little")  # bit i % 8 of byte i // 8: agent i
    infect, slots = (_infect if draws > 1 else _infect_one_draw), unrolled_slots(layers.memberships.shape[1])
    group_ids = (layers.memberships,) if draws > 1 else (layers.memberships, *layers.chunk_offsets)
    protected, kept = kernel_dose_days(state, draws, agents)
    for index, day in enumerate(range(first, last)):
        weight = _array(weights[:, day], np.float32)
        room = counts + np.add.reduceat(new, segments[:-1], axis=0).T.reshape(-1)
        size = int(room.sum())
        merged, merged_counts = _reserve(merged, size), np.empty(draws * n_segments, np.int64)
        if parts.shape[0]:
            listed_agents, listed_values = _reserve(listed_agents, size), _reserve(listed_values, size)
        merged_begins = np.cumsum(room) - room
        _group_totals(
            day,
            active,
            begins,
            counts,
            segments,
            fresh,
            new,
            day_of_infection,
            layers.memberships,
            layers.slot_groups if parts.shape[0] else _NO_GROUPS,
            slot_isolating,
            profile,
            *course.values(),
            state.isolating,
            parts,
            part_groups,
            listed_agents,
            listed_values,
            listed_counts,
            totals,
            merged,
            merged_begins,
            merged_counts,
        )
        active, merged, begins, counts = merged, active, merged_begins, merged_counts
        _forces(totals, layers.inverse_size, layers.group_layer, weight, force)
        factor = None if protected.shape[0] else state.susceptibility_factor(day)
        factor = np.zeros((0, 0), np.float32) if factor is None else _array(factor.expand(draws, agents), np.float32)
        new = np.empty((chunks, draws), np.int64)
        by_chunk = np.zeros((chunks, draws, n_layers), np.float32)
        key = np.uint64(stable_seed(state.seed, f"day{day}"))
        infect(
            day,
            key,
            rows,
            day_of_infection,
            susceptible,
            *group_ids,
            layers.slot_layer,
            force,
            totals,
            layers.inverse_size,
            weight,
            susceptibility,
            factor,
            protected,
            kept,
            new,
            fresh,
            by_chunk,
            slots,
        )
        daily_new[:, index] = new.sum(0)
        by_setting[:, index] = by_chunk.sum(0)
    device = infection_day.device
    infection_day = torch.from_numpy(day_of_infection).to(device=device, dtype=infection_day.dtype)
    infected = (infection_day != NEVER).to(weights.dtype)
    new, by_setting = (
        torch.from_numpy(array).to(device=device, dtype=weights.dtype) for array in (daily_new, by_setting)
    )
    return infected, infection_day, new, by_setting


def kernel_cache() -> Path:
    """Where Numba keeps this module's compiled kernels: the package's `__pycache__`, a directory under
    `NUMBA_CACHE_DIR` if set, or the user's cache where the package's directory is read-only (Numba's own choice,
    read from a kernel's cache; the `__pycache__` if this Numba does not say)."""
    cache_path = getattr(getattr(_group_totals, "_cache", None), "_cache_path", None)
    return Path(cache_path) if cache_path else Path(__file__).parent / "__pycache__"


# Before any kernel is loaded (on its first call): kernels compiled with older inlined modules go.
drop_stale_kernels(kernel_cache(), [Path(module.__file__) for module in (philox, simd, transmission)])
