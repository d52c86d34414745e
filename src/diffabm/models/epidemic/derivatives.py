"""Stochastic derivatives of the epidemic (Arya, Schauer, Schäfer & Rackauckas 2022, "Automatic differentiation
of programs with discrete randomness", NeurIPS; StochasticAD.jl): unbiased estimates of d E[f(outputs)] / dθ for
every parameter at once, through all the model's Bernoulli draws.

A Bernoulli draw x = 1[u < p(θ)] with ∂p/∂θ ≥ 0 flips from 0 to 1, as θ grows by ε, with probability
ε (∂p/∂θ)/(1 − p) (its right stochastic derivative); events never vanish, for every parameter here raises its p.
So d E[f] / dθ_k = E[Σ_j w_jk (f(x with flip j) − f(x))], the sum over every draw j that did not fire, run on
with the same noise after the flip. The flips and their weights w_jk:

- seeding: an agent not seeded, w = 1/(1 − f) in the initial fraction f ("bernoulli"); with "systematic"
  seeding only the next agent in the systematic order can join, with w = N/(1 − r), r = frac(fN), and only
  when ⌊fN⌋ agents were seeded;
- infection of a susceptible agent i on day t: p = 1 − exp(−rate), rate = ψ_i Σ_L β_L m_L(t) E_iL(t), so
  w = ψ_i m_L(t) E_iL(t) in β_L, agent i's exposure in layer L;
- hospitalisation and death of an infected agent: p = σ(logit p₀ + log OR), w = p / OR in the odds ratio
  (a flip of an agent never infected changes nothing, so only infected agents are candidates).

The sum is pruned (Arya et al. 2022, §3, Appendix B) into `alternatives` coupled runs carried beside the
primal: each is a weighted reservoir sample of size one over all flips j with mass q_j = Σ_k w_jk / W_k, W_k
the running total of parameter k's weights (so every parameter has a share and early flips, which matter
most, are favoured; any q that the primal determines keeps the estimate unbiased). When day t's candidates
are offered, an alternative restarts from the primal with one of them flipped with probability q_t / Q
(Q = Σ q so far), the flip chosen ∝ q_j. With j the final flip, Q (w_jk / q_j) (f(alternative) − f(primal))
is an unbiased estimate of d E[f]/dθ_k for every k at once; the alternatives are averaged. Where f depends on
θ smoothly with the draws held (the shares of `infections_by_setting` in β), that pathwise term is added by
reverse mode through the primal. Cost: the primal
and the alternatives as one batch of (1 + alternatives) rows, plus one exposure per layer; memory
O(agents × rows), independent of the days and of the number of parameters.

References:
    Arya, Schauer, Schäfer, Rackauckas (2022), NeurIPS 35, arXiv:2210.08572.
    Efraimidis & Spirakis (2006), "Weighted random sampling with a reservoir", IPL 97 (reservoir of size one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from diffabm.models.base import stable_seed
from diffabm.models.epidemic.outputs import EpidemicOutput, daily_outputs
from diffabm.models.epidemic.transmission import NEVER

Statistic = Callable[[EpidemicOutput], Tensor]  # outputs of R rows -> (R,)
FLIPS = ("infection", "hospital", "death")  # kinds of flip; seeding is an infection on day 0
ODDS_RATIOS = {"hospital": "hospitalisation_odds_ratio", "death": "fatality_odds_ratio"}


def hard_sample(logits: Tensor, u: Tensor) -> Tensor:
    """The course's Bernoulli draws as they are, `u < p` (no surrogate: these derivatives need none)."""
    return (u < torch.sigmoid(logits)).float()


def supported(name: str) -> bool:
    return name.startswith("beta_") or name == "initial_fraction" or name in ODDS_RATIOS.values()


