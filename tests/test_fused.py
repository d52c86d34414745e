"""The counter-based noise (diffabm.philox) and the fused forward kernels (diffabm.models.epidemic.fused): the
published Philox4x32-10 answers, and the same simulation as the tensor path wherever the kernels are used."""

from __future__ import annotations

import os
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from conftest import make_model
from scipy import stats
from test_vaccination import vaccinated_population, vaccine_model, write_doses

from diffabm import philox
from diffabm.models.epidemic import fused
from diffabm.models.epidemic.contacts import ContactLayers
from diffabm.population.toy import toy_population

# Random123's kat_vectors (Salmon et al. 2011): counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_gives_the_published_answers(counter, key, expected):
    assert philox.philox4x32_words(counter, key) == expected


def test_uniforms_are_the_blocks_words_and_uniform():
    """Agent i of row r is word i mod 4 of block (i div 4, r); 10^6 values are uniform (chi-square over 1,000 bins,
    fails at p < 1e-6: a lost top bit or a skewed word map gives p ≈ 0; the known answers pin the rest), inside (0, 1),
    and two rows and two keys are uncorrelated (|r| < 5 / √n)."""
    key = 0x0123456789ABCDEF
    u = philox.uniform(key, 2, 1_000_000)
    block = philox.philox4x32_words((5, 0, 1, 0), (key & 0xFFFFFFFF, key >> 32))
    assert u[1, 20:24].tolist() == [((w >> 9) * 2 + 1) * 2.0**-24 for w in block]
    assert u.min() > 0 and u.max() < 1 and u.dtype == np.float32
    _, p_value = stats.chisquare(np.bincount((u[0] * 1000).astype(int), minlength=1000))
    assert p_value > 1e-6
    bound = 5 / np.sqrt(u.shape[1])
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < bound
    assert abs(np.corrcoef(u[0], philox.uniform(key + 1, 1, 1_000_000)[0])[0, 1]) < bound


@pytest.mark.parametrize(
    ("key", "rows", "n"),
    [(0, 1, 1), (2**63 - 25, 3, 1001), (0x0123456789ABCDEF, 2, 4096), (5, 2, 8 * philox.FILL_BLOCKS + 3)],
)
def test_tensor_philox_gives_the_same_bits(key, rows, n):
    """The tensor operations that draw the noise on accelerators give the Numba loop's bits (run here on the CPU;
    the last case spans several of the loop's tasks and ends in a partial block)."""
    assert torch.equal(philox.uniform_on(key, rows, n, "cpu"), torch.from_numpy(philox.uniform(key, rows, n)))


@pytest.mark.parametrize(
    ("rows", "first", "n"), [(1, 4, 1), (3, 4096, 1001), (2, 8 * philox.FILL_BLOCKS - 8, 4 * 16387 + 2)]
)
def test_any_agents_can_be_drawn_alone(rows, first, n):
    """Agents `first`.. are the same bits drawn alone as among all from 0 (the chunks of the stage durations), by the
    Numba loop (several rows of several tasks, a partial last block) and by the tensor operations; a first agent
    inside a block is refused."""
    whole = philox.uniform(11, rows, first + n)[:, first:]
    assert np.array_equal(philox.uniform(11, rows, n, first), whole)
    assert torch.equal(philox.uniform_on(11, rows, n, "cpu", first), torch.from_numpy(whole))
    with pytest.raises(ValueError, match="multiple of 4"):
        philox.uniform(11, rows, n, first + 2)


def test_any_row_can_be_drawn_alone():
    """A row's noise does not depend on the others drawn with it (what common random numbers and the kernels use)."""
    assert np.array_equal(philox.uniform(7, 1, 1001)[0], philox.uniform(7, 4, 1001)[0])


@pytest.fixture(scope="module")
def population():
    return toy_population(20_003, seed=3)  # five chunks of the kernel, the last block partial


@pytest.fixture
def kernel_calls(monkeypatch) -> list[int]:
    """Counts the simulations that ran the fused kernels."""
    calls = []
    kernel = fused.transmission_days
    monkeypatch.setattr(fused, "transmission_days", lambda *args: calls.append(1) or kernel(*args))
    return calls


