"""Private agent-based modelling (`diffabm.private`, `model.privacy: secret_sharing`): the shares are uniform and
independent of the secrets, P − 1 parties' views do not depend on the secrets, only per-group aggregates are
revealed, the private model simulates and differentiates as the plain one, overflow is an error, and the protocol
runs with one process per party."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model
from scipy import stats

from diffabm.config import ConfigError, compose_study
from diffabm.models.autodiff import AutoDiff
from diffabm.models.epidemic.contacts import ContactLayers, attribute_groups
from diffabm.models.epidemic.private import SecretSharedContactLayers
from diffabm.private import FixedPoint, PartySimulator, share
from diffabm.private.parties import local_group_sums

ALPHA = 1e-6  # a fair sharing fails a test with probability < 1e-6 × the tests here; a leaky one has p ≈ 0
ROWS = 20_000  # independent sharings per statistical test (≈ 78 per byte value and position)
ISOLATION = "+interventions=[{kind:isolation,compliance:0.6,delay_days:1,layers:[school,workplace,community]}]"


def byte_counts(values: torch.Tensor) -> np.ndarray:
    """Counts (8, 256) of each byte value at each of the 8 byte positions of int64 ring elements."""
    data = values.reshape(-1).numpy().view(np.uint8).reshape(-1, 8)
    return np.stack([np.bincount(data[:, position], minlength=256) for position in range(8)])


def uniform_p(values: torch.Tensor) -> float:
    """The smallest p-value of a chi-square test of uniformity over the byte positions."""
    return min(float(stats.chisquare(counts).pvalue) for counts in byte_counts(values))


def same_distribution_p(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest p-value over byte positions of a chi-square test that `a` and `b` have one distribution."""
    tables = np.stack([byte_counts(a), byte_counts(b)], axis=1)  # (8, 2, 256)
    return min(float(stats.chi2_contingency(table + 1).pvalue) for table in tables)


def shares_of(secret: list[float], parties: int = 3) -> list[torch.Tensor]:
    """Shares (ROWS, N) of ROWS independent sharings of the same secret vector."""
    encoded = FixedPoint().encode(torch.tensor(secret, dtype=torch.float64).expand(ROWS, -1), "secret", len(secret))
    return share(encoded, parties)


def test_every_single_share_is_uniform_and_independent_of_the_secret():
    first, second = shares_of([3.25]), shares_of([-1234.5])
    for party in range(3):  # the last share is the remainder x − Σ r: uniform too
        assert uniform_p(first[party]) > ALPHA, f"share of party {party} is not uniform"
        assert same_distribution_p(first[party], second[party]) > ALPHA, f"share of party {party} depends on x"
    # across random secrets, no share is correlated with the secret
    secrets = torch.randint(-(2**40), 2**40, (ROWS,))
    for party, part in enumerate(share(secrets, 3)):
        assert abs(stats.spearmanr(secrets.numpy(), part.numpy()).statistic) < 0.05, party


def test_the_statistical_tests_reject_a_leaky_sharing():
    """The tests above have power: shares that are the secret plus bounded noise fail them."""
    encoded = FixedPoint().encode(torch.full((ROWS,), 3.25, dtype=torch.float64), "secret")
    noise = torch.randint(-(2**40), 2**40, (ROWS,))
    assert uniform_p(encoded - noise) < ALPHA
    other = FixedPoint().encode(torch.full((ROWS,), -1234.5, dtype=torch.float64), "secret")
    assert same_distribution_p(encoded - noise, other - noise) < ALPHA


@pytest.mark.parametrize("coalition", [(0, 1), (0, 2), (1, 2)])
def test_the_view_of_p_minus_1_parties_does_not_depend_on_the_secrets(coalition):
    a, b = [0.1, 0.2, 0.3, 4.0], [7.5, -3.0, 0.0, 1e3]
    shares_a, shares_b = shares_of(a), shares_of(b)
    joint_a = sum(shares_a[p] for p in coalition)  # the coalition's sum of its shares of each agent (mod 2^64)
    joint_b = sum(shares_b[p] for p in coalition)
    for p in coalition:
        assert same_distribution_p(shares_a[p], shares_b[p]) > ALPHA
    assert same_distribution_p(joint_a, joint_b) > ALPHA
    assert uniform_p(joint_a) > ALPHA


