"""
Annealed importance sampling and BDMC against exact answers: hand-written Gaussian paths (the
weights' unbiasedness itself, both directions), linear-Gaussian models in closed form, a nonlinear
2-D decoder against quadrature, the T = 1 case against importance sampling on the same draws, and
BDMC's bracket on exact joint draws.

Tolerances are stated next to the sample sizes they follow from. For K chains whose weights have
relative variance v = Var(w) / E(w)^2, log((1/K) sum w) has standard error sqrt(v / K) and a bias of
about -v / (2K); the diagnostics' "stderr" is sqrt(1/ESS - 1/K), the same quantity estimated from
the K weights.
"""

import contextlib
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_aevb import VAE, bdmc, log_marginal_likelihood
from pyro_aevb.infer import ais
from pyro_aevb.infer.bdmc import simulate
from pyro_aevb.infer.sites import check_model

from tests.helpers.linear_gaussian import linear_gaussian


# The tensors here are tiny (tens of rows): one thread (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_log_prob(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


class GaussianPath:
    r"""
    :math:`p_0 = \mathcal{N}(0, I)` and :math:`p(x, z) = Z\,\mathcal{N}(z; m_b, s^2 I)` for ``B``
    "datapoints" ``b``: the target's normaliser :math:`Z_b` is known exactly.
    """

    def __init__(self, batch_size, dim=2, scale=0.3, spread=1.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.loc = spread * torch.randn(batch_size, dim, generator=g)
        self.log_z = torch.randn(batch_size, generator=g)
        self.scale, self.dim, self.batch_size = scale, dim, batch_size

    def densities(self, z):
        return gaussian_log_prob(z, 0.0, 1.0), self.log_z + gaussian_log_prob(z, self.loc, self.scale)

    def prior(self, num_chains):
        return torch.randn(num_chains, self.batch_size, self.dim)

    def posterior(self, num_chains):
        return self.loc + self.scale * torch.randn(num_chains, self.batch_size, self.dim)


def test_schedules():
    for name in ("sigmoid", "linear"):
        betas = ais.schedule(name, 50)
        assert betas.shape == (51,) and betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    sigmoid = ais.sigmoid_schedule(100)
    # The sigmoid crowds the temperatures at both ends: its first step is smaller than the linear one.
    assert sigmoid[1] < 0.2 * ais.linear_schedule(100)[1]
    assert torch.equal(ais.sigmoid_schedule(1), torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="schedule"):
        ais.schedule("cosine", 10)


def test_weights_are_unbiased_in_both_directions():
    # Exactness itself: E[w] = Z forwards and E[w'] = 1/Z in reverse, for any schedule and any fixed
    # kernels. A short path (T = 10) keeps the weights far from 1, so that kernels not fixed in
    # advance would show: 20,000 single-chain runs of one target, replicated as 20,000 "datapoints"
    # (each with its own pilot-made step sizes). The target N(m, 0.8^2) is narrower than p0 = N(0, 1)
    # but not by so much that the reverse weights p0/p lose their variance. Tolerance: 4 standard
    # errors of the log of the mean weight, sd(w) / (mean(w) sqrt(N)), from the sample itself (0.006
    # forwards, 0.012 in reverse; the reverse weights are skewed, their log-mean sits ~0.5 SE low).
    torch.manual_seed(0)
    num_runs, num_temps = 20000, 10
    path = GaussianPath(1, scale=0.8, spread=1.0)
    path.loc, path.log_z = path.loc.expand(num_runs, -1), path.log_z.expand(num_runs)
    path.batch_size = num_runs
    betas = ais.sigmoid_schedule(num_temps)
    steps = ais.pilot_step_sizes(path.densities, path.prior(2), betas)
    assert steps.shape == (num_temps + 1, num_runs) and (steps > 0).all()
    for reverse in (False, True):
        start = path.posterior(1) if reverse else path.prior(1)
        result = ais.run(path.densities, start, betas, steps, num_steps=5, reverse=reverse)
        log_w = result.log_weights.reshape(-1)
        w = (log_w - log_w.max()).exp()
        log_mean = (w.mean().log() + log_w.max()).item()
        stderr = (w.std() / w.mean() / math.sqrt(num_runs)).item()
        exact = -path.log_z[0].item() if reverse else path.log_z[0].item()
        assert 0.003 < stderr < 0.05, f"the weights should vary (SE {stderr:.3f})"
        assert abs(log_mean - exact) < 4 * stderr, f"reverse={reverse}: {log_mean:.4f} vs {exact:.4f} (SE {stderr:.4f})"
        # Jensen: the mean log-weight lies below log E[w] in both directions.
        assert log_w.mean() < exact
        assert 0.3 < result.accept_prob.mean() < 0.95


def test_kernels_leave_each_temperature_invariant():
    # f_beta of the Gaussian path is Gaussian: precision 1 + beta (1/s^2 - 1), mean beta m / s^2 / precision.
    # 20,000 exact draws of f_beta, 30 transitions: mean and variance within 5 standard errors.
    torch.manual_seed(1)
    path = GaussianPath(1, dim=1)
    beta, rows = 0.3, 20000
    precision = 1 + beta * (1 / path.scale**2 - 1)
    mean = (beta * path.loc / path.scale**2 / precision).item()
    potential = ais._Annealed(path.densities, (rows, 1, 1))
    potential.beta = beta
    z = mean + torch.randn(rows, 1) / math.sqrt(precision)
    parts = potential.evaluate(z)
    step = torch.full((rows,), 0.9 / math.sqrt(precision))
    for _ in range(30):
        z, parts, accept = ais._transition(potential, z, parts, step, 3)
    sd = 1 / math.sqrt(precision)
    assert abs(z.mean().item() - mean) < 5 * sd / math.sqrt(rows)
    assert abs(z.var().item() / sd**2 - 1) < 5 * math.sqrt(2 / rows)
    assert 0.5 < accept.mean() < 1.0


def perturbed_posterior_guide(vae, shift=0.5, scale=1.5):
    """The exact posterior with its mean shifted by ``shift`` and its sd scaled by ``scale`` (posterior sds)."""

    def guide(x, num_data=None):
        loc, cov = vae.posterior(x)
        sd = cov.diagonal().sqrt()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + shift * sd, scale * sd).to_event(1))

    return guide


