"""Shared fixtures: a small toy population and the toy study's model config."""

from __future__ import annotations

import pytest
import torch

from diffabm.build import build_model
from diffabm.config import compose_study
from diffabm.population.toy import toy_population


@pytest.fixture(scope="session")
def small_population():
    return toy_population(2_000, seed=7)


def make_model(population, *overrides: str):
    """The toy study's epidemic model on `population`, with Hydra overrides."""
    cfg = compose_study("toy", ["model.days=30", "model.draws=3", *overrides])
    return build_model(cfg, population)


@pytest.fixture
def model(small_population):
    return make_model(small_population)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
