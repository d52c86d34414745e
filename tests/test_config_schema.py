"""Every composed study config is checked against workflow/schemas/config.schema.yaml: bad values fail at
composition with one line naming the study, the field and the value."""

from __future__ import annotations

import math

import pytest
import yaml
from jsonschema import Draft202012Validator
from omegaconf import OmegaConf

from diffabm.config import SCHEMA_PATH, ConfigError, compose_study, validate_config

SUSCEPTIBILITY = "0.4,{},0.79,0.86,0.80,0.82,0.88,0.74"
P_SYMPTOMATIC = "0.29,0.21,0.27,{},0.40,0.49,0.63,0.69"

# (study, overrides, field the message must name, bad value as the message shows it)
BAD = [
    ("toy", ["model.days=abc"], "model.days", "'abc'"),
    ("toy", ["model.days=60.0"], "model.days", "60.0"),
    ("toy", ["model.draws=0"], "model.draws", "0 is less than"),
    ("toy", ["seed=1.5"], "seed", "1.5"),
    ("default", ["calibration.gradients=adjoint"], "calibration.gradients", "'adjoint'"),
    ("default", ["calibration.alternatives=0"], "calibration.alternatives", "0"),
    ("default", ["calibration.step=0"], "calibration.step", "0"),
    ("toy", ["seed=-1"], "seed", "-1"),
    ("toy", ["seed=true"], "seed", "True"),
    ("toy", ["study=a.b"], "study", "'a.b'"),
    ("toy", ["+model.dayz=30"], "model.dayz", "30"),
    ("toy", ["model.parameters.initial_fraction=1.5"], "model.parameters.initial_fraction", "1.5"),
    ("toy", ["model.parameters.beta_household=-1"], "model.parameters.beta_household", "-1"),
    (
        "toy",
        ["model.parameters.hospitalisation_odds_ratio=0"],
        "model.parameters.hospitalisation_odds_ratio",
        "0 is less than or equal",
    ),
    ("toy", ["+model.parameters.gamma=1"], "model.parameters.gamma", "1"),
    ("toy", ["+model.parameters.beta_gym=inf"], "model.parameters.beta_gym", "inf"),
    ("toy", ["~model.parameters.fatality_odds_ratio"], "model.parameters.fatality_odds_ratio", "required"),
    ("toy", [f"model.course.susceptibility=[{SUSCEPTIBILITY.format('nan')}]"], "model.course.susceptibility[1]", "nan"),
    ("toy", [f"model.course.p_symptomatic=[{P_SYMPTOMATIC.format(1.2)}]"], "model.course.p_symptomatic[3]", "1.2"),
    ("toy", ["model.course.latent.mean=-1"], "model.course.latent.mean", "-1"),
    ("toy", ["model.course.hospital_stay.sd=[3.0,0.0,4.0]"], "model.course.hospital_stay.sd[1]", "0.0"),
    ("toy", ["model.course.max_days_since_infection=0"], "model.course.max_days_since_infection", "0"),
    ("toy", ["model.seeding=random"], "model.seeding", "'random'"),
    ("toy", ["model.common_random_numbers=maybe"], "model.common_random_numbers", "'maybe'"),
    ("toy", ["model.estimator._target_=builtins.open"], "model.estimator._target_", "'builtins.open'"),
    ("toy", ["+model.estimator.temperature=1"], "model.estimator.temperature", "1"),
    ("toy", ["model/estimator=gumbel_softmax", "model.estimator.temperature=0"], "model.estimator.temperature", "0"),
    ("toy", ["start_date=yesterday"], "start_date", "'yesterday'"),
    ("toy", ["start_date=2021-02-30"], "start_date", "'2021-02-30'"),
    (
        "toy",
        ["interventions=[{kind:contact_multiplier,layers:[school],start:1,multiplier:0,ned:5}]"],
        "interventions[0].ned",
        "5",
    ),
    (
        "toy",
        ["interventions=[{kind:contact_multiplier,layers:[school],start:1}]"],
        "interventions[0].multiplier",
        "required",
    ),
    (
        "toy",
        ["interventions=[{kind:lockdown,layers:[school],start:1,multiplier:0}]"],
        "interventions[0].kind",
        "'lockdown'",
    ),
    (
        "toy",
        ["interventions=[{kind:contact_multiplier,layers:[school],start:-3,multiplier:0}]"],
        "interventions[0].start",
        "-3",
    ),
    (
        "toy",
        ["interventions=[{kind:contact_multiplier,layers:[school],start:1,end:someday,multiplier:0}]"],
        "interventions[0].end",
        "'someday'",
    ),
    ("toy", ["interventions=[{kind:isolation,compliance:1.5,delay_days:0}]"], "interventions[0].compliance", "1.5"),
    (
        "toy",
        ["interventions=[{kind:isolation,compliance:0.5,delay_days:1,layers:[]}]"],
        "interventions[0].layers",
        "[]",
    ),
    ("toy", ["population.n_agents=0"], "population.n_agents", "0"),
    ("toy", ["population.employment_rate=1.5"], "population.employment_rate", "1.5"),
    ("toy", ["++resources.max_memory_gb=0"], "resources.max_memory_gb", "0"),
    ("toy", ["+truth.beta_school=-2"], "truth.beta_school", "-2"),
    ("default", ["calibration.point.lr=-0.1"], "calibration.point.lr", "-0.1"),
    ("default", ["calibration.modes=[pointy]"], "calibration.modes[0]", "'pointy'"),
    ("default", ["calibration.observables=[infections]"], "calibration.observables[0]", "'infections'"),
    (
        "default",
        ["calibration.prior.beta_household.distribution=Foo"],
        "calibration.prior.beta_household.distribution",
        "'Foo'",
    ),
    ("default", ["calibration.prior.beta_household.distribution=Beta"], "calibration.prior.beta_household.loc", "0.5"),
    ("default", ["+calibration.prior.gamma={distribution:Normal,loc:0,scale:1}"], "calibration.prior.gamma", "'gamma'"),
    ("default", ["calibration.flow.loss_weight=0"], "calibration.flow.loss_weight", "0"),
    ("default", ["calibration.flow.loss_weight=automatic"], "calibration.flow.loss_weight", "'automatic'"),
    ("default", ["interventions.0.multiplier=-1"], "interventions[0].multiplier", "-1"),
    ("default", ["interventions.1.delay_days=0.5"], "interventions[1].delay_days", "0.5"),
    ("default", ["population.scale=1.5"], "population.scale", "1.5"),
    ("default", ["population.school_age=[5]"], "population.school_age", "[5]"),
]


