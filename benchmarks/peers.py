"""Peer benchmarks (issue 17): diffabm side by side with Starsim, Covasim, LASER and AgentTorch.

Each peer runs in its own throw-away virtual environment, created by this script under `--venv-dir`
(`python -m venv`, then `pip install` of pinned versions from PyPI). A small runner script per peer (kept here
as strings, written into the venv folder) builds the peer's model, runs a tiny warm-up simulation (JIT
compilation, thread pools), then times the simulation only (not imports, population or network construction)
and prints one JSON line: wall seconds, the process's peak RSS (`resource.getrusage`, `ru_maxrss`, so it
includes building the population) and the attack rate (share of agents no longer susceptible at the end).

Cases (N agents, D days each, unless said otherwise):
  starsim-sir-randomnet  Starsim SIR on `RandomNet` (10 contacts), D time points
  covasim-random         Covasim, pop_type 'random' (default parameters), D time points
  covasim-hybrid         Covasim, pop_type 'hybrid' (households, schools, workplaces, community)
  laser-seir             laser-generic's SEIR (`laser.generic.SEIR` components) on N agents in patches of
                         2,000 (the toy population's area size), D ticks
  agenttorch-covid       AgentTorch 0.6.0's COVID model on its own Astoria population (37,518 agents, 21 days,
                         heuristic mode); fixed size, compared with diffabm on Astoria
  agenttorch-covid-nograph  the same without the networkx graph in its state (AgentTorch deep-copies the whole
                         state, graph included, every substep; the model itself reads only the edge list)
  agenttorch-covid-noisolation  the same as -nograph with the heuristic isolation draw set to 0: the shipped
                         draw makes every new exposure a fraction, so only the 45 initial cases ever transmit;
                         without it the SEIRM epidemic runs (77% infected in 21 days)
  diffabm-forward        the toy study's model on `toy_population(N)`, D days, 1 draw, under no_grad
  diffabm-forward+backward  the same, loss = total infections, backward to the four beta parameters
  diffabm-forward@astoria  diffabm forward on Astoria's agents and contact network (benchmarks/astoria.py: the
                         edges as groups of two), 21 days, beta chosen to match agenttorch-covid-noisolation
  diffabm-forward@active   (`--active`) diffabm forward with OMP_WAIT_POLICY=ACTIVE (torch's spin-waiting)

AgentTorch runs report their daily new infections; after a run without `--load`, benchmarks/astoria.py's
`write_curves` puts them beside diffabm's on Astoria (20 seeds): astoria_curves.csv, astoria_curves.png and
astoria_summary.csv (attack rate, peak day).

Rounds are interleaved and rotated (round r starts at case r), each case in a fresh process, medians over
rounds (`--case-rounds CASE=N` runs a slow case in the first N rounds only; `--skip CASE ...` drops cases).
The ratio is the case's time per agent-step over diffabm forward's time per agent-step on the same size
(diffabm-forward@astoria for the AgentTorch cases; above 1: slower than diffabm). Threads: OMP/MKL/OpenBLAS/
Numba threads and torch's intra-op threads are all set to `--threads`; torch peers (diffabm, AgentTorch) also
get OMP_WAIT_POLICY=PASSIVE (`--omp-wait-policy`), without which torch's spin-waiting OpenMP threads lose
about 4x on a loaded machine.

Measuring under load: `--load N` starts N busy-loop Python processes (one core's worth each) before the first
round and stops them after the last, so every case, peers included, runs on a loaded machine; with `--active`
the spin-waiting diffabm is measured beside the passive one.

Writes benchmarks/results/peers.csv (one row per case: medians, ranges, ratio, peak RSS), peers_rounds.csv
(every run) and peers.png (agent-steps/s, log scale, with the ratios); with `--load N` the files are named
peers_loadN*. Prints a Markdown table. Never imported by the package or its tests.

Usage:
  .venv/bin/python benchmarks/peers.py --agents 1000000 --days 50 --rounds 6 --active \\
      --case-rounds agenttorch-covid=3
  .venv/bin/python benchmarks/peers.py --rounds 3 --load 2 --active --skip agenttorch-covid covasim-hybrid
  .venv/bin/python benchmarks/peers.py --agents 20000 --days 10 --rounds 1 --peers starsim laser
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
INITIAL_FRACTION = 0.002  # diffabm's toy default (`initial_fraction`); every peer seeds the same share
ASTORIA_AGENTS, ASTORIA_DAYS = 37_518, 21  # AgentTorch's own population and episode length

# ---------------------------------------------------------------------------------------------- runners
# Each runner gets one JSON argument {"case", "agents", "days", "seed", "threads"} and prints one line
# starting with RESULT_TAG. They run inside the peer's venv, so they import nothing from diffabm (except the
# diffabm runner, which runs in this interpreter).

RESULT_TAG = "PEERS-RESULT "

COMMON = r"""
import json, os, resource, sys, time
from importlib import metadata

