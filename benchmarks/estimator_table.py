"""Derivative estimators of the epidemic: bias, variance and mean squared error per unit of compute (issue 13).

Run from the project root: `.venv/bin/python benchmarks/estimator_table.py [--draws 1024]
[--reference-draws 4096] [--check-draws 2048] [--threads 1] [--output results/benchmarks] [OVERRIDE ...]`
(about 17 min on one thread of a 2-core Xeon); OVERRIDEs are Hydra overrides of the study, e.g.
`model.course.presymptomatic_days=0`.
Toy population of 3,000 agents (seed 3), 30 days, initial fraction 0.01; d E[f]/dθ for f = total infections and
total hospitalisations over the 30 days and θ = the four β, the initial fraction and the hospitalisation odds
ratio, at the toy study's parameters. Estimators, each with `--draws` draws (seeds 0, 1, …, 256 draws per call,
independent noise per draw):

- autograd through the model's hard Bernoulli draws with each estimator of `conf/model/estimator/` whose forward
  values are the hard samples (event_weighted, straight_through, straight_through_gumbel; gumbel_softmax relaxes
  the states and is left out): one forward with the graph, one backward per statistic for all parameters;
- stochastic derivatives (Arya et al. 2022; `diffabm.models.epidemic.derivatives`) with 1, 2 and 4 alternatives,
  one call per statistic;
- central finite differences with common random numbers, step 5% of the value, one parameter at a time (12 runs).

The reference is the same central difference (step 5%) with `--reference-draws` draws (seeds 1000, 1001, …),
checked against step 2.5% with `--check-draws` draws (seeds 2000, …). Cost is an estimator's wall time per draw
for all parameters over that of one forward run `with torch.no_grad(): model.simulate(...)`, timed before each
estimator's call (interleaved; the CSV's `cpu_cost` is the same by this process's CPU time). Writes
`estimator_table.csv`, `estimator_reference.csv` and `estimator_table.md` under `--output`, and prints the
markdown. Definitions (ref the reference, B a budget in forward-run equivalents): bias² is
(mean − ref)² − SE² − SE_ref² clipped at 0 (its unbiased estimate); MSE_B = bias² + sd² · cost / B, the error of
the mean of B / cost draws; break-even is the budget above which the unbiased estimator with the lowest
sd² · cost beats a biased one (bias > 3 SE): (min sd² · cost − sd² · cost) / bias², 0 if it beats it at every
budget.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

BERNOULLI_ESTIMATORS = ("event_weighted", "straight_through", "straight_through_gumbel")
ALTERNATIVES = (1, 2, 4)
STEP, CHECK_STEP = 0.05, 0.025  # finite-difference steps, fractions of the value
CALL_DRAWS = 256
REFERENCE_SEED, CHECK_SEED = 1000, 2000
BUDGETS = (100, 10_000)  # forward-run equivalents: the table's MSE and the large-budget winner
STATISTICS: dict[str, Callable] = {
    "infections": lambda output: output.new_infections.sum(1).double(),
    "hospitalisations": lambda output: output.hospitalisations.sum(1).double(),
}


def timed(function: Callable, *args, **kwargs) -> tuple[object, np.ndarray]:
    """The function's result and its seconds: [wall, CPU of this process]."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, np.array([time.perf_counter() - wall, time.process_time() - cpu])


def autograd(
    model, base: dict[str, Tensor], names: list[str], seed: int
) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
    """Per draw d f/dθ (B, d) per statistic, and its seconds: the forward with the graph plus that statistic's
    backward (all parameters in one)."""
    parameters = {name: value.clone().requires_grad_(name in names) for name, value in base.items()}
    output, forward = timed(model.simulate, parameters, seed)
    estimates, seconds = {}, {}
    for k, (statistic, f) in enumerate(STATISTICS.items()):
        gradients, backward = timed(
            torch.autograd.grad,
            f(output).sum(),
            [parameters[name] for name in names],
            retain_graph=k + 1 < len(STATISTICS),
            allow_unused=True,
            materialize_grads=True,
        )
        estimates[statistic], seconds[statistic] = torch.stack(gradients, 1).double(), forward + backward
    return estimates, seconds


