"""Reference GVI posterior by self-normalised importance sampling from the prior, against the flow.

The flow minimises w · E_q[ℓ] + KL(q‖π), whose minimiser is q* ∝ π · exp(−w ℓ) (Knoblauch,
Jewson & Damoulas 2022). With prior draws θ_i and one loss ℓ_i each (the mean of `replicates`
simulations against the data), weights ∝ exp(−w ℓ_i) give q*'s means and quantiles without any
variational approximation (Owen 2013, *Monte Carlo theory*, §9). The effective sample size
1 / Σ w̃_i² says how far to trust them. One noisy ℓ_i per draw targets π · E[exp(−w ℓ)], close to
q* while w times the simulator's spread of ℓ is below one.

Where q* is much narrower than the prior, few prior draws carry weight. `--proposal flow` then
draws θ from the defensive mixture m = ½ q + ½ π of the study's calibrated flow q (Hesterberg
1995, Technometrics 37:185) and weights by π exp(−w ℓ) / m: unbiased whatever q is, and the
prior half bounds the weights where q is too narrow. It also prints how far the flow is from its
target: KL(q‖q*) = F(q) + log Z, with F the flow's objective on its own draws and Z = E_m[π/m ·
exp(−w ℓ)] (on average an underestimate: log of a mean estimate is biased low).

With `--realisations K`, K fresh data sets are simulated at the study's truth and each gets its
own reference posterior from the same simulations: how often the data could support a
given recovery (posterior mean within 10%, truth inside the 90% interval), whatever the method.

Run from the project root after the study's calibration (e.g. `snakemake --cores 2 --config
study=june-synthetic`):
`.venv/bin/python benchmarks/reference_posterior.py [--study june-synthetic] [--draws 2048]
[--loss-weight W] [--proposal prior|flow] [--realisations 32]`. w defaults to `calibration/loss_weight.json`. The
simulated series are cached in `results/<study>/calibration/reference_series_<proposal>.pt`.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels: tuple[float, ...]) -> list[float]:
    """Quantiles of `values` under normalised `weights`."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return [float(values[order][min(np.searchsorted(cumulative, level), len(values) - 1)]) for level in levels]


def importance_weights(losses: np.ndarray, weight: float, log_ratio: np.ndarray | float = 0.0) -> np.ndarray:
    """Normalised weights ∝ exp(log π/m − w ℓ) (log_ratio = log π − log m; zero for prior draws)."""
    log_weights = log_ratio - weight * losses
    return np.exp(log_weights - log_weights.max()) / np.exp(log_weights - log_weights.max()).sum()


