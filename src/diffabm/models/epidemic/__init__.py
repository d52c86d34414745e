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

Modules, in the order the model reads: `course` (the disease course), `contacts` (the contact
layers), `interventions` (contact multipliers and isolation as data), `transmission` (one day of
transmission with its adjoint), `outputs` (the daily series) and `model` (`EpidemicModel`).
"""

from diffabm.models.epidemic.contacts import Agents, ContactLayers, attribute_groups
from diffabm.models.epidemic.course import DiseaseCourse, Duration, disease_course
from diffabm.models.epidemic.interventions import (
    InterventionError,
    Interventions,
    build_interventions,
)
from diffabm.models.epidemic.model import EpidemicModel
from diffabm.models.epidemic.outputs import OBSERVABLES, STAGES, EpidemicOutput
from diffabm.models.epidemic.transmission import NEVER, _DayState

__all__ = [
    "NEVER",
    "OBSERVABLES",
    "STAGES",
    "Agents",
    "ContactLayers",
    "DiseaseCourse",
    "Duration",
    "EpidemicModel",
    "EpidemicOutput",
    "InterventionError",
    "Interventions",
    "_DayState",
    "attribute_groups",
    "build_interventions",
    "disease_course",
]