def both_paths(model, calls: list[int], seed: int = 4, parameters: dict | None = None, **kwargs) -> tuple[dict, dict]:
    """The simulation without gradients by the fused kernels and by the tensor path (`calls`: `kernel_calls`), at
    `parameters` (the model's defaults if None)."""
    outputs = []
    for use_kernels in (True, False):
        model.fused_forward = use_kernels
        with torch.no_grad():
            outputs.append(model.simulate(parameters or model.natural_parameters(), seed=seed, **kwargs))
    assert len(calls) == 1, "the kernels did not run"
    return outputs[0], outputs[1]


def assert_same_simulation(by_kernels: dict, by_tensors: dict) -> None:
    """Every series equal; the split of infections by setting to float32 rounding (summed in another order)."""
    assert by_kernels.keys() == by_tensors.keys()
    for name, series in by_tensors.items():
        if name == "infections_by_setting":
            torch.testing.assert_close(by_kernels[name], series, rtol=1e-5, atol=1e-3)
        else:
            assert torch.equal(by_kernels[name], series), name
    assert by_tensors["new_infections"].sum() > 100, "too small an epidemic to compare"


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.draws=1"],  # the one-draw kernel
        [],  # three draws: the tensor path's per-slot index_add_
        ["model.draws=5"],  # its sparse products
        ["model.draws=10"],  # the kernels' lanes: one whole block of eight draws and one padded
        ["model.common_random_numbers=true"],
        ["model.seeding=systematic"],
        ["+interventions=[{kind: isolation, compliance: 0.7, delay_days: 0}]"],
        ["interventions=[]"],
    ],
    ids=["1-draw", "3-draws", "5-draws", "10-draws", "common-noise", "systematic", "isolation", "no-interventions"],
)
def test_kernels_simulate_as_the_tensor_path(population, overrides, kernel_calls):
    assert_same_simulation(*both_paths(make_model(population, "model.days=40", *overrides), kernel_calls))


@pytest.mark.parametrize(
    ("overrides", "by_district", "waning"),
    [
        (["model.draws=1"], False, None),  # the one-draw kernel computes the vaccine's factor itself
        ([], False, None),  # and the kernel for several draws
        (["model.common_random_numbers=true"], False, None),
        ([], True, None),  # with transmission by district: the day's factor from the tensors
        ([], False, 60.0),  # waning: the factor from the tensors
    ],
    ids=["1-draw", "3-draws", "3-draws-common-noise", "3-draws-by-district", "3-draws-waning"],
)
def test_kernels_simulate_as_the_tensor_path_with_vaccination_and_controls(
    tmp_path, kernel_calls, overrides, by_district, waning
):
    """A day's susceptibility factor (vaccine efficacy, each draw its own, transmission by district) and
    time-varying β."""
    doses = write_doses(tmp_path / "doses.csv", {"2021-06-17": 500, "2021-08-27": 500})  # before day 0 and on day 10
    model = vaccine_model(vaccinated_population(0.8, 0.6, n=20_000), doses, *overrides, waning=waning)
    days, draws = model.days, model.draws
    parameters = model.natural_parameters()
    for dose, top in ((1, 0.6), (2, 1.0)):  # e from 0 to `top` over the draws (one draw: `top`)
        parameters[f"efficacy_infection_dose{dose}"] = torch.linspace(top if draws == 1 else 0.0, top, draws)
    controls = {"transmission_multiplier": torch.linspace(1.5, 0.5, days).repeat(draws, 1)}
    if by_district:
        controls["transmission_by_district"] = (
            torch.rand(draws, days, 3, generator=torch.Generator().manual_seed(0)) + 0.5
        )
    assert_same_simulation(*both_paths(model, kernel_calls, parameters=parameters, controls=controls))


