"""Vaccination (diffabm.models.epidemic.vaccination) and transmission by group: who gets which dose when, what a
dose does to infection and severe disease, gradients, district outputs and controls, bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
import torch
from conftest import make_model

from diffabm.models.epidemic.interventions import build_interventions
from diffabm.models.epidemic.transmission import NEVER
from diffabm.models.epidemic.vaccination import VACCINATION_PARAMETERS
from diffabm.population.toy import toy_population

START = dt.date(2021, 8, 17)
EFFICACY = {
    "efficacy_infection_dose1": 0.4,
    "efficacy_infection_dose2": 0.8,
    "efficacy_severe_dose1": 0.5,
    "efficacy_severe_dose2": 0.75,
}


def write_doses(path, counts: dict[str, int]) -> str:
    path.write_text("Date,First doses,Second doses\n" + "".join(f"{day},{n},0\n" for day, n in counts.items()))
    return str(path)


@pytest.fixture
def doses(tmp_path) -> str:
    """Half the first doses two months before day 0, half on day 10 (2021-08-27), none on the days between."""
    return write_doses(tmp_path / "doses.csv", {"2021-06-17": 500, "2021-07-01": 0, "2021-08-27": 500})


def vaccinated_population(uptake1: float | np.ndarray, uptake2: float | np.ndarray, n: int = 2_000):
    population = toy_population(n, seed=7)
    shape = (population.n_agents,)
    extra = {
        **population.extra,
        "vaccine_dose1_uptake": np.broadcast_to(uptake1, shape).astype(np.float32),
        "vaccine_dose2_uptake": np.broadcast_to(uptake2, shape).astype(np.float32),
        "district": (np.arange(population.n_agents) % 3).astype(np.int64),
    }
    vaccinated = dataclasses.replace(population, extra=extra)
    vaccinated.attrs = {
        **getattr(population, "attrs", {}),
        "district_labels": ["Auckland", "Counties Manukau", "Waitemata"],
    }
    return vaccinated


def vaccine_model(
    population, doses: str, *overrides: str, interval: int = 21, waning: float | None = None, **efficacy: float
):
    values = {**EFFICACY, **efficacy}
    return make_model(
        population,
        "start_date=2021-08-17",
        "model.days=40",
        f"+interventions=[{{kind: vaccination, name: vaccination, doses: {doses}, "
        f"interval_days: {interval}, effect_delay_days: 14"
        f"{'' if waning is None else f', waning_half_life_days: {waning}'}}}]",
        *(f"+model.parameters.{name}={value}" for name, value in values.items()),
        *overrides,
    )


def parameters(model, **values: float) -> dict[str, torch.Tensor]:
    params = {k: v.detach().clone() for k, v in model.natural_parameters().items()}
    params.update({name: torch.full_like(params[name], value) for name, value in values.items()})
    return params


def test_doses_follow_the_uptake_and_the_national_timing(doses):
    """Takers of dose 1 are a share u1 of agents (binomial, 3 SE), dose-2 takers are among them (u2), dose 1 falls
    on the series' days in proportion to their doses, and dose 2 `interval` days later."""
    model = vaccine_model(vaccinated_population(0.8, 0.6, n=20_000), doses, "model.draws=2", interval=42)
    protection = model.vaccine_protection(model.natural_parameters(), seed=3, draws=2)
    first, second = protection.first, protection.second
    n = first.numel()
    for taken, share in ((first != NEVER, 0.8), (second != NEVER, 0.6)):
        assert abs(taken.float().mean().item() - share) < 3 * (share * (1 - share) / n) ** 0.5
    assert ((second != NEVER) <= (first != NEVER)).all()
    assert torch.equal(second[second != NEVER], first[second != NEVER] + 42)
    days = first[first != NEVER]
    assert set(days.unique().tolist()) == {-61, 10}
    early = (days == -61).float().mean().item()
    assert abs(early - 0.5) < 3 * (0.25 / days.numel()) ** 0.5