ARGS = json.loads(sys.argv[1])
N, D, SEED, THREADS, CASE = ARGS["agents"], ARGS["days"], ARGS["seed"], ARGS["threads"], ARGS["case"]


def versions(*names):
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def numba_threads():
    try:
        import numba
        numba.set_num_threads(THREADS)
    except ImportError:
        pass


def report(seconds, attack_rate, agents, days, packages, **extra):
    print("PEERS-RESULT " + json.dumps({
        "case": CASE, "agents": agents, "days": days, "seconds": seconds, "attack_rate": attack_rate,
        "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "versions": versions(*packages),
        **extra}), flush=True)
"""

STARSIM = (
    COMMON
    + r"""
numba_threads()
import starsim as ss


def make(n, days, seed):
    # SIR on a RandomNet with 10 contacts; beta chosen so that the epidemic size over 50 days is close to
    # diffabm's toy model (about half the population); infectious period 7 +- 2 days as laser-seir's.
    return ss.Sim(n_agents=n, start=0, dur=days - 1, dt=ss.days(1), rand_seed=seed, verbose=0,
                  diseases=ss.SIR(init_prev=0.002, beta=ss.perday(0.025),
                                  dur_inf=ss.lognorm_ex(mean=ss.days(7), std=ss.days(2))),
                  networks=ss.RandomNet(n_contacts=10))


make(2_000, 3, SEED).run()  # warm-up: numba compilation
sim = make(N, D, SEED)
sim.init()
assert sim.t.npts == D, sim.t.npts
start = time.perf_counter()
sim.run()
seconds = time.perf_counter() - start
r = sim.results.sir
report(seconds, 1 - float(r.n_susceptible[-1]) / N, N, D, ["starsim", "sciris", "numpy", "numba"])
"""
)

COVASIM = (
    COMMON
    + r"""
numba_threads()
import covasim as cv

POP_TYPE = CASE.split("-", 1)[1]


def make(n, days, seed):
    return cv.Sim(pop_size=n, pop_type=POP_TYPE, n_days=days - 1, pop_infected=max(1, round(0.002 * n)),
                  rand_seed=seed, verbose=0)


make(2_000, 3, SEED).run()  # warm-up: numba compilation
sim = make(N, D, SEED)
sim.initialize()  # the population and its contact layers: not timed
start = time.perf_counter()
sim.run()
seconds = time.perf_counter() - start
assert len(sim.results["n_susceptible"].values) == D
report(seconds, 1 - float(sim.results["n_susceptible"].values[-1]) / N, N, D,
       ["covasim", "sciris", "numpy", "numba"])