def check_against_exact(log_px, info, exact, num_chains):
    # Per datapoint: 5 standard errors of the K-chain estimate (from its weights), plus its bias
    # v / (2K) <= 5 SE^2 / 2; over the B datapoints, the mean error within 4 SE of the mean.
    stderr = info["stderr"]
    error = log_px - exact
    assert (error.abs() < 5 * stderr + 2.5 * stderr**2 + 0.02).all(), f"errors {error} vs SE {stderr}"
    mean_se = stderr.pow(2).sum().sqrt() / len(error)
    assert error.mean().abs() < 4 * mean_se + 0.01, f"mean error {error.mean():.4f} (SE {mean_se:.4f})"
    assert info["ess"].shape == (len(error),) and (info["ess"] <= num_chains + 1e-3).all()


@pytest.mark.parametrize("start", ["prior", "guide"])
def test_linear_gaussian_nz2_defaults(start):
    # Defaults: K = 16 chains, T = 1000 sigmoid temperatures, 10 leapfrog steps. 8 datapoints; the
    # estimated SEs come out at 0.01-0.05 nats per datapoint.
    torch.manual_seed(2)
    vae, marginal = linear_gaussian(2, 12)
    x = marginal.sample((8,))
    guide = perturbed_posterior_guide(vae) if start == "guide" else None
    log_px, info = log_marginal_likelihood(vae.model, x, "ais", guide, return_diagnostics=True)
    check_against_exact(log_px, info, marginal.log_prob(x), 16)
    assert info["accept_prob"].shape == (16, 8) and 0.4 < info["accept_prob"].mean() < 0.9
    assert info["step_size"].shape == (8,)


def test_linear_gaussian_nz10():
    # Nz = 10 from the prior: the prior-to-posterior path is longer (log-weights vary more); T = 1000
    # gives SEs around 0.1-0.3; 8 datapoints.
    torch.manual_seed(3)
    vae, marginal = linear_gaussian(10, 30)
    x = marginal.sample((8,))
    log_px, info = log_marginal_likelihood(vae.model, x, "ais", return_diagnostics=True)
    check_against_exact(log_px, info, marginal.log_prob(x), 16)