def proposal_draws(
    kind: str, cfg, target, prior, calibration: Path, checkpoint: Path, draws: int, seed: int
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """θ (n, d) from the prior or from the mixture ½ q + ½ π of the calibrated flow, log π − log m (n,),
    and log q − log π of the flow's half of the draws (empty for prior draws)."""
    theta = prior.sample(draws, seed)
    if kind == "prior":
        return theta, np.zeros(draws), np.zeros(0)
    from diffabm.calibration.setup import build_module
    from diffabm.calibration.stage import with_loss_weight

    cfg = with_loss_weight(cfg, "flow", calibration / "loss_weight.json")
    module = build_module("flow", cfg.calibration.flow, target, prior, int(cfg.seed))
    module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    q = module.posterior()
    with torch.no_grad():
        theta[: draws // 2] = module.posterior_draws(draws // 2, seed)
        log_q, log_prior = q.log_prob(theta), prior.log_prob(theta)
        log_mixture = torch.logaddexp(log_q, log_prior) - np.log(2.0)
        return theta, (log_prior - log_mixture).numpy(), (log_q - log_prior)[: draws // 2].numpy()


def variational_gap(
    losses: np.ndarray, weight: float, log_ratio: np.ndarray, flow_log_ratio: np.ndarray
) -> tuple[float, float]:
    """The flow's objective F(q) = w E_q[ℓ] + KL(q‖π) and F(q) + log Z = KL(q‖q*), q* ∝ π exp(−w ℓ)."""
    objective = float(np.mean(weight * losses[: len(flow_log_ratio)] + flow_log_ratio))
    log_terms = log_ratio - weight * losses
    log_evidence = float(np.log(np.mean(np.exp(log_terms - log_terms.max()))) + log_terms.max())
    return objective, objective + log_evidence


def predictions(
    target, theta: torch.Tensor, batch: int, seed: int, cache: Path, key: str
) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Natural-scale draws (n, d) and their replicate-mean series, simulated in batches, cached."""
    if cache.exists():
        stored = torch.load(cache, weights_only=True)
        if stored["key"] == key:
            return stored["natural"].numpy(), stored["series"]
    draws, batches = theta.shape[0], []
    with torch.no_grad():
        for start in range(0, draws, batch):
            batches.append(target.replicate_means(theta[start : start + batch], seed + start))
            print(f"{min(start + batch, draws)}/{draws} draws", flush=True)
    series = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
    natural = torch.stack([target.natural(theta)[name] for name in target.names], dim=-1).numpy()
    torch.save({"key": key, "natural": torch.from_numpy(natural), "series": series}, cache)  # loads weights_only
    return natural, series


def realisation_study(
    target,
    natural: np.ndarray,
    series: dict[str, torch.Tensor],
    log_ratio: np.ndarray,
    truth: dict,
    weight: float,
    realisations: int,
    seed: int,
    observed_total: float,
) -> None:
    """Reference posteriors for fresh data sets at the truth: share within 10% and inside the 90% interval."""
    from diffabm.calibration.losses import ObservationLoss

    true_theta = target.unconstrained(truth).expand(realisations, -1)
    with torch.no_grad():
        output = target.simulate(true_theta, seed)
    true_values = np.array([truth[name] for name in target.names])
    errors, inside = [], []
    for k in range(realisations):
        data = {name: output[name][k] for name in series}
        losses = ObservationLoss(target.loss.kind, data, list(target.loss.observed))(series).numpy()
        weights = importance_weights(losses, weight, log_ratio)
        errors.append(np.abs(weights @ natural - true_values) / true_values)
        intervals = [weighted_quantiles(natural[:, j], weights, (0.05, 0.95)) for j in range(len(true_values))]
        inside.append([low <= t <= high for (low, high), t in zip(intervals, true_values)])
    errors, inside = np.array(errors), np.array(inside)
    totals = output.new_infections.sum(1).numpy()
    print(
        f"\n{realisations} fresh data sets at the truth (seed {seed}): "
        f"total infections median {np.median(totals):.0f}, "
        f"5-95% {np.quantile(totals, 0.05):.0f}-{np.quantile(totals, 0.95):.0f}; the observed data's "
        f"{observed_total:.0f} exceeds {np.mean(totals < observed_total):.0%} of them. Reference posterior of each:"
    )
    print("parameter            median |error of mean|   share within 10%   share inside 90% interval")
    for j, name in enumerate(target.names):
        print(
            f"{name:18s} {np.median(errors[:, j]):14.2f} {np.mean(errors[:, j] <= 0.1):20.2f} "
            f"{inside[:, j].mean():22.2f}"
        )
    print(f"all truths inside: {inside.all(1).mean():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="june-synthetic")
    parser.add_argument("--draws", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32, help="parameter draws per simulator call")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--loss-weight", type=float, help="w; default: calibration/loss_weight.json")
    parser.add_argument(
        "--proposal", choices=("prior", "flow"), default="prior", help="draw θ from the prior or from ½ flow + ½ prior"
    )
    parser.add_argument("--realisations", type=int, default=0, help="fresh data sets at the truth")
    args = parser.parse_args()

    from diffabm.calibration.setup import load_target
    from diffabm.calibration.weight import read_loss_weight
    from diffabm.config import compose_study
    from diffabm.store import read_dataset

    results = Path("results") / args.study
    calibration = results / "calibration"
    cfg = compose_study(args.study)
    target, prior, observed = load_target(cfg, results / "population.zarr", results / "observed.zarr")
    weight = args.loss_weight or read_loss_weight(calibration / "loss_weight.json")
    checkpoint = calibration / "flow" / "checkpoints" / "last.ckpt"
    theta, log_ratio, flow_log_ratio = proposal_draws(
        args.proposal, cfg, target, prior, calibration, checkpoint, args.draws, args.seed
    )
    # The flow proposal's draws depend on its checkpoint: a retrained flow must not reuse cached series.
    flow_state = hashlib.sha256(checkpoint.read_bytes()).hexdigest() if args.proposal == "flow" else ""
    key = f"{args.draws}:{args.seed}:{args.proposal}:{flow_state}:{observed.attrs.get('config')}"
    natural, series = predictions(
        target, theta, args.batch, args.seed, calibration / f"reference_series_{args.proposal}.pt", key
    )
    losses = target.loss(series).numpy()
    weights = importance_weights(losses, weight, log_ratio)
    print(
        f"w = {weight:.3g}, {len(losses)} draws from the {args.proposal}, effective sample size "
        f"{1 / (weights**2).sum():.1f}, lowest loss {losses.min():.1f}"
    )
    if args.proposal == "flow":
        objective, gap = variational_gap(losses, weight, log_ratio, flow_log_ratio)
        print(
            f"flow objective w E_q[l] + KL(q||prior) = {objective:.2f}; its excess over the optimum, "
            f"KL(q||q*) = {gap:.2f} nats"
        )
    truth = dict(observed.attrs.get("truth", {}))
    flow_path = calibration / "flow" / "posterior.zarr"
    flow = read_dataset(flow_path) if flow_path.exists() else None
    print("parameter            truth      reference mean [5%, 95%]             flow mean [5%, 95%]")
    for j, name in enumerate(target.names):
        low, high = weighted_quantiles(natural[:, j], weights, (0.05, 0.95))
        line = (
            f"{name:18s} {truth.get(name, float('nan')):9.4g}   {weights @ natural[:, j]:9.4g} [{low:.4g}, {high:.4g}]"
        )
        if flow is not None:
            draws = flow[name].values
            line += f"   {draws.mean():9.4g} [{np.quantile(draws, 0.05):.4g}, {np.quantile(draws, 0.95):.4g}]"
        print(line)
    if args.realisations:
        realisation_study(
            target,
            natural,
            series,
            log_ratio,
            truth,
            weight,
            args.realisations,
            args.seed + 10_000,
            float(observed["new_infections"].sum()),
        )


if __name__ == "__main__":
    main()