@dataclass
class _Reservoir:
    """For each draw, `alternatives` weighted reservoir samples of one flip, over all flips offered so far."""

    totals: Tensor  # W (B, d): each parameter's weights so far
    mass: Tensor  # Q (B,): Σ q_j so far
    ratio: Tensor  # w_jk / q_j of each alternative's flip (B, A, d)
    generator: torch.Generator

    def offer(self, kinds: list[tuple[Tensor, list[int]]]) -> tuple[Tensor, Tensor, Tensor]:
        """Offer one day's flips: per kind, weights (B, N, c) in the parameter columns c. Returns (draw,
        alternative, flip index into the kinds' agents laid end to end) of the alternatives that switch."""
        for weights, columns in kinds:
            self.totals[:, columns] += weights.sum(1)
        inverse = torch.where(self.totals > 0, 1.0 / self.totals, 0.0)
        q = torch.cat([(weights @ inverse[:, columns, None]).squeeze(-1) for weights, columns in kinds], dim=1)
        cumulative = q.cumsum(1)
        day = cumulative[:, -1]
        self.mass += day
        draws, alternatives = self.ratio.shape[:2]
        u = torch.rand(draws, alternatives, generator=self.generator, device=q.device)
        draw, alternative = ((u * self.mass[:, None] < day[:, None]) & (day[:, None] > 0)).nonzero(as_tuple=True)
        if draw.numel() == 0:
            return draw, alternative, draw
        level = torch.rand(draw.shape[0], 1, generator=self.generator, device=q.device) * day[draw, None]
        level = torch.minimum(level, torch.nextafter(day[draw, None], torch.zeros_like(level)))  # never the total
        chosen = torch.searchsorted(cumulative[draw], level, right=True).squeeze(1).clamp_(max=q.shape[1] - 1)
        self.ratio[draw, alternative] = 0.0
        offset = 0
        for weights, columns in kinds:
            n = weights.shape[1]
            mine = (chosen >= offset) & (chosen < offset + n)
            at = draw[mine], chosen[mine] - offset
            parameters = torch.tensor(columns, dtype=torch.long, device=q.device)
            self.ratio[draw[mine][:, None], alternative[mine][:, None], parameters] = (
                weights[at] / q[draw[mine], chosen[mine], None]
            )
            offset += n
        return draw, alternative, chosen

    def estimates(self, change: Tensor) -> Tensor:
        """(B, K, d) from f(alternative) − f(primal) (B, A, K) of K statistics, averaged over the alternatives."""
        return (self.mass[:, None, None, None] * self.ratio[:, :, None, :] * change[..., None]).mean(1)