def finite_differences(model, base: dict[str, Tensor], names: list[str], seed: int, step: float) -> dict[str, Tensor]:
    """Per draw (f(θ + h) − f(θ − h)) / 2h (B, d) per statistic, h = step × θ, the same seed up and down."""
    columns: dict[str, list[Tensor]] = {statistic: [] for statistic in STATISTICS}
    with torch.no_grad():
        for name in names:
            h = step * base[name]
            up, down = (model.simulate({**base, name: base[name] + sign * h}, seed) for sign in (1, -1))
            for statistic, f in STATISTICS.items():
                columns[statistic].append((f(up) - f(down)) / (2 * h.double()))
    return {statistic: torch.stack(column, 1) for statistic, column in columns.items()}


def summarise(
    samples: dict[tuple[str, str], list[Tensor]],
    seconds: dict[tuple[str, str], np.ndarray],
    forward: np.ndarray,
    reference: pd.DataFrame,
    names: list[str],
) -> pd.DataFrame:
    """One row per statistic, estimator and parameter (see the module docstring for the definitions); `seconds`
    are per call of `CALL_DRAWS` draws, `forward` the mean [wall, CPU] seconds of one forward run, `reference`
    the step-`STEP` rows of `describe`."""
    rows = []
    truth = reference.set_index(["statistic", "parameter"])
    for (statistic, estimator), draws in samples.items():
        x = torch.cat(draws)
        cost, cpu_cost = seconds[statistic, estimator] / forward
        for k, name in enumerate(names):
            n, mean, sd = len(x), x[:, k].mean().item(), x[:, k].std().item()
            se = sd / math.sqrt(n)
            ref, ref_se = truth.loc[(statistic, name), ["mean", "se"]]
            bias_squared = max(0.0, (mean - ref) ** 2 - se**2 - ref_se**2)
            rows.append(
                {
                    "statistic": statistic,
                    "estimator": estimator,
                    "parameter": name,
                    "draws": n,
                    "nonzero": int((x[:, k] != 0).sum()),
                    "mean": mean,
                    "se": se,
                    "reference": ref,
                    "reference_se": ref_se,
                    "relative_bias": mean / ref - 1,
                    "relative_bias_se": math.hypot(se, mean / ref * ref_se) / abs(ref),
                    "z": (mean - ref) / math.hypot(se, ref_se),
                    "sd": sd,
                    "cost": cost,
                    "cpu_cost": cpu_cost,
                    "bias_squared": bias_squared,
                    "variance_cost": sd**2 * cost,
                    **{f"mse_{budget}": bias_squared + sd**2 * cost / budget for budget in BUDGETS},
                }
            )
    table = pd.DataFrame(rows)
    unbiased = table.estimator.str.startswith(("stochastic", "finite"))
    best = table[unbiased].groupby(["statistic", "parameter"]).variance_cost.min()
    lowest = best.loc[list(zip(table.statistic, table.parameter))].to_numpy()
    biased = ~unbiased & (table.z.abs() > 3)
    table["break_even"] = ((lowest - table.variance_cost) / table.bias_squared).clip(lower=0).where(biased)
    return table


def describe(differences: dict[str, Tensor], names: list[str], step: float) -> pd.DataFrame:
    """Mean and SE of per-draw finite differences (B, d) per statistic and parameter."""
    return pd.DataFrame(
        [
            {
                "statistic": statistic,
                "parameter": name,
                "step": step,
                "draws": len(x),
                "mean": x[:, k].mean().item(),
                "se": x[:, k].std().item() / math.sqrt(len(x)),
            }
            for statistic, x in differences.items()
            for k, name in enumerate(names)
        ]
    )