@pytest.mark.parametrize("study, overrides, field, value", BAD, ids=[" ".join(case[1]) for case in BAD])
def test_a_bad_value_fails_at_composition_naming_field_and_value(study, overrides, field, value):
    with pytest.raises(ConfigError) as caught:
        compose_study(study, overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"study {study!r}: config field {field!r}")
    assert value in message.removeprefix(f"study {study!r}: config field {field!r}")


@pytest.mark.parametrize(
    "study, overrides",
    [
        ("toy", ["++resources.max_memory_gb=null"]),
        ("toy", ["++resources.max_memory_gb=12.5"]),
        ("toy", ["model/estimator=gumbel_softmax"]),
        ("toy", ["model/estimator=straight_through_gumbel", "model.estimator.temperature=0.5"]),
        ("toy", ["model/estimator=straight_through"]),
        ("toy", ["model.course.latent.mean=[1,2,3,4,5,6,7,8.5]"]),
        (
            "toy",
            [
                "interventions=[{kind:contact_multiplier,layers:[school],start:2021-09-01,end:2021-09-15,"
                "multiplier:0.5},{kind:isolation,compliance:1,delay_days:0}]"
            ],
        ),
        ("toy", ["+truth.beta_school=2", "+truth.initial_fraction=0.01"]),
        ("default", ["calibration.flow.loss_weight=2.5", "calibration.modes=[ensemble]"]),
        ("default", ["+calibration.prior.fatality_odds_ratio={distribution:Gamma,concentration:2,rate:2}"]),
    ],
)
def test_good_overrides_compose(study, overrides):
    assert compose_study(study, overrides).study == study


def test_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(yaml.safe_load(SCHEMA_PATH.read_text()))


def test_validate_config_rejects_non_finite_floats_anywhere():
    container = OmegaConf.to_container(compose_study("toy"), resolve=True)
    validate_config(container, "study 'toy'")
    container["model"]["course"]["hospital_stay"]["mean"][4] = -math.inf
    with pytest.raises(
        ConfigError,
        match=r"^here: config field 'model.course.hospital_stay.mean\[4\]': -inf is not a "
        r"finite number$",
    ):
        validate_config(container, "here")
