"""Reference GVI posterior by self-normalised importance sampling from the prior, against the flow.

The flow minimises w · E_q[ℓ] + KL(q‖π), whose minimiser is q* ∝ π · exp(−w ℓ) (Knoblauch,
Jewson & Damoulas 2022). With prior draws θ_i and one loss ℓ_i each (the mean of `replicates`
simulations against the data), weights ∝ exp(−w ℓ_i) give q*'s means and quantiles without any
variational approximation (Owen 2013, *Monte Carlo theory*, §9). The effective sample size
1 / Σ w̃_i² says how far to trust them. One noisy ℓ_i per draw targets π · E[exp(−w ℓ)], close to
q* while w times the simulator's spread of ℓ is below one.

Run from the project root after the study's calibration (e.g. `snakemake --cores 2 --config
study=june-synthetic`):
`.venv/bin/python benchmarks/reference_posterior.py [--study june-synthetic] [--draws 2048]
[--loss-weight W]`. w defaults to `calibration/loss_weight.json`. The losses are cached in
`results/<study>/calibration/reference_losses.npz` (reused for the same draws, seed and data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels: tuple[float, ...]) -> list[float]:
    """Quantiles of `values` under normalised `weights`."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return [float(values[order][min(np.searchsorted(cumulative, level), len(values) - 1)]) for level in levels]


def prior_losses(study: str, draws: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Natural-scale prior draws (n, d) and their losses (n,), simulated in batches, cached on disk."""
    from diffabm.calibration.stage import build_target
    from diffabm.config import compose_study
    from diffabm.store import read_dataset

    results = Path("results") / study
    cache = results / "calibration" / "reference_losses.npz"
    cfg = compose_study(study)
    observed = read_dataset(results / "observed.zarr")
    target, prior = build_target(cfg, results / "population.zarr", observed)
    key = f"{draws}:{seed}:{observed.attrs.get('created')}"
    if cache.exists() and str(np.load(cache)["key"]) == key:
        stored = np.load(cache)
        return stored["natural"], stored["losses"], target.names
    theta = prior.sample(draws, seed)
    losses = []
    with torch.no_grad():
        for start in range(0, draws, batch):
            losses.append(target.losses(theta[start:start + batch], seed + start))
            print(f"{start + batch}/{draws} draws", flush=True)
    natural = torch.stack([target.natural(theta)[name] for name in target.names], dim=-1).numpy()
    np.savez(cache, natural=natural, losses=torch.cat(losses).numpy(), key=key)
    return natural, torch.cat(losses).numpy(), target.names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="june-synthetic")
    parser.add_argument("--draws", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32, help="parameter draws per simulator call")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--loss-weight", type=float, help="w; default: calibration/loss_weight.json")
    args = parser.parse_args()

    from diffabm.calibration.weight import read_loss_weight
    from diffabm.store import read_dataset

    calibration = Path("results") / args.study / "calibration"
    weight = args.loss_weight or read_loss_weight(calibration / "loss_weight.json")
    natural, losses, names = prior_losses(args.study, args.draws, args.batch, args.seed)
    log_weights = -weight * (losses - losses.min())
    weights = np.exp(log_weights) / np.exp(log_weights).sum()
    print(f"w = {weight:.3g}, {len(losses)} prior draws, effective sample size {1 / (weights**2).sum():.1f}, "
          f"lowest loss {losses.min():.1f}")
    truth = read_dataset(Path("results") / args.study / "observed.zarr").attrs.get("truth", {})
    flow_path = calibration / "flow" / "posterior.zarr"
    flow = read_dataset(flow_path) if flow_path.exists() else None
    print("parameter            truth      reference mean [5%, 95%]             flow mean [5%, 95%]")
    for j, name in enumerate(names):
        low, high = weighted_quantiles(natural[:, j], weights, (0.05, 0.95))
        line = f"{name:18s} {truth.get(name, float('nan')):9.4g}   {weights @ natural[:, j]:9.4g} [{low:.4g}, {high:.4g}]"
        if flow is not None:
            draws = flow[name].values
            line += f"   {draws.mean():9.4g} [{np.quantile(draws, 0.05):.4g}, {np.quantile(draws, 0.95):.4g}]"
        print(line)


if __name__ == "__main__":
    main()
