"""GradABM/JUNE-style differentiable epidemic ABM over contact layers of groups.

Force of infection on susceptible agent i on day t (Quera-Bofarull et al. 2023, GradABM-JUNE;
Chopra et al. 2023, GradABM):

    p_i(t) = 1 - exp(-ψ_i Σ_L m_L(t) β_L Σ_{g ∋ i, g in L} (1/|g|) Σ_{j ∈ g} T_j(t))

with ψ_i the age-dependent susceptibility, m_L(t) the contact multiplier of interventions and
T_j(t) the infectiousness of agent j: a Gamma-shaped profile over days since infection, scaled
for asymptomatic agents and zero outside the infectious stages. Group sums are `index_add_` over
flattened (agent, group) memberships: O(agents × layers) per day.

Each infected agent follows susceptible → exposed → infectious (asymptomatic or symptomatic) →
(symptomatic only) hospitalised → recovered or dead. Branches are Bernoulli draws with
age-dependent probabilities; stage durations are log-normal, discretised to days. Every
discrete draw goes through a pluggable estimator from `diffabm.stochastic`, so outputs are
differentiable in all parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from diffabm.models.base import Simulator, stable_seed
from diffabm.models.interventions import Interventions, build_interventions
from diffabm.parameters import ParameterSpace
from diffabm.resources import check_memory
from diffabm.stochastic import BernoulliEstimator, EventWeighted
from diffabm.store import as_object_strings

STAGES = (
    "susceptible",
    "exposed",
    "infectious_asymptomatic",
    "infectious_symptomatic",
    "hospitalised",
    "recovered",
    "dead",
)
NEVER = 1 << 30  # infection day of agents never infected
DURATIONS = ("latent", "asymptomatic_infectious", "symptomatic_to_recovery", "symptomatic_to_admission",
             "hospital_stay")
SEEDINGS = ("bernoulli", "systematic")


def _check_finite_in(field: str, values: np.ndarray, low: float, high: float, open_low: bool = False) -> None:
    """Raise a ValueError naming `field`, the position and the value of the first non-finite or out-of-range entry."""
    inside = np.isfinite(values) & (values > low if open_low else values >= low) & (values <= high)
    if not inside.all():
        index = int(np.flatnonzero(~inside.reshape(-1))[0])
        where = f"[{index}]" if values.size > 1 else ""
        bound = f"{'>' if open_low else '>='} {low:g}" + (f" and <= {high:g}" if np.isfinite(high) else "")
        raise ValueError(f"{field}{where} is {values.reshape(-1)[index]:g}, must be finite and {bound}")


@dataclass(frozen=True)
class Duration:
    """A log-normal stage duration in days, given by mean and standard deviation per age band."""

    mean: Sequence[float]
    sd: Sequence[float]


@dataclass(frozen=True)
class DiseaseCourse:
    """Age-dependent natural history; each list has one value per age band (see the config)."""

    age_bands: Sequence[int]
    susceptibility: Sequence[float]
    p_symptomatic: Sequence[float]
    p_hospital_given_symptomatic: Sequence[float]
    p_death_given_hospital: Sequence[float]
    latent: Duration
    asymptomatic_infectious: Duration
    symptomatic_to_recovery: Duration
    symptomatic_to_admission: Duration
    hospital_stay: Duration
    infectiousness_mean: float = 5.5
    infectiousness_sd: float = 2.4
    asymptomatic_relative_infectiousness: float = 0.5
    max_days_since_infection: int = 60

    def __post_init__(self) -> None:
        """Every number finite and in its domain, one value (or one per band) each; errors name field and value."""
        bands = np.asarray(self.age_bands, dtype=float)
        if bands.ndim != 1 or not bands.size or bands[0] != 0 or np.any(np.diff(bands) <= 0) or \
                np.any(bands != np.round(bands)):
            raise ValueError(f"model.course.age_bands is {list(self.age_bands)}, must be whole years rising from 0")
        n_bands = len(bands)
        for name in ("susceptibility", "p_symptomatic", "p_hospital_given_symptomatic", "p_death_given_hospital"):
            values = np.asarray(getattr(self, name), dtype=float)
            if values.shape != (n_bands,):
                raise ValueError(f"model.course.{name} has {values.size} values, expected {n_bands} (age bands)")
            _check_finite_in(f"model.course.{name}", values, 0.0, 1.0 if name.startswith("p_") else np.inf)
        for name in DURATIONS:
            duration = getattr(self, name)
            for part in ("mean", "sd"):
                values = np.asarray(getattr(duration, part), dtype=float)
                if values.size not in (1, n_bands):
                    raise ValueError(f"model.course.{name}.{part} has {values.size} values, expected 1 or "
                                     f"{n_bands} (age bands)")
                _check_finite_in(f"model.course.{name}.{part}", values, 0.0, np.inf, open_low=True)
        for name in ("infectiousness_mean", "infectiousness_sd"):
            _check_finite_in(f"model.course.{name}", np.asarray([getattr(self, name)], dtype=float), 0.0, np.inf,
                             open_low=True)
        _check_finite_in("model.course.asymptomatic_relative_infectiousness",
                         np.asarray([self.asymptomatic_relative_infectiousness], dtype=float), 0.0, 1.0)
        if not isinstance(self.max_days_since_infection, int) or self.max_days_since_infection < 1:
            raise ValueError(f"model.course.max_days_since_infection is {self.max_days_since_infection!r}, "
                             f"must be a whole number >= 1")

    def infectiousness_profile(self) -> Tensor:
        """Gamma-shaped infectiousness by day since infection, summing to one."""
        shape = (self.infectiousness_mean / self.infectiousness_sd) ** 2
        rate = self.infectiousness_mean / self.infectiousness_sd**2
        days = torch.arange(self.max_days_since_infection + 1, dtype=torch.float64)
        cdf = torch.special.gammainc(torch.tensor(shape, dtype=torch.float64), rate * days)
        profile = torch.diff(cdf, prepend=torch.zeros(1, dtype=torch.float64))
        profile = torch.cat([profile, torch.zeros(1, dtype=torch.float64)])  # beyond the table: nothing
        return (profile / profile.sum()).float()


OBSERVABLES = {  # name: dimensions after `draw`
    "new_infections": ("time",),
    "cases": ("time",),
    "hospitalisations": ("time",),
    "deaths": ("time",),
    "stage_counts": ("time", "stage"),
    "infections_by_age": ("time", "age_group"),
    "infections_by_setting": ("time", "setting"),
}


@dataclass
class EpidemicOutput(Mapping):
    """Daily series for B draws: counts (B, T), stage counts (B, T, S), infections by age (B, T, A)
    and by setting, the contact layer where they happened (B, T, L; the seeds of day 0 have none).
    A mapping from each name of `OBSERVABLES` to its tensor."""

    new_infections: Tensor
    cases: Tensor
    hospitalisations: Tensor
    deaths: Tensor
    stage_counts: Tensor
    infections_by_age: Tensor
    infections_by_setting: Tensor

    def __getitem__(self, name: str) -> Tensor:
        if name not in OBSERVABLES:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(OBSERVABLES)

    def __len__(self) -> int:
        return len(OBSERVABLES)


class ContactLayers:
    """Group memberships as slots: each slot gives every agent one group id in one layer.

    A layer with K memberships per agent has K slots; "no group" points to a sink group of
    inverse size zero. Group ids of all layers share one numbering.
    """

    def __init__(self, groups: Mapping[str, np.ndarray], n_agents: int, device: torch.device | str = "cpu"):
        self.names = list(groups)
        slot_groups, slot_layers, group_layer, offset = [], [], [], 0
        for layer_index, (name, ids) in enumerate(groups.items()):
            ids = np.asarray(ids)
            if ids.ndim not in (1, 2) or ids.shape[0] != n_agents:
                raise ValueError(f"layer '{name}': group ids have shape {ids.shape}, expected ({n_agents},) or "
                                 f"({n_agents}, K)")
            ids = ids.reshape(n_agents, -1)
            bad = ids[(ids < -1) | (ids >= max(n_agents, 1))]
            if bad.size:
                raise ValueError(f"layer '{name}': group id {bad[0]} out of range [-1, {n_agents})")
            member = ids >= 0
            contiguous = np.full(ids.shape, -1, dtype=np.int64)
            _, contiguous[member] = np.unique(ids[member], return_inverse=True)
            n_groups = int(contiguous.max()) + 1 if member.any() else 0
            for slot in contiguous.T:
                slot_groups.append(np.where(slot >= 0, slot + offset, -1))
                slot_layers.append(layer_index)
            group_layer.append(np.full(n_groups, layer_index))
            offset += n_groups
        self.n_groups = offset + 1  # the last group is the sink of agents without a group
        groups_by_slot = np.stack(slot_groups)
        groups_by_slot[groups_by_slot < 0] = offset
        self.slot_group = torch.as_tensor(groups_by_slot, dtype=torch.long, device=device)
        self.slot_layer = slot_layers
        self.group_layer = torch.as_tensor(np.concatenate([*group_layer, [0]]), dtype=torch.long, device=device)
        sizes = torch.bincount(self.slot_group.reshape(-1), minlength=self.n_groups).float()
        self.inverse_size = 1.0 / sizes.clamp_min(1.0)
        self.inverse_size[-1] = 0.0

    def group_totals(self, infectiousness: Tensor, isolated: Tensor | None, isolating: Sequence[bool]) -> Tensor:
        """Σ_{j ∈ g} T_j per group (B, G); members of isolating layers contribute `isolated`."""
        total = infectiousness.new_zeros(infectiousness.shape[0], self.n_groups)
        for group, layer in zip(self.slot_group, self.slot_layer):
            source = isolated if isolated is not None and isolating[layer] else infectiousness
            total.index_add_(1, group, source)
        return total

    def group_scale(self, layer_weight: Tensor) -> Tensor:
        """w_L(g) / |g| per group (B, G), zero for the sink."""
        return self.inverse_size * layer_weight.index_select(1, self.group_layer)

    def spread(self, per_group: Tensor, isolating: Sequence[bool] = (), keep: Tensor | None = None) -> Tensor:
        """Σ over each agent's groups of a per-group value (B, N); isolating layers scaled by `keep`."""
        spread = per_group.new_zeros(per_group.shape[0], self.slot_group.shape[1])
        kept = torch.zeros_like(spread) if keep is not None else None
        for group, layer in zip(self.slot_group, self.slot_layer):
            target = kept if kept is not None and isolating[layer] else spread
            target += per_group.index_select(1, group)
        return spread + kept * keep if kept is not None else spread

    def gather(self, per_agent: Tensor) -> Tensor:
        """Σ over members of each group of a per-agent value (B, G): the transpose of `spread`."""
        return self.group_totals(per_agent, None, ())

    def layer_exposure(self, per_group: Tensor, draw: Tensor, agent: Tensor, n_layers: int) -> Tensor:
        """Σ over each chosen (draw, agent)'s groups of a per-group value, by layer (M, L)."""
        exposure = per_group.new_zeros(agent.shape[0], n_layers)
        for group, layer in zip(self.slot_group, self.slot_layer):
            exposure[:, layer] += per_group[draw, group[agent]]
        return exposure

    def layer_sums(self, per_group: Tensor, n_layers: int) -> Tensor:
        """Σ over the groups of each layer (B, L)."""
        return per_group.new_zeros(per_group.shape[0], n_layers).index_add_(1, self.group_layer, per_group)