def significant(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def row_markdown(row) -> str:
    """One estimator and parameter; relative columns only where the reference is more than 3 SE from 0."""
    cells = [
        row.parameter,
        row.estimator,
        f"{row.nonzero}/{row.draws}",
        f"{significant(row.mean)} ± {significant(row.se, 2)}",
    ]
    if abs(row.reference) > 3 * row.reference_se:
        rmse = 100 * math.sqrt(row.mse_100) / abs(row.reference)
        cells += [
            f"{100 * row.relative_bias:+.1f} ± {100 * row.relative_bias_se:.1f} ({row.z:+.1f})",
            significant(row.sd),
            f"{row.cost:.2f}",
            significant(row.variance_cost / row.reference**2),
            f"{significant(row.mse_100 / row.reference**2)} ({rmse:.1f})",
        ]
    else:
        cells += [f"(z {row.z:+.1f})", significant(row.sd), f"{row.cost:.2f}", "—", "—"]
    return "| " + " | ".join([*cells, significant(row.break_even)]) + " |"


def markdown(table: pd.DataFrame, references: pd.DataFrame, setting: str) -> str:
    """The setting, the reference check, one table per statistic and the winners, in markdown."""
    reference, check = (
        references[references.step == step].set_index(["statistic", "parameter"]) for step in (STEP, CHECK_STEP)
    )
    lines = [
        setting,
        "",
        (
            f"Reference: central differences, step {STEP:.0%} ({reference.draws.iloc[0]:,} draws) "
            f"against step {CHECK_STEP:.1%} ({check.draws.iloc[0]:,} draws), ± SE."
        ),
        "",
        f"| statistic | θ | step {STEP:.0%} | step {CHECK_STEP:.1%} | z |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (statistic, name), a in reference.iterrows():
        b = check.loc[statistic, name]
        lines.append(
            f"| {statistic} | {name} | {significant(a['mean'])} ± {significant(a.se, 2)} | "
            f"{significant(b['mean'])} ± {significant(b.se, 2)} | "
            f"{(a['mean'] - b['mean']) / math.hypot(a.se, b.se):.2f} |"
        )
    for statistic, rows in table.groupby("statistic", sort=False):
        lines += [
            "",
            (
                f"d E[total {statistic}] / dθ; cost in forward runs per draw, all θ; — where the reference "
                "is within 3 SE of 0."
            ),
            "",
            (
                "| θ | estimator | nonzero | mean ± SE | bias % ± SE (z) | sd | cost | sd²·cost / ref² | "
                "MSE₁₀₀ / ref² (RMSE %) | break-even |"
            ),
            "| " + " | ".join(["---"] * 10) + " |",
        ]
        lines += [row_markdown(row) for row in rows.itertuples()]
    lines += [
        "",
        "Lowest MSE at a budget of B forward runs:",
        "",
        "| statistic | θ | " + " | ".join(f"B = {budget:,}" for budget in BUDGETS) + " |",
        "| --- | --- | " + " | ".join(["---"] * len(BUDGETS)) + " |",
    ]
    for (statistic, name), group in table.groupby(["statistic", "parameter"], sort=False):
        winners = [group.loc[group[f"mse_{budget}"].idxmin(), "estimator"] for budget in BUDGETS]
        lines.append(f"| {statistic} | {name} | " + " | ".join(winners) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1024, help="draws per estimator, a multiple of 256")
    parser.add_argument(
        "--reference-draws", type=int, default=4096, help=f"draws of the step-{STEP:.0%} reference".replace("%", "%%")
    )
    parser.add_argument(
        "--check-draws", type=int, default=2048, help=f"draws of the step-{CHECK_STEP:.1%} check".replace("%", "%%")
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the study")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffabm.build import build_model
    from diffabm.config import compose_study
    from diffabm.models.epidemic.derivatives import stochastic_derivatives
    from diffabm.population.toy import toy_population

    population = toy_population(3_000, seed=3)
    configs = {
        estimator: compose_study(
            "toy",
            [
                "model.days=30",
                f"model.draws={CALL_DRAWS}",
                "model.parameters.initial_fraction=0.01",
                f"model/estimator={estimator}",
                *args.overrides,
            ],
        )
        for estimator in BERNOULLI_ESTIMATORS
    }
    models = {estimator: build_model(cfg, population) for estimator, cfg in configs.items()}
    setting = (
        f"Toy population of {population.n_agents:,} agents, 30 days, initial fraction 0.01, "
        f"{configs['event_weighted'].model.course.presymptomatic_days} pre-symptomatic days"
        + "".join(f", `{override}`" for override in args.overrides)
        + "."
    )
    model = models["event_weighted"]  # for the runs without autograd: the hard estimators' forwards are the same
    base = {name: value.detach().clone() for name, value in model.natural_parameters().items()}
    names = [f"beta_{layer}" for layer in model.layers] + ["initial_fraction", "hospitalisation_odds_ratio"]

    samples: dict[tuple[str, str], list[Tensor]] = {}
    seconds: dict[tuple[str, str], np.ndarray] = {}
    forwards: list[np.ndarray] = []

    def record(estimator: str, statistic: str, estimates: Tensor, spent: np.ndarray) -> None:
        samples.setdefault((statistic, estimator), []).append(estimates)
        seconds[statistic, estimator] = seconds.get((statistic, estimator), 0.0) + spent

    def forward(seed: int) -> None:
        """Time one forward run without the graph (the unit of cost), before each estimator's call."""
        with torch.no_grad():
            forwards.append(timed(model.simulate, base, seed)[1])

    start = time.perf_counter()
    with torch.no_grad():
        model.simulate(base, seed=999)  # warm-up, untimed
    calls = args.draws // CALL_DRAWS
    for seed in range(calls):
        for estimator, bernoulli in models.items():
            forward(seed)
            estimates, spent = autograd(bernoulli, base, names, seed)
            for statistic in STATISTICS:
                record(f"autograd, {estimator}", statistic, estimates[statistic], spent[statistic])
        for alternatives in ALTERNATIVES:
            forward(seed)
            for statistic, f in STATISTICS.items():
                (_, estimates), spent = timed(
                    stochastic_derivatives, model, base, seed, f, names, alternatives=alternatives
                )
                record(f"stochastic derivatives, A={alternatives}", statistic, estimates.double(), spent)
        forward(seed)
        differences, spent = timed(finite_differences, model, base, names, seed, STEP)
        for statistic in STATISTICS:
            record(f"finite differences, {STEP:.0%}", statistic, differences[statistic], spent)
        print(f"estimators: seed {seed} done, {time.perf_counter() - start:.0f} s", flush=True)

    references = []
    for step, draws, first in (
        (STEP, args.reference_draws, REFERENCE_SEED),
        (CHECK_STEP, args.check_draws, CHECK_SEED),
    ):
        runs = [finite_differences(model, base, names, first + k, step) for k in range(draws // CALL_DRAWS)]
        pooled = {statistic: torch.cat([run[statistic] for run in runs]) for statistic in STATISTICS}
        references.append(describe(pooled, names, step))
        print(f"reference, step {step:.1%}: done, {time.perf_counter() - start:.0f} s", flush=True)
    references = pd.concat(references, ignore_index=True)

    one_forward = np.mean(forwards, axis=0)
    table = summarise(
        samples,
        {key: value / calls for key, value in seconds.items()},
        one_forward,
        references[references.step == STEP],
        names,
    )
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / "estimator_table.csv", index=False)
    references.to_csv(args.output / "estimator_reference.csv", index=False)
    text = markdown(table, references, setting)
    (args.output / "estimator_table.md").write_text(text)
    print(text)
    print(
        f"one forward run of {CALL_DRAWS} draws: {one_forward[0]:.2f} s wall, {one_forward[1]:.2f} s CPU "
        f"({len(forwards)} runs); total {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