class TanhVAE(VAE):
    """
    The paper's VAE class with a 2-D latent and a ``2 -> 8 (tanh) -> 12`` Bernoulli decoder of N(0, 1)
    weights, or other hidden layers and activations.
    """

    def __init__(self, hidden=8, activation="tanh"):
        super().__init__(12, 2, hidden, "bernoulli", activation=activation)
        for p in self.decoder.parameters():
            nn.init.normal_(p)

    def quadrature(self, x, limit=7.0, num_points=401):
        """:math:`\\log p(x)` on a 401^2 grid over [-7, 7]^2 (spacing 0.035; prior mass outside 1e-11)."""
        axis = torch.linspace(-limit, limit, num_points)
        grid = torch.cartesian_prod(axis, axis)
        with torch.no_grad():
            log_lik = dist.Bernoulli(logits=self.decoder(grid)).log_prob(x[:, None, :]).sum(-1)
        log_joint = dist.Normal(0.0, 1.0).log_prob(grid).sum(-1) + log_lik
        return log_joint.logsumexp(-1) + 2 * math.log(axis[1] - axis[0])


#: Decoders of the paper's VAE class: its one tanh layer, two and three tanh layers (the gradients
#: written out through each), and a ReLU layer (autograd).
DECODERS = {"tanh": (8, "tanh"), "tanh-tanh": ([8, 6], "tanh"), "tanh x3": ([8, 6, 5], "tanh"), "relu": (8, "relu")}


@pytest.mark.parametrize("decoder", ["tanh", "tanh-tanh", "relu"])
def test_nonlinear_decoder_against_quadrature(decoder):
    # A non-Gaussian posterior, defaults (K = 16, T = 1000), 8 datapoints drawn from the model.
    torch.manual_seed(4)
    vae = TanhVAE(*DECODERS[decoder])
    x, _ = simulate(vae.model, 8, torch.zeros(1, 12))
    log_px, info = log_marginal_likelihood(vae.model, x, "ais", return_diagnostics=True)
    check_against_exact(log_px, info, vae.quadrature(x), 16)


@pytest.mark.parametrize("decoder", ["tanh", "tanh-tanh", "tanh x3", "relu"])
@pytest.mark.parametrize("start", ["prior", "guide"])
def test_written_out_gradients_equal_autograd(start, decoder):
    # The paper's VAE with its Bernoulli decoder of tanh layers: gradients written out (one sigmoid per
    # pixel, then down through each layer) against autograd through the model's own trace, at random
    # states; float32 rounding of sums of ~10 terms. Other activations take autograd.
    torch.manual_seed(3)
    vae = TanhVAE(*DECODERS[decoder])
    for p in vae.encoder.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.bernoulli(torch.full((3, 12), 0.4))
    guide = vae.guide if start == "guide" else None
    space = check_model(vae.model, x, guide)
    path = ais._ModelPath(space, vae.model, x, guide)
    if decoder == "relu":
        assert path.gradients is None, "the written-out gradients are tanh's; a ReLU decoder takes autograd"
        return
    assert path.gradients is not None, "the paper's VAE with tanh layers should take the written-out gradients"
    u = 2 * torch.randn(5, 3, 2)
    written = ais._Annealed(path.densities, u.shape, path.gradients).evaluate(u.reshape(-1, 2))

    def model(x):  # the same model, as a function: traced, its gradients by autograd
        return vae.model(x)

    traced = ais._ModelPath(check_model(model, x, guide), model, x, guide)
    assert traced.gradients is None
    autograd = ais._Annealed(traced.densities, u.shape).evaluate(u.reshape(-1, 2))
    for name, a, b in zip(("log_p0", "log_joint", "grad_log_p0", "grad_log_joint"), written, autograd):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), name
    inner = path.gradients(u, values=False)
    assert inner[0] is None and inner[1] is None, "the inner leapfrog steps compute no values"
    assert torch.allclose(inner[3].reshape(-1, 2), written[3]), "the gradients without the values"


