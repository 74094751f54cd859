import math

import pytest
import torch
from pyro.ops.dual_averaging import DualAveraging

from pyro_aevb.infer.hmc import StepSizeAdapter, find_reasonable_step_size, hmc_step, sample


def gaussian_targets(scales, locs, chains_per_target):
    """
    Independent diagonal Gaussian targets, ``chains_per_target`` chains each: returns the per-chain
    ``loc``, ``scale`` ``[B, 2]`` and the potential energy ``[B, 2] -> [B]``.
    """
    loc = torch.tensor(locs).repeat_interleave(chains_per_target, 0)
    scale = torch.tensor(scales).repeat_interleave(chains_per_target, 0)
    return loc, scale, lambda z: 0.5 * ((z - loc) / scale).pow(2).sum(-1)


# Three targets with different locations and per-dimension scales (spanning 100x), so that a step
# size or an accept/reject applied to the wrong chain shows up as a wrong moment.
SCALES = [[0.1, 0.3], [1.0, 2.0], [10.0, 5.0]]
LOCS = [[1.0, -1.0], [0.0, 3.0], [-20.0, 10.0]]


def test_hmc_step_leaves_gaussians_invariant():
    num_chains = 4000
    loc, scale, potential_fn = gaussian_targets(SCALES, LOCS, num_chains)
    z = loc + scale * torch.randn_like(loc)  # exact draws: they stay exact if HMC is correct
    # Step size 1.6 x the smallest scale, near the leapfrog's stability limit (2x): without a correct
    # Metropolis correction the variance drifts by far more than the tolerance below in 10 transitions.
    step_size = 1.6 * scale.amin(-1)
    accept = 0.0
    for _ in range(10):
        z, accept_prob, _, _ = hmc_step(potential_fn, z, step_size, num_steps=3)
        accept += accept_prob.mean() / 10
    assert accept < 0.9, "the test must exercise rejections"
    # The chains are independent, so with n = 4000 draws per target the standardized mean has
    # standard error 1/sqrt(n) = 0.016 and the variance ratio sqrt(2/n) = 0.022; tolerances are 4 SE.
    z = ((z - loc) / scale).reshape(len(SCALES), num_chains, 2)
    assert z.mean(1).abs().max() < 4 / math.sqrt(num_chains), "means moved"
    assert (z.var(1) - 1).abs().max() < 4 * math.sqrt(2 / num_chains), "variances moved"


def test_hmc_step_rejects_nan_potentials():
    def potential_fn(z):
        # a standard normal truncated to z < 1 through a NaN (as from a log of a negative number)
        energy = 0.5 * z.pow(2).sum(-1)
        return torch.where(z[:, 0] < 1, energy, torch.full_like(energy, math.nan))

    z = torch.zeros(500, 1)
    for _ in range(20):
        z, *_ = hmc_step(potential_fn, z, 1.0, num_steps=2)
    assert (z < 1).all(), "a proposal with a NaN potential was accepted"


