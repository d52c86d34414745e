"""Stochastic derivatives of the epidemic (Arya, Schauer, Schäfer & Rackauckas 2022, "Automatic differentiation
of programs with discrete randomness", NeurIPS; StochasticAD.jl): unbiased derivatives of E[f(outputs)] in
the contact intensities β_L and the initial fraction, through the discrete infection draws.

Every Bernoulli draw x = 1[u < p(θ)] with ∂p/∂θ ≥ 0 has a right stochastic derivative: with weight
(∂p/∂θ)/(1 − p) a non-event becomes an event. For an infection draw, p = 1 − exp(−rate) with rate =
ψ_i Σ_L β_L m_L(t) E_iL(t), so the weight of a flip in β_L is ψ_i m_L(t) E_iL(t): agent i's exposure in
layer L. Beside the primal simulation, one alternative per (draw, parameter) is carried, advanced with the
same noise; each day's candidate flips (every agent not infected that day) are pruned into it: with
probability w_t / (W + w_t) the alternative restarts from the primal with one new flip (agent chosen ∝ its
weight), and W ← W + w_t. Then W · (f(alternative) − f(primal)) is an unbiased estimate of d E[f] / dθ
(Arya et al. 2022, §3 and the pruning of Appendix B). For the seeding, each agent not seeded flips with
weight 1 / (1 − f).

Prototype (issue 13): β and the initial fraction with Bernoulli seeding; the course's own Bernoulli draws
(hospitalisation, death: the odds ratios) are not yet covered, and the cost is 1 + d forward runs for d
parameters, with (1 + d) × the memory of one.

References:
    Arya, Schauer, Schäfer, Rackauckas (2022), NeurIPS 35, arXiv:2210.08572.

Example:
    >>> from diffabm.build import build_model  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from diffabm.models.base import stable_seed
from diffabm.models.epidemic.outputs import EpidemicOutput, daily_outputs
from diffabm.models.epidemic.transmission import NEVER

Statistic = Callable[[EpidemicOutput], Tensor]  # outputs of R rows -> (R,)


def hard_sample(logits: Tensor, u: Tensor) -> Tensor:
    """The course's Bernoulli draws as they are, `u < p` (no surrogate: these derivatives need none)."""
    return (u < torch.sigmoid(logits)).float()


def stochastic_derivatives(model, parameters: Mapping[str, Tensor], seed: int, statistic: Statistic,
                           names: list[str]) -> tuple[Tensor, Tensor]:
    """(f of the primal runs (B,), unbiased estimates of d E[f]/dθ (B, d) for θ in `names`), one per draw.

    `names` are `beta_<layer>` and `initial_fraction`; `statistic` maps outputs to one value per row.
    """
    if model.seeding != "bernoulli":
        raise ValueError("stochastic derivatives support model.seeding: bernoulli only")
    unknown = [name for name in names if not (name.startswith("beta_") or name == "initial_fraction")]
    if unknown:
        raise ValueError(f"stochastic derivatives: parameters {unknown} are not supported yet")
    draws = model.check_parameters(parameters)
    parameters = model.on_device(parameters)
    rows = 1 + len(names)  # per draw: the primal, then one alternative per parameter
    layer_of = {k: model.layers.index(name.removeprefix("beta_")) for k, name in enumerate(names)
                if name.startswith("beta_")}

    def expand(x: Tensor) -> Tensor:
        return x.repeat_interleave(rows, dim=0)

    with torch.no_grad():
        beta = torch.stack([parameters[f"beta_{layer}"] for layer in model.layers], dim=-1)
        fraction = parameters["initial_fraction"]
        course = model.course_draws(parameters, seed, draws, hard_sample)
        course = {name: ({key: expand(v) for key, v in value.items()} if isinstance(value, dict) else expand(value))
                  for name, value in course.items()}
        durations, latent = course["durations"], course["durations"]["latent"]
        state = model.day_state(course, seed)
        generator = torch.Generator(device=model.device).manual_seed(stable_seed(seed, "stochastic_derivatives"))

        # Day 0: seeding; the initial fraction's alternative gets one more seed (weight N_not_seeded / (1 − f)).
        u0 = model._uniform(seed, "initial", draws)
        seeded = u0 < fraction[:, None]
        infected = expand(seeded)
        weight = torch.zeros(draws, len(names), device=model.device)
        if "initial_fraction" in names:
            k = names.index("initial_fraction")
            candidates = (~seeded).float()
            chosen = torch.multinomial(candidates + 1e-30, 1, generator=generator).squeeze(1)
            infected.view(draws, rows, -1)[torch.arange(draws), 1 + k, chosen] = True
            weight[:, k] = candidates.sum(1) / (1.0 - fraction)
        infection_day = torch.where(infected, 0, NEVER).int()

        multiplier = model.contact_multiplier.expand(draws, -1, -1) if model.contact_multiplier.dim() == 2 \
            else model.contact_multiplier
        contacts = model.contacts
        one_hot = torch.eye(len(model.layers), device=model.device)
        for day in range(1, model.days):
            day_weight = beta * multiplier[:, day]  # (B, L)
            rate, total = state.force(infected.float(), expand(day_weight), infection_day, day)  # total: (B·R, G)
            u = expand(state.noise(day, draws))
            new = (~infected) & (u < -torch.expm1(-rate))

            # Candidate flips of the primal: agents it leaves uninfected today, weight ψ_i m_L(t) E_iL(t).
            primal = slice(None, None, rows)
            susceptible = ~(infected[primal] | new[primal])
            for k, layer in layer_of.items():
                scale = contacts.group_scale((multiplier[:, day] * one_hot[layer]))  # m_L(t) / |g| on layer L
                exposure = model.susceptibility * contacts.spread(total[primal] * scale)
                candidates = exposure * susceptible
                day_total = candidates.sum(1)
                switch = torch.rand(draws, generator=generator, device=model.device) * (weight[:, k] + day_total) \
                    < day_total
                if switch.any():
                    chosen = torch.multinomial(candidates[switch] + 1e-30, 1, generator=generator).squeeze(1)
                    alternative = torch.arange(draws, device=model.device)[switch] * rows + 1 + k
                    infected[alternative] = infected[primal][switch]
                    infection_day[alternative] = infection_day[primal][switch]
                    new[alternative] = new[primal][switch]
                    new[alternative, chosen] = True
                weight[:, k] += day_total
            infection_day = torch.where(new, day, infection_day)
            infected = infected | new

        # Daily counts from the infection days: an alternative restarted from the primal takes its past too.
        days = model.days
        new_infections = torch.zeros(draws * rows, days + 1, device=model.device).scatter_add_(
            1, infection_day.long().clamp(max=days), torch.ones_like(infection_day, dtype=torch.float32))[:, :days]
        # Not counted here: NaN, so that a statistic that reads it is not silently wrong.
        by_setting = new_infections.new_full((*new_infections.shape, len(model.layers)), float("nan"))
        output = daily_outputs(new_infections, by_setting, infected.float(), infection_day, course["symptomatic"],
                               course["hospitalised"], course["dies"], latent, course["infectious_days"],
                               durations["hospital_stay"],
                               age_band=model.age_band, n_bands=len(model.course.age_bands))
        values = statistic(output).reshape(draws, rows)
        return values[:, 0], weight * (values[:, 1:] - values[:, :1])
