"""Many draws at once (issue 17): the shared sparse group sums agree with the per-draw scatters, and a batch of
identical draws gives each draw the result of a single-draw simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model

from diffabm.models.epidemic.contacts import SPARSE_FROM_DRAWS, ContactLayers


@pytest.fixture(scope="module")
def layers() -> ContactLayers:
    rng = np.random.default_rng(0)
    n = 500
    school = rng.integers(-1, 20, size=n)  # -1: no school (the sink group)
    work = rng.integers(-1, 30, size=(n, 2))  # two memberships per agent
    return ContactLayers({"household": rng.integers(0, 150, size=n), "school": school, "work": work}, n)


@pytest.mark.parametrize("isolating", [(), (False, True, True)])
def test_sparse_group_sums_match_the_per_draw_scatters(layers, isolating):
    draws = max(SPARSE_FROM_DRAWS, 5)
    generator = torch.Generator().manual_seed(1)
    values = torch.rand(draws, 500, generator=generator, dtype=torch.float64)
    isolated = values * 0.25 if isolating else None
    per_group = torch.rand(draws, layers.n_groups, generator=generator, dtype=torch.float64)
    keep = torch.rand(draws, 500, generator=generator, dtype=torch.float64) if isolating else None
    rows = range(draws)
    batched = layers.group_totals(values, isolated, isolating)
    single = torch.cat(
        [layers.group_totals(values[[b]], None if not isolating else isolated[[b]], isolating) for b in rows]
    )
    torch.testing.assert_close(batched, single)
    batched = layers.spread(per_group, isolating, keep)
    single = torch.cat([layers.spread(per_group[[b]], isolating, None if keep is None else keep[[b]]) for b in rows])
    torch.testing.assert_close(batched, single)
    torch.testing.assert_close(layers.gather(values), torch.cat([layers.gather(values[[b]]) for b in rows]))


@pytest.mark.parametrize("isolating", [(), (False, True, True)])
def test_group_sums_over_the_nonzero_agents_are_the_sums_over_all(layers, isolating):
    """Where most agents add zeros (a day's infectiousness), the per-slot sums run over the others alone: bit for bit
    the sums over all agents in agent order. Values with a gradient sum over all: a zero still carries one."""
    generator = torch.Generator().manual_seed(2)
    values = torch.rand(2, 500, generator=generator) * (torch.rand(2, 500, generator=generator) < 0.1)
    isolated = values * 0.3 if isolating else None
    expected = values.new_zeros(2, layers.n_groups)
    for group, layer in zip(layers.slot_group, layers.slot_layer):
        expected.index_add_(1, group, isolated if isolating and isolating[layer] else values)
    assert layers._nonzero_members(values, isolated) is not None, "the sums over all agents ran"
    assert torch.equal(layers.group_totals(values, isolated, isolating), expected)
    leaf = values.clone().requires_grad_(True)
    assert layers._nonzero_members(leaf) is None
    layers.group_totals(leaf, None, ()).sum().backward()
    assert (leaf.grad >= 1).all(), "agents with a zero value lost their gradient"


@pytest.mark.parametrize("draws", [1, 3])
def test_sums_over_the_nonzero_agents_leave_the_gradient_bit_for_bit(small_population, monkeypatch, draws):
    """The tensor path's group totals and its adjoint's gather run over the agents with nonzero values alone: the
    gradient is the one of the sums over all agents, bit for bit."""
    model = make_model(small_population, f"model.draws={draws}", "model.days=25")

    def gradient() -> dict:
        parameters = {k: v.clone().requires_grad_(True) for k, v in model.natural_parameters().items()}
        output = model(parameters, seed=2)
        (3 * output.deaths.sum() - output.new_infections.sum()).backward()  # gradients of both signs
        return {name: value.grad for name, value in parameters.items() if value.grad is not None}

    chosen = []
    nonzero_members = ContactLayers._nonzero_members
    monkeypatch.setattr(
        ContactLayers, "_nonzero_members", staticmethod(lambda *a: chosen.append(nonzero_members(*a)) or chosen[-1])
    )
    restricted = gradient()
    assert sum(members is not None for members in chosen) > 20, "the sums over all agents ran"
    monkeypatch.setattr(ContactLayers, "_nonzero_members", staticmethod(lambda *a: None))
    over_all = gradient()
    assert restricted.keys() == over_all.keys() and len(restricted) >= 4
    for name, value in over_all.items():
        assert torch.equal(restricted[name], value), name


def test_a_batch_of_identical_draws_gives_each_the_single_draw_result(small_population):
    draws = 2 * SPARSE_FROM_DRAWS
    single = make_model(small_population, "model.draws=1", "model.common_random_numbers=true")
    batch = make_model(small_population, f"model.draws={draws}", "model.common_random_numbers=true")
    parameters = single.natural_parameters()
    with torch.no_grad():
        one = single.simulate(parameters, seed=5)
        many = batch.simulate({k: v.expand(draws) for k, v in parameters.items()}, seed=5)
    for name in ("new_infections", "deaths", "stage_counts", "infections_by_setting"):
        assert torch.equal(many[name], many[name][:1].expand_as(many[name])), name  # every draw the same
        # the single draw sums groups by per-slot scatters, the batch by one sparse product: rounding may differ
        torch.testing.assert_close(many[name][:1], one[name], atol=2.0, rtol=0.02)
