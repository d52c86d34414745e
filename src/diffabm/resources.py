"""Memory a simulation will need, estimated before it allocates, so that an oversized run stops with a
clear error instead of being killed by the kernel without a word.

The per-agent constants are measured peaks (BENCHMARKS.md, "Memory per agent"): 200,000 toy agents,
1 and 4 draws, 50 and 100 days, `ru_maxrss` above the process's baseline.
"""

from __future__ import annotations

BYTES_PER_AGENT_DRAW = 400.0  # states, durations, noise and daily series of one draw
BYTES_PER_AGENT_DRAW_DAY = 2.5  # without gradients: per-day outputs
BYTES_PER_AGENT_DRAW_DAY_ADJOINT = 24.0  # with gradients: the adjoint's rates and group totals of each day
BYTES_PER_AGENT_DRAW_TANGENT = 50.0  # forward mode: each tangent more in a pass (22-24 measured, flat in the days)
GB = 1e9


def estimated_peak_bytes(agents: int, draws: int, days: int, gradients: bool) -> float:
    """Peak bytes of one simulation of `draws` draws of `agents` agents over `days` days."""
    per_day = BYTES_PER_AGENT_DRAW_DAY_ADJOINT if gradients else BYTES_PER_AGENT_DRAW_DAY
    return agents * draws * (BYTES_PER_AGENT_DRAW + per_day * days)


def available_bytes() -> float:
    """Memory available to this process now (psutil's `available`)."""
    import psutil

    return float(psutil.virtual_memory().available)


def tangents_that_fit(agents: int, draws: int, days: int, tangents: int, limit_gb: float | None = None) -> int:
    """How many of `tangents` forward-mode tangents one pass can carry beside the simulation without gradients
    (`limit_gb`, or if None what is available), at least one."""
    room = (limit_gb * GB if limit_gb is not None else available_bytes()) - estimated_peak_bytes(
        agents, draws, days, gradients=False
    )
    return max(1, min(tangents, 1 + int(room // max(agents * draws * BYTES_PER_AGENT_DRAW_TANGENT, 1.0))))


def check_memory(agents: int, draws: int, days: int, gradients: bool, limit_gb: float | None = None) -> None:
    """Raise MemoryError naming `model.draws` when the estimate exceeds `limit_gb` (or, if None, what is available)."""
    need = estimated_peak_bytes(agents, draws, days, gradients)
    limit = limit_gb * GB if limit_gb is not None else available_bytes()
    if need > limit:
        source = "resources.max_memory_gb" if limit_gb is not None else "available memory"
        kind = "with gradients" if gradients else "without gradients"
        raise MemoryError(
            f"a simulation of {draws} draws × {agents:,} agents × {days} days {kind} needs about "
            f"{need / GB:.1f} GB, more than the {limit / GB:.1f} GB of {source}: lower model.draws "
            f"(or the calibration's draws_per_step, replicates, fit_draws)"
        )