def stochastic_derivatives(
    model,
    parameters: Mapping[str, Tensor],
    seed: int,
    statistic: Statistic,
    names: list[str],
    alternatives: int = 1,
    replicates: int = 1,
    controls: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """(f of the primal runs (B,), unbiased estimates of d E[f]/dθ (B, d) for θ in `names`), one per draw, with
    the model's `controls` held (as `EpidemicModel.simulate` takes them).

    `names` are any of `beta_<layer>`, `initial_fraction` and the two odds ratios; `statistic` maps outputs to
    one value per row, or K values (rows, K): then (B, K) and (B, K, d) are returned, all from one run. More
    `alternatives` cut the variance at (1 + alternatives) rows of work. With `replicates` R, each draw runs R
    independent simulations and f is the statistic of their mean outputs; its derivative is the sum over
    replicates of each one's flips, the others held (product rule).
    """
    unknown = [name for name in names if not supported(name)]
    if unknown:
        raise ValueError(f"stochastic derivatives: parameters {unknown} are not supported")
    if alternatives < 1:
        raise ValueError(f"stochastic derivatives: alternatives must be >= 1, got {alternatives}")
    if replicates < 1:
        raise ValueError(f"stochastic derivatives: replicates must be >= 1, got {replicates}")
    if model.interventions.vaccination is not None:
        raise ValueError(
            "stochastic derivatives: a vaccination intervention is not supported (its dose draws and "
            "severe-disease draws have no flips here); use the autograd modes"
        )
    if replicates > 1 and model.common_random_numbers:
        raise ValueError(
            "stochastic derivatives: replicates > 1 need independent draws (model.common_random_numbers: "
            "false), or every replicate is the same run"
        )
    draws = model.check_parameters(parameters)
    controls = {
        name: value.detach().repeat_interleave(replicates, dim=0)
        for name, value in model.check_controls(controls, draws).items()
    }
    draws *= replicates
    parameters = {name: value.repeat_interleave(replicates) for name, value in model.on_device(parameters).items()}
    rows, device, n_agents = 1 + alternatives, model.device, model.n_agents
    column = {name: k for k, name in enumerate(names)}
    layer_columns = [column.get(f"beta_{layer}") for layer in model.layers]

    def expand(x: Tensor) -> Tensor:
        return x.repeat_interleave(rows, dim=0)

    def primal(x: Tensor) -> Tensor:
        return x.view(draws, rows, *x.shape[1:])[:, 0]

    with torch.no_grad():
        beta = torch.stack([parameters[f"beta_{layer}"] for layer in model.layers], dim=-1)
        fraction = parameters["initial_fraction"]
        course = model.course_draws(parameters, seed, draws, hard_sample)
        durations = course["durations"]
        course = {
            name: expand(course[name])
            for name in ("symptomatic", "hospitalised", "dies", "infectious_days", "relative", "complies")
        } | {"durations": {name: expand(value) for name, value in durations.items()}}
        durations, latent = course["durations"], course["durations"]["latent"]
        state = model.day_state(course, seed)
        state.group_transmission = [(expand(values), group) for values, group in model.group_transmission(controls)]
        # Weight of each course flip (B, N): p / OR for agents whose draw did not fire.
        course_weight = {}
        for kind, logits in (("hospital", model.logit_hospital), ("death", model.logit_death)):
            if ODDS_RATIOS[kind] in column:
                odds_ratio = parameters[ODDS_RATIOS[kind]][:, None]
                course_weight[kind] = torch.sigmoid(logits + odds_ratio.log()) / odds_ratio
        reservoir = _Reservoir(
            torch.zeros(draws, len(names), device=device),
            torch.zeros(draws, device=device),
            torch.zeros(draws, alternatives, len(names), device=device),
            torch.Generator(device=device).manual_seed(stable_seed(seed, "stochastic_derivatives")),
        )
        multiplier = model.daily_multiplier(controls, draws, beta.dtype)

        infected = torch.zeros(draws * rows, n_agents, dtype=torch.bool, device=device)
        infection_day = torch.full((draws * rows, n_agents), NEVER, dtype=torch.int32, device=device)
        by_setting = torch.zeros(draws * rows, model.days, len(model.layers), device=device)
        # The primal's infections by setting keep their graph to β: their shares are smooth in β (pathwise term).
        beta_leaf = beta.clone().requires_grad_(True)
        primal_by_setting = [torch.zeros(draws, len(model.layers), device=device)]
        beta_columns = [k for k in layer_columns if k is not None]
        beta_layers = [layer for layer, k in enumerate(layer_columns) if k is not None]
        no_flips = (torch.zeros(draws, n_agents, 0, device=device), [])  # a kind of flip no parameter has
        for day in range(model.days):
            kinds = []  # per kind of flip: its weights (B, N, c) in parameter columns c
            if day == 0:
                u = model._uniform(seed, "initial", draws, model.seeding == "systematic")
                new = expand(u < fraction[:, None])
                infection = (
                    (_seeding_weight(model.seeding, u, fraction)[..., None], [column["initial_fraction"]])
                    if "initial_fraction" in column
                    else None
                )
            else:
                day_weight = beta * multiplier[:, day]  # (B, L)
                factor = state.susceptibility_factor(day)  # (B · rows, N): the `transmission_by_<grouping>` controls
                rate, total = state.force(infected.float(), expand(day_weight), infection_day, day, factor)
                new = ~infected & (expand(state.noise(day, draws)) < -torch.expm1(-rate))
                infection = None
                if beta_columns:
                    susceptible = ~(primal(infected) | primal(new))
                    exposure = model.contacts.spread_by_layer(
                        primal(total) * model.contacts.group_scale(multiplier[:, day]), len(model.layers)
                    )
                    exposure *= (state.susceptibility(None if factor is None else primal(factor)) * susceptible)[
                        ..., None
                    ]
                    infection = (
                        exposure if len(beta_layers) == len(model.layers) else exposure[..., beta_layers],
                        beta_columns,
                    )
            kinds.append(infection or no_flips)
            symptomatic_new = primal(new) & (primal(course["symptomatic"]) > 0)
            hospitalised = primal(course["hospitalised"]) > 0
            candidates = {
                "hospital": symptomatic_new & ~hospitalised,
                "death": symptomatic_new & hospitalised & ~(primal(course["dies"]) > 0),
            }
            for kind in ("hospital", "death"):
                if kind in course_weight:
                    kinds.append(((course_weight[kind] * candidates[kind])[..., None], [column[ODDS_RATIOS[kind]]]))
                else:
                    kinds.append(no_flips)

            draw, alternative, chosen = reservoir.offer(kinds)
            if draw.numel():  # restart the switched alternatives from the primal, with their flip
                source, target = draw * rows, draw * rows + 1 + alternative
                for x in (
                    infected,
                    new,
                    infection_day,
                    by_setting,
                    course["hospitalised"],
                    course["dies"],
                    course["infectious_days"],
                    state.end,
                    *([total] if day > 0 else []),
                ):
                    x[target] = x[source]  # the day's group totals too: they split the day's infections by setting
                kind, agent = chosen // n_agents, chosen % n_agents
                flip = kind == FLIPS.index("infection")
                new[target[flip], agent[flip]] = True
                flip = kind == FLIPS.index("hospital")
                course["hospitalised"][target[flip], agent[flip]] = 1.0
                admission = durations["symptomatic_to_admission"][target[flip], agent[flip]]
                course["infectious_days"][target[flip], agent[flip]] = admission
                state.end[target[flip], agent[flip]] = latent[target[flip], agent[flip]] + admission
                flip = kind == FLIPS.index("death")
                course["dies"][target[flip], agent[flip]] = 1.0
            if day > 0:
                by_setting[:, day] = model.infections_by_setting(new.float(), expand(day_weight), total)
                with torch.enable_grad():
                    primal_by_setting.append(
                        model.infections_by_setting(primal(new).float(), beta_leaf * multiplier[:, day], primal(total))
                    )
            infection_day = torch.where(new, day, infection_day)
            infected = infected | new

        days = model.days
        new_infections = torch.zeros(draws * rows, days + 1, device=device).scatter_add_(
            1, infection_day.long().clamp(max=days), torch.ones_like(infection_day, dtype=torch.float32)
        )[:, :days]
        output = daily_outputs(
            new_infections,
            by_setting,
            infected.float(),
            infection_day,
            course["symptomatic"],
            course["hospitalised"],
            course["dies"],
            latent,
            course["infectious_days"],
            durations["hospital_stay"],
            groupings=model.groupings(),
        )
        model.add_reports(output, {name: expand(value) for name, value in parameters.items()})
        with torch.enable_grad():
            output["infections_by_setting"] = output.infections_by_setting.clone()
            primal(output.infections_by_setting)[:] = torch.stack(primal_by_setting, dim=1)
            values = statistic(_replicate_means(output, replicates, rows))
            vector = values.dim() == 2  # K statistics at once: (rows, K)
            values = values if vector else values[:, None]
            primal_value, alternative_values = values.split([draws // replicates, draws * alternatives], dim=0)
            # The pathwise term E[∂f/∂β] with the draws held: only the shares by setting depend on β smoothly.
            pathwise = (
                [
                    torch.autograd.grad(column.sum(), beta_leaf, retain_graph=True, allow_unused=True)[0]
                    for column in primal_value.unbind(1)
                ]
                if primal_value.requires_grad
                else None
            )
            if pathwise is not None:
                pathwise = [torch.zeros_like(beta_leaf) if g is None else g for g in pathwise]
        change = (
            alternative_values.view(draws, alternatives, -1)
            - primal_value.detach().repeat_interleave(replicates, dim=0)[:, None]
        )
        estimates = reservoir.estimates(change)  # (B·R, K, d)
        if pathwise is not None:
            for layer, k in enumerate(layer_columns):
                if k is not None:
                    estimates[:, :, k] += torch.stack(pathwise, dim=1)[:, :, layer]
        estimates = estimates.view(-1, replicates, *estimates.shape[1:]).sum(1)
        primal_value = primal_value.detach()
        return (primal_value, estimates) if vector else (primal_value[:, 0], estimates[:, 0])


def _replicate_means(output: EpidemicOutput, replicates: int, rows: int) -> EpidemicOutput:
    """The mean over each draw's replicates of the primal outputs (B rows), then for every replicate r and
    alternative a that mean with replicate r's primal replaced by its alternative (B·R·A rows)."""

    def means(series: Tensor) -> Tensor:
        series = series.view(-1, replicates, rows, *series.shape[1:])
        primal = series[:, :, 0]
        mean = primal.mean(1)
        replaced = mean[:, None, None] + (series[:, :, 1:] - primal[:, :, None]) / replicates
        return torch.cat([mean, replaced.flatten(0, 2)])

    return EpidemicOutput({name: means(series) for name, series in output.items()})


def _seeding_weight(seeding: str, u: Tensor, fraction: Tensor) -> Tensor:
    """Weights (B, N) of the seeding flips in the initial fraction f, for uniforms `u` and seeds u < f.

    Bernoulli: each agent not seeded, 1/(1 − f). Systematic (u_i = (k_i + v)/N): with fN = a + r, the next
    agent in the order joins as f grows iff v ∈ [r, 1), i.e. iff a (not a + 1) agents were seeded; given that,
    at rate N/(1 − r).
    """
    seeded = u < fraction[:, None]
    if seeding == "bernoulli":
        return (~seeded).float() / (1.0 - fraction[:, None])
    n_agents = u.shape[1]
    expected = fraction * n_agents
    whole, remainder = expected.floor(), expected - expected.floor()
    weight = torch.where(seeded.sum(1) == whole, n_agents / (1.0 - remainder), 0.0)
    following = torch.where(seeded, 2.0, u).argmin(1)
    return torch.zeros_like(u).scatter_(1, following[:, None], weight[:, None])