def layers_with_two_workplaces(n: int, seed: int = 0) -> ContactLayers:
    """The toy study's four layers, with two workplaces per agent (two slots of one layer, which may add to one
    group) and agents without a school or a workplace (the sinks)."""
    rng = np.random.default_rng(seed)
    return ContactLayers(
        {
            "household": np.sort(rng.integers(0, n // 3, size=n)),
            "school": rng.integers(-1, n // 200, size=n),
            "workplace": rng.integers(-1, n // 100, size=(n, 2)),
            "community": rng.integers(0, 5, size=n),
        },
        n,
    )


def test_layers_split_into_parts_that_own_their_groups():
    """With fewer draws than threads the group totals split the layers into parts that add in parallel: every slot
    in one part, a layer's slots together, every group (each slot's own sink too) zeroed by exactly one part and
    added to only by the part that owns it; as many parts as threads ÷ draws allow, at most one per layer."""
    contacts = layers_with_two_workplaces(1_000)
    layers = fused.FusedLayers.of(contacts)
    assert np.array_equal(layers.memberships, layers.slot_groups.T)
    assert np.array_equal(layers.slot_groups[0], contacts.slot_group[0].numpy())  # households: no sink
    sinks = layers.slot_groups >= contacts.n_groups - 1
    assert np.array_equal(sinks, (contacts.slot_group == contacts.n_groups - 1).numpy())
    own_sinks = contacts.n_groups - 1 + np.arange(1, 4)  # the school's and the two workplace slots'
    assert np.array_equal(np.unique(layers.slot_groups[sinks]), own_sinks)
    assert (layers.inverse_size[contacts.n_groups - 1 :] == 0).all()
    groups = len(layers.inverse_size)
    for draws, threads, expected in ((1, 2, 2), (1, 3, 3), (1, 8, 4), (2, 4, 2), (1, 1, 0), (2, 2, 0), (16, 2, 0)):
        parts, part_groups = layers.parts(draws, threads)
        assert parts.shape[0] == expected == part_groups.shape[0]
        if not expected:
            continue
        assert sorted(parts[parts >= 0].tolist()) == list(range(5))
        owner = np.full(groups, -1)
        for part, ranges in enumerate(part_groups):
            for first, stop in ranges:
                assert (owner[first:stop] == -1).all(), "a group zeroed by two parts"
                owner[first:stop] = part
        assert (owner >= 0).all(), "a group zeroed by no part"
        for part, slots in enumerate(parts):
            slots = slots[slots >= 0]
            assert (owner[layers.slot_groups[slots]] == part).all()
        part_of = {slot: part for part, slots in enumerate(parts) for slot in slots.tolist()}
        assert part_of[2] == part_of[3], "the two workplace slots apart"


@pytest.mark.parametrize(
    "overrides", [[], ["+interventions=[{kind: isolation, compliance: 0.7, delay_days: 0}]"]], ids=["", "isolation"]
)
def test_one_draw_in_parts_simulates_as_the_tensor_path_and_on_one_thread(population, overrides, kernel_calls):
    """One draw on two threads: the layers' parts add in parallel (two slots of one layer, sinks, isolation), with
    the tensor path's infections and the same floats as on one thread (no parts)."""
    model = make_model(population, "model.days=40", "model.draws=1", *overrides)
    model.contacts = layers_with_two_workplaces(model.n_agents, seed=1)
    model._fused_layers = fused.FusedLayers.of(model.contacts)
    assert model._fused_layers.parts(1, torch.get_num_threads())[0].shape[0] == 2
    by_kernels, by_tensors = both_paths(model, kernel_calls)
    assert_same_simulation(by_kernels, by_tensors)
    model.fused_forward = True
    torch.set_num_threads(1)
    with torch.no_grad():
        one_thread = model(seed=4)
    for name, series in by_kernels.items():
        assert torch.equal(series, one_thread[name]), name


@pytest.mark.parametrize("draws", [1, 3])
def test_kernels_do_not_depend_on_the_threads(population, draws):
    model = make_model(population, "model.days=40", f"model.draws={draws}")
    with torch.no_grad():
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(model(seed=5))
    for name, series in results[0].items():
        assert torch.equal(series, results[1][name]), name
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)  # the kernels follow torch's threads
    # the slot-major group ids are built for the group totals' parts only (one draw on two threads), the offsets for
    # the one-draw infection pass only
    assert ("slot_groups" in vars(model._fused_layers)) == (draws == 1)
    assert ("chunk_offsets" in vars(model._fused_layers)) == (draws == 1)


def test_kernels_run_only_where_nothing_needs_a_gradient(population, tmp_path, kernel_calls):
    """Without gradients the kernels run; the tensor path does with reverse mode (a parameter or a control that
    requires grad), forward mode (`torch.func.jvp`, also in a vaccine efficacy, which reaches the days only through
    the susceptibility; `torch.autograd.forward_ad`), a relaxed estimator, or float64 parameters."""
    model = make_model(population, "model.days=10")
    with torch.no_grad():
        model(seed=1)
    assert len(kernel_calls) == 1
    parameters = {k: v.requires_grad_(True) for k, v in model.natural_parameters().items()}
    model.simulate(parameters, seed=1).new_infections.sum().backward()
    multiplier = torch.ones(model.draws, model.days, requires_grad=True)
    model.simulate(model.natural_parameters(), seed=1, controls={"transmission_multiplier": multiplier})
    beta = model.natural_parameters()["beta_household"]

    def total(name, value, on=model):
        return on.simulate({**on.natural_parameters(), name: value}, seed=1).new_infections.sum()

    torch.func.jvp(lambda value: total("beta_household", value), (beta,), (torch.ones_like(beta),))
    with torch.autograd.forward_ad.dual_level():
        total("beta_household", torch.autograd.forward_ad.make_dual(beta, torch.ones_like(beta)))
    with torch.no_grad():
        model.simulate({k: v.double() for k, v in model.natural_parameters().items()}, seed=1)
    relaxed = make_model(population, "model.days=10", "model/estimator=gumbel_softmax")
    with torch.no_grad():
        relaxed(seed=1)
    doses = write_doses(tmp_path / "doses.csv", {"2021-06-17": 500, "2021-08-27": 500})
    vaccinated = vaccine_model(vaccinated_population(0.8, 0.6), doses, "model.days=15")
    efficacy = vaccinated.natural_parameters()["efficacy_infection_dose1"]
    torch.func.jvp(lambda value: total("efficacy_infection_dose1", value, vaccinated), (efficacy,), (efficacy,))
    assert len(kernel_calls) == 1


def test_group_ids_are_chunk_bases_plus_offsets_as_narrow_as_they_fit():
    rng = np.random.default_rng(0)
    agents = 3 * fused.CHUNK + 5
    near = np.sort(rng.integers(0, 10 * agents, (agents, 3)), axis=0).astype(np.int32)  # each chunk spans < 2^16
    far = near.copy()
    far[fused.CHUNK + 7, 2] = near[fused.CHUNK : 2 * fused.CHUNK, 2].min() + 2**16  # one chunk's slot spans 2^16
    for memberships, width in ((near, np.uint16), (far, np.uint32)):
        bases, offsets = fused.chunk_offsets(memberships)
        assert offsets.dtype == width and bases.dtype == np.uint64 and bases.shape == (4, 3)
        chunk_of_agent = np.arange(agents) // fused.CHUNK
        assert np.array_equal(bases[chunk_of_agent] + offsets, memberships)
        assert np.array_equal(bases, [memberships[c * fused.CHUNK : (c + 1) * fused.CHUNK].min(0) for c in range(4)])


@pytest.mark.parametrize(
    "draws, groups", [(1, 300), (1, 250_000), (3, 300), (10, 300)], ids=["1-draw", "1-draw-wide", "3", "10"]
)  # 10: two blocks of lanes; 250,000 groups: a chunk of the sorted ids spans more than 2^16
def test_infection_pass_is_the_same_with_the_slots_unrolled_or_looped(draws, groups):
    """Past `UNROLLED_SLOTS` memberships per agent (e.g. a network's edges as pairs) the passes loop over the slots
    at run time instead of being compiled for their number, and one draw's group ids are offsets 16 or 32 bits wide
    from each chunk's base: all give the infections and split by setting of the several-draw pass on the int32 ids."""
    rng = np.random.default_rng(0)
    agents, slots = 10_001, fused.UNROLLED_SLOTS + 2
    assert fused.unrolled_slots(slots) == () and len(fused.unrolled_slots(4)) == 4
    memberships = np.sort(rng.integers(0, groups, (agents, slots)), axis=0).astype(np.int32)  # chunks' bases > 0
    lanes = fused.padded_draws(draws)
    force = np.zeros((groups, lanes), np.float32)
    force[:, :draws] = rng.random((groups, draws), dtype=np.float32) * np.float32(0.02)
    infection_day = np.where(rng.random((draws, agents)) < 0.3, np.int32(0), fused._NEVER).astype(np.int32)
    slot_layer = (np.arange(slots) % 4).astype(np.int64)
    chunks = -(-agents // fused.CHUNK)
    bases, offsets = fused.chunk_offsets(memberships)
    assert offsets.dtype == (np.uint16 if groups < 2**16 else np.uint32) and bases[1:].min() > 0

    def infect(kernel, ids: tuple, columns: int, unrolled: tuple) -> list:
        state = [
            infection_day.copy(),
            np.packbits(infection_day == fused._NEVER, axis=1, bitorder="little"),
            np.zeros((chunks, draws), np.int64),
            np.zeros((chunks, draws, fused.CHUNK), np.int32),
            np.zeros((chunks, draws, 4), np.float32),
        ]
        kernel(
            5, np.uint64(11), np.arange(draws, dtype=np.int64), *state[:2], memberships, *ids, slot_layer,
            np.ascontiguousarray(force[:, :columns]), force[:, :draws].T.copy(), np.ones(groups, np.float32),
            np.ones((draws, 4), np.float32), np.full(agents, 0.8, np.float32),
            np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.int32), np.zeros((0, 2), np.float32), *state[2:],
            unrolled,
        )  # fmt: skip
        return state

    reference = infect(fused._infect, (), lanes, (0,) * slots)  # several draws' pass: int32 ids, 8 lanes a draw
    variants = [infect(fused._infect, (), lanes, ())]
    if draws == 1:
        widths = {offsets.dtype.type, np.uint32}
        variants += [infect(fused._infect_one_draw, (bases, offsets.astype(w)), 1, (0,) * slots) for w in widths]
        variants.append(infect(fused._infect_one_draw, (bases, offsets), 1, ()))
    assert reference[2].sum() > 100, "too few infections to compare"
    for variant in variants:
        for expected, got in zip(reference, variant):
            assert np.array_equal(expected, got)
    infected_days, susceptible_bits = reference[:2]
    assert np.array_equal(susceptible_bits, np.packbits(infected_days == fused._NEVER, axis=1, bitorder="little"))


def test_cached_kernels_older_than_a_module_they_inline_are_deleted(tmp_path):
    """Numba's cache checks fused.py alone: its cached kernels go when philox, simd or transmission is newer than
    their index, and stay otherwise (other modules' caches are never touched)."""
    dependency = tmp_path / "philox.py"
    dependency.write_text("")
    cached = [tmp_path / "fused._infect-1.py311.nbi", tmp_path / "fused._infect-1.py311.1.nbc"]
    other = tmp_path / "philox._fill-1.py311.nbi"
    for path in (*cached, other):
        path.write_bytes(b"")
    os.utime(dependency, (1_000, 1_000))
    for path in (*cached, other):
        os.utime(path, (2_000, 2_000))
    fused.drop_stale_kernels(tmp_path, [dependency])
    assert all(path.exists() for path in (*cached, other)), "a cache newer than its modules is kept"
    os.utime(dependency, (3_000, 3_000))
    fused.drop_stale_kernels(tmp_path, [dependency])
    assert not any(path.exists() for path in cached) and other.exists()


def test_the_stale_kernel_check_looks_where_numba_caches(tmp_path):
    """With NUMBA_CACHE_DIR set, Numba caches elsewhere than the package's `__pycache__`: stale kernels planted
    there are deleted on import, as in `__pycache__`."""
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    script = "from diffabm.models.epidemic import fused; print(fused.kernel_cache())"
    cache = Path(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())  # fmt: skip
    assert cache.is_relative_to(tmp_path)
    cache.mkdir(parents=True, exist_ok=True)
    stale = [cache / "fused._infect-1.py311.nbi", cache / "fused._infect-1.py311.1.nbc"]
    for path in stale:
        path.write_bytes(b"")
        os.utime(path, (1_000, 1_000))  # older than philox.py
    subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True)
    assert not any(path.exists() for path in stale)