def test_with_the_reveal_the_view_depends_only_on_the_revealed_totals():
    """Two secrets with the same group totals: the coalition's shares and everyone's published local sums (its
    whole view) are identically distributed, and the revealed values are the same."""
    group = torch.tensor([0, 0, 1, 1])
    views = []
    for secret in ([0.5, 1.5, 2.0, -1.0], [1.75, 0.25, -4.0, 5.0]):  # totals 2.0 and 1.0 both
        protocol = PartySimulator(3)
        revealed = protocol.group_sums(
            [torch.tensor(secret, dtype=torch.float64).expand(ROWS, -1)], [(group, 0)], 2, names=["secret"]
        )
        torch.testing.assert_close(revealed, torch.tensor([[2.0, 1.0]], dtype=torch.float64).expand(ROWS, -1))
        views.append(protocol.parties)
    for coalition in ((0, 1), (0, 2), (1, 2)):  # its received shares, and the published sums of all parties
        received = [[views[k][p].received[-1]["secret"] for p in coalition] for k in range(2)]
        for a, b in zip(*received):
            assert same_distribution_p(a, b) > ALPHA, coalition
        assert same_distribution_p(sum(received[0]), sum(received[1])) > ALPHA, coalition
    for q in range(3):
        assert same_distribution_p(views[0][0].published[-1][q], views[1][0].published[-1][q]) > ALPHA


def test_only_the_per_group_aggregates_are_revealed(small_population):
    groups = attribute_groups(small_population, {"community": "area"})
    plain = ContactLayers(groups, small_population.n_agents)
    private = SecretSharedContactLayers(groups, small_population.n_agents, record_views=True)
    n, g = small_population.n_agents, private.n_groups
    generator = torch.Generator().manual_seed(0)
    infectiousness = torch.rand(2, n, generator=generator) * (torch.rand(2, n, generator=generator) < 0.1)
    isolated = infectiousness * 0.4
    isolating = [name in ("school", "workplace") for name in private.names]
    totals = private.group_totals(infectiousness, isolated, isolating)
    torch.testing.assert_close(
        totals, plain.group_totals(infectiousness, isolated, isolating) * (private.inverse_size > 0)
    )
    # the exact ring sums of the encodings, per real group (not the sink)
    fixed_point = private.protocol.fixed_point
    sources = [fixed_point.encode(infectiousness, "x", n), fixed_point.encode(isolated, "x", n)]
    source_of = [int(flag) for flag in isolating]
    memberships = [(group, source_of[layer]) for group, layer in zip(private.slot_group, private.slot_layer)]
    expected = local_group_sums(sources, memberships, g)[:, :-1]
    for party in private.protocol.parties:
        assert len(party.revealed) == 1 and torch.equal(party.revealed[0], expected)
        assert party.revealed[0].shape == (2, g - 1)  # per group, without the sink, nothing per agent
        assert all(partial.shape == (2, g - 1) for partial in party.published[0])
        assert {name: part.shape for name, part in party.received[0].items()} == {
            "infectiousness": (2, n),
            "isolated infectiousness": (2, n),
        }
        assert not any(torch.equal(part, sources[0]) for part in party.received[0].values())
    # a whole simulation: every round reveals B × (G − 1) values
    model = make_model(small_population, "model.privacy=secret_sharing", "model.days=10")
    model.simulate({name: torch.full((3,), value) for name, value in model.defaults.items()}, seed=1)
    for party in model.contacts.protocol.parties:
        assert party.revealed_values == party.rounds * 3 * (model.contacts.n_groups - 1)