def test_hmc_step_uses_cached_energy():
    loc, scale, potential_fn = gaussian_targets(SCALES, LOCS, 3)
    z = loc.clone()
    torch.manual_seed(1)
    fresh = hmc_step(potential_fn, z, 0.05, 2)
    energy = potential_fn(z)
    torch.manual_seed(1)
    cached = hmc_step(potential_fn, z, 0.05, 2, energy, (z - loc) / scale**2)
    assert torch.allclose(fresh.z, cached.z), "passing U(z) and its gradient changed the transition"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_steps=0), r"^num_steps must be a positive integer, got 0$"),
        (dict(step_size=torch.ones(2)), r"^step_size must be a float or of shape \[3\], got \(2,\)$"),
        (dict(num_steps=1.5), r"^num_steps must be a positive integer, got 1.5$"),
    ],
    ids=["zero-steps", "step-size-shape", "fractional-steps"],
)
def test_hmc_step_validates_arguments(kwargs, message):
    args = dict(potential_fn=lambda z: z.pow(2).sum(-1), z=torch.zeros(3, 2), step_size=0.1, num_steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        hmc_step(**args)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_hmc_step_evaluates_the_potential_once_per_leapfrog_step_with_a_cache(num_steps):
    """One leapfrog step is a transition; U(z) and its gradient passed in are not evaluated again."""
    calls = []

    def potential_fn(z):
        calls.append(z.shape)
        return 0.5 * z.pow(2).sum(-1)

    z = torch.randn(5, 2)
    energy, grad = potential_fn(z), z.clone()
    calls.clear()
    result = hmc_step(potential_fn, z, 0.1, num_steps)
    assert len(calls) == num_steps + 1 and result.z.shape == z.shape
    calls.clear()
    hmc_step(potential_fn, z, 0.1, num_steps, energy, grad)
    assert len(calls) == num_steps, "a cached U(z) and gradient were computed again"


def test_adapter_matches_pyro_dual_averaging():
    init = torch.tensor([0.01, 1.0, 50.0])
    adapter = StepSizeAdapter(init, target_accept_prob=0.7)
    schemes = [DualAveraging(prox_center=math.log(10 * s)) for s in init.tolist()]
    for accept_prob in torch.rand(30, 3):
        adapter.update(accept_prob)
        for scheme, a in zip(schemes, accept_prob.tolist()):
            scheme.step(0.7 - a)
    x_t, x_avg = zip(*(scheme.get_state() for scheme in schemes))
    assert torch.allclose(adapter.step_size, torch.tensor(x_t).exp(), rtol=1e-5), "step_size"
    assert torch.allclose(adapter.final_step_size, torch.tensor(x_avg).exp(), rtol=1e-5), "final_step_size"


def test_adapter_updates_indexed_chains_and_round_trips():
    adapter = StepSizeAdapter(1.0, num_chains=4)
    reference = StepSizeAdapter(1.0, num_chains=2)
    for accept_prob in torch.rand(5, 2):
        adapter.update(accept_prob, index=torch.tensor([1, 3]))
        reference.update(accept_prob)
    restored = StepSizeAdapter(1.0, num_chains=4)
    restored.load_state_dict(adapter.state_dict())
    restored.update(torch.tensor([0.5]), index=torch.tensor([True, False, False, False]))
    adapter.update(torch.tensor([0.5]), index=torch.tensor([0]))
    assert torch.equal(adapter.step_size[[1, 3]], reference.step_size), "indexed chains follow their own updates"
    assert torch.equal(adapter.step_size[2], torch.tensor(1.0)), "a chain never updated keeps its step size"
    assert torch.equal(restored.state_dict()["t"], adapter.state_dict()["t"]), "state_dict round trip"
    assert torch.equal(restored.step_size, adapter.step_size), "state_dict round trip"


@pytest.mark.parametrize("target_accept_prob", [0.6, 0.9])
def test_adaptation_reaches_target_acceptance(target_accept_prob):
    loc, scale, potential_fn = gaussian_targets(SCALES, LOCS, 20)
    z = loc + scale * torch.randn_like(loc)
    adapter = StepSizeAdapter(find_reasonable_step_size(potential_fn, z), target_accept_prob)
    accept = []
    for _ in range(400):
        z, accept_prob, _, _ = hmc_step(potential_fn, z, adapter.step_size, 4)
        adapter.update(accept_prob)
        accept.append(accept_prob)
    # Dual averaging drives the running mean of the acceptance probability to the target; over the
    # last 200 transitions of 20 chains per target (4,000 correlated values with sd < 0.3) the mean
    # of each target is within 0.05.
    mean = torch.stack(accept[200:]).reshape(200, len(SCALES), 20).mean((0, 2))
    assert (mean - target_accept_prob).abs().max() < 0.05, f"acceptance {mean.tolist()}"


def test_sample_recovers_gaussians_with_per_chain_step_sizes():
    num_chains = 1000
    loc, scale, potential_fn = gaussian_targets(SCALES, LOCS, num_chains)
    result = sample(potential_fn, torch.zeros_like(loc), 20, warmup_steps=100, step_size_jitter=0.5)
    # The last draws of independent chains are independent: 4 SE with n = 1000 chains per target.
    z = ((result.samples[-1] - loc) / scale).reshape(len(SCALES), num_chains, 2)
    assert z.mean(1).abs().max() < 4 / math.sqrt(num_chains), "means after warmup from a far start"
    assert (z.var(1) - 1).abs().max() < 4 * math.sqrt(2 / num_chains), "variances after warmup"
    # Each chain adapts to its own target: step sizes scale with the smallest standard deviation.
    ratio = (result.step_size / scale.amin(-1)).reshape(len(SCALES), num_chains).median(1).values
    assert ratio.max() / ratio.min() < 1.2, f"step size / scale differs between targets: {ratio.tolist()}"
    assert torch.allclose(result.potential_energy[-1], potential_fn(result.samples[-1])), "potential energies"


def test_sample_validates_arguments():
    with pytest.raises(ValueError):
        sample(lambda z: z.pow(2).sum(-1), torch.zeros(3, 2), 10, adapt_step_size=False)
