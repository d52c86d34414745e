"""The memory study of automatic differentiation (study `ad-memory`; Quera-Bofarull et al. 2023, GradABM-JUNE,
Fig. 3): peak memory per agent and wall time of one gradient of the epidemic model against the number of days,
for each AD mode of `diffabm.models.autodiff`, extrapolated to England (53 M agents, 300 days).

One measurement: the study's model on a toy population of `ad_memory.agents` agents, one draw, T days; every
parameter a leaf; `AutoDiff(mode, segment_days, tangents_per_pass=1).simulate` (forward mode one `jvp` per
parameter, as in the paper; batched tangents add about 20-24 bytes per agent each, BENCHMARKS.md), then the gradient of
the total infections in all parameters (`no_gradient`: the simulation alone, for reference). Its peak memory is the
rise of the process's resident set (VmHWM, reset through /proc/self/clear_refs) over the resident set before it,
each measurement in a fresh worker process (after a tiny warm-up run) whose allocator returns freed memory at once
(glibc `mallopt`: every block of ≥ 4 KiB is its own mapping, unmapped when freed), so that the peak follows the live
memory and not the history of a heap (fresh workers agree to within 0.3%, BENCHMARKS.md). As a check, the peak of
the live tensors' bytes (torch's profiler) is stored beside it. Part of a peak does not grow with the population
(the autograd graph's nodes, Python objects: a few MB at 200 days); with `ad_memory.small_agents`, every cell is
measured on a small population too, and the memory per agent is the difference of the two peaks over the difference
in agents, the rest the fixed bytes. Wall times, the median of `ad_memory.repeats` runs, are measured in this
process with the ordinary allocator, beside the CPU time of all threads.

Fits, memory per agent against T, least squares: reverse mode a + b·T (every day's state is kept), checkpointed
reverse mode a + b·√T (√T kept segment starts and one recomputed segment of √T days; a + b·T for a fixed
`segment_days`), forward mode and the simulation without gradients a (nothing grows with the days). England:
`england_agents` × (a + b·f(`england_days`)); the fixed bytes are left out (MB against GB).
The paper reports about 5 TB (reverse) and 18 GB (forward) for England with GradABM-JUNE.

References:
    Quera-Bofarull, Dyer, Calinescu & Wooldridge (2023), "Some challenges of calibrating differentiable
    agent-based models", ICML 2023 Differentiable Almost Everything workshop, Fig. 3.
    Chen, Xu, Zhang & Guestrin (2016), "Training deep nets with sublinear memory cost", arXiv:1604.06174.

Example:
    >>> form, a, b, residual = fit_memory(np.array([10, 20, 40]), np.array([120.0, 220.0, 420.0]), "reverse", None)
    >>> form, round(a, 6), round(b, 6), residual < 1e-9
    ('a + b·T', 20.0, 10.0, True)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from diffabm.build import build_model
from diffabm.models.autodiff import AD_MODES, AutoDiff
from diffabm.models.base import Simulator
from diffabm.population.toy import toy_population
from diffabm.store import as_object_strings, atomic_write_text, write_dataset

log = logging.getLogger(__name__)
NO_GRADIENT = "no_gradient"
MODES = (*AD_MODES, NO_GRADIENT)
OUTPUT = "new_infections"  # y = total infections over the days
PAPER_ENGLAND_GB = {"reverse": 5000.0, "forward": 18.0}  # Quera-Bofarull et al. 2023, Fig. 3
CURVE_POINTS = 100  # days at which the fits are stored for the figure
WARMUP_AGENTS, WARMUP_DAYS = 200, 3  # a tiny run per mode first: lazy initialisation is no part of a peak
MMAP_THRESHOLD = 4096  # bytes: blocks at least this large are mapped and unmapped when freed
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
GB = 1e9


@dataclass(frozen=True)
class Settings:
    """The study's `ad_memory:` section (conf/experiment/ad-memory.yaml)."""

    agents: int
    small_agents: int | None
    days: tuple[int, ...]
    modes: tuple[str, ...]
    segment_days: int | None
    repeats: int
    england_agents: float
    england_days: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Settings:
        section = cfg.get("ad_memory")
        if section is None:
            raise ValueError(f"study {cfg.study!r} has no `ad_memory:` section (agents, days, modes, ...)")
        days = tuple(sorted(int(day) for day in section.days))
        if len(set(days)) < 2:
            raise ValueError(f"ad_memory.days is {list(section.days)}, expected at least two different days to fit")
        unknown = [mode for mode in section.modes if mode not in MODES]
        if unknown:
            raise ValueError(f"ad_memory.modes has {unknown[0]!r}, expected modes of {list(MODES)}")
        small = section.small_agents
        if small is not None and not 0 < int(small) < int(section.agents):
            raise ValueError(
                f"ad_memory.small_agents is {small}, expected null or fewer than ad_memory.agents = {section.agents}"
            )
        segment = section.segment_days
        return cls(
            int(section.agents),
            None if small is None else int(small),
            days,
            tuple(str(mode) for mode in section.modes),
            None if segment is None else int(segment),
            int(section.repeats),
            float(section.england_agents),
            int(section.england_days),
        )