@pytest.mark.parametrize(
    "ad",
    [AutoDiff("reverse"), AutoDiff("forward"), AutoDiff("forward", tangents_per_pass=3)],
    ids=["reverse", "forward", "forward-3-per-pass"],
)
def test_private_simulation_and_gradient_equal_the_plain_ones(small_population, ad):
    """Reverse mode goes through `gather` (the adjoint's secure sums), forward mode through `group_totals` of the
    tangents: one tangent per pass with secret sharing, whose sums check each value's range (not under `vmap`),
    whatever `tangents_per_pass` asks."""
    results = {}
    for privacy in ("none", "secret_sharing"):
        model = make_model(small_population, f"model.privacy={privacy}", ISOLATION)
        parameters = {
            name: torch.full((3,), value, requires_grad=name.startswith("beta_"))
            for name, value in model.defaults.items()
        }
        output = ad.simulate(model, parameters, seed=11)
        output["new_infections"].sum().backward()
        results[privacy] = (
            {name: value.detach() for name, value in output.items()},
            {name: value.grad for name, value in parameters.items() if value.grad is not None},
        )
    (plain, plain_grad), (private, private_grad) = results["none"], results["secret_sharing"]
    assert plain["new_infections"].sum() > 50  # an epidemic, not a handful of seeds
    for name in plain:  # counts exactly; the split by setting (shares of each force) to float32 rounding
        if name == "infections_by_setting":
            torch.testing.assert_close(private[name], plain[name], rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(plain[name], private[name]), name
    for name in plain_grad:
        torch.testing.assert_close(private_grad[name], plain_grad[name], rtol=1e-5, atol=1e-6)


def test_a_fixed_point_overflow_is_a_clear_error(small_population):
    fixed_point = FixedPoint(32)
    assert fixed_point.bound(4) == 2.0**28
    # 4 × 2^29 = 2^31 would wrap a 64-bit ring at F = 32: refused, naming the quantity and the value
    with pytest.raises(ValueError, match=r"infectiousness value 536870912\.0 is beyond the fixed-point range"):
        fixed_point.encode(torch.full((4,), 2.0**29), "infectiousness", summands=4)
    with pytest.raises(ValueError, match="nan"):
        fixed_point.encode(torch.tensor([1.0, float("nan")]), "x")
    contacts = SecretSharedContactLayers({"household": np.array([0, 0, 1, 1])}, 4)
    with pytest.raises(ValueError, match=r"infectiousness value 1\.0+2\d*e\+20 is beyond"):
        contacts.group_totals(torch.tensor([[1.0, 1e20, 0.0, 0.0]]), None, [False])
    with pytest.raises(ValueError, match="adjoint term"):
        contacts.gather(torch.tensor([[1.0, 0.0, float("inf"), 0.0]]))
    # within range: sums of values near the bound are exact
    values = torch.full((1, 4), fixed_point.bound(2) * 0.999, dtype=torch.float64)
    contacts.protocol.fixed_point.encode(values, "x", 2)


def test_the_config_switch_chooses_the_contact_layers(small_population):
    model = make_model(small_population, "model.privacy=secret_sharing", "model.secret_sharing.parties=4")
    assert isinstance(model.contacts, SecretSharedContactLayers)
    assert model.contacts.protocol.n_parties == 4
    assert type(make_model(small_population).contacts) is ContactLayers
    with pytest.raises(ConfigError, match=r"model\.privacy"):
        compose_study("toy", ["model.privacy=homomorphic"])
    with pytest.raises(ConfigError, match="parties"):
        compose_study("toy", ["model.secret_sharing.parties=1"])


def test_one_process_per_party_gives_the_in_process_totals():
    from diffabm.private.distributed import distributed_group_sums

    generator = torch.Generator().manual_seed(3)
    values = torch.rand(2, 60, generator=generator)
    group = torch.randint(0, 6, (60,), generator=generator)
    public = torch.arange(5)  # group 5 is not revealed
    totals, views = distributed_group_sums(values, group, 6, parties=3, public=public)
    expected = PartySimulator(3).group_sums([values], [(group, 0)], 6, public)
    assert torch.equal(totals, expected)
    assert totals[:, 5].eq(0).all()
    encoded = FixedPoint().encode(values, "x", 60)
    for rank, view in enumerate(views):
        assert sorted(view["received"]) == [0, 1, 2]  # one share from every owner, its own included
        for owner, part in view["received"].items():
            agents = torch.arange(owner, 60, 3)
            assert part.shape == (2, agents.numel())
            if owner != rank:  # another owner's agents: a share, never the value
                assert not torch.equal(part, encoded[:, agents])
        assert view["revealed"].shape == (2, 5)
        assert torch.equal(sum(view["published"]), view["revealed"])


@pytest.mark.slow
def test_the_private_demo_study_runs_and_both_modes_agree(tmp_path):
    """The study's stages at a tiny scale: the same infections, gradients and point fits in both modes."""
    import pandas as pd

    from diffabm.calibration.observe import observe
    from diffabm.figures.private_demo import plot_private_demo
    from diffabm.population.synthesize import synthesize
    from diffabm.studies.private_demo import write_private_demo

    overrides = ["population.n_agents=1500", "model.days=20", "model.draws=2", "calibration.point.epochs=3"]
    cfg = compose_study("private-demo", [*overrides, "private_demo.repeats=1"])
    synthesize(cfg, tmp_path / "population.zarr", tmp_path / "population_report")
    observe(cfg, tmp_path / "population.zarr", tmp_path / "observed.zarr")
    store = write_private_demo(
        cfg, tmp_path / "population.zarr", tmp_path / "observed.zarr", tmp_path / "demo.zarr", tmp_path / "demo.csv"
    )
    table = pd.read_csv(tmp_path / "demo.csv").set_index("quantity")
    assert table.loc["max |daily new infections difference|", "difference"] == 0
    assert table.loc["total new infections (all draws)", "plain"] > 0
    gradients = table[table.index.str.startswith("d total infections")]
    assert len(gradients) == 4 and (gradients["difference"].abs() < 1e-5).all()
    fits = table[table.index.str.startswith("fitted beta_")]
    assert len(fits) == 4 and np.allclose(fits["plain"], fits["private"], rtol=1e-5, atol=1e-6)
    png = plot_private_demo(store, tmp_path / "demo.png")
    assert png.stat().st_size > 0 and png.with_suffix(".pdf").exists()
