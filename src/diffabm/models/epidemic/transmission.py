"""The daily transmission step, an autograd Function with a hand-written adjoint and a forward-mode `jvp`.

Day t infects susceptible agent i with probability 1 - exp(-rate_i), rate_i = ψ_i Σ_L w_L Σ_{g ∋ i, g in L}
(1/|g|) Σ_{j ∈ g} T_j(t), through the model's Bernoulli estimator (Quera-Bofarull et al. 2023, GradABM-JUNE;
Chopra et al. 2023, GradABM). The adjoint recomputes each day from the final infection days and the seed
rather than saving it, so reverse mode keeps only the group totals (about 0.4 floats per agent and day on the toy
population) and the layer weights; `jvp` gives forward mode,
whose memory does not grow with the days (Quera-Bofarull et al. 2023, Fig. 3). Agents never infected still
receive the gradient of the outputs their infection would have caused (`_DayState.unrealised_outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from diffabm.models.autodiff import vmap_tangents_only

if TYPE_CHECKING:  # for annotations only
    from diffabm.models.epidemic.contacts import ContactLayers
    from diffabm.models.epidemic.course import DiseaseCourse
    from diffabm.models.epidemic.interventions import Interventions
    from diffabm.models.epidemic.vaccination import VaccineProtection
    from diffabm.stochastic import BernoulliEstimator

NEVER = 1 << 30  # infection day of agents never infected


class _Model(Protocol):
    """What a transmission day reads of its model (`diffabm.models.epidemic.EpidemicModel` is one)."""

    days: int
    course: DiseaseCourse
    contacts: ContactLayers
    interventions: Interventions
    isolating: list[bool]
    estimator: BernoulliEstimator
    susceptibility: Tensor
    profile: Tensor

    def _uniform(self, seed: int, purpose: str, draws: int) -> Tensor: ...


@dataclass
class _DayState:
    """Per-simulation constants of transmission days, and output gradients kept for the backward pass."""

    model: _Model
    seed: int
    relative: Tensor
    infectious_from: Tensor  # days after infection that infectiousness starts (before symptom onset)
    end: Tensor
    complies: Tensor
    isolated_from: Tensor
    final_infection_day: Tensor | None = None
    latest_day: tuple[Tensor, ...] = ()
    delays: dict[str, tuple[Tensor, Tensor, Tensor | int]] = field(default_factory=dict)
    output_grads: dict[str, tuple[int, Tensor]] = field(default_factory=dict)  # name: (backward pass, dL/d series)
    seeding_term: Tensor | None = None
    vaccine: VaccineProtection | None = None
    group_transmission: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (B, days, G), group (N,)

    @property
    def isolating(self) -> bool:
        return self.model.interventions.isolation_compliance > 0 and any(self.model.isolating)

    def infectiousness_factor(self, infection_day: Tensor, day: int) -> tuple[Tensor, Tensor | None]:
        """Per-agent infectiousness if infected (profile × stage) and the share kept when isolating."""
        beyond = self.model.course.max_days_since_infection + 1  # the profile is zero there
        since = (day - infection_day).clamp_(0, beyond)
        keep = 1.0 - self.complies * (since >= self.isolated_from) if self.isolating else None
        since.masked_fill_((since < self.infectious_from).logical_or_(since >= self.end), beyond)  # not infectious
        factor = self.model.profile.index_select(0, since.reshape(-1)).view(since.shape)
        return factor.mul_(self.relative), keep

    def susceptibility_factor(self, day: int) -> Tensor | None:
        """The day's multiplier (B, N) of each agent's susceptibility ψ_i: 1 − vaccine efficacy against infection,
        times the day's `transmission_by_<grouping>` control of the agent's group; None if neither is present."""
        factor = None if self.vaccine is None else self.vaccine.susceptibility_factor(day)
        for multiplier, group in self.group_transmission:
            term = multiplier[:, day].index_select(1, group)
            factor = term if factor is None else factor * term
        return factor

    def susceptibility(self, factor: Tensor | None) -> Tensor:
        return self.model.susceptibility if factor is None else self.model.susceptibility * factor

    def exposure(self, total: Tensor, weight: Tensor) -> Tensor:
        """Each agent's force of infection before its susceptibility (B, N): Σ_L w_L Σ_{g ∋ i} T_g / |g|."""
        return self.model.contacts.spread(total * self.model.contacts.group_scale(weight))

    def force(
        self, infected: Tensor, weight: Tensor, infection_day: Tensor, day: int, factor: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The day's infection rate of every agent (B, N) and the groups' infectiousness totals (B, G), with the
        day's susceptibility factor (`susceptibility_factor`)."""
        contacts, model = self.model.contacts, self.model
        infectious, keep = self.infectiousness_factor(infection_day, day)
        # Hard states are 1 exactly where infection_day is set, and `infectious` is 0 elsewhere: no product needed.
        infectiousness = infected * infectious if model.estimator.relaxed else infectious
        isolated = infectiousness * keep if keep is not None else None
        total = contacts.group_totals(infectiousness, isolated, model.isolating)
        return self.susceptibility(factor) * self.exposure(total, weight), total

    def noise(self, day: int, draws: int) -> Tensor:
        return self.model._uniform(self.seed, f"day{day}", draws)

    def infection_day_on(self, day: int) -> Tensor:
        """Infection days as they were at the start of `day` (infection days never change once set)."""
        final = self.final_infection_day
        return torch.where(final < day, final, NEVER)

    def unrealised_outputs(self, day: int) -> Tensor | None:
        """dL/d(new infection on `day`) through the outputs it would have caused, for agents never infected.

        Agents never infected in the forward pass have no course in time, so the outputs' gradient
        cannot reach their straight-through infection draws; this adds it at each draw's day: the
        infection itself by age band, and the case, admission and death that would follow.
        """
        total = None
        current = torch._C._current_graph_task_id()
        for name, (graph_task, grad) in self.output_grads.items():
            if graph_task != current:  # recorded by an earlier backward pass (retain_graph), not this one's
                continue
            delay, weight, column = self.delays[name]
            days, columns = grad.shape[1], (grad.shape[2] if grad.dim() == 3 else 1)
            flat = torch.cat([grad.reshape(grad.shape[0], days * columns), grad.new_zeros(grad.shape[0], 1)], dim=1)
            time = day + delay
            index = torch.where(time < days, time * columns + column, days * columns)
            term = flat.gather(1, index.expand_as(weight)) * weight
            total = term if total is None else total + term
        return None if total is None else total * (self.final_infection_day == NEVER)


class _RecordOutputGradient(torch.autograd.Function):
    """Identity on an output series whose backward keeps dL/d(series) for unrealised infections."""

    @staticmethod
    def forward(ctx, series: Tensor, state: _DayState, name: str) -> Tensor:
        ctx.state, ctx.name = state, name
        return series.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        ctx.state.output_grads[ctx.name] = (torch._C._current_graph_task_id(), grad)
        return grad, None, None


class _UnrealisedAtSeeding(torch.autograd.Function):
    """Identity on the seeded infections whose backward adds the unrealised outcomes of day 0."""

    @staticmethod
    def forward(ctx, infected: Tensor, state: _DayState) -> Tensor:
        ctx.state = state
        return infected.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        state = ctx.state
        extra = state.seeding_term if state.model.days > 1 else state.unrealised_outputs(0)
        state.seeding_term = None
        state.output_grads.clear()
        return (grad if extra is None else grad + extra), None


class _InfectionsBySetting(torch.autograd.Function):
    """The day's infections (B, L) by setting: Σ_i new_i · share_i over the agents infected on the day, share_iL =
    w_L E_iL / Σ_K w_K E_iK (`EpidemicModel.infections_by_setting`). Differentiable in `new` (B, N) and `weight`
    (B, L), exposures fixed; saves only the infected agents' flat index, values and exposures, where autograd kept
    seven tensors a day whose sizes change from day to day (fragmenting the heap between the days' temporaries)."""

    @staticmethod
    def shares(weight: Tensor, draw: Tensor, exposure: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        force = weight[draw] * exposure
        total = force.sum(-1, keepdim=True)
        return force, total, force / total.clamp_min(1e-30)

    @staticmethod
    def forward(new: Tensor, weight: Tensor, flat: Tensor, exposure: Tensor) -> Tensor:
        draw = flat // new.shape[1]
        _, _, share = _InfectionsBySetting.shares(weight, draw, exposure)
        values = new.reshape(-1)[flat]
        return weight.new_zeros(new.shape[0], weight.shape[1]).index_add_(0, draw, values[:, None] * share)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        new, weight, flat, exposure = inputs
        values = new.detach().reshape(-1)[flat]
        ctx.save_for_backward(weight, flat, exposure, values)
        ctx.save_for_forward(weight, flat, exposure, values)
        ctx.shape = new.shape

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        weight, flat, exposure, values = ctx.saved_tensors
        draw = flat // ctx.shape[1]
        force, total, share = _InfectionsBySetting.shares(weight, draw, exposure)
        grad_row = grad[draw]
        grad_new = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_values = (grad_row * share).sum(-1)
            grad_new = grad_values.new_zeros(ctx.shape[0] * ctx.shape[1]).index_put_((flat,), grad_values)
            grad_new = grad_new.view(ctx.shape)
        if ctx.needs_input_grad[1]:
            denominator = total.clamp_min(1e-30)
            grad_share = values[:, None] * grad_row
            through_total = (grad_share * force).sum(-1, keepdim=True) * (total >= 1e-30) / denominator**2
            grad_force = grad_share / denominator - through_total
            grad_weight = torch.zeros_like(weight).index_add_(0, draw, grad_force * exposure)
        return grad_new, grad_weight, None, None

    vmap = staticmethod(vmap_tangents_only)

    @staticmethod
    def jvp(ctx, new_tangent: Tensor | None, weight_tangent: Tensor | None, *_) -> Tensor:
        weight, flat, exposure, values = ctx.saved_tensors
        draw = flat // ctx.shape[1]
        force, total, share = _InfectionsBySetting.shares(weight, draw, exposure)
        source = torch.zeros_like(share)
        if new_tangent is not None:
            source = source + new_tangent.reshape(-1)[flat][:, None] * share
        if weight_tangent is not None:
            denominator = total.clamp_min(1e-30)
            force_tangent = weight_tangent[draw] * exposure
            total_tangent = force_tangent.sum(-1, keepdim=True) * (total >= 1e-30)
            share_tangent = force_tangent / denominator - force * total_tangent / denominator**2
            source = source + values[:, None] * share_tangent
        # out of place: under `torch.func.vmap` the tangents are batched, the zeros are not
        return weight.new_zeros(ctx.shape[0], weight.shape[1]).index_add(0, draw, source.to(weight.dtype))


class _TransmissionDay(torch.autograd.Function):
    """One day of transmission, w' = w + (1 - w) · draw(ψ · force(w · factor)), with its adjoint.

    The adjoint is derived by hand so that a day saves only the group totals and the layer weights (and w
    for relaxed estimators): w, the infection days, the infectiousness factors and the noise are
    recomputed from the final infection days and the seed, and the rate from the totals (one `spread`, the
    same operations as the forward pass, so the same bits and the same draws). Reverse mode then needs about
    one float per group and day (0.4 per agent on the toy population), and a little over one forward pass of
    work. `jvp` gives forward mode
    (`torch.func.jvp`), whose memory does not grow with the days (Quera-Bofarull et al. 2023, Fig. 3);
    it omits the unrealised-outcome term of the adjoint.
    """

    @staticmethod
    def forward(
        infected: Tensor, weight: Tensor, factor: Tensor | None, infection_day: Tensor, day: int, state: _DayState
    ) -> tuple[Tensor, Tensor, Tensor]:
        model = state.model
        rate, total = state.force(infected, weight, infection_day, day, factor)
        draw = model.estimator.rate_sample(rate, state.noise(day, infected.shape[0]))
        state.latest_day = (infected, weight, factor, infection_day, rate, total)  # for `jvp`, which follows at once
        if not model.estimator.relaxed:  # 0/1 states and draws: w + (1 - w) · draw is their maximum, in one pass
            return torch.maximum(infected, draw), rate, total
        return infected + (1.0 - infected) * draw, rate, total

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor, Tensor]) -> None:
        infected, weight, _, _, day, state = inputs
        _, rate, total = output
        ctx.mark_non_differentiable(rate, total)
        ctx.save_for_backward(infected if state.model.estimator.relaxed else None, weight, total)
        ctx.day, ctx.state = day, state

    vmap = staticmethod(vmap_tangents_only)

    @staticmethod
    def jvp(
        ctx, infected_tangent: Tensor | None, weight_tangent: Tensor | None, factor_tangent: Tensor | None, *_
    ) -> tuple[Tensor, None, None]:
        """Forward-mode derivative of w' (for `torch.func.jvp`): memory independent of the days."""
        state, model = ctx.state, ctx.state.model
        contacts = model.contacts
        infected, weight, factor, infection_day, rate, total = state.latest_day
        infectious, keep = state.infectiousness_factor(infection_day, ctx.day)
        rate_tangent = torch.zeros_like(total)
        if infected_tangent is not None:
            infectiousness_tangent = infected_tangent * infectious
            isolated_tangent = infectiousness_tangent * keep if keep is not None else None
            total_tangent = contacts.group_totals(infectiousness_tangent, isolated_tangent, model.isolating)
            rate_tangent = total_tangent * contacts.group_scale(weight)
        if weight_tangent is not None:
            rate_tangent = rate_tangent + total * contacts.group_scale(weight_tangent)
        rate_tangent = state.susceptibility(factor) * contacts.spread(rate_tangent)
        if factor_tangent is not None:
            rate_tangent = rate_tangent + model.susceptibility * factor_tangent * state.exposure(total, weight)
        noise = state.noise(ctx.day, infected.shape[0])
        inert = 1.0 if model.estimator.relaxed else 1.0 - infected
        tangent = (1.0 - infected) * model.estimator.rate_derivative(rate, noise) * rate_tangent
        if infected_tangent is not None:
            tangent = tangent + infected_tangent * (1.0 - model.estimator.rate_sample(rate, noise) * inert)
        return tangent, None, None

    @staticmethod
    def backward(ctx, grad: Tensor, *_) -> tuple[Tensor, Tensor, Tensor | None, None, None, None]:
        infected, weight, total = ctx.saved_tensors
        state, model = ctx.state, ctx.state.model
        infection_day = state.infection_day_on(ctx.day)
        factor = state.susceptibility_factor(ctx.day)  # recomputed, not saved: a float per agent and day
        exposure = state.exposure(total, weight)
        rate = state.susceptibility(factor) * exposure  # as in the forward pass, bit for bit: not saved either
        if infected is None:
            infected = (infection_day != NEVER).to(rate.dtype)
        contacts = model.contacts
        noise = state.noise(ctx.day, infected.shape[0])
        # With hard states, draws of agents already infected are inert: their weight passes through
        # unchanged (their draws are driven by their own offspring, absent had they not been infected).
        inert = 1.0 if model.estimator.relaxed else 1.0 - infected
        grad_infected = grad * (1.0 - model.estimator.rate_sample(rate, noise) * inert)
        extra = state.unrealised_outputs(ctx.day)
        if ctx.day == 1:  # the last day of this backward pass: hand day 0's term to the seeding node
            state.seeding_term = state.unrealised_outputs(0)
            state.output_grads.clear()
        grad_new = grad if extra is None else grad + extra
        grad_rate = grad_new * (1.0 - infected) * model.estimator.rate_derivative(rate, noise)
        grad_group_rate = contacts.gather(grad_rate * state.susceptibility(factor))
        grad_weight = contacts.layer_sums(grad_group_rate * total * contacts.inverse_size, weight.shape[1])
        grad_total = grad_group_rate * contacts.group_scale(weight)
        grad_factor = grad_rate * model.susceptibility * exposure if ctx.needs_input_grad[2] else None
        infectious, keep = state.infectiousness_factor(infection_day, ctx.day)
        grad_infectiousness = contacts.spread(grad_total, model.isolating, keep)
        return grad_infected + grad_infectiousness * infectious, grad_weight, grad_factor, None, None, None