def model_for_days(cfg: DictConfig, population, days: int) -> Simulator:
    """The study's model over `days` days with one draw, without the study's interventions: they are dated within
    the study's own days and may read agents' attributes (e.g. vaccine uptake) that the toy populations lack."""
    variant = cfg.copy()
    with read_write(variant), open_dict(variant):
        variant.model.days = int(days)
        variant.model.draws = 1
        if "interventions" in variant.model:
            variant.model.interventions = []
    model = build_model(variant, population)
    if OUTPUT not in model.observables:
        raise ValueError(f"ad-memory: model {cfg.model._target_} has no {OUTPUT!r} output to differentiate")
    return model


def differentiate(model: Simulator, mode: str, segment_days: int | None, seed: int) -> None:
    """One measurement: every parameter a leaf, the simulation in `mode` and the gradient of the total
    infections in all parameters; `no_gradient`: the simulation alone."""
    leaves = {
        name: value.detach().clone().requires_grad_(mode != NO_GRADIENT)
        for name, value in model.natural_parameters(1).items()
    }
    if mode == NO_GRADIENT:
        with torch.no_grad():
            model.simulate(leaves, seed)
        return
    output = AutoDiff(mode, segment_days, tangents_per_pass=1).simulate(model, leaves, seed)
    torch.autograd.grad(output[OUTPUT].sum(), list(leaves.values()), allow_unused=True)