@pytest.mark.skipif(not ais.bf16_supported(), reason="bfloat16 products need AMX or AVX512-BF16")
@pytest.mark.parametrize("decoder", ["tanh", "tanh-tanh"])
def test_bf16_gradients_keep_the_estimate_exact(decoder):
    # bfloat16 forces at the inner leapfrog steps, float32 energies: the same check against quadrature
    # as in float32 (defaults, K = 16, T = 1000, the same 8 datapoints and tolerance).
    torch.manual_seed(4)
    vae = TanhVAE(*DECODERS[decoder])
    x, _ = simulate(vae.model, 8, torch.zeros(1, 12))
    log_px, info = log_marginal_likelihood(vae.model, x, "ais", precision="bf16", return_diagnostics=True)
    check_against_exact(log_px, info, vae.quadrature(x), 16)
    assert info["accept_prob"].mean() > 0.5, "bfloat16 forces should leave the trajectories accurate"


def _linear_gaussian_data():
    vae, marginal = linear_gaussian(2, 6)
    return vae, marginal.sample((3,))


def _tanh_vae_data():
    vae = TanhVAE()
    return vae, torch.bernoulli(torch.full((2, 12), 0.5))


@pytest.mark.parametrize("make, amx, message", [
    (_linear_gaussian_data, True, "applies to the paper's VAE with its Bernoulli decoder"),
    (_tanh_vae_data, False, "neither AMX nor AVX512-BF16"),
], ids=["another model", "a CPU without AMX"])
def test_bf16_where_it_does_not_apply_warns_and_runs_fp32(make, amx, message, monkeypatch):
    monkeypatch.setattr(ais, "bf16_supported", lambda: amx)
    torch.manual_seed(4)
    vae, x = make()
    results = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(7)
        with pytest.warns(UserWarning, match=message) if precision == "bf16" else contextlib.nullcontext():
            results.append(log_marginal_likelihood(vae.model, x, "ais", num_chains=2, num_temps=5, precision=precision))
    assert torch.equal(*results), "the float32 run and the bf16 request that fell back to it differ"
    with pytest.raises(ValueError, match="precision"):
        log_marginal_likelihood(vae.model, x, "ais", precision="fp16")


def test_the_vaes_own_guide_in_closed_form_for_another_model():
    # A model outside the paper's class (the mixture prior, traced) with the VAE's own guide: log q in
    # closed form once per chunk equals the trace of the guide, to float32 rounding.
    from pyro_aevb.models.variants import LaplacePriorVAE, MixturePriorVAE

    torch.manual_seed(2)
    x = torch.bernoulli(torch.full((3, 12), 0.4))
    for vae in (MixturePriorVAE(12, 2, 8, num_components=3), LaplacePriorVAE(12, 2, 8)):
        for p in vae.encoder.parameters():
            nn.init.normal_(p, std=0.3)
        path = ais._ModelPath(check_model(vae.model, x, vae.guide), vae.model, x, vae.guide)
        assert path.direct_guide is not None, f"{type(vae).__name__}: its guide should be scored in closed form"
        u = 2 * torch.randn(4, 3, 2)
        closed_form = path.densities(u)[0]
        traced = path.space.log_guide(vae.guide, path.rows(4), u.reshape(-1, 2)).reshape(4, 3)
        assert torch.allclose(closed_form, traced, atol=1e-5), type(vae).__name__
        pyro.clear_param_store()


def test_one_temperature_from_the_guide_is_importance_sampling():
    # T = 1: no transition; the weight is p(x, z) / q(z) at the guide's draw, the draws "is" makes
    # for the same seed.
    vae, marginal = linear_gaussian(2, 12)
    x = marginal.sample((5,))
    guide = perturbed_posterior_guide(vae)
    torch.manual_seed(5)
    log_ais = log_marginal_likelihood(vae.model, x, "ais", guide, num_chains=32, num_temps=1)
    torch.manual_seed(5)
    log_is = log_marginal_likelihood(vae.model, x, "is", guide, num_samples=32)
    assert torch.allclose(log_ais, log_is, atol=1e-4), (log_ais, log_is)