def test_children_are_vaccinated_only_from_children_from(tmp_path):
    doses = write_doses(tmp_path / "doses.csv", {"2021-06-01": 100, "2021-09-01": 100})
    population = vaccinated_population(1.0, 0.0)
    model = vaccine_model(population, doses, interval=21)
    model.interventions = build_interventions(
        [{"kind": "vaccination", "doses": doses, "interval_days": 21, "children_from": "2021-08-20"}],
        model.days,
        model.layers,
        START,
    )
    first = model.vaccine_protection(model.natural_parameters(), seed=0, draws=3).first
    child = model.vaccine_child.expand_as(first)
    assert child.any()
    assert (first[child] == 15).all()  # 2021-09-01: the only day on or after children_from
    assert set(first[~child].unique().tolist()) == {-77, 15}


def test_full_protection_against_infection_stops_transmission(doses):
    """Everyone protected by two doses from day 0 (doses 2 months before, efficacy 1): only the seeds are infected;
    with efficacy 0 the same seeds infect others."""
    early = doses.replace("doses.csv", "early.csv")
    write_doses(__import__("pathlib").Path(early), {"2021-06-01": 10})
    population = vaccinated_population(1.0, 1.0)
    protected = vaccine_model(
        population, early, interval=21, efficacy_infection_dose1=1.0, efficacy_infection_dose2=1.0
    )
    out = protected.simulate(parameters(protected, initial_fraction=0.02), seed=1)
    assert out.new_infections[:, 1:].sum() == 0
    open_door = protected.simulate(parameters(protected, initial_fraction=0.02, efficacy_infection_dose2=0.0), seed=1)
    assert open_door.new_infections[:, 1:].sum() > 0


def test_protection_against_severe_disease_removes_admissions(tmp_path):
    early = write_doses(tmp_path / "early.csv", {"2021-06-01": 10})
    model = vaccine_model(
        vaccinated_population(1.0, 1.0), early, "model.draws=2", efficacy_infection_dose2=0.0, efficacy_severe_dose2=1.0
    )
    values = dict(initial_fraction=0.05, hospitalisation_odds_ratio=20.0)
    assert model.simulate(parameters(model, **values), seed=2).hospitalisations.sum() == 0
    unprotected = model.simulate(parameters(model, **values, efficacy_severe_dose2=0.0), seed=2)
    assert unprotected.hospitalisations.sum() > 0
    assert unprotected.deaths.sum() >= 0


def test_more_efficacy_means_fewer_infections_in_the_same_seeds(doses):
    """Over 8 seeds × 3 draws, raising the efficacy of dose 2 from 0 to 0.9 never adds infections in total."""
    model = vaccine_model(vaccinated_population(0.9, 0.9), doses)
    low, high = (
        torch.stack(
            [
                model.simulate(
                    parameters(model, initial_fraction=0.01, efficacy_infection_dose2=e), seed=s
                ).new_infections.sum()
                for s in range(8)
            ]
        )
        for e in (0.0, 0.9)
    )
    assert high.sum() < low.sum()


def test_efficacy_gradients_match_finite_differences_of_a_smooth_simulation(doses):
    """Relaxed draws, fixed noise: the simulation is smooth in the efficacy against infection, so the hand-derived
    adjoint's factor gradient must equal central finite differences; forward mode must equal reverse mode."""
    population = vaccinated_population(0.9, 0.7, n=400)
    model = vaccine_model(
        population,
        doses,
        "model.days=25",
        "model.draws=2",
        "model/estimator=gumbel_softmax",
        "model.estimator.temperature=3.0",
    )
    base = {k: v.double() for k, v in parameters(model, initial_fraction=0.05).items()}
    name = "efficacy_infection_dose1"
    params = {k: v.clone().requires_grad_(k == name) for k, v in base.items()}
    (grad,) = torch.autograd.grad(model.simulate(params, seed=1).new_infections.sum(), params[name])
    step = 1e-3
    with torch.no_grad():
        up, down = (
            model.simulate({**base, name: base[name] + sign * step}, seed=1).new_infections.sum() for sign in (1, -1)
        )
    fd = (up - down).item() / (2 * step)
    assert fd < 0
    assert grad.sum().item() == pytest.approx(fd, rel=0.05, abs=1e-2)

    def total(efficacy):
        return model.simulate({**base, name: efficacy}, seed=1).new_infections.sum()

    _, forward = torch.func.jvp(total, (base[name],), (torch.ones(2, dtype=torch.float64),))
    torch.testing.assert_close(forward, grad.sum(), rtol=1e-4, atol=1e-3)