"""
)

LASER = (
    COMMON
    + r'''
numba_threads()
import math
import warnings

import numpy as np
import geopandas as gpd
from shapely.geometry import Point
import laser.core.distributions as dists
from laser.core.propertyset import PropertySet
from laser.generic import SEIR, Model

warnings.filterwarnings("ignore")


def lognormal(mean, sd):
    """laser's lognormal takes the underlying normal's mu and sigma."""
    s2 = math.log(1 + sd * sd / mean / mean)
    return dists.lognormal(mean=math.log(mean) - s2 / 2, sigma=math.sqrt(s2))


# Created once: numba compiles the kernels per distribution closure, so the warm-up must use the same ones.
LATENT = lognormal(3.7, 1.5)      # diffabm's latent period
INFECTIOUS = lognormal(7.0, 2.0)  # diffabm's asymptomatic infectious period


def make(n, days, seed, area=2_000):
    """SEIR on n agents in patches of `area` agents (diffabm's toy areas), laser's default gravity coupling;
    beta 0.35/day with a 7-day infectious period (R0 about 2.5)."""
    nodes = max(1, n // area)
    pop = np.full(nodes, n // nodes, dtype=np.int64)
    pop[: n - pop.sum()] += 1
    infected = np.maximum(np.round(pop * 0.002), 1).astype(np.int64)
    side = int(np.ceil(np.sqrt(nodes)))
    zeros = np.zeros(nodes, dtype=np.int64)
    scenario = gpd.GeoDataFrame(
        {"nodeid": np.arange(nodes), "population": pop, "S": pop - infected, "E": zeros, "I": infected, "R": zeros},
        geometry=[Point(0.02 * (k % side), 0.02 * (k // side)) for k in range(nodes)], crs="EPSG:4326")
    model = Model(scenario, PropertySet({"nticks": days, "beta": 0.35, "prng_seed": seed}))
    model.components = [SEIR.Susceptible(model), SEIR.Exposed(model, LATENT, INFECTIOUS),
                        SEIR.Infectious(model, INFECTIOUS), SEIR.Recovered(model), SEIR.Transmission(model, LATENT)]
    return model


make(2_000, 3, SEED).run()  # warm-up: numba compilation
model = make(N, D, SEED)
start = time.perf_counter()
model.run()
seconds = time.perf_counter() - start
nodes = model.nodes
total = int(nodes.S[0].sum() + nodes.E[0].sum() + nodes.I[0].sum() + nodes.R[0].sum())
report(seconds, 1 - float(nodes.S[D].sum()) / total, N, D, ["laser-generic", "laser-core", "numpy", "numba"])
'''
)

AGENTTORCH = (
    COMMON
    + r'''
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Data
from torch_geometric.utils.convert import to_networkx

import agent_torch
from agent_torch.core import Runner
from agent_torch.models.covid.simulator import get_registry
from agent_torch.models.covid.substeps.new_transmission.action import MakeIsolationDecision

torch.set_num_threads(THREADS)
PACKAGE = Path(agent_torch.__file__).parent
ASTORIA = PACKAGE / "populations" / "astoria"


def sparse_network_from_file(params):
    """agent_torch's covid `network_from_file` minus its dense adjacency matrix (`nx.adjacency_matrix(G)
    .todense()` then `torch.tensor`: 37,518^2 int64 twice, 2 x 11 GB), which it builds and discards. The
    returned graph and edge list are the same as the original's."""
    forward = torch.tensor(pd.read_csv(params["file_path"], header=None).to_numpy()).t().long()
    edges = torch.hstack((forward, forward.flip(0)))
    attributes = torch.vstack((torch.ones(edges.shape[1]).long(), torch.ones(edges.shape[1]).float()))
    # agenttorch-covid-nograph: no networkx graph in the state (the model reads only the edge list), so the
    # engine's per-substep deep copy of the state (`copy_module`) no longer copies the graph's Python dicts
    graph = None if CASE != "agenttorch-covid" else to_networkx(Data(edge_index=edges, edge_attr=attributes))
    return graph, (edges, attributes)


class NoIsolation(MakeIsolationDecision):
    """agenttorch-covid-noisolation: nobody isolates. In heuristic mode the shipped decision is a uniform draw
    that multiplies each new exposure, so exposures are fractions, `disease_stage` leaves the integers, and the
    newly exposed never become infectious (SFInfector[stage.long()] = 0) nor progress: only the 45 initial
    cases transmit. With the decision 0, exposures are whole and the SEIRM course runs."""

    def forward(self, state, observation):
        return {self.output_variables[0]: torch.zeros(self.num_agents, 1, device=self.device)}


def make():
    conf = OmegaConf.load(PACKAGE / "models" / "covid" / "yamls" / "config.yaml")
    conf.simulation_metadata.population_dir = str(ASTORIA)  # shipped with an absolute path of its authors
    conf.simulation_metadata.mapping_path = str(ASTORIA / "mapping.json")
    conf.simulation_metadata.EXECUTION_MODE = "heuristic"  # no LLM calls
    config = OmegaConf.to_object(conf)
    registry = get_registry()
    registry.register(sparse_network_from_file, "network_from_file", key="network")
    if CASE.endswith("-noisolation"):
        registry.register(NoIsolation, "make_isolation_decision", key="policy")
    runner = Runner(config, registry)
    runner.init()
    return runner, config["simulation_metadata"]


runner, metadata_ = make()
n, steps = metadata_["num_agents"], metadata_["num_steps_per_episode"]
with torch.no_grad():
    runner.step(1)  # warm-up
runner, metadata_ = make()
torch.manual_seed(SEED)  # AgentTorch draws from torch's global generator
stages = runner.state["agents"]["citizens"]["disease_stage"]
initially_infected = float((stages > 0).sum())
start = time.perf_counter()
with torch.no_grad():
    runner.step(steps)
seconds = time.perf_counter() - start
daily = runner.state["environment"]["daily_infected"].reshape(-1)
report(seconds, (initially_infected + float(daily.sum())) / n, n, steps,
       ["agent-torch", "torch", "torch-geometric", "numpy"], initially_infected=initially_infected,
       daily_new=[round(float(v), 3) for v in daily])
'''
)

DIFFABM = (
    COMMON
    + r"""
import diffabm  # first, as every entry point of diffabm: its runtime defaults (OMP_WAIT_POLICY, THP_MEM_ALLOC_ENABLE)
import torch

torch.set_num_threads(THREADS)
from diffabm.build import build_model
from diffabm.config import compose_study
from diffabm.population.toy import toy_population


def make(n, days):
    config = compose_study("toy", [f"model.days={days}", "model.draws=1", "interventions=[]"])
    return build_model(config, toy_population(n, seed=0))


if CASE == "diffabm-forward@astoria":  # AgentTorch's Astoria population and network (benchmarks/astoria.py)
    sys.path.insert(0, ARGS["benchmarks"])
    import astoria

    population = astoria.load_astoria()
    warm_up = astoria.make_model(population, days=3)  # its own layout: the kernels compiled for its slots
    model = astoria.make_model(population, days=D)
    N = model.n_agents
else:
    warm_up = make(2_000, 3)
    model = make(N, D)
with torch.no_grad():
    warm_up(seed=SEED)  # warm-up: thread pools, lazy kernels, the compiled kernels loaded (or compiled)
backward = CASE.endswith("forward+backward")
parameters = {name: value.requires_grad_(backward) if name.startswith("beta_") else value
              for name, value in model.natural_parameters().items()}
start = time.perf_counter()
if backward:
    total = model(parameters, seed=SEED).new_infections.sum()
    total.backward()
else:
    with torch.no_grad():
        total = model(parameters, seed=SEED).new_infections.sum()
seconds = time.perf_counter() - start
if backward:
    assert all(parameters[name].grad is not None for name in parameters if name.startswith("beta_"))
report(seconds, float(total) / N, N, D, ["diffabm", "torch", "numpy"],
       omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""), torch_threads=torch.get_num_threads())
"""
)

# --------------------------------------------------------------------------------------------- the peers
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _torch_version() -> str:
    import torch

    return torch.__version__


PEERS: dict[str, dict] = {
    # install: pip install steps, each a list of arguments (pinned: the latest 3.* / 4.* / 1.1.* at the time)
    "starsim": {"install": [["starsim==3.7.2"]], "runner": STARSIM, "cases": ["starsim-sir-randomnet"]},
    "covasim": {"install": [["covasim==4.0.1"]], "runner": COVASIM, "cases": ["covasim-random", "covasim-hybrid"]},
    "laser": {"install": [["laser-generic==1.1.0"]], "runner": LASER, "cases": ["laser-seir"]},  # + laser-core
    "agenttorch": {
        # agent-torch 0.6.0 requires `asyncio` (a 2015 PyPI backport that breaks Python 3) and langchain >= 0.2
        # without an upper bound; its code needs langchain < 1 (LLMChain, langchain.memory). So: --no-deps,
        # then what it imports. torch: the same build as diffabm's.
        "install": [
            ["--no-deps", "agent-torch==0.6.0"],
            [
                f"torch=={_torch_version()}",
                "torch_geometric",
                "omegaconf",
                "pandas",
                "numpy",
                "scipy",
                "networkx",
                "tqdm",
                "dask",
                "epiweeks",
                "langchain<1",
                "langchain-openai<1",
                "dspy",
            ],
        ],
        "runner": AGENTTORCH,
        "cases": ["agenttorch-covid", "agenttorch-covid-nograph", "agenttorch-covid-noisolation"],
        "torch": True,
    },
}
DIFFABM_CASES = ["diffabm-forward", "diffabm-forward+backward"]
ASTORIA_CASE = "diffabm-forward@astoria"  # diffabm forward on AgentTorch's Astoria population, for its ratio
ACTIVE_CASE = "diffabm-forward@active"  # diffabm forward with OMP_WAIT_POLICY=ACTIVE (`--active`)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_venv(peer: str, venv_dir: Path, python: str) -> Path:
    """The peer's venv python, created (or recreated when its pins changed) with the pinned packages."""
    spec = PEERS[peer]["install"]
    path = venv_dir / peer
    marker = path / "peers-install.json"
    interpreter = path / "bin" / "python"
    if marker.exists() and json.loads(marker.read_text()) == spec and interpreter.exists():
        return interpreter
    if path.exists():
        if not (path / "pyvenv.cfg").exists():
            raise SystemExit(f"{path} exists and is not a virtual environment; choose another --venv-dir")
        shutil.rmtree(path)
    log(f"# creating {path}")
    subprocess.run([python, "-m", "venv", str(path)], check=True)
    extra = ["--extra-index-url", TORCH_CPU_INDEX] if any("+cpu" in a for step in spec for a in step) else []
    for step in spec:
        log(f"#   pip install {' '.join(step)}")
        result = subprocess.run(
            [str(interpreter), "-m", "pip", "install", "-q", *extra, *step], check=False, capture_output=True, text=True
        )
        if result.returncode:
            raise RuntimeError(f"pip install {' '.join(step)} failed: {result.stderr.strip()[-1500:]}")
    marker.write_text(json.dumps(spec))
    return interpreter


def spin(seconds: float) -> None:
    """Busy-loop for `seconds` (one core's worth of load, as in bench_threads_under_load.py)."""
    end = time.time() + seconds
    while time.time() < end:
        pass


def case_env(threads: int, torch_peer: bool, omp_wait_policy: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    env.pop("OMP_WAIT_POLICY", None)
    if torch_peer and omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    env.update(
        {
            "MPLBACKEND": "Agg",
            "STARSIM_INSTALL_FONTS": "0",
            "TQDM_DISABLE": "1",
            "PYTHONWARNINGS": "ignore",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
    )
    return env


def run_case(
    case: str,
    interpreter: str,
    runner: Path,
    agents: int,
    days: int,
    seed: int,
    threads: int,
    env: dict[str, str],
    timeout: float,
) -> dict:
    arguments = json.dumps(
        {
            "case": case,
            "agents": agents,
            "days": days,
            "seed": seed,
            "threads": threads,
            "benchmarks": str(Path(__file__).resolve().parent),
        }
    )
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [interpreter, str(runner), arguments],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"case": case, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if result.returncode or not lines:
        tail = (result.stderr.strip() or result.stdout.strip())[-600:]
        return {"case": case, "error": f"exit {result.returncode}: {tail}"}
    record = json.loads(lines[-1][len(RESULT_TAG) :])
    record["process_seconds"] = time.perf_counter() - started
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--peers", nargs="+", default=list(PEERS), choices=list(PEERS), help="peers to run (diffabm always runs)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for the torch peers (diffabm, AgentTorch): PASSIVE, or ACTIVE for torch's "
        "spin-waiting; 'default' leaves it unset (diffabm then sets PASSIVE itself on import)",
    )
    parser.add_argument("--venv-dir", type=Path, default=Path(tempfile.gettempdir()) / "diffabm-peers")
    parser.add_argument("--python", default=sys.executable, help="interpreter that creates the peers' venvs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="N busy-loop processes running for the whole of the rounds (a loaded machine); files get _loadN",
    )
    parser.add_argument(
        "--active", action="store_true", help=f"add {ACTIVE_CASE}: diffabm forward with OMP_WAIT_POLICY=ACTIVE"
    )
    parser.add_argument(
        "--case-rounds",
        nargs="+",
        default=[],
        metavar="CASE=N",
        help="run CASE in the first N rounds only (e.g. agenttorch-covid=3)",
    )
    parser.add_argument("--skip", nargs="+", default=[], metavar="CASE", help="cases not to run")
    args = parser.parse_args()
    if args.days < 2:
        parser.error("--days must be at least 2")
    case_rounds = {}
    for item in args.case_rounds:
        case, _, count = item.partition("=")
        if not count.isdigit():
            parser.error(f"--case-rounds: {item!r} is not CASE=N")
        case_rounds[case] = int(count)
    stem = f"peers_load{args.load}" if args.load else "peers"

    args.venv_dir.mkdir(parents=True, exist_ok=True)
    runners_dir = args.venv_dir / "runners"
    runners_dir.mkdir(exist_ok=True)
    # case -> (interpreter, runner path, agents, days, torch peer)
    cases: dict[str, tuple[str, Path, int, int, bool]] = {}
    skipped: dict[str, str] = {}
    diffabm_runner = runners_dir / "run_diffabm.py"  # not <package>.py: it would shadow the package
    diffabm_runner.write_text(DIFFABM)
    for case in DIFFABM_CASES + ([ACTIVE_CASE] if args.active else []):
        cases[case] = (sys.executable, diffabm_runner, args.agents, args.days, True)
    for peer in args.peers:
        try:
            interpreter = ensure_venv(peer, args.venv_dir, args.python)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            skipped[peer] = str(error)
            log(f"# skipping {peer}: {error}")
            continue
        runner = runners_dir / f"run_{peer}.py"
        runner.write_text(PEERS[peer]["runner"])
        for case in PEERS[peer]["cases"]:
            size = (ASTORIA_AGENTS, ASTORIA_DAYS) if peer == "agenttorch" else (args.agents, args.days)
            cases[case] = (str(interpreter), runner, *size, PEERS[peer].get("torch", False))
        if peer == "agenttorch":
            cases[ASTORIA_CASE] = (sys.executable, diffabm_runner, ASTORIA_AGENTS, ASTORIA_DAYS, True)

    for case in args.skip:
        cases.pop(case, None)
    names = list(cases)
    records: list[dict] = []
    load_before = os.getloadavg()
    busy = [multiprocessing.Process(target=spin, args=(24 * 3600,), daemon=True) for _ in range(args.load)]
    for process in busy:
        process.start()
    try:
        run_rounds(args, names, cases, case_rounds, records, args.out / f"{stem}_rounds.csv")
    finally:
        for process in busy:
            process.terminate()
            process.join()
    load_after = os.getloadavg()

    summary = summarise(names, cases, records)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / f"{stem}.csv", args.out / f"{stem}_rounds.csv", args.out / f"{stem}.png"]
    write_rounds(paths[1], records)
    write_csv(paths[0], summary)
    plot(summary, args, paths[2])
    if not args.load and any(r["case"].startswith("agenttorch") and "error" not in r for r in records):
        try:  # the Astoria curves: AgentTorch's runs here beside diffabm's on the same population
            import astoria

            astoria.write_curves(paths[1], args.out)
            paths += [args.out / "astoria_curves.csv", args.out / "astoria_curves.png"]
        except Exception as error:  # the timings stand without the figure
            log(f"# astoria curves failed: {error!r}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"OMP_WAIT_POLICY={args.omp_wait_policy} (torch peers), {args.rounds} rounds, medians; "
        f"{args.load} busy-loop processes; python {platform.python_version()}; load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} at the end of the rounds"
    )
    print(table(summary))
    for peer, reason in skipped.items():
        print(f"# skipped {peer}: {reason}")
    print(f"# wrote {', '.join(str(path) for path in paths)}")


def run_rounds(
    args: argparse.Namespace,
    names: list[str],
    cases: dict,
    case_rounds: dict[str, int],
    records: list[dict],
    progress: Path,
) -> None:
    """Interleaved, rotated rounds (round r starts at case r), each case in a fresh process; every run so far is
    written to `progress` after each case (an interrupted run keeps its measurements)."""
    progress.parent.mkdir(parents=True, exist_ok=True)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for case in order:
            if round_ >= case_rounds.get(case, args.rounds):
                continue
            interpreter, runner, agents, days, torch_peer = cases[case]
            policy = "ACTIVE" if case == ACTIVE_CASE else args.omp_wait_policy
            env = case_env(args.threads, torch_peer, policy)
            load = os.getloadavg()[0]  # the machine's 1-minute load average just before the case
            record = run_case(
                case,
                interpreter,
                runner,
                agents,
                days,
                seed=round_ + 1,
                threads=args.threads,
                env=env,
                timeout=args.timeout,
            )
            record.update({"round": round_ + 1, "case": case, "loadavg_before": round(load, 2)})
            records.append(record)
            write_rounds(progress, records)
            if "error" in record:
                log(f"# round {round_ + 1} {case}: FAILED {record['error']}")
            else:
                log(
                    f"# round {round_ + 1} {case}: {record['seconds']:.2f} s, attack rate "
                    f"{record['attack_rate']:.3f}, peak RSS {record['peak_rss_GB']:.2f} GB"
                )


def summarise(names: list[str], cases: dict, records: list[dict]) -> list[dict]:
    rows = []
    for case in names:
        ok = [r for r in records if r["case"] == case and "error" not in r]
        failed = [r for r in records if r["case"] == case and "error" in r]
        agents, days = cases[case][2], cases[case][3]
        row = {"case": case, "agents": agents, "days": days, "rounds_ok": len(ok), "rounds_failed": len(failed)}
        if ok:
            seconds = [r["seconds"] for r in ok]
            median = statistics.median(seconds)
            row.update(
                {
                    "versions": " ".join(f"{k}=={v}" for k, v in ok[0]["versions"].items()),
                    "median_s": round(median, 3),
                    "min_s": round(min(seconds), 3),
                    "max_s": round(max(seconds), 3),
                    "agent_steps_per_s": round(agents * days / median),
                    "peak_rss_GB": round(statistics.median(r["peak_rss_GB"] for r in ok), 2),
                    "attack_rate": round(statistics.median(r["attack_rate"] for r in ok), 4),
                    "loadavg_before_median": round(statistics.median(r["loadavg_before"] for r in ok), 2),
                }
            )
        else:
            row["error"] = failed[-1]["error"] if failed else "not run"
        rows.append(row)
    reference = {
        (r["agents"], r["days"]): r for r in rows if r["case"] in ("diffabm-forward", ASTORIA_CASE) and "median_s" in r
    }
    for row in rows:
        base = reference.get((row["agents"], row["days"]))
        if base and "median_s" in row:
            row["ratio_to_diffabm_forward"] = round(row["median_s"] / base["median_s"], 2)
    return rows


def write_rounds(path: Path, records: list[dict]) -> None:
    """Every run, one row each (dicts and lists as JSON)."""
    write_csv(
        path,
        [
            {key: (json.dumps(value) if isinstance(value, (dict, list)) else value) for key, value in record.items()}
            for record in records
        ],
    )


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| case | agents | days | rounds | median s (min-max) | M agent-steps/s | ratio to diffabm forward | "
            "peak RSS GB | attack rate | versions |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "median_s" not in r:
            reason = r["error"].strip().splitlines()[-1][:200].replace("|", "/")
            lines.append(f"| {r['case']} | {r['agents']:,} | {r['days']} | 0 | failed: {reason} | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['agents']:,} | {r['days']} | {r['rounds_ok']} | {r['median_s']:.3g} "
            f"({r['min_s']:.3g}-{r['max_s']:.3g}) | "
            f"{r['agent_steps_per_s'] / 1e6:.2f} | {r.get('ratio_to_diffabm_forward', '')} | "
            f"{r['peak_rss_GB']:.2f} | {r['attack_rate']:.3f} | {r['versions']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "median_s" in r]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    labels = [f"{r['case']}\n({r['agents']:,} × {r['days']} d)" for r in rows]
    speeds = [r["agent_steps_per_s"] for r in rows]
    colours = ["tab:blue" if r["case"].startswith("diffabm") else "tab:grey" for r in rows]
    ax.barh(range(len(rows)), speeds, color=colours)
    for k, (speed, row) in enumerate(zip(speeds, rows, strict=True)):
        ratio = row.get("ratio_to_diffabm_forward")
        reference = row["case"] in ("diffabm-forward", ASTORIA_CASE)
        ratio = f", time ×{float(ratio):.3g} diffabm forward's" if ratio not in (None, "") and not reference else ""
        ax.text(speed, k, f" {speed / 1e6:.2g} M{ratio}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(speeds) * 60)
    ax.set_xlabel("agent-steps per second (median over rounds, log scale)")
    ax.set_title(
        f"Peers: {args.agents:,} agents × {args.days} days, {args.rounds} rounds, {args.threads} threads, "
        f"{os.cpu_count()} cores" + (f", {args.load} busy-loop processes" if args.load else ""),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