def test_traced_model_matches_the_direct_path():
    # A model function (traced at every leapfrog step) and the same model as the paper's VAE class
    # (log p(x, z) from the nets): the same numbers for the same seed. Small T: only agreement is tested.
    vae, marginal = linear_gaussian(2, 6)
    x = marginal.sample((3,))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", vae.observation_dist(z), obs=x)

    # The densities and their gradients at the same states: equal to float32 rounding.
    u = torch.randn(4, 3, 2)
    parts = []
    for fn in (model, vae.model):
        path = ais._ModelPath(check_model(fn, x), fn, x)
        parts.append(ais._Annealed(path.densities, u.shape, path.gradients).evaluate(u.reshape(-1, 2)))
    for name, traced, direct in zip(("log_p0", "log_joint", "grad_log_p0", "grad_log_joint"), *parts):
        assert torch.allclose(traced, direct, atol=1e-5), name
    # The estimates for the same seed. HMC trajectories amplify the rounding differences of the two
    # computations (float32, about 1e-7) over the pilot's and the chains' 20 transitions to about 1e-3
    # (measured: at most 2e-3); a wrong term (a Jacobian, a missing prior) is off by nats.
    results = []
    for fn in (model, vae.model):
        torch.manual_seed(6)
        results.append(log_marginal_likelihood(fn, x, "ais", num_chains=4, num_temps=20))
    assert torch.allclose(*results, atol=1e-2), results


def test_chunks_and_options():
    vae, marginal = linear_gaussian(2, 6)
    x = marginal.sample((5,))
    log_px, info = log_marginal_likelihood(
        vae.model, x, "ais", num_chains=3, num_temps=5, num_steps=2, schedule="linear", chunk_size=2,
        return_diagnostics=True,
    )
    assert log_px.shape == (5,) and info["accept_prob"].shape == (3, 5) and info["stderr"].shape == (5,)
    with pytest.raises(ValueError, match="num_temps"):
        log_marginal_likelihood(vae.model, x, "ais", num_temps=0)
    with pytest.raises(ValueError, match="num_chains"):
        log_marginal_likelihood(vae.model, x, "ais", num_chains=0)
    assert all(p.grad is None for p in vae.parameters())


def test_simulate_draws_from_the_joint():
    vae, marginal = linear_gaussian(2, 6)
    torch.manual_seed(7)
    x, latents = simulate(vae.model, 4000, torch.zeros(3, 6))
    assert x.shape == (4000, 6) and set(latents) == {"z"} and latents["z"].shape == (4000, 2)
    # x ~ N(b, W W^T + s^2 I): the sample mean within 5 SE of b.
    se = marginal.covariance_matrix.diagonal().sqrt() / math.sqrt(4000)
    assert ((x.mean(0) - marginal.loc).abs() < 5 * se).all()


def test_bdmc_brackets_the_exact_value():
    # 400 datapoints simulated from a small linear-Gaussian model; K = 4 chains, T = 10 and 100
    # (short paths, so that the gap is visible and the test takes seconds). Each bound's mean error
    # over the datapoints has SE <= 0.03 here, so an inversion of 0.1 nats (3+ SE) would fail the
    # one-sided checks at 2.5 SE. The gap shrinks with T.
    torch.manual_seed(8)
    vae, marginal = linear_gaussian(2, 4, sigma=0.7)
    x, latents = simulate(vae.model, 400, torch.zeros(1, 4))
    exact = marginal.log_prob(x)
    gaps = []
    for num_temps in (10, 100):
        lower, upper = bdmc(vae.model, x, latents, num_chains=4, num_temps=num_temps)
        low_err, up_err = lower - exact, upper - exact
        n = math.sqrt(len(exact))
        assert low_err.std() / n < 0.035 and up_err.std() / n < 0.035
        assert low_err.mean() < 2.5 * low_err.std() / n, f"T={num_temps}: lower {low_err.mean():.4f} above exact"
        assert up_err.mean() > -2.5 * up_err.std() / n, f"T={num_temps}: upper {up_err.mean():.4f} below exact"
        gaps.append((upper - lower).mean().item())
    assert gaps[0] > 0 and gaps[1] < 0.5 * gaps[0], gaps