class Agents(Protocol):
    """What the model reads of a population (`diffabm.population.schema.Population` is one): ages,
    group ids per contact layer ((N,) or (N, K), -1 = none) and other attributes by name."""

    age: np.ndarray
    area: np.ndarray
    groups: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]

    @property
    def n_agents(self) -> int: ...


def attribute_groups(population: Agents, attribute_layers: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The population's layers plus one layer per `attribute_layers` entry grouping agents that share an
    attribute (e.g. `community: area`: everyone in the same SA2)."""
    groups = dict(population.groups)
    for layer, attribute in attribute_layers.items():
        if layer in groups:
            raise ValueError(f"model.attribute_layers: layer '{layer}' already exists in the population")
        values = getattr(population, attribute, None)
        values = population.extra.get(attribute) if values is None else values
        if values is None:
            raise ValueError(f"model.attribute_layers.{layer}: population has no attribute '{attribute}'")
        groups[layer] = np.unique(values, return_inverse=True)[1].astype(np.int64)
    return groups


class EpidemicModel(Simulator):
    """The epidemic ABM on a population; `simulate` runs B parameter draws at once.

    Parameters (natural scale): `beta_<layer>` ≥ 0 per layer, `initial_fraction` in [0, 1],
    `hospitalisation_odds_ratio` and `fatality_odds_ratio` > 0 (multiplying the odds of the
    age-specific hospitalisation and death probabilities); their defaults are `parameters`.
    Control `transmission_multiplier` (B, days) scales every layer's β on each day.
    `interventions` are specs (`diffabm.models.interventions.build_interventions`, dated from
    `start_date`, day 0) or built `Interventions`. `seeding` picks the initial infections: "bernoulli" (each agent independently with
    probability f) or "systematic" (each agent still with probability f, but ⌊fN⌋ or ⌈fN⌉ of them).
    A simulation whose estimated peak memory exceeds `max_memory_gb` (None: what is available)
    stops with a MemoryError before it allocates (`diffabm.resources`).
    """

    observables = OBSERVABLES
    controls = {"transmission_multiplier": ("time",)}

    def __init__(
        self,
        population: Agents,
        course: DiseaseCourse | Mapping,
        days: int,
        parameters: Mapping[str, float],
        estimator: BernoulliEstimator | None = None,
        interventions: Interventions | Sequence[Mapping] | None = None,
        draws: int = 1,
        common_random_numbers: bool = False,
        seeding: str = "bernoulli",
        attribute_layers: Mapping[str, str] | None = None,
        start_date: str | dt.date = "2021-01-01",
        device: torch.device | str = "cpu",
        max_memory_gb: float | None = None,
    ):
        if days < 1:
            raise ValueError(f"days must be >= 1, got {days}")
        if seeding not in SEEDINGS:
            raise ValueError(f"model.seeding is '{seeding}', expected one of {list(SEEDINGS)}")
        groups = attribute_groups(population, attribute_layers or {})
        layers = list(groups)
        expected = {f"beta_{layer}" for layer in layers}
        given = {name for name in parameters if name.startswith("beta_")}
        if given != expected:
            raise ValueError(f"model.parameters: population layers need {sorted(expected)}, config gives "
                             f"{sorted(given)}")
        super().__init__(
            ParameterSpace({**{f"beta_{layer}": "nonnegative" for layer in layers}, "initial_fraction": "unit_interval",
                            "hospitalisation_odds_ratio": "positive", "fatality_odds_ratio": "positive"}),
            parameters, draws)
        course = course if isinstance(course, DiseaseCourse) else disease_course(course)
        self.seeding = seeding
        self.max_memory_gb = max_memory_gb
        self.n_agents = population.n_agents
        self.days = days
        self.start_date = start_date if isinstance(start_date, dt.date) else dt.date.fromisoformat(str(start_date))
        self.course = course
        self.layers = layers
        self.estimator = estimator or EventWeighted()
        self.common_random_numbers = common_random_numbers
        device = torch.device(device)
        self.contacts = ContactLayers(groups, self.n_agents, device)
        if interventions is None or not isinstance(interventions, Interventions):
            interventions = build_interventions(interventions or [], days, layers, self.start_date)
        self.interventions = interventions
        self._check_interventions()
        self.isolating = [layer in self.interventions.isolation_layers for layer in self.layers]

        bands = np.asarray(course.age_bands)
        band = np.clip(np.searchsorted(bands, population.age, side="right") - 1, 0, len(bands) - 1)
        self.register_buffer("age_band", torch.as_tensor(band, dtype=torch.long, device=device))

        def per_agent(values) -> Tensor:
            by_band = np.broadcast_to(np.asarray(values, dtype=np.float32), (len(bands),)).copy()
            return torch.as_tensor(by_band, device=device)[self.age_band]

        self.register_buffer("susceptibility", per_agent(course.susceptibility))
        self.register_buffer("logit_symptomatic", torch.logit(per_agent(course.p_symptomatic), eps=1e-6))
        self.register_buffer("logit_hospital", torch.logit(per_agent(course.p_hospital_given_symptomatic), eps=1e-6))
        self.register_buffer("logit_death", torch.logit(per_agent(course.p_death_given_hospital), eps=1e-6))
        self.register_buffer("profile", course.infectiousness_profile().to(device))
        self.register_buffer("contact_multiplier", self.interventions.contact_multiplier.float().to(device))
        self.durations = {name: self._lognormal_parameters(getattr(course, name), per_agent) for name in DURATIONS}

    @staticmethod
    def _lognormal_parameters(duration: Duration, per_agent) -> tuple[Tensor, Tensor]:
        """Per-agent (μ, σ) of the log-normal with the band's mean and sd."""
        mean, sd = np.asarray(duration.mean, dtype=float), np.asarray(duration.sd, dtype=float)
        sigma2 = np.log1p((sd / mean) ** 2)
        return per_agent(np.log(mean) - sigma2 / 2), per_agent(np.sqrt(sigma2))

    def _check_interventions(self) -> None:
        shape = tuple(self.interventions.contact_multiplier.shape)
        if shape[-2:] != (self.days, len(self.layers)):
            raise ValueError(f"contact multiplier has shape {shape}, expected ([B,] {self.days}, {len(self.layers)})")
        if (self.interventions.contact_multiplier < 0).any():
            raise ValueError("contact multiplier has negative entries")
        unknown = set(self.interventions.isolation_layers) - set(self.layers)
        if unknown:
            raise ValueError(f"isolation layers {sorted(unknown)} are not model layers {self.layers}")

    def coords(self) -> dict[str, np.ndarray]:
        """Days from `start_date`, stages, age bands ("0-9", ..., "70+") and settings (the contact layers)."""
        bands = list(self.course.age_bands)
        return {
            "time": np.datetime64(self.start_date, "ns") + np.arange(self.days) * np.timedelta64(1, "D"),
            "stage": as_object_strings(STAGES),
            "age_group": as_object_strings([f"{lo}-{hi - 1}" for lo, hi in zip(bands[:-1], bands[1:])]
                                           + [f"{bands[-1]}+"]),
            "setting": as_object_strings(self.layers),
        }

    def check_parameters(self, parameters: Mapping[str, Tensor]) -> int:
        """Validate names, shapes and domains (β ≥ 0, odds ratios > 0, fractions in [0, 1]); return B."""
        self.space.check_natural(parameters)
        shapes = {name: tuple(torch.as_tensor(v).shape) for name, v in parameters.items()}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise ValueError(f"parameters must all have shape (B,), got {shapes}")
        return next(iter(shapes.values()))[0]

    def _checked_daily(self, values: Tensor) -> Tensor:
        """A (B, days) non-negative daily series (shape and finiteness checked by `check_controls`)."""
        detached = values.detach()
        if (detached < 0).any():
            bad = detached[~torch.isfinite(detached) | (detached < 0)][0].item()
            raise ValueError(f"transmission_multiplier has value {bad}, must be finite and >= 0")
        return values

    def _uniform(self, seed: int, purpose: str, draws: int, systematic: bool = False) -> Tensor:
        """Uniform noise (B, N) for one purpose and day, reproducible when recomputed.

        `systematic`: u_i = (k_i + v) / N with k a random permutation of 0..N-1 and one v ~ U(0, 1)
        per row; each u_i is still U(0, 1), and #{u_i < f} is ⌊fN⌋ or ⌈fN⌉ (systematic sampling;
        Cochran 1977, *Sampling techniques*, ch. 8).
        """
        device = self.age_band.device
        generator = torch.Generator(device=device).manual_seed(stable_seed(seed, purpose))
        rows = 1 if self.common_random_numbers else draws
        u = torch.rand(rows, self.n_agents, generator=generator, device=device)
        if systematic:
            offset = torch.rand(rows, 1, generator=generator, device=device)
            keys = (torch.arange(self.n_agents, device=device) + offset) / self.n_agents
            u = torch.empty_like(u).scatter_(1, u.argsort(dim=1), keys)
        return u.clamp_(1e-7, 1 - 1e-7).expand(draws, -1)

    def _durations(self, seed: int, draws: int) -> dict[str, Tensor]:
        """Integer stage durations (B, N), ≥ 1 day, by inverse-CDF sampling of the log-normals."""
        out = {}
        for name, (mu, sigma) in self.durations.items():
            z = torch.special.ndtri(self._uniform(seed, name, draws))
            days = torch.exp(mu + sigma * z).round().clamp(1, self.course.max_days_since_infection)
            out[name] = days.int()
        return out

    def simulate(self, parameters: Mapping[str, Tensor], seed: int = 0,
                 controls: Mapping[str, Tensor] | None = None) -> EpidemicOutput:
        """Run the epidemic for B parameter draws (natural scale, each (B,)) with one seed.

        Control `transmission_multiplier` (B, days), if given, scales every layer's β on each day
        (time-varying transmission, e.g. calibrated per week); gradients reach it.
        """
        draws = self.check_parameters(parameters)
        transmission_multiplier = self.check_controls(controls, draws).get("transmission_multiplier")
        tracking = torch.is_grad_enabled() and any(torch.as_tensor(v).requires_grad for v in parameters.values())
        check_memory(self.n_agents, draws, self.days, tracking, self.max_memory_gb)
        beta = torch.stack([parameters[f"beta_{layer}"] for layer in self.layers], dim=-1)
        fraction = parameters["initial_fraction"]
        hospital_log_or = torch.log(parameters["hospitalisation_odds_ratio"])[:, None]
        death_log_or = torch.log(parameters["fatality_odds_ratio"])[:, None]

        durations = self._durations(seed, draws)
        estimate = self.estimator
        symptomatic = (self._uniform(seed, "symptomatic", draws) < torch.sigmoid(self.logit_symptomatic)).float()
        hospitalised = estimate(self.logit_hospital + hospital_log_or, self._uniform(seed, "hospital", draws))
        dies = estimate(self.logit_death + death_log_or, self._uniform(seed, "death", draws))
        hard_hospitalised = hospitalised.detach() > 0.5
        latent = durations["latent"]
        infectious_days = torch.where(
            symptomatic > 0,
            torch.where(hard_hospitalised, durations["symptomatic_to_admission"], durations["symptomatic_to_recovery"]),
            durations["asymptomatic_infectious"],
        )
        relative = 1.0 - (1.0 - self.course.asymptomatic_relative_infectiousness) * (1.0 - symptomatic)
        isolation_u = self._uniform(seed, "isolation", draws)
        complies = (isolation_u < self.interventions.isolation_compliance).float() * symptomatic

        infected = self._seed(fraction, self._uniform(seed, "initial", draws, self.seeding == "systematic"))
        infection_day = torch.where(infected.detach() > 0.5, 0, NEVER).int()
        multiplier = self.contact_multiplier.expand(draws, -1, -1) if self.contact_multiplier.dim() == 2 \
            else self.contact_multiplier
        multiplier = multiplier.to(beta.dtype)
        if transmission_multiplier is not None:
            multiplier = multiplier * self._checked_daily(transmission_multiplier)[..., None]
        day_state = _DayState(self, seed, relative, latent, latent + infectious_days, complies,
                              latent + self.interventions.isolation_delay)
        if tracking and infected.requires_grad:
            infected = _UnrealisedAtSeeding.apply(infected, day_state)
        daily_new = [infected.sum(-1)]
        by_setting = [beta.new_zeros(draws, len(self.layers))]
        for day in range(1, self.days):
            weight = beta * multiplier[:, day - 1]
            updated, _, total = _TransmissionDay.apply(infected, weight, infection_day, day, day_state)
            new = updated - infected
            infection_day = torch.where(new.detach() > 0.5, day, infection_day)
            infected = updated
            daily_new.append(new.sum(-1))
            by_setting.append(self._infections_by_setting(new, weight, total))
        new_infections = torch.stack(daily_new, dim=1)
        day_state.latest_day = ()  # break the cycle state → tensors → graph → state, or the graph leaks
        day_state.final_infection_day = infection_day
        output = self._observe(new_infections, torch.stack(by_setting, dim=1), infected, infection_day, symptomatic,
                               hospitalised, dies, latent, infectious_days, durations["hospital_stay"])
        if tracking:
            admitted = symptomatic * hard_hospitalised
            onset, stay = latent.long(), durations["hospital_stay"].long()
            admission = onset + infectious_days.long()
            day_state.delays = {  # name: (days after infection, weight, column) per agent
                "infections_by_age": (torch.zeros_like(onset), torch.ones_like(symptomatic), self.age_band),
                "cases": (onset, symptomatic, 0),
                "hospitalisations": (admission, admitted, 0),
                "deaths": (admission + stay, admitted * (dies.detach() > 0.5), 0),
            }
            for name in day_state.delays:
                setattr(output, name, _RecordOutputGradient.apply(getattr(output, name), day_state, name))
        return output

    @staticmethod
    def _seed(fraction: Tensor, u: Tensor) -> Tensor:
        """Initial infections `u < f`, each weighted f / f (value 1) so that d/df scales every seed's effect.

        For independent seeds, E[Σ_seeds effect / f] = N · E[effect of one seed] = d E[total] / df:
        the weight gives the score-function gradient of the seeding without its variance (papers.md §2).
        """
        seeded = (u < fraction[:, None]).to(u.dtype)
        scale = fraction / fraction.detach().clamp_min(1e-12)
        return seeded * scale[:, None]

    def _infections_by_setting(self, new: Tensor, weight: Tensor, total: Tensor) -> Tensor:
        """The day's infections (B, L) split by the layer each came from, in proportion to its force.

        Agent i infected on the day is credited to layer L with share w_L E_iL / Σ_K w_K E_iK, E_iL
        its exposure Σ_{g ∋ i, g in L} T_g / |g| (as JUNE records infection locations). Gradients
        reach β through the infections and through the shares; the exposures are held fixed.
        """
        draw, agent = (new.detach() > 0.5).nonzero(as_tuple=True)
        n_layers = weight.shape[1]
        exposure = self.contacts.layer_exposure(total * self.contacts.inverse_size, draw, agent, n_layers)
        force = weight[draw] * exposure
        share = force / force.sum(-1, keepdim=True).clamp_min(1e-30)
        return weight.new_zeros(new.shape[0], n_layers).index_add_(0, draw, new[draw, agent, None] * share)

    def _observe(self, new_infections: Tensor, infections_by_setting: Tensor, infected: Tensor, infection_day: Tensor,
                 symptomatic: Tensor, hospitalised: Tensor, dies: Tensor, latent: Tensor, infectious_days: Tensor,
                 stay: Tensor) -> EpidemicOutput:
        """Daily outputs from each agent's infection day and course, as histograms over days."""
        draws, days = new_infections.shape
        infection_day, latent, infectious_days, stay = (x.long() for x in (infection_day, latent, infectious_days,
                                                                            stay))

        def daily(day: Tensor, weight: Tensor) -> Tensor:
            index = day.clamp(max=days)
            return weight.new_zeros(draws, days + 1).scatter_add_(1, index, weight)[:, :days]

        onset = infection_day + latent
        end = onset + infectious_days
        discharge = end + stay
        symptomatic_weight = infected * symptomatic
        admitted = symptomatic_weight * hospitalised
        exposed_in, exposed_out = daily(infection_day, infected), daily(onset, infected)
        asymptomatic_in, asymptomatic_out = daily(onset, infected - symptomatic_weight), \
            daily(end, infected - symptomatic_weight)
        cases, symptomatic_out = daily(onset, symptomatic_weight), daily(end, symptomatic_weight)
        hospitalisations, discharged = daily(end, admitted), daily(discharge, admitted)
        deaths = daily(discharge, admitted * dies)
        recovered_in = asymptomatic_out + (symptomatic_out - hospitalisations) + (discharged - deaths)
        stage_counts = torch.stack(
            [
                self.n_agents - exposed_in.cumsum(1),
                (exposed_in - exposed_out).cumsum(1),
                (asymptomatic_in - asymptomatic_out).cumsum(1),
                (cases - symptomatic_out).cumsum(1),
                (hospitalisations - discharged).cumsum(1),
                recovered_in.cumsum(1),
                deaths.cumsum(1),
            ],
            dim=-1,
        )
        n_bands = len(self.course.age_bands)
        index = (infection_day.clamp(max=days) * n_bands + self.age_band).clamp(max=days * n_bands)
        by_age = infected.new_zeros(draws, days * n_bands + 1).scatter_add_(1, index, infected)
        return EpidemicOutput(
            new_infections=new_infections,
            cases=cases,
            hospitalisations=hospitalisations,
            deaths=deaths,
            stage_counts=stage_counts,
            infections_by_age=by_age[:, : days * n_bands].reshape(draws, days, n_bands),
            infections_by_setting=infections_by_setting,
        )


@dataclass
class _DayState:
    """Per-simulation constants of transmission days, and output gradients kept for the backward pass."""

    model: EpidemicModel
    seed: int
    relative: Tensor
    latent: Tensor
    end: Tensor
    complies: Tensor
    isolated_from: Tensor
    final_infection_day: Tensor | None = None
    latest_day: tuple[Tensor, ...] = ()
    delays: dict[str, tuple[Tensor, Tensor, Tensor | int]] = field(default_factory=dict)
    output_grads: dict[str, Tensor] = field(default_factory=dict)
    seeding_term: Tensor | None = None

    @property
    def isolating(self) -> bool:
        return self.model.interventions.isolation_compliance > 0 and any(self.model.isolating)

    def infectiousness_factor(self, infection_day: Tensor, day: int) -> tuple[Tensor, Tensor | None]:
        """Per-agent infectiousness if infected (profile × stage) and the share kept when isolating."""
        since = (day - infection_day).clamp_(max=self.model.course.max_days_since_infection + 1)
        active = (since >= self.latent) & (since < self.end)
        factor = self.relative * (self.model.profile[since.clamp_(min=0)] * active)
        keep = 1.0 - self.complies * (since >= self.isolated_from) if self.isolating else None
        return factor, keep

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
        for name, grad in self.output_grads.items():
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
        ctx.state.output_grads[ctx.name] = grad
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


class _TransmissionDay(torch.autograd.Function):
    """One day of transmission, w' = w + (1 - w) · draw(ψ · force(w · factor)), with its adjoint.

    The adjoint is derived by hand so that a day saves only the rate and the group totals (and w
    for relaxed estimators): w, the infection days, the infectiousness factors and the noise are
    recomputed from the final infection days and the seed. Reverse mode then needs about 1.5
    floats per agent and day, and about one forward pass of work. `jvp` gives forward mode
    (`torch.func.jvp`), whose memory does not grow with the days (Quera-Bofarull et al. 2023, Fig. 3);
    it omits the unrealised-outcome term of the adjoint.
    """

    @staticmethod
    def forward(infected: Tensor, weight: Tensor, infection_day: Tensor, day: int, state: _DayState
                ) -> tuple[Tensor, Tensor, Tensor]:
        contacts, model = state.model.contacts, state.model
        factor, keep = state.infectiousness_factor(infection_day, day)
        infectiousness = infected * factor
        isolated = infectiousness * keep if keep is not None else None
        total = contacts.group_totals(infectiousness, isolated, model.isolating)
        rate = model.susceptibility * contacts.spread(total * contacts.group_scale(weight))
        draw = model.estimator.rate_sample(rate, state.noise(day, infected.shape[0]))
        state.latest_day = (infected, weight, infection_day, rate, total)  # for `jvp`, which follows at once
        return infected + (1.0 - infected) * draw, rate, total

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor, Tensor]) -> None:
        infected, weight, _, day, state = inputs
        _, rate, total = output
        ctx.mark_non_differentiable(rate, total)
        ctx.save_for_backward(infected if state.model.estimator.relaxed else None, weight, rate, total)
        ctx.day, ctx.state = day, state

    @staticmethod
    def jvp(ctx, infected_tangent: Tensor | None, weight_tangent: Tensor | None, *_) -> tuple[Tensor, None, None]:
        """Forward-mode derivative of w' (for `torch.func.jvp`): memory independent of the days."""
        state, model = ctx.state, ctx.state.model
        contacts = model.contacts
        infected, weight, infection_day, rate, total = state.latest_day
        factor, keep = state.infectiousness_factor(infection_day, ctx.day)
        rate_tangent = torch.zeros_like(total)
        if infected_tangent is not None:
            infectiousness_tangent = infected_tangent * factor
            isolated_tangent = infectiousness_tangent * keep if keep is not None else None
            total_tangent = contacts.group_totals(infectiousness_tangent, isolated_tangent, model.isolating)
            rate_tangent = total_tangent * contacts.group_scale(weight)
        if weight_tangent is not None:
            rate_tangent = rate_tangent + total * contacts.group_scale(weight_tangent)
        rate_tangent = model.susceptibility * contacts.spread(rate_tangent)
        noise = state.noise(ctx.day, infected.shape[0])
        inert = 1.0 if model.estimator.relaxed else 1.0 - infected
        tangent = (1.0 - infected) * model.estimator.rate_derivative(rate, noise) * rate_tangent
        if infected_tangent is not None:
            tangent = tangent + infected_tangent * (1.0 - model.estimator.rate_sample(rate, noise) * inert)
        return tangent, None, None

    @staticmethod
    def backward(ctx, grad: Tensor, *_) -> tuple[Tensor, Tensor, None, None, None]:
        infected, weight, rate, total = ctx.saved_tensors
        state, model = ctx.state, ctx.state.model
        infection_day = state.infection_day_on(ctx.day)
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
        grad_group_rate = contacts.gather(grad_rate * model.susceptibility)
        grad_weight = contacts.layer_sums(grad_group_rate * total * contacts.inverse_size, weight.shape[1])
        grad_total = grad_group_rate * contacts.group_scale(weight)
        factor, keep = state.infectiousness_factor(infection_day, ctx.day)
        grad_infectiousness = contacts.spread(grad_total, model.isolating, keep)
        return grad_infected + grad_infectiousness * factor, grad_weight, None, None, None


def disease_course(config: Mapping) -> DiseaseCourse:
    """A DiseaseCourse from its config mapping (durations given as {mean, sd})."""
    values = dict(config)
    for name in DURATIONS:
        values[name] = Duration(mean=values[name]["mean"], sd=values[name]["sd"])
    return DiseaseCourse(**values)
