"""AgentTorch 0.6.0's Astoria population and contact network loaded into diffabm (issue 17), and the epidemic
curves of both side by side.

Astoria (`agent_torch/populations/astoria`, installed in the peers' AgentTorch venv) is 37,518 agents with an age
group each (`age.pickle`), one area, no households (the household ids in `all_county_mix/` belong to a different,
541,516-agent county population), 45 initially exposed agents (`disease_stages.csv`) and the contact network
AgentTorch's COVID model passes messages over (`mobility_networks/0.csv`: 136,378 undirected edges, 6 of them
self-loops; mean degree 7.3, maximum 74, 6,480 agents without a contact; clustering 0.0008, so no cliques to
turn into groups).

Mapping into diffabm's `Agents` protocol (`diffabm.models.epidemic.contacts`):
- `age`: AgentTorch's age code (0..5, read by its model as U19, 20t29, 30t39, 40t49, 50t64, 65A: its child/adult/
  elderly split and its susceptibility table use that order; `mapping.json` lists the same labels in another
  order) becomes a year drawn uniformly within the band (65A: 65..89), seeded.
- `groups`: every edge is a group of two. diffabm numbers a layer's groups below N, so the 136,372 edges (self-
  loops dropped) are spread over `LAYERS` = 4 layers `contact0..contact3` of at most N edges each. Each is an
  (N, K) membership array (-1 padding); edges are assigned greedily so that every agent's edges spread evenly
  over the layers (sum of K: 74, the maximum degree). All four layers get the same β, so the
  layers only work around the id limit. A susceptible agent i in pair {i, j} gets β/2 · T_j per day, which is
  AgentTorch's per-edge hazard with β/2 in place of its R · S_i · A_j / Ī.
- `area`: 0 for all (one area); no community layer: AgentTorch has no transmission outside the network.
- seeding: `systematic` with `initial_fraction` = 45/N, so every run seeds exactly 45 agents as AgentTorch does,
  but diffabm picks random agents (AgentTorch's 45 are fixed; diffabm cannot seed chosen agents).

The disease course is diffabm's default (latent, presymptomatic/asymptomatic infectiousness on the same
Gamma(mean 5.5, sd 2.4) generation profile AgentTorch uses, age-specific susceptibility). β is `BETA_CONTACT` = 5.5,
chosen on a grid (`calibrate`) so that diffabm's 21-day curve matches AgentTorch's COVID model with its isolation
draw switched off (peers.py's `agenttorch-covid-noisolation`: 77% infected, peak on day 15): diffabm's peak day
and height match, its attack rate is 0.73 (β 6.5 matches the attack rate but peaks 2 days early). AgentTorch as
shipped has no epidemic to match: its heuristic isolation draw makes new exposures fractional, and those never
transmit (see peers.py). AgentTorch step t is diffabm day t (both at infectiousness-profile index t for the
initial cases); day 0 holds the 45 initial cases.

Usage (writes benchmarks/results/astoria_curves.csv and astoria_curves.png from peers_rounds.csv):
  .venv/bin/python benchmarks/astoria.py curves [--rounds-csv benchmarks/results/peers_rounds.csv]
  .venv/bin/python benchmarks/astoria.py calibrate --target 0.77 --betas 4 5 5.5 6 6.5 8
Never imported by the package or its tests.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
VENV_DIR = Path(os.environ.get("DIFFABM_PEERS_VENV_DIR", "/tmp/diffabm-peers"))
N_ASTORIA, DAYS, INITIAL_INFECTED = 37_518, 21, 45
LAYERS = 4
AGE_BANDS = ((0, 20), (20, 30), (30, 40), (40, 50), (50, 65), (65, 90))  # AgentTorch's codes 0..5, years [lo, hi)
BETA_CONTACT = 5.5  # per pair layer; see `calibrate`: the 21-day curve of AgentTorch without isolation


def astoria_dir(venv_dir: Path = VENV_DIR) -> Path:
    """AgentTorch's Astoria folder in the peers' AgentTorch venv."""
    found = sorted(glob.glob(str(venv_dir / "agenttorch" / "lib" / "python*" / "site-packages" / "agent_torch")))
    if not found:
        raise FileNotFoundError(f"no agent_torch in {venv_dir / 'agenttorch'}: run benchmarks/peers.py first")
    return Path(found[-1]) / "populations" / "astoria"


@dataclass
class AstoriaAgents:
    """diffabm's `Agents` protocol over Astoria."""

    age: np.ndarray
    area: np.ndarray
    groups: dict[str, np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def n_agents(self) -> int:
        return int(self.age.shape[0])


def read_edges(directory: Path) -> np.ndarray:
    """The network's undirected edges (E, 2) as AgentTorch reads them (`network_from_file`), self-loops dropped."""
    edges = np.loadtxt(directory / "mobility_networks" / "0.csv", delimiter=",", dtype=np.int64).reshape(-1, 2)
    return edges[edges[:, 0] != edges[:, 1]]


def pair_layers(edges: np.ndarray, n_agents: int, layers: int = LAYERS) -> dict[str, np.ndarray]:
    """Each edge a group of two, spread over `layers` layers of at most `n_agents` groups each (diffabm's group
    ids are below N); each layer (N, K) with -1 padding. Greedy: an edge goes to the layer (with room left) where
    its endpoints have the fewest edges so far, which keeps every layer's K near max degree / layers."""
    if len(edges) > layers * n_agents:
        raise ValueError(f"{len(edges)} edges do not fit in {layers} layers of {n_agents} groups")
    count = np.zeros((layers, n_agents), dtype=np.int64)
    room = np.full(layers, n_agents)
    layer_of = np.empty(len(edges), dtype=np.int64)
    for k, (u, v) in enumerate(edges.tolist()):
        load = np.maximum(count[:, u], count[:, v]) + np.where(room > 0, 0, 1 << 40)
        layer = int(np.argmin(load))
        layer_of[k] = layer
        count[layer, u] += 1
        count[layer, v] += 1
        room[layer] -= 1
    groups = {}
    for layer in range(layers):
        chosen = edges[layer_of == layer]
        ids = np.full((n_agents, max(1, int(count[layer].max()))), -1, dtype=np.int64)
        members = np.concatenate([chosen[:, 0], chosen[:, 1]])
        group = np.tile(np.arange(len(chosen)), 2)
        order = np.argsort(members, kind="stable")
        members, group = members[order], group[order]
        starts = np.r_[0, np.flatnonzero(np.diff(members)) + 1]
        rank = np.arange(members.size) - np.repeat(starts, np.diff(np.r_[starts, members.size]))
        ids[members, rank] = group
        groups[f"contact{layer}"] = ids
    return groups


def load_astoria(directory: Path | None = None, seed: int = 0, cache: Path | None = None) -> AstoriaAgents:
    """Astoria as diffabm agents (see the module docstring); `cache`: an .npz to reuse the layers from."""
    directory = directory or astoria_dir()
    if cache is not None and cache.exists():
        stored = np.load(cache)
        groups = {name[len("group_") :]: stored[name] for name in stored.files if name.startswith("group_")}
        age = stored["age"]
    else:
        import pandas as pd

        code = pd.read_pickle(directory / "age.pickle").to_numpy().astype(np.int64)
        rng = np.random.default_rng(seed)
        low = np.array([band[0] for band in AGE_BANDS])[code]
        high = np.array([band[1] for band in AGE_BANDS])[code]
        age = rng.integers(low, high)
        groups = pair_layers(read_edges(directory), code.size)
        if cache is not None:
            np.savez(cache, age=age, **{f"group_{name}": ids for name, ids in groups.items()})
    return AstoriaAgents(
        age=age.astype(np.int64),
        area=np.zeros(age.size, dtype=np.int64),
        groups=groups,
        attrs={"generator": "benchmarks/astoria.py (AgentTorch 0.6.0 Astoria)"},
    )


def make_model(agents: AstoriaAgents, days: int = DAYS, draws: int = 1, beta: float = BETA_CONTACT):
    """diffabm's EpidemicModel on Astoria: the default disease course (conf/model/epidemic.yaml), one β for the
    pair layers, no community layer, no interventions, exactly `INITIAL_INFECTED` random seeds."""
    from omegaconf import OmegaConf

    from diffabm.config import compose_study
    from diffabm.models.epidemic import EpidemicModel

    config = compose_study("toy", [f"model.days={days}", f"model.draws={draws}", "interventions=[]"])
    parameters = {f"beta_{layer}": beta for layer in agents.groups}
    parameters.update(
        initial_fraction=INITIAL_INFECTED / agents.n_agents, hospitalisation_odds_ratio=1.0, fatality_odds_ratio=1.0
    )
    return EpidemicModel(
        agents,
        course=OmegaConf.to_container(config.model.course, resolve=True),
        days=days,
        parameters=parameters,
        draws=draws,
        seeding="systematic",
        attribute_layers={},
    )


def diffabm_curves(seeds: range, beta: float = BETA_CONTACT, agents: AstoriaAgents | None = None) -> np.ndarray:
    """Daily new infections (seeds, DAYS) of diffabm on Astoria, day 0 the 45 seeds."""
    import torch

    agents = agents or load_astoria()
    model = make_model(agents, beta=beta)
    with torch.no_grad():
        return np.stack([model(seed=seed).new_infections[0].numpy() for seed in seeds])


def calibrate(target: float, betas: list[float], seeds: range = range(1, 9)) -> None:
    """Print the 21-day attack rate of diffabm on Astoria over a grid of β (pick the one nearest `target`)."""
    agents = load_astoria()
    for beta in betas:
        rates = diffabm_curves(seeds, beta, agents).sum(1) / agents.n_agents
        print(
            f"beta {beta:5.2f}: attack rate median {np.median(rates):.4f} (range {rates.min():.4f}-{rates.max():.4f})"
        )
    print(f"target {target:.4f}")


def agenttorch_curves(rounds_csv: Path) -> dict[str, list[list[float]]]:
    """AgentTorch's daily new infections by case, one list per round, from peers.py's per-run CSV."""
    curves: dict[str, list[list[float]]] = {}
    with rounds_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row["case"].startswith("agenttorch") and row.get("daily_new"):
                daily = json.loads(row["daily_new"])
                # step t's exposures are day t's (infectiousness profile index t in both models); step 0 has none,
                # so day 0 holds the initially exposed, as diffabm's day 0 holds its seeds
                curves.setdefault(row["case"], []).append([float(row["initially_infected"]) + daily[0], *daily[1:]])
    return curves


def write_curves(rounds_csv: Path, out: Path, seeds: range = range(1, 21)) -> None:
    """astoria_curves.csv (one row per model, run and day) and astoria_curves.png (daily new infections)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agenttorch = agenttorch_curves(rounds_csv)
    diffabm = diffabm_curves(seeds)
    rows = []
    for case, runs in agenttorch.items():
        for run, curve in enumerate(runs, 1):
            rows += [{"model": case, "run": run, "day": day, "new_infections": v} for day, v in enumerate(curve)]
    for run, curve in zip(seeds, diffabm, strict=True):
        rows += [
            {"model": "diffabm", "run": run, "day": day, "new_infections": float(v)} for day, v in enumerate(curve)
        ]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "astoria_curves.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "run", "day", "new_infections"])
        writer.writeheader()
        writer.writerows(rows)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {
        "diffabm": ("tab:blue", f"diffabm (β={BETA_CONTACT} per pair layer)"),
        "agenttorch-covid-noisolation": ("tab:red", "AgentTorch, isolation draw off"),
        "agenttorch-covid": ("tab:grey", "AgentTorch as shipped (heuristic isolation)"),
    }
    series = {"diffabm": diffabm, **{case: np.array(runs) for case, runs in agenttorch.items()}}
    series.pop("agenttorch-covid-nograph", None)  # the same model as agenttorch-covid
    summary = []
    for name, values in series.items():
        colour, label = styles.get(name, ("tab:green", name))
        days = np.arange(values.shape[1])
        for ax, data in ((axes[0], values), (axes[1], np.cumsum(values, 1) / N_ASTORIA)):
            ax.plot(days[1:], np.median(data, 0)[1:], color=colour, label=f"{label}, {len(values)} runs")
            ax.fill_between(days[1:], data.min(0)[1:], data.max(0)[1:], color=colour, alpha=0.2)
        attack = values.sum(1) / N_ASTORIA
        peaks = values[:, 1:].argmax(1) + 1
        summary.append(
            {
                "model": name,
                "runs": len(values),
                "attack_rate_median": float(np.median(attack)),
                "attack_rate_min": float(attack.min()),
                "attack_rate_max": float(attack.max()),
                "peak_day_median": float(np.median(peaks)),
                "peak_day_range": f"{peaks.min()}-{peaks.max()}",
                "peak_new_median": float(np.median(values[:, 1:].max(1))),
                "day_of_median_peak": int(np.median(values, 0)[1:].argmax() + 1),
            }
        )
    axes[0].set_title("daily new infections (median, band: min-max)", fontsize=9)
    axes[1].set_title("cumulative share infected (incl. the 45 seeds)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("day")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Astoria ({N_ASTORIA:,} agents, AgentTorch's contact network), 45 initial infections", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "astoria_curves.png", dpi=120)
    plt.close(fig)
    with (out / "astoria_summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    for row in summary:
        print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    curves = commands.add_parser("curves", help="the curve CSV and figure from peers.py's runs")
    curves.add_argument("--rounds-csv", type=Path, default=RESULTS / "peers_rounds.csv")
    curves.add_argument("--out", type=Path, default=RESULTS)
    target = commands.add_parser("calibrate", help="diffabm's attack rate over a grid of β")
    target.add_argument("--target", type=float, required=True)
    target.add_argument("--betas", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0, 6.0, 8.0])
    args = parser.parse_args()
    if args.command == "curves":
        write_curves(args.rounds_csv, args.out)
    else:
        calibrate(args.target, args.betas)


if __name__ == "__main__":
    sys.exit(main())