def test_district_outputs_sum_to_the_totals_and_district_controls_act_on_their_agents(doses):
    model = vaccine_model(
        vaccinated_population(0.5, 0.4),
        doses,
        "+model.parameters.ascertainment=0.5",
        "+model.parameters.reporting_delay=3.0",
    )
    assert model.group_labels["district"] == ["Auckland", "Counties Manukau", "Waitemata"]
    params = parameters(model, initial_fraction=0.02)
    out = model.simulate(params, seed=5)
    torch.testing.assert_close(out.cases_by_district.sum(-1), out.cases)
    torch.testing.assert_close(out.reported_cases_by_district.sum(-1), out.reported_cases)
    closed = torch.ones(3, model.days, 3)
    closed[:, :, 1] = 0.0  # nobody in the second district can be infected
    shut = model.simulate(params, seed=5, controls={"transmission_by_district": closed})
    assert shut.infections_by_district[:, 1:, 1].sum() == 0
    assert shut.infections_by_district[:, 1:, [0, 2]].sum() > 0
    control = torch.ones(3, model.days, 3, requires_grad=True)
    model.simulate(params, seed=5, controls={"transmission_by_district": control}).new_infections.sum().backward()
    assert (control.grad[:, 1:].sum((0, 1)) > 0).all()  # more transmission in any district: more infections
    with pytest.raises(ValueError, match=r"transmission_by_district has value -1.0"):
        model.simulate(params, controls={"transmission_by_district": -torch.ones(3, model.days, 3)})


def test_coverage_is_the_expected_share_vaccinated(doses):
    model = vaccine_model(vaccinated_population(0.8, 0.6), doses, interval=21)
    coverage = model.vaccine_coverage("district")
    assert coverage.shape == (model.days, 3, 2)
    torch.testing.assert_close(coverage[0, :, 0], torch.full((3,), 0.4))  # half the first doses before day 0
    torch.testing.assert_close(coverage[-1, :, 0], torch.full((3,), 0.8))
    torch.testing.assert_close(coverage[-1, :, 1], torch.full((3,), 0.6))  # day 10 + 21 <= 39


def test_bad_vaccination_input_names_the_field(doses, tmp_path):
    population = vaccinated_population(0.8, 0.6)
    with pytest.raises(ValueError, match=r"vaccination needs model.parameters \[.efficacy"):
        make_model(population, f"+interventions=[{{kind: vaccination, doses: {doses}, interval_days: 21}}]")
    with pytest.raises(ValueError, match=r"needs the population's 'vaccine_dose1_uptake'"):
        vaccine_model(toy_population(500, seed=1), doses)
    bad = write_doses(tmp_path / "bad.csv", {"2021-06-01": 10})
    (tmp_path / "bad.csv").write_text((tmp_path / "bad.csv").read_text().replace(",10,", ",1x,"))
    with pytest.raises(ValueError, match=r"bad.csv: field 'First doses' has value '1x' \(2021-06-01\)"):
        vaccine_model(population, bad)
    with pytest.raises(ValueError, match=r"interventions\[0\].doses: .*missing.csv does not exist"):
        vaccine_model(population, str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match=r"interventions\[0\].interval_days is 0"):
        build_interventions([{"kind": "vaccination", "doses": doses, "interval_days": 0}], 10, ["household"], START)
    assert len(VACCINATION_PARAMETERS) == 4