def _status_bytes(key: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def peak_rss_rise(run: Callable[[], None]) -> int:
    """Bytes by which the resident set's peak during `run` exceeds the resident set before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_bytes("VmRSS")
    run()
    return _status_bytes("VmHWM") - before


def tensor_peak_bytes(run: Callable[[], None]) -> int:
    """The peak of the bytes of live tensors allocated during `run` (torch's profiler, memory events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    return int(np.cumsum([size for _, size in events]).max(initial=0))


def return_freed_memory_at_once() -> None:
    """glibc: serve every block of ≥ `MMAP_THRESHOLD` bytes by its own mapping, unmapped when freed, and trim the
    heap at every free, so that the resident set follows the live memory (this process only)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, 0)):
        raise RuntimeError("ad-memory: glibc's mallopt refused the allocator settings the memory measurement needs")


def check_platform() -> None:
    """The memory measurement needs Linux's /proc/self/clear_refs (to reset the peak resident set)."""
    if not Path("/proc/self/clear_refs").exists():
        raise RuntimeError(
            f"ad-memory: the peak memory measurement needs Linux (/proc/self/clear_refs), not found on {sys.platform}"
        )


def measure_peak(job: Mapping) -> int:
    """The worker's part, in a fresh process: the peak RSS rise of one measurement of `job` (config, agents, mode,
    days, segment_days, threads), after a tiny warm-up run of the same mode."""
    return_freed_memory_at_once()
    torch.set_num_threads(int(job["threads"]))
    cfg = OmegaConf.create(job["config"])
    seed, mode, segment_days = int(cfg.seed), str(job["mode"]), job["segment_days"]
    warm_up(cfg, [mode])
    model = model_for_days(cfg, toy_population(int(job["agents"]), seed=seed), int(job["days"]))
    return peak_rss_rise(lambda: differentiate(model, mode, segment_days, seed))


def warm_up(cfg: DictConfig, modes: Sequence[str]) -> None:
    """One tiny run per mode: torch's lazy initialisation (kernels, functorch, checkpointing: tens of MB) is no
    part of any measurement. Checkpointed in segments of ≈ √3 days, so that checkpointing runs whatever the
    study's `segment_days`."""
    model = model_for_days(cfg, toy_population(WARMUP_AGENTS, seed=int(cfg.seed)), WARMUP_DAYS)
    for mode in modes:
        differentiate(model, mode, None, int(cfg.seed))


def memory_in_workers(cfg: DictConfig, settings: Settings) -> list[dict]:
    """Per mode, days and population size (`agents`, `small_agents`), the peak RSS rise of one measurement in its
    own fresh process (`python -m diffabm.studies.ad_memory`, the job as JSON on stdin, the peak on stdout; its
    log goes to this process's stderr): a process's freed but still resident memory would otherwise serve part of
    a later measurement. As many workers at a time as this process has torch threads (memory, unlike time, is
    not shared)."""
    threads = torch.get_num_threads()
    config = OmegaConf.to_container(cfg, resolve=True)
    sizes = [settings.agents] + ([settings.small_agents] if settings.small_agents else [])
    cells = [(mode, days, agents) for days in settings.days for mode in settings.modes for agents in sizes]

    def worker(cell: tuple[str, int, int]) -> int:
        mode, days, agents = cell
        job = {
            "config": config,
            "agents": agents,
            "mode": mode,
            "days": days,
            "segment_days": settings.segment_days,
            "threads": threads,
        }
        result = subprocess.run(
            [sys.executable, "-m", "diffabm.studies.ad_memory"],
            input=json.dumps(job),
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(
                f"ad-memory: the memory worker of {mode}, {days} days, {agents} agents failed with "
                f"exit code {result.returncode} (see the log)"
            )
        return int(result.stdout)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        peaks = list(pool.map(worker, cells))
    return [
        {"mode": mode, "days": days, "agents": agents, "peak_bytes": peak}
        for (mode, days, agents), peak in zip(cells, peaks)
    ]


def time_and_tensor_peaks(cfg: DictConfig, settings: Settings) -> list[dict]:
    """In this process: per mode and days, the wall and CPU time (all threads) of each repeat, the modes taken in
    turn within each repeat (a change in the machine's load hits all of them alike), and the live tensors' peak
    of one run."""
    warm_up(cfg, settings.modes)
    population = toy_population(settings.agents, seed=int(cfg.seed))
    rows = []
    for days in settings.days:
        model = model_for_days(cfg, population, days)
        runs = {
            mode: functools.partial(differentiate, model, mode, settings.segment_days, int(cfg.seed))
            for mode in settings.modes
        }
        seconds = {mode: [] for mode in runs}
        cpu_seconds = {mode: [] for mode in runs}
        for _ in range(settings.repeats):
            for mode, run in runs.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                run()
                seconds[mode].append(time.perf_counter() - start)
                cpu_seconds[mode].append(time.process_time() - cpu_start)
        for mode, run in runs.items():
            rows.append(
                {
                    "mode": mode,
                    "days": days,
                    "seconds": seconds[mode],
                    "cpu_seconds": cpu_seconds[mode],
                    "tensor_peak_bytes": tensor_peak_bytes(run),
                }
            )
            log.info(
                "ad-memory %s, %d days: median %.2f s (%.2f s of CPU) over %d runs",
                mode,
                days,
                np.median(seconds[mode]),
                np.median(cpu_seconds[mode]),
                settings.repeats,
            )
    return rows


def fit_memory(
    days: np.ndarray, bytes_per_agent: np.ndarray, mode: str, segment_days: int | None
) -> tuple[str, float, float, float]:
    """(form, a, b, largest relative residual) of the least-squares fit of bytes per agent against the days T:
    reverse a + b·T, checkpointed a + b·√T (a + b·T for a fixed segment length), the others a."""
    days, values = np.asarray(days, dtype=float), np.asarray(bytes_per_agent, dtype=float)
    form, feature = fit_form(mode, segment_days)
    if feature is None:
        a, b = float(values.mean()), 0.0
    else:
        b, a = (float(c) for c in np.polyfit(feature(days), values, 1))
    fitted = fitted_bytes_per_agent(mode, a, b, days, segment_days)
    return form, a, b, float(np.max(np.abs(values - fitted) / np.abs(values)))


def fit_form(mode: str, segment_days: int | None) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None]:
    """The fitted form of `mode`'s bytes per agent and its feature of T (None: a constant)."""
    if mode == "reverse" or (mode == "checkpointed" and segment_days is not None):
        return "a + b·T", lambda days: days
    if mode == "checkpointed":
        return "a + b·√T", np.sqrt
    return "a", None


def ad_memory_dataset(memory: Sequence[dict], timing: Sequence[dict], settings: Settings) -> xr.Dataset:
    """Measurements (mode, days[, repeat]), memory per agent (per 1,000 agents), and per mode the fit and
    England's GB."""
    modes, days, repeats = list(settings.modes), list(settings.days), np.arange(settings.repeats)

    def grid(rows: Sequence[dict], key: str, agents: int | None = None) -> np.ndarray:
        table = {(row["mode"], row["days"]): row[key] for row in rows if agents is None or row["agents"] == agents}
        return np.array([[table[(mode, day)] for day in days] for mode in modes], dtype=float)

    peak, tensor_peak = grid(memory, "peak_bytes", settings.agents), grid(timing, "tensor_peak_bytes")
    seconds, cpu_seconds = grid(timing, "seconds"), grid(timing, "cpu_seconds")
    dims = ("mode", "days")
    ds = xr.Dataset(
        {
            "seconds_by_repeat": ((*dims, "repeat"), seconds),
            "cpu_seconds_by_repeat": ((*dims, "repeat"), cpu_seconds),
            "peak_bytes": (dims, peak),
            "total_mb_per_1000_agents": (dims, peak / settings.agents * 1000 / 1e6),
            "tensor_peak_bytes": (dims, tensor_peak),
            "tensor_mb_per_1000_agents": (dims, tensor_peak / settings.agents * 1000 / 1e6),
            "seconds": (dims, np.median(seconds, axis=-1)),
            "cpu_seconds": (dims, np.median(cpu_seconds, axis=-1)),
        },
        coords={"mode": as_object_strings(modes), "days": np.asarray(days), "repeat": repeats},
    )
    if settings.small_agents:
        small_peak = grid(memory, "peak_bytes", settings.small_agents)
        per_agent = (peak - small_peak) / (settings.agents - settings.small_agents)
        ds["small_peak_bytes"] = (dims, small_peak)
        ds["fixed_bytes"] = (dims, peak - settings.agents * per_agent)
    else:
        per_agent = peak / settings.agents
    ds["mb_per_1000_agents"] = (dims, per_agent * 1000 / 1e6)
    fits = [fit_memory(np.asarray(days), per_agent[i], mode, settings.segment_days) for i, mode in enumerate(modes)]
    ds["fit_form"] = ("mode", as_object_strings([form for form, *_ in fits]))
    ds["fit_a_bytes_per_agent"] = ("mode", np.array([a for _, a, _, _ in fits]))
    ds["fit_b_bytes_per_agent"] = ("mode", np.array([b for _, _, b, _ in fits]))
    ds["fit_max_relative_residual"] = ("mode", np.array([residual for *_, residual in fits]))
    curve_days = np.linspace(days[0], days[-1], CURVE_POINTS)
    ds["fit_mb_per_1000_agents"] = (
        ("mode", "curve_days"),
        np.array(
            [
                fitted_bytes_per_agent(mode, a, b, curve_days, settings.segment_days) * 1000 / 1e6
                for mode, (_, a, b, _) in zip(modes, fits)
            ]
        ),
    )
    ds = ds.assign_coords(curve_days=curve_days)
    ds["england_gb"] = (
        "mode",
        np.array(
            [
                settings.england_agents
                * fitted_bytes_per_agent(mode, a, b, settings.england_days, settings.segment_days)
                / GB
                for mode, (_, a, b, _) in zip(modes, fits)
            ]
        ),
    )
    ds["paper_england_gb"] = ("mode", np.array([PAPER_ENGLAND_GB.get(mode, np.nan) for mode in modes]))
    ds.attrs.update(
        agents=settings.agents,
        small_agents=settings.small_agents or "none",
        repeats=settings.repeats,
        threads=torch.get_num_threads(),
        segment_days="sqrt(T)" if settings.segment_days is None else settings.segment_days,
        england_agents=settings.england_agents,
        england_days=settings.england_days,
        paper="Quera-Bofarull et al. 2023, Fig. 3 (GradABM-JUNE, England): reverse ~5 TB, forward ~18 GB",
        peak_bytes="peak resident-set rise of one simulation + gradient in a fresh worker process after a tiny "
        "warm-up, glibc mmap threshold 4 KiB (freed memory returned at once)",
        mb_per_1000_agents="memory per 1,000 agents: (peak_bytes - small_peak_bytes) / (agents - small_agents) "
        "with small_agents, else peak_bytes / agents; fixed_bytes the rest",
        tensor_peak_bytes="peak of live tensor bytes of one run (torch profiler memory events)",
        seconds="median wall time over repeats, ordinary allocator",
        cpu_seconds="median CPU time of the process (all threads) over repeats",
        fit="bytes per agent = a + b·f(T), least squares; reverse f = T, checkpointed f = √T (T for a fixed "
        "segment_days), forward and no_gradient a only; england_gb = england_agents × (a + b·f(england_days))",
    )
    return ds


def fitted_bytes_per_agent(mode: str, a: float, b: float, days, segment_days: int | None) -> np.ndarray:
    """The fit of `mode`'s bytes per agent at `days`."""
    _, feature = fit_form(mode, segment_days)
    days = np.asarray(days, dtype=float)
    return a + (np.zeros_like(days) if feature is None else b * feature(days))


def measurement_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per mode and days: peaks in MB, memory per 1,000 agents (per agent, all memory, tensors), fixed
    MB (with `small_agents`), wall and CPU seconds."""
    columns = ["mb_per_1000_agents", "total_mb_per_1000_agents", "tensor_mb_per_1000_agents", "seconds", "cpu_seconds"]
    table = ds[
        [*columns, *(name for name in ("peak_bytes", "small_peak_bytes", "fixed_bytes") if name in ds)]
    ].to_dataframe()
    for name in ("peak_bytes", "small_peak_bytes", "fixed_bytes"):
        if name in table:
            table[name.replace("bytes", "mb")] = table.pop(name) / 1e6
    table.insert(0, "agents", int(ds.attrs["agents"]))
    return table.reset_index()


def england_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per mode: the fit and the England extrapolation beside the paper's."""
    return (
        ds[
            [
                "fit_form",
                "fit_a_bytes_per_agent",
                "fit_b_bytes_per_agent",
                "fit_max_relative_residual",
                "england_gb",
                "paper_england_gb",
            ]
        ]
        .to_dataframe()
        .reset_index()
    )


def write_ad_memory(cfg: DictConfig, output_path: str | Path) -> Path:
    """Stage `ad-memory`: measure every mode × days of `ad_memory:` and write `ad_memory.zarr` (with provenance),
    and beside it `ad_memory.csv` (the measurements) and `ad_memory_england.csv` (fits and extrapolation)."""
    check_platform()
    settings = Settings.from_config(cfg)
    output_path = Path(output_path)
    log.info(
        "ad-memory: %d agents (and %s), days %s, modes %s, %d repeats",
        settings.agents,
        settings.small_agents,
        list(settings.days),
        list(settings.modes),
        settings.repeats,
    )
    memory = memory_in_workers(cfg, settings)
    load_before = os.getloadavg()[0]
    timing = time_and_tensor_peaks(cfg, settings)
    ds = ad_memory_dataset(memory, timing, settings)
    ds.attrs["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before and after the timed runs
    for mode in settings.modes:
        row = ds.sel(mode=mode)
        log.info(
            "ad-memory %s: MB per 1,000 agents %s; bytes/agent = %s, a = %.4g, b = %.4g; England %.4g GB",
            mode,
            np.round(row.mb_per_1000_agents.values, 3).tolist(),
            row.fit_form.item(),
            row.fit_a_bytes_per_agent,
            row.fit_b_bytes_per_agent,
            row.england_gb,
        )
    atomic_write_text(output_path.with_suffix(".csv"), measurement_table(ds).to_csv(index=False, float_format="%.6g"))
    atomic_write_text(
        output_path.with_name(f"{output_path.stem}_england.csv"),
        england_table(ds).to_csv(index=False, float_format="%.6g"),
    )
    return write_dataset(ds, output_path, cfg, int(cfg.seed))


if __name__ == "__main__":  # a memory worker of `memory_in_workers`
    print(measure_peak(json.load(sys.stdin)))
