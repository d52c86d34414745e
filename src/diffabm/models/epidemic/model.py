"""The epidemic model: `EpidemicModel` simulates B parameter draws of the ABM on a population at once.

A simulation draws each agent's disease course (`course`) from reproducible noise, seeds the first
infections, runs the transmission days over the contact layers (`contacts`, `transmission`) under
the interventions (`interventions`), and counts the daily outputs (`outputs`)
(Quera-Bofarull et al. 2023, GradABM-JUNE; Chopra et al. 2023, GradABM).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.utils.checkpoint
from torch import Tensor

from diffabm import philox
from diffabm.models.autodiff import has_tangent
from diffabm.models.base import Simulator, stable_seed
from diffabm.models.epidemic import fused
from diffabm.models.epidemic.contacts import Agents, ContactLayers, attribute_groups
from diffabm.models.epidemic.course import (
    DURATIONS,
    DiseaseCourse,
    Duration,
    disease_course,
)
from diffabm.models.epidemic.interventions import Interventions, build_interventions
from diffabm.models.epidemic.outputs import (
    EVENTS,
    GROUPINGS,
    OBSERVABLES,
    STAGES,
    EpidemicOutput,
    daily_outputs,
    grouped_observables,
)
from diffabm.models.epidemic.private import contact_layers
from diffabm.models.epidemic.reporting import REPORTING_PARAMETERS, reported_cases
from diffabm.models.epidemic.transmission import (
    NEVER,
    _DayState,
    _InfectionsBySetting,
    _RecordOutputGradient,
    _TransmissionDay,
    _UnrealisedAtSeeding,
)
from diffabm.models.epidemic.vaccination import (
    CHILD_AGES,
    VACCINATION_PARAMETERS,
    VaccineProtection,
    dose_days,
    first_dose_share_by,
)
from diffabm.parameters import ParameterSpace
from diffabm.resources import check_memory, tangents_that_fit
from diffabm.stochastic import BernoulliEstimator, EventWeighted, hard_bernoulli
from diffabm.store import as_object_strings

SEEDINGS = ("bernoulli", "systematic")
DURATION_CHUNK = 1 << 22  # noise values per chunk of `EpidemicModel._durations` (16 MB of float32: within the L3 cache;
# smaller chunks pay more for the threads' wake-ups, about 60 µs per tensor operation, than they save)


class EpidemicModel(Simulator):
    """The epidemic ABM on a population; `simulate` runs B parameter draws at once.

    Parameters (natural scale): `beta_<layer>` ≥ 0 per layer, `initial_fraction` in [0, 1],
    `hospitalisation_odds_ratio` and `fatality_odds_ratio` > 0 (multiplying the odds of the
    age-specific hospitalisation and death probabilities), and, where `parameters` has them, the case
    reporting's `ascertainment` in [0, 1] and mean `reporting_delay` > 0 (observable `reported_cases`, in
    people: 1 / `population.attrs["scale"]` per agent), and, with a `vaccination` intervention, its four
    efficacies (`diffabm.models.epidemic.vaccination.VACCINATION_PARAMETERS`, in [0, 1]; the population needs
    `vaccine_dose1_uptake` and `vaccine_dose2_uptake` per agent); their defaults are `parameters`.
    Control `transmission_multiplier` (B, days) scales every layer's β on each day; `transmission_by_<grouping>`
    (B, days, groups), e.g. by district, scales the susceptibility of each group's agents on each day.
    `interventions` are specs (`diffabm.models.epidemic.interventions.build_interventions`, dated
    from `start_date`, day 0) or built `Interventions`. `seeding` picks the initial infections:
    "bernoulli" (each agent independently with probability f) or "systematic" (each agent still
    with probability f, but ⌊fN⌋ or ⌈fN⌉ of them).
    A simulation whose estimated peak memory exceeds `max_memory_gb` (None: what is available)
    stops with a MemoryError before it allocates (`diffabm.resources`). `privacy: secret_sharing` computes every
    group sum by additive secret sharing among `secret_sharing.parties` parties (`diffabm.models.epidemic.private`).
    """

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
        privacy: str = "none",
        secret_sharing: Mapping | None = None,
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
            raise ValueError(
                f"model.parameters: population layers need {sorted(expected)}, config gives {sorted(given)}"
            )
        reporting = [name for name in REPORTING_PARAMETERS if name in parameters]
        if reporting and len(reporting) < len(REPORTING_PARAMETERS):
            raise ValueError(
                f"model.parameters: case reporting needs {sorted(REPORTING_PARAMETERS)}, config gives {reporting}"
            )
        vaccinating = any(name in parameters for name in VACCINATION_PARAMETERS)
        if vaccinating and not set(VACCINATION_PARAMETERS) <= set(parameters):
            raise ValueError(
                f"model.parameters: vaccination needs {sorted(VACCINATION_PARAMETERS)}, config gives "
                f"{sorted(set(VACCINATION_PARAMETERS) & set(parameters))}"
            )
        super().__init__(
            ParameterSpace(
                {
                    **{f"beta_{layer}": "nonnegative" for layer in layers},
                    "initial_fraction": "unit_interval",
                    "hospitalisation_odds_ratio": "positive",
                    "fatality_odds_ratio": "positive",
                    **(REPORTING_PARAMETERS if reporting else {}),
                    **(VACCINATION_PARAMETERS if vaccinating else {}),
                }
            ),
            parameters,
            draws,
            device,
        )
        self.reporting = bool(reporting)
        self.people_per_agent = 1.0 / float(getattr(population, "attrs", {}).get("scale", 1.0))
        course = course if isinstance(course, DiseaseCourse) else disease_course(course)
        self.seeding = seeding
        self._segment_days: int | None = None  # set while `checkpointed`
        self.max_memory_gb = max_memory_gb
        self.n_agents = population.n_agents
        self.days = days
        self.start_date = start_date if isinstance(start_date, dt.date) else dt.date.fromisoformat(str(start_date))
        self.course = course
        self.layers = layers
        self.estimator = estimator or EventWeighted()
        self.common_random_numbers = common_random_numbers
        self.fused_forward = True  # simulations without gradients run the fused kernels (`fused`); False: tensors
        self._fused_layers: fused.FusedLayers | None = None
        device = torch.device(device)
        # privacy: none | secret_sharing (group sums from additive shares; diffabm.models.epidemic.private)
        self.contacts = contact_layers(groups, self.n_agents, device, privacy, secret_sharing)
        if interventions is None or not isinstance(interventions, Interventions):
            interventions = build_interventions(interventions or [], days, layers, self.start_date)
        self.interventions = interventions
        self._check_interventions()
        self.isolating = [layer in self.interventions.isolation_layers for layer in self.layers]
        self._vaccine_population(population, vaccinating, device)

        bands = np.asarray(course.age_bands)
        band = np.clip(np.searchsorted(bands, population.age, side="right") - 1, 0, len(bands) - 1)
        self.register_buffer("age_band", torch.as_tensor(band, dtype=torch.long, device=device))
        self.group_labels = self._group_labels(population, band)  # grouping: labels; group ids in `group_<name>`
        reports = {
            "reported_cases": ("time",),
            **{f"reported_cases_by_{name}": ("time", GROUPINGS[name]) for name in self.group_labels},
        }
        self.observables = {
            **OBSERVABLES,
            **grouped_observables(list(self.group_labels)),
            **(reports if self.reporting else {}),
        }
        self.controls = {
            "transmission_multiplier": ("time",),
            **{f"transmission_by_{name}": ("time", GROUPINGS[name]) for name in self.group_labels},
        }

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
        if self._fusable():  # the kernels' layout of the contacts is built with them (the population's alone)
            self._fused_layers = fused.FusedLayers.of(self.contacts).prepared(self.draws, torch.get_num_threads())

    def _vaccine_population(self, population: Agents, vaccinating: bool, device: torch.device) -> None:
        """With a vaccination intervention: each agent's uptake of dose 1 and 2 (N, 2) and whether it is a child
        (ages 5-11, eligible from the programme's `children_from`), as buffers."""
        if self.interventions.vaccination is None:
            return
        if not vaccinating:
            raise ValueError(f"interventions: vaccination needs model.parameters {sorted(VACCINATION_PARAMETERS)}")
        fields = ("vaccine_dose1_uptake", "vaccine_dose2_uptake")
        missing = [name for name in fields if name not in population.extra]
        if missing:
            raise ValueError(
                f"interventions: vaccination needs the population's {missing[0]!r} per agent "
                f"(population.vaccine_uptake: true)"
            )
        uptake = np.stack([np.asarray(population.extra[name], dtype=np.float32) for name in fields], axis=1)
        if not (np.isfinite(uptake).all() and (uptake >= 0).all() and (uptake <= 1).all()):
            raise ValueError("population: vaccine uptake must be in [0, 1]")
        age = np.asarray(population.age)
        self.register_buffer("vaccine_uptake", torch.as_tensor(uptake, device=device))
        self.register_buffer(
            "vaccine_child", torch.as_tensor((age >= CHILD_AGES[0]) & (age <= CHILD_AGES[1]), device=device)
        )

    def vaccine_protection(self, parameters: Mapping[str, Tensor], seed: int, draws: int) -> VaccineProtection | None:
        """Each agent's dose days (B, N) and the efficacies (B, 2) of this simulation; None without vaccination."""
        vaccination = self.interventions.vaccination
        if vaccination is None:
            return None
        first, second = dose_days(
            vaccination,
            self.vaccine_uptake,
            self.vaccine_child,
            self._uniform(seed, "vaccine_take", draws),
            self._uniform(seed, "vaccine_day", draws),
            NEVER,
        )

        def efficacies(against: str) -> Tensor:
            return torch.stack([parameters[f"efficacy_{against}_dose{dose}"] for dose in (1, 2)], dim=-1)

        return VaccineProtection(vaccination, first, second, efficacies("infection"), efficacies("severe"), NEVER)

    def vaccine_coverage(self, grouping: str) -> Tensor:
        """The expected share (days, groups, 2) of each group's agents with dose 1 and dose 2 by each day, from the
        uptake and the dose series (no draws: an exogenous feature, e.g. for Calib-NN); zeros without vaccination."""
        group, groups = self.groupings()[grouping]
        coverage = torch.zeros(self.days, groups, 2, device=group.device)
        vaccination = self.interventions.vaccination
        if vaccination is None:
            return coverage
        sim_days = torch.arange(self.days, device=group.device)
        for child in (False, True):
            agents = self.vaccine_child == child
            for dose, by in ((0, sim_days), (1, sim_days - vaccination.interval_days)):
                uptake = torch.zeros(groups, device=group.device).index_add_(
                    0, group[agents], self.vaccine_uptake[agents, dose]
                )
                coverage[:, :, dose] += first_dose_share_by(vaccination, child, by)[:, None].float() * uptake[None, :]
        size = torch.zeros(groups, device=group.device).index_add_(0, group, torch.ones_like(group, dtype=torch.float))
        return coverage / size.clamp_min(1)[None, :, None]

    def exogenous_features(self, dimension: str) -> Tensor:
        """Per day and group of `dimension` (days, groups, layers + 2): the contact multiplier of each layer (the
        interventions: the alert level) and the expected vaccine coverage of dose 1 and 2 (`vaccine_coverage`)."""
        grouping = next((name for name in self.group_labels if GROUPINGS[name] == dimension), None)
        if grouping is None:
            raise ValueError(
                f"exogenous features: {dimension!r} is not a grouping of the population "
                f"({[GROUPINGS[name] for name in self.group_labels]})"
            )
        groups = len(self.group_labels[grouping])
        multiplier = self.contact_multiplier if self.contact_multiplier.dim() == 2 else self.contact_multiplier[0]
        return torch.cat([multiplier[:, None, :].expand(-1, groups, -1), self.vaccine_coverage(grouping)], dim=-1)

    def _group_labels(self, population: Agents, age_band: np.ndarray) -> dict[str, list[str]]:
        """Groupings of agents for the `<event>_by_<grouping>` observables: age bands always, ethnicity, region
        (`extra["region"]`, SA2 → region) and district (`extra["district"]`, SA2 → District Health Board) where the
        population has them; registers each agent's group."""
        bands = list(self.course.age_bands)
        groupings = {"age": (age_band, [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(bands)] + [f"{bands[-1]}+"])}
        ethnicity = getattr(population, "ethnicity", None)
        if ethnicity is not None:
            groupings["ethnicity"] = (ethnicity, list(getattr(population, "ethnicity_labels", ())))
        for name in ("region", "district"):
            codes = population.extra.get(name)
            if codes is not None:  # only the groups present
                names = list(getattr(population, "attrs", {}).get(f"{name}_labels", ()))
                present, codes = np.unique(codes, return_inverse=True)
                groupings[name] = (codes, [names[k] if 0 <= k < len(names) else str(k) for k in present])
        labels = {}
        for name, (group, names) in groupings.items():
            group = np.asarray(group, dtype=np.int64)
            count = int(group.max(initial=-1)) + 1
            names = names if len(names) >= count else [str(k) for k in range(count)]
            if group.size and group.min() < 0:
                raise ValueError(f"population: field '{name}' has group {group.min()}, expected codes >= 0")
            self.register_buffer(f"group_{name}", torch.as_tensor(group, device=self.age_band.device))
            labels[name] = [str(label) for label in names]
        return labels

    def groupings(self) -> dict[str, tuple[Tensor, int]]:
        """Each grouping's group of every agent (N,) and number of groups, for `daily_outputs`."""
        return {name: (getattr(self, f"group_{name}"), len(labels)) for name, labels in self.group_labels.items()}

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
        return {
            "time": np.datetime64(self.start_date, "ns") + np.arange(self.days) * np.timedelta64(1, "D"),
            "stage": as_object_strings(STAGES),
            "setting": as_object_strings(self.layers),
            **{GROUPINGS[name]: as_object_strings(labels) for name, labels in self.group_labels.items()},
        }

    def check_controls(self, controls: Mapping[str, Tensor] | None, draws: int) -> dict[str, Tensor]:
        """`Simulator.check_controls`, and every value ≥ 0 (each control multiplies a transmission)."""
        checked = super().check_controls(controls, draws)
        for name, values in checked.items():
            detached = values.detach()
            if (detached < 0).any():
                raise ValueError(f"{name} has value {detached[detached < 0][0].item()}, must be finite and >= 0")
        return checked

    def daily_multiplier(self, controls: Mapping[str, Tensor], draws: int, dtype: torch.dtype) -> Tensor:
        """Each day's multiplier of each layer's β (B, days, L) in `dtype`: the contact interventions' times the
        `transmission_multiplier` control's, if given (`check_controls`)."""
        multiplier = (
            self.contact_multiplier.expand(draws, -1, -1)
            if self.contact_multiplier.dim() == 2
            else self.contact_multiplier
        ).to(dtype)
        if "transmission_multiplier" in controls:
            multiplier = multiplier * controls["transmission_multiplier"][..., None]
        return multiplier

    def group_transmission(self, controls: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        """The `transmission_by_<grouping>` controls given (B, days, groups), each with its agents' groups (N,)."""
        return [
            (controls[f"transmission_by_{name}"], getattr(self, f"group_{name}"))
            for name in self.group_labels
            if f"transmission_by_{name}" in controls
        ]

    def _uniform(self, seed: int, purpose: str, draws: int, systematic: bool = False) -> Tensor:
        """Uniform noise (B, N) in (0, 1) for one purpose and day: counter-based (`diffabm.philox`, keyed by the seed
        and purpose; row b, agent i), so any agent's value can be recomputed alone (the fused forward kernel).
        With common random numbers every draw sees row 0 (`_noise_rows` expanded)."""
        return self._noise_rows(seed, purpose, draws, systematic).expand(draws, -1)

    def _noise_rows(self, seed: int, purpose: str, draws: int, systematic: bool = False) -> Tensor:
        """`_uniform`'s rows, a new tensor of its own (B, N), or (1, N) with common random numbers: transforms may
        work in place on it.

        `systematic`: u_i = (k_i + v) / N with k a random permutation of 0..N-1 and one v ~ U(0, 1)
        per row; each u_i is still U(0, 1), and #{u_i < f} is ⌊fN⌋ or ⌈fN⌉ (systematic sampling;
        Cochran 1977, *Sampling techniques*, ch. 8).
        """
        rows = 1 if self.common_random_numbers else draws
        u = self._philox(stable_seed(seed, purpose), rows, self.n_agents)
        if systematic:
            offset = self._philox(stable_seed(seed, purpose, "offset"), rows, 1)
            keys = (torch.arange(self.n_agents, device=u.device) + offset) / self.n_agents
            u = torch.empty_like(u).scatter_(1, u.argsort(dim=1), keys).clamp_(1e-7, 1 - 1e-7)
        return u

    def _philox(self, key: int, rows: int, n: int, first: int = 0) -> Tensor:
        """Agents `first`..`first` + n − 1 of `philox`'s rows (rows, n) on the model's device: the Numba loop on the
        CPU, tensor operations elsewhere (the same bits)."""
        device = self.age_band.device
        if device.type == "cpu":
            return torch.from_numpy(philox.uniform(key, rows, n, first))
        return philox.uniform_on(key, rows, n, device, first)

    def _durations(self, seed: int, draws: int) -> dict[str, Tensor]:
        """Integer stage durations (B, N), ≥ 1 day, by inverse-CDF sampling of the log-normals: z = Φ⁻¹(u) =
        √2 erf⁻¹(2u − 1), exact in its argument for the noise's uniforms (odd multiples of 2^-24), and 7× faster
        than `torch.special.ndtri` on the CPU, with half its error in float32. Chunk by chunk of agents
        (`DURATION_CHUNK` values a chunk), in place on the chunk's noise (the same float32 operations as exp(μ + σ z)
        out of place, element by element): the temporaries stay in the caches and are reused by the allocator, where
        whole (B, N) ones would each be a pass over memory and, at 16 draws × 10^6 agents, 64 MB mapped afresh and
        faulted in page by page."""
        rows = 1 if self.common_random_numbers else draws
        out = {
            name: torch.empty(rows, self.n_agents, dtype=torch.int32, device=self.age_band.device)
            for name in self.durations
        }
        keys = {name: stable_seed(seed, name) for name in self.durations}
        step = max(4, DURATION_CHUNK // rows // 4 * 4)  # agents per chunk: a multiple of 4, as `philox` wants
        for first in range(0, self.n_agents, step):
            n = min(step, self.n_agents - first)
            for name, (mu, sigma) in self.durations.items():  # each (N,): the agents' age bands'
                days = self._philox(keys[name], rows, n, first).mul_(2).sub_(1).erfinv_()
                days.mul_(math.sqrt(2)).mul_(sigma[first : first + n]).add_(mu[first : first + n]).exp_().round_()
                days.clamp_(1, self.course.max_days_since_infection)
                out[name][:, first : first + n] = days  # integers already: the cast is exact
        return {name: days.expand(draws, -1) for name, days in out.items()}

    def derivative_estimates(
        self,
        parameters: Mapping[str, Tensor],
        seed: int,
        statistic,
        names,
        alternatives: int = 1,
        replicates: int = 1,
        controls: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Stochastic derivatives (Arya et al. 2022) in every parameter (`diffabm.models.epidemic.derivatives`)."""
        from diffabm.models.epidemic.derivatives import stochastic_derivatives

        return stochastic_derivatives(
            self, parameters, seed, statistic, list(names), alternatives, replicates, controls
        )

    def course_draws(self, parameters: Mapping[str, Tensor], seed: int, draws: int, estimate) -> dict:
        """Each agent's course if infected (B, N): stage `durations`, `symptomatic`, `hospitalised` and `dies` (drawn
        by `estimate(logits, u)`, the odds ratios of `parameters` applied), the `infectious_days` after onset, the
        `relative` infectiousness and whether it `complies` with isolation."""
        durations = self._durations(seed, draws)
        symptomatic = (self._uniform(seed, "symptomatic", draws) < torch.sigmoid(self.logit_symptomatic)).float()
        hospital_log_or = torch.log(parameters["hospitalisation_odds_ratio"])[:, None]
        death_log_or = torch.log(parameters["fatality_odds_ratio"])[:, None]
        hospitalised = estimate(self.logit_hospital + hospital_log_or, self._uniform(seed, "hospital", draws))
        dies = estimate(self.logit_death + death_log_or, self._uniform(seed, "death", draws))
        # selected by integer arithmetic, not `torch.where`, whose CPU loop branches on each element (1.7 ms against
        # 0.3 ms per 10^6 agents where the condition, here symptomatic, is as likely as not)
        symptomatic_days = durations["symptomatic_to_recovery"] + (hospitalised.detach() > 0.5) * (
            durations["symptomatic_to_admission"] - durations["symptomatic_to_recovery"]
        )
        asymptomatic_days = durations["asymptomatic_infectious"]
        infectious_days = asymptomatic_days + (symptomatic > 0) * (symptomatic_days - asymptomatic_days)
        relative = 1.0 - (1.0 - self.course.asymptomatic_relative_infectiousness) * (1.0 - symptomatic)
        complies = (
            self._uniform(seed, "isolation", draws) < self.interventions.isolation_compliance
        ).float() * symptomatic
        return {
            "durations": durations,
            "symptomatic": symptomatic,
            "hospitalised": hospitalised,
            "dies": dies,
            "infectious_days": infectious_days,
            "relative": relative,
            "complies": complies,
        }

    def day_state(self, course: Mapping, seed: int) -> _DayState:
        """The per-simulation constants of the transmission days. Infectious from `presymptomatic_days` before
        onset (the latent period ends before symptoms do), at least one day after infection."""
        latent = course["durations"]["latent"]
        infectious_from = (latent - self.course.presymptomatic_days).clamp(min=1)
        return _DayState(
            self,
            seed,
            course["relative"],
            infectious_from,
            latent + course["infectious_days"],
            course["complies"],
            latent + self.interventions.isolation_delay,
        )

    def simulate(
        self, parameters: Mapping[str, Tensor], seed: int = 0, controls: Mapping[str, Tensor] | None = None
    ) -> EpidemicOutput:
        """Run the epidemic for B parameter draws (natural scale, each (B,)) with one seed.

        Control `transmission_multiplier` (B, days), if given, scales every layer's β on each day
        (time-varying transmission, e.g. calibrated per week); gradients reach it.
        """
        draws = self.check_parameters(parameters)
        parameters = self.on_device(parameters)
        controls = self.check_controls(controls, draws)
        tracking = torch.is_grad_enabled() and any(torch.as_tensor(v).requires_grad for v in parameters.values())
        check_memory(self.n_agents, draws, self.days, tracking, self.max_memory_gb)
        beta = torch.stack([parameters[f"beta_{layer}"] for layer in self.layers], dim=-1)
        fraction = parameters["initial_fraction"]

        fused_layers = None if tracking else self.fused_layers([*parameters.values(), *controls.values()])
        # nothing needs a gradient where the kernels run: every hard estimator's value, without its surrogate
        course = self.course_draws(parameters, seed, draws, self.estimator if fused_layers is None else hard_bernoulli)
        durations, symptomatic, hospitalised, dies = (
            course[k] for k in ("durations", "symptomatic", "hospitalised", "dies")
        )
        hard_hospitalised = hospitalised.detach() > 0.5
        latent, infectious_days = durations["latent"], course["infectious_days"]

        infected = self._seed(fraction, self._uniform(seed, "initial", draws, self.seeding == "systematic"))
        infection_day = torch.where(infected.detach() > 0.5, 0, NEVER).int()
        multiplier = self.daily_multiplier(controls, draws, beta.dtype)
        day_state = self.day_state(course, seed)
        day_state.vaccine = self.vaccine_protection(parameters, seed, draws)
        day_state.group_transmission = self.group_transmission(controls)
        if tracking and infected.requires_grad:
            infected = _UnrealisedAtSeeding.apply(infected, day_state)
        daily_new, by_setting = [infected.sum(-1)[:, None]], [beta.new_zeros(draws, 1, len(self.layers))]
        weights = beta[:, None] * multiplier  # (B, days, L): the day's own contacts (interventions act from day 1)
        segment = self._segment_days if tracking and self._segment_days else self.days
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):  # recompute whole segments (see below)
            for first in range(1, self.days, segment):
                days = (first, min(first + segment, self.days))
                if fused_layers is not None:
                    infected, infection_day, new, by_layer = fused.transmission_days(
                        day_state, fused_layers, infection_day, weights, *days
                    )
                elif segment < self.days:
                    infected, infection_day, new, by_layer = torch.utils.checkpoint.checkpoint(
                        self._transmission_days,
                        infected,
                        infection_day,
                        weights,
                        day_state,
                        *days,
                        use_reentrant=False,
                        preserve_rng_state=False,
                    )
                else:
                    infected, infection_day, new, by_layer = self._transmission_days(
                        infected, infection_day, weights, day_state, *days
                    )
                daily_new.append(new)
                by_setting.append(by_layer)
        day_state.final_infection_day = infection_day
        if day_state.vaccine is not None:  # a vaccinated infection keeps its admission with probability 1 − e_sev
            hospitalised = hospitalised * day_state.vaccine.severe_kept(
                infection_day, self.estimator, self._uniform(seed, "vaccine_severe", draws)
            )
            hard_hospitalised = hospitalised.detach() > 0.5
        output = daily_outputs(
            torch.cat(daily_new, dim=1),
            torch.cat(by_setting, dim=1),
            infected,
            infection_day,
            symptomatic,
            hospitalised,
            dies,
            latent,
            infectious_days,
            durations["hospital_stay"],
            groupings=self.groupings(),
            compiled=fused_layers is not None,
        )
        if tracking:
            admitted = symptomatic * hard_hospitalised
            onset, stay = latent.long(), durations["hospital_stay"].long()
            admission = onset + infectious_days.long()
            events = {  # event: (days after infection, weight) per agent
                "infections": (torch.zeros_like(onset), torch.ones_like(symptomatic)),
                "cases": (onset, symptomatic),
                "hospitalisations": (admission, admitted),
                "deaths": (admission + stay, admitted * (dies.detach() > 0.5)),
            }
            day_state.delays = {  # name: (days after infection, weight, column) per agent
                name: (*events[event], 0 if grouping is None else getattr(self, f"group_{grouping}"))
                for name, (event, grouping) in self.unrealised_outcome_outputs().items()
            }
            for name in day_state.delays:
                output[name] = _RecordOutputGradient.apply(output[name], day_state, name)
        self.add_reports(output, parameters)
        return output

    def add_reports(self, output: EpidemicOutput, parameters: Mapping[str, Tensor]) -> None:
        """With case reporting (parameters `ascertainment` and `reporting_delay`), `reported_cases` and
        `reported_cases_by_<grouping>`: the people reported as cases each day (`diffabm.models.epidemic.reporting`)."""
        if self.reporting:
            for name in ("", *(f"_by_{grouping}" for grouping in self.group_labels)):
                output[f"reported_cases{name}"] = reported_cases(
                    output[f"cases{name}"],
                    parameters["ascertainment"],
                    parameters["reporting_delay"],
                    self.people_per_agent,
                )

    def unrealised_outcome_outputs(self) -> dict[str, tuple[str, str | None]]:
        """The outputs to which reverse mode adds the would-be outcomes of the agents never infected
        (`_DayState.delays`, `unrealised_outputs`), each with its event and grouping (None: the total)."""
        totals = {event: (event, None) for event in ("cases", "hospitalisations", "deaths")}
        by_group = {f"{event}_by_{name}": (event, name) for event in EVENTS for name in self.group_labels}
        return {**totals, **by_group}

    def outputs_without_forward_mode(self, tangents: Mapping[str, Tensor]) -> dict[str, str]:
        """With an estimator whose draws without an infection carry derivatives (straight-through, relaxed) and a
        parameter that moves the infection draws (a nonzero tangent of `new_infections`), the outputs whose
        forward-mode derivatives lack a term of reverse mode's, each with why: reverse mode adds the would-be cases,
        admissions, deaths and infections by group of the agents never infected (`_DayState.unrealised_outputs`, and
        reported cases through cases); a day's `jvp` cannot know which agents stay uninfected until the last day.
        Infections themselves are exact, and so are the parameters of the course and reporting alone (e.g. the
        odds ratios), which move no draw."""
        if not self.estimator.draws_without_event_differentiable or not bool(tangents["new_infections"].any()):
            return {}
        reason = (
            f"with model.estimator {type(self.estimator).__name__} its draws without an infection carry derivatives "
            "that only reverse mode follows into cases, admissions and deaths; use ad.mode: reverse or checkpointed, "
            "or model/estimator=event_weighted"
        )
        series = self.unrealised_outcome_outputs()
        reported = [f"reported_{name}" for name, (event, _) in series.items() if event == "cases"]  # through cases
        return {name: reason for name in (*series, *reported) if name in self.observables}

    def forward_tangents_per_pass(self, draws: int, tangents: int) -> int:
        """As many forward-mode tangents in one pass as fit in `max_memory_gb` (None: the memory available); one with
        secret-shared sums, which check the range of every value they encode (not possible under `torch.func.vmap`)."""
        if type(self.contacts) is not ContactLayers:
            return 1
        return tangents_that_fit(self.n_agents, draws, self.days, tangents, self.max_memory_gb)

    def fused_layers(self, tensors: Sequence[Tensor]) -> fused.FusedLayers | None:
        """The contact layers for the fused kernels (`fused`), if this simulation can use them: nothing needs a
        gradient (no parameter or control in `tensors` requires grad or carries a forward-mode tangent, of
        `torch.func` or `torch.autograd.forward_ad`), all of them are float32 (as the kernels compute), the estimator is
        hard, the group sums are plain and the device is the CPU; None otherwise."""
        differentiable = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)
        dual = any(has_tangent(tensor) for tensor in tensors)
        if not self._fusable() or differentiable or dual or any(tensor.dtype != torch.float32 for tensor in tensors):
            return None
        if self._fused_layers is None:
            self._fused_layers = fused.FusedLayers.of(self.contacts)
        return self._fused_layers

    def _fusable(self) -> bool:
        """Whether this model's simulations without gradients can run the fused kernels: the fused forward is on,
        the estimator is hard, the group sums are plain and the device is the CPU."""
        return (
            self.fused_forward
            and not self.estimator.relaxed
            and type(self.contacts) is ContactLayers
            and self.age_band.device.type == "cpu"
        )

    def _transmission_days(
        self, infected: Tensor, infection_day: Tensor, weights: Tensor, day_state: _DayState, first: int, last: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Days `first`..`last` − 1 of transmission with the days' layer weights (B, days, L): the infected (B, N) and
        infection days after them, and each day's new infections (B, k) and infections by setting (B, k, L).
        A checkpointed simulation recomputes this in the backward pass, to its end, which clears the day kept for
        `jvp` (it would hold the cycle state → tensors → graph → state, which leaks the graph)."""
        daily_new, by_setting = [], []
        for day in range(first, last):
            weight = weights[:, day]
            updated, _, total = _TransmissionDay.apply(
                infected, weight, day_state.susceptibility_factor(day), infection_day, day, day_state
            )
            new = updated - infected
            infection_day = torch.where(new.detach() > 0.5, day, infection_day)
            infected = updated
            daily_new.append(new.sum(-1))
            by_setting.append(self.infections_by_setting(new, weight, total))
        day_state.latest_day = ()
        return infected, infection_day, torch.stack(daily_new, dim=1), torch.stack(by_setting, dim=1)

    @contextlib.contextmanager
    def checkpointed(self, segment_days: int | None = None) -> Iterator[None]:
        """Reverse mode with gradient checkpointing over days (`diffabm.models.autodiff`): only the infected and
        infection days at the start of each segment of `segment_days` days (None: ≈ √days) are kept."""
        self._segment_days = max(1, round(self.days**0.5)) if segment_days is None else int(segment_days)
        try:
            yield
        finally:
            self._segment_days = None

    @staticmethod
    def _seed(fraction: Tensor, u: Tensor) -> Tensor:
        """Initial infections `u < f`, each weighted f / f (value 1) so that d/df scales every seed's effect.

        For independent seeds, E[Σ_seeds effect / f] = N · E[effect of one seed] = d E[total] / df:
        the weight gives the score-function gradient of the seeding without its variance (papers.md §2).
        """
        seeded = (u < fraction[:, None]).to(u.dtype)
        scale = fraction / fraction.detach().clamp_min(1e-12)
        return seeded * scale[:, None]

    def infections_by_setting(self, new: Tensor, weight: Tensor, total: Tensor) -> Tensor:
        """The day's infections (B, L) split by the layer each came from, in proportion to its force.

        Agent i infected on the day is credited to layer L with share w_L E_iL / Σ_K w_K E_iK, E_iL
        its exposure Σ_{g ∋ i, g in L} T_g / |g| (as JUNE records infection locations). Gradients
        reach β through the infections and through the shares; the exposures are held fixed.
        """
        flat = (new.detach() > 0.5).reshape(-1).nonzero().view(-1)
        draw, agent = flat // new.shape[1], flat % new.shape[1]
        exposure = self.contacts.layer_exposure(total * self.contacts.inverse_size, draw, agent, weight.shape[1])
        return _InfectionsBySetting.apply(new, weight, flat, exposure)
