"""The gradient-horizon experiment of Quera-Bofarull, Dyer et al. (2023), "Some challenges of
calibrating differentiable agent-based models" (ICML workshop), §3.1, Figs. 2 and 6, Appendix B.2.

The Monte-Carlo estimate η_N of ∇_φ E_{q_φ}[ℓ(y, θ)] from N draws θ ~ q_φ, with ℓ the squared MMD
between a Brock & Hommes series and the observed one (`mmd_squared_values`), by

- "H<k>" (e.g. "H0", "H1", "H2", "H100"): the pathwise (reparameterisation) estimator
  (1/N) Σ_n ∇_θ ℓ(θ_n) · ∂θ_n/∂φ, with ∇_θ ℓ backpropagated through `BrockHommes(horizon=k)`;
- "score": the score-function estimator without baseline (the paper's eq. 28),
  (1/N) Σ_n ℓ(θ_n) ∇_φ log q_φ(θ_n).

All estimators of one call share the θ draws and the simulator noise (common random numbers), so
they differ only in how the gradient is formed. Within a call the `repeats` estimates are
independent: each uses its own rows of the θ and simulator noise streams (the simulator is run on
many repeats' draws at once; the rows of one batch are independent simulations).

- `diagonal_gaussian_estimates` (Fig. 6): q = N(μ, diag σ²) on θ = (g2, g3, b2, b3), φ = (μ, σ), and
  a reference: the score estimate from `reference_samples` draws with its standard error.
- `flow_gradient_spread` (Fig. 2): q a freshly initialised masked autoregressive flow (as in
  `FlowCalibration`); the standard deviation over repeats of every φ_j's estimate.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
import xarray as xr
import zuko
from omegaconf import DictConfig, OmegaConf, read_write
from torch import Tensor
from torch.distributions import AffineTransform

from diffabm.calibration.losses import mmd_squared_values
from diffabm.models.base import Simulator, stable_seed
from diffabm.models.brock_hommes import CALIBRATED
from diffabm.store import as_object_strings, write_dataset

log = logging.getLogger(__name__)
PHI_NAMES = [f"mu_{name}" for name in CALIBRATED] + [f"sigma_{name}" for name in CALIBRATED]
CHUNK_DRAWS = 256  # draws per simulator call (bounds the MMD's (B, T, T) kernel memory)
ModelFactory = Callable[[int | None], Simulator]


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block (None: unchanged), restored after.

    The simulator's per-step tensors are (draws, 4): torch's CPU kernels (exp, logsumexp, softmax) still
    enter a parallel region for them, which costs ~8 ms per call when the cores are busy with other jobs
    (measured on 2 busy cores: exp of a (256, 4) tensor 8 ms with 2 threads, 3 µs with 1), i.e. seconds per
    simulated series. One thread is never slower here.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _with_threads(study: Callable) -> Callable:
    """Run `study` under `intra_op_threads(threads)`, `threads` a keyword argument (default 1)."""

    @functools.wraps(study)
    def run(*args, threads: int | None = 1, **kwargs):
        with intra_op_threads(threads):
            return study(*args, **kwargs)

    return run


def estimator_kinds(names: Sequence[str]) -> dict[str, int | str]:
    """{name: estimator_horizon(name)} for distinct names, in order."""
    if len(set(names)) != len(names):
        raise ValueError(f"gradient study: estimators {list(names)} name one estimator twice")
    return {name: estimator_horizon(name) for name in names}


def estimator_horizon(name: str) -> int | str:
    """ "score" -> "score"; "H<k>" -> k (the pathwise estimator with gradient horizon k)."""
    if name == "score":
        return "score"
    match = re.fullmatch(r"H(\d+)", name)
    if match is None:
        raise ValueError(f"gradient study: unknown estimator {name!r}; use 'score' or 'H<horizon>' (e.g. H0, H100)")
    return int(match.group(1))


def loss_of_draws(model: Simulator, observed_x: Tensor, seed: int) -> Callable[[Tensor], Tensor]:
    """θ (B, 4) unconstrained = natural (g2, g3, b2, b3) -> squared MMD (B,) between each draw's x and `observed_x`
    (T,).

    The other parameters (β, σ, R) stay at the model's defaults; the simulator noise comes from `seed`.
    """
    observed = torch.as_tensor(observed_x)
    fixed = [name for name in model.space.names if name not in CALIBRATED]

    def losses(theta: Tensor) -> Tensor:
        if theta.dim() != 2 or theta.shape[-1] != len(CALIBRATED):
            raise ValueError(f"theta must have shape (B, {len(CALIBRATED)}) ({CALIBRATED}), got {tuple(theta.shape)}")
        parameters = {name: theta[:, i] for i, name in enumerate(CALIBRATED)}
        parameters |= {name: torch.full_like(theta[:, 0], model.defaults[name]) for name in fixed}
        x = model.simulate(parameters, seed)["x"]
        return mmd_squared_values(x, observed.to(x))

    return losses


def _losses_and_jacobian(loss_fn: Callable[[Tensor], Tensor], theta: Tensor, gradient: bool) -> tuple[Tensor, Tensor]:
    """ℓ (B,) and, if `gradient`, ∂ℓ_b/∂θ_b (B, d) (draws are independent: one backward of Σ_b ℓ_b)."""
    point = theta.detach().requires_grad_(gradient)
    with torch.set_grad_enabled(gradient):
        losses = loss_fn(point)
        if not gradient:
            return losses, torch.full_like(point, math.nan)
        (jacobian,) = torch.autograd.grad(losses.sum(), point)
    return losses.detach(), jacobian


def _batched(
    loss_fn_of_seed: Callable[[int], Callable[[Tensor], Tensor]], theta: Tensor, seed_parts: tuple, gradient: bool
) -> tuple[Tensor, Tensor]:
    """`_losses_and_jacobian` over chunks of CHUNK_DRAWS rows; chunk c simulated with seed
    stable_seed(*seed_parts, c)."""
    results = [
        _losses_and_jacobian(loss_fn_of_seed(stable_seed(*seed_parts, c)), rows, gradient)
        for c, rows in enumerate(theta.split(CHUNK_DRAWS))
    ]
    return torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])


def _normal(shape: tuple[int, ...], *seed_parts: object, dtype: torch.dtype = torch.float64) -> Tensor:
    generator = torch.Generator().manual_seed(stable_seed(*seed_parts))
    return torch.randn(shape, generator=generator, dtype=dtype)


def _score_terms(losses: Tensor, u: Tensor, sd: Tensor) -> Tensor:
    """ℓ ∇_φ log q(θ) for θ = μ + σ u under q = N(μ, diag σ²), φ = (μ, σ): (..., 8).

    ∂ log q / ∂μ_i = (θ_i − μ_i)/σ_i² = u_i/σ_i,  ∂ log q / ∂σ_i = ((θ_i − μ_i)²/σ_i² − 1)/σ_i = (u_i² − 1)/σ_i.
    """
    return losses[..., None] * torch.cat([u / sd, (u.pow(2) - 1) / sd], dim=-1)


@_with_threads
def diagonal_gaussian_estimates(
    model_factory: ModelFactory,
    observed_x: Tensor,
    mean: Sequence[float],
    sd: Sequence[float],
    estimators: Sequence[str],
    samples: int = 5,
    repeats: int = 200,
    reference_samples: int = 1000,
    seed: int = 0,
) -> dict:
    """η_N (N = `samples`) of ∇_φ E_q[ℓ] for q = N(mean, diag sd²), `repeats` times per estimator (paper Fig. 6).

    Returns numpy arrays `estimates` (estimator, repeat, 8), `reference` (8,) and `reference_se` (8,) (the
    score estimate from `reference_samples` draws and its Monte-Carlo standard error), the draws `theta`
    (repeat, samples, 4) and their `losses` (repeat, samples), and the names `phi_names` (mu_g2 .. sigma_b3)
    and `estimators`. float64 throughout. Keyword `threads` (default 1): torch's intra-op threads during the
    call (`intra_op_threads`; None leaves them). The simulator runs the repeat × samples draws in chunks of
    CHUNK_DRAWS, chunk c with seed stable_seed(seed, "gradient_study", "simulator", c).
    """
    kinds = estimator_kinds(estimators)
    for field, value, low in (
        ("samples", samples, 1),
        ("repeats", repeats, 2),
        ("reference_samples", reference_samples, 2),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"gradient study: {field} must be an integer >= {low}, got {value!r}")
    mu = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    scale = torch.as_tensor(sd, dtype=torch.float64).reshape(-1)
    if mu.shape != (4,) or scale.shape != (4,) or not torch.isfinite(mu).all() or not (scale > 0).all():
        raise ValueError(
            f"gradient study: mean and sd must be 4 finite values (sd > 0) for {CALIBRATED}, got {mean!r} and {sd!r}"
        )
    observed = torch.as_tensor(observed_x, dtype=torch.float64)
    models: dict[int | None, Simulator] = {}

    def losses_for(horizon: int | None) -> Callable[[int], Callable[[Tensor], Tensor]]:
        if horizon not in models:
            models[horizon] = model_factory(horizon)
        return lambda s: loss_of_draws(models[horizon], observed, s)

    u = _normal((repeats, samples, 4), seed, "gradient_study", "theta")
    theta = (mu + scale * u).reshape(-1, 4)
    simulator_seed = (seed, "gradient_study", "simulator")
    estimates = []
    losses = None
    for kind in kinds.values():
        horizon = None if kind == "score" else kind
        values, jacobian = _batched(losses_for(horizon), theta, simulator_seed, gradient=kind != "score")
        values, jacobian = values.reshape(repeats, samples), jacobian.reshape(repeats, samples, 4)
        losses = values if losses is None else losses
        if kind == "score":
            estimates.append(_score_terms(values, u, scale).mean(1))
        else:  # θ = μ + σ u: ∂ℓ/∂μ = J, ∂ℓ/∂σ = J u
            estimates.append(torch.cat([jacobian, jacobian * u], dim=-1).mean(1))

    u_ref = _normal((reference_samples, 4), seed, "gradient_study", "reference_theta")
    ref_losses, _ = _batched(
        losses_for(None), mu + scale * u_ref, (seed, "gradient_study", "reference_simulator"), gradient=False
    )
    terms = _score_terms(ref_losses, u_ref, scale)
    return {
        "estimates": torch.stack(estimates).numpy() if estimates else np.zeros((0, repeats, 8)),
        "reference": terms.mean(0).numpy(),
        "reference_se": (terms.std(0) / math.sqrt(reference_samples)).numpy(),
        "losses": None if losses is None else losses.numpy(),
        "theta": theta.reshape(repeats, samples, 4).numpy(),
        "phi_names": list(PHI_NAMES),
        "estimators": list(kinds),
        "mean": mu.numpy(),
        "sd": scale.numpy(),
        "samples": int(samples),
        "reference_samples": int(reference_samples),
    }


FLOW_SETTINGS = ("transforms", "hidden_features", "init_seed")


def initial_flow(prior, flow_settings: Mapping | None = None, seed: int = 0):
    """A freshly initialised float64 `zuko.flows.MAF(4, 0, transforms, hidden_features)` (default 16 transforms,
    hidden [20, 20], init seed stable_seed(seed, "flow_init") unless `init_seed`) and q_φ over θ: the MAF on θ
    standardised by the mean and sd of 4096 prior draws, as in `FlowCalibration.posterior`. Returns (flow, q)."""
    names = getattr(prior, "names", list(CALIBRATED))
    if list(names) != list(CALIBRATED):
        raise ValueError(f"gradient study: the prior covers {list(names)}, expected {list(CALIBRATED)}")
    settings = dict(flow_settings or {})
    unknown = sorted(set(settings) - set(FLOW_SETTINGS))
    if unknown:
        raise ValueError(f"gradient study: unknown flow settings {unknown}; use {list(FLOW_SETTINGS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(settings.get("init_seed", stable_seed(seed, "flow_init"))))
        flow = zuko.flows.MAF(
            4,
            0,
            transforms=int(settings.get("transforms", 16)),
            hidden_features=[int(h) for h in settings.get("hidden_features", [20, 20])],
        )
    flow = flow.double()
    draws = prior.sample(4096, stable_seed(seed, "flow_prior")).double()
    q = zuko.distributions.NormalizingFlow(AffineTransform(draws.mean(0), draws.std(0)).inv, flow())
    return flow, q


@_with_threads
def flow_gradient_spread(
    model_factory: ModelFactory,
    observed_x: Tensor,
    prior,
    estimators: Sequence[str],
    flow_settings: Mapping | None = None,
    samples: int = 5,
    repeats: int = 50,
    seed: int = 0,
) -> dict:
    """Standard deviation over `repeats` of every φ_j's estimate of ∂E_q[ℓ]/∂φ_j (N = `samples`) (paper Fig. 2).

    q is `initial_flow(prior, flow_settings, seed)`: a freshly initialised MAF (paper: 16 transforms, hidden
    [20, 20]) on θ standardised by the prior's mean and sd, as in `FlowCalibration`. `prior` has
    `sample(n, seed)` and `names` (g2, g3, b2, b3), e.g. `diffabm.calibration.priors.Prior`. The simulator runs
    all repeat × samples draws in chunks of CHUNK_DRAWS, chunk c with seed
    stable_seed(seed, "gradient_study", "flow_simulator", c). Keyword `threads` as in
    `diagonal_gaussian_estimates`.

    Returns `sd` (estimator, n_phi), `mean` (estimator, n_phi), `active` (n_phi,): φ_j whose estimate is
    non-zero in some repeat of some estimator (the MAF's masked weights get no gradient), `phi_names`,
    `estimators` and `nonfinite_losses` (count over repeat × samples).
    """
    kinds = estimator_kinds(estimators)
    if int(samples) != samples or samples < 1 or int(repeats) != repeats or repeats < 2:
        raise ValueError(f"gradient study: samples must be >= 1 and repeats >= 2, got {samples!r} and {repeats!r}")
    flow, q = initial_flow(prior, flow_settings, seed)
    parameters = [p for p in flow.parameters() if p.requires_grad]
    phi_names = [f"{name}[{i}]" for name, p in flow.named_parameters() if p.requires_grad for i in range(p.numel())]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "gradient_study", "flow_theta"))
        thetas = [q.rsample((samples,)) for _ in range(repeats)]  # one graph per repeat, to φ
    points = torch.cat([t.detach() for t in thetas])
    observed = torch.as_tensor(observed_x, dtype=torch.float64)
    simulator_seed = (seed, "gradient_study", "flow_simulator")
    models: dict[int | None, Simulator] = {}
    log_q = None
    spreads, means = [], []
    active = torch.zeros(len(phi_names), dtype=torch.bool)
    nonfinite = 0
    for kind in kinds.values():
        horizon = None if kind == "score" else kind
        if horizon not in models:
            models[horizon] = model_factory(horizon)
        losses, jacobian = _batched(
            lambda s, m=models[horizon]: loss_of_draws(m, observed, s), points, simulator_seed, gradient=kind != "score"
        )
        nonfinite = max(nonfinite, int((~torch.isfinite(losses)).sum()))
        losses, jacobian = losses.reshape(repeats, samples), jacobian.reshape(repeats, samples, 4)
        rows = []
        for r in range(repeats):
            if kind == "score":
                if log_q is None:
                    log_q = [q.log_prob(t.detach()) for t in thetas]
                surrogate = (losses[r] * log_q[r]).mean()
            else:  # chain rule: ∇_φ (1/N) Σ_n ℓ(θ_n(φ)) = (1/N) Σ_n J_n · ∂θ_n/∂φ
                surrogate = (jacobian[r] * thetas[r]).sum(-1).mean()
            grads = torch.autograd.grad(surrogate, parameters, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, parameters)])
            )
        per_repeat = torch.stack(rows)
        spreads.append(per_repeat.std(0))
        means.append(per_repeat.mean(0))
        active |= (per_repeat != 0).any(0)
    n_phi = len(phi_names)
    return {
        "sd": torch.stack(spreads).detach().numpy() if spreads else np.zeros((0, n_phi)),
        "mean": torch.stack(means).detach().numpy() if means else np.zeros((0, n_phi)),
        "active": active.numpy(),
        "phi_names": phi_names,
        "estimators": list(kinds),
        "nonfinite_losses": nonfinite,
    }


def write_gradient_study(cfg: DictConfig, observed_path: str | Path, output_path: str | Path) -> Path:
    """Stage `gradient_study`: both experiments on the study's observed series with the settings of
    `cfg.gradient_study` (estimators, samples N, repeats, reference_samples, flow_repeats, mean and sd of the
    Gaussian q), into `gradient_study.zarr`: `gaussian_estimates` (estimator, repeat, gaussian_phi),
    `gaussian_reference` and `gaussian_reference_se` (gaussian_phi), `flow_sd` and `flow_mean`
    (estimator, flow_phi) and `flow_active` (flow_phi)."""
    from diffabm.build import build_model
    from diffabm.calibration.observe import read_observed
    from diffabm.calibration.priors import build_prior

    settings = cfg.gradient_study
    if cfg.calibration.loss != "mmd_values":
        raise ValueError(
            f"gradient_study measures the gradient of the squared MMD (calibration.loss: mmd_values), "
            f"but the study's flows use calibration.loss={cfg.calibration.loss!r}"
        )

    def model_factory(horizon: int | None) -> Simulator:
        variant = cfg.copy()
        with read_write(variant):
            variant.model.horizon = horizon
        return build_model(variant)

    model = model_factory(None)
    observed = torch.as_tensor(read_observed(observed_path, cfg, model)["x"].values)
    estimators = list(settings.estimators)
    gaussian = diagonal_gaussian_estimates(
        model_factory,
        observed,
        list(settings.mean),
        list(settings.sd),
        estimators,
        samples=settings.samples,
        repeats=settings.repeats,
        reference_samples=settings.reference_samples,
        seed=int(cfg.seed),
    )
    prior = build_prior(OmegaConf.to_container(cfg.calibration.prior), model.space)
    flow_settings = {
        "transforms": cfg.calibration.flow.transforms,
        "hidden_features": list(cfg.calibration.flow.hidden_features),
    }
    flow = flow_gradient_spread(
        model_factory,
        observed,
        prior,
        estimators,
        flow_settings,
        samples=settings.samples,
        repeats=settings.flow_repeats,
        seed=int(cfg.seed),
    )
    ds = xr.Dataset(
        {
            "gaussian_estimates": (("estimator", "repeat", "gaussian_phi"), gaussian["estimates"]),
            "gaussian_reference": ("gaussian_phi", gaussian["reference"]),
            "gaussian_reference_se": ("gaussian_phi", gaussian["reference_se"]),
            "flow_sd": (("estimator", "flow_phi"), flow["sd"]),
            "flow_mean": (("estimator", "flow_phi"), flow["mean"]),
            "flow_active": ("flow_phi", flow["active"]),
        },
        coords={
            "estimator": as_object_strings(estimators),
            "gaussian_phi": as_object_strings(gaussian["phi_names"]),
            "flow_phi": as_object_strings(flow["phi_names"]),
        },
    )
    ds.attrs.update(
        gaussian_samples=gaussian["samples"],
        gaussian_reference_samples=gaussian["reference_samples"],
        gaussian_mean=gaussian["mean"].tolist(),
        gaussian_sd=gaussian["sd"].tolist(),
        flow_samples=int(settings.samples),
        flow_nonfinite_losses=flow["nonfinite_losses"],
    )
    log.info(
        "gradient study: %d estimators, %d Gaussian repeats, %d flow repeats",
        len(estimators),
        settings.repeats,
        settings.flow_repeats,
    )
    return write_dataset(ds, output_path, cfg, int(cfg.seed))
