import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_aevb.infer import hmc
from pyro_aevb.infer.util import repeat_rows
from pyro_aevb.infer.marginal import _latent_space, _log_joint, log_marginal_likelihood, resampled_start

from benchmarks.reference_hmc import reference_hmc_mcmc
from tests.helpers.common import DEVICES


def data_plate(x):
    return pyro.plate("data", x.shape[0], subsample=torch.arange(x.shape[0]))


class LinearGaussian:
    r"""
    :math:`x = W z + b + \epsilon`, :math:`z \sim \mathcal{N}(0, I)`, :math:`\epsilon \sim \mathcal{N}(0, \sigma^2 I)`:
    :math:`p(x) = \mathcal{N}(b, W W^T + \sigma^2 I)` and a Gaussian posterior in closed form. ``W`` has
    orthogonal columns, so the posterior covariance is diagonal and a diagonal guide can be exact.
    """

    def __init__(self, z_dim=2, x_dim=5, sigma=0.5):
        self.z_dim, self.sigma = z_dim, sigma
        basis, _ = torch.linalg.qr(torch.randn(x_dim, x_dim))
        self.decoder = nn.Linear(z_dim, x_dim)
        self.decoder.weight.data = basis[:, :z_dim] * torch.linspace(2.0, 1.0, z_dim)
        self.decoder.bias.data = torch.randn(x_dim)
        W, b = self.decoder.weight.data, self.decoder.bias.data
        self.marginal = dist.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(x_dim))
        self.post_var = 1 / (1 + W.pow(2).sum(0) / sigma**2)  # diagonal, as W^T W is

    def post_loc(self, x):
        W, b = self.decoder.weight.data, self.decoder.bias.data
        return (x - b) @ W / self.sigma**2 * self.post_var

    def model(self, x, num_data=None):
        pyro.module("decoder", self.decoder)
        with data_plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.sigma).to_event(1), obs=x)

    def guide(self, shift=0.0, scale=1.0):
        """The exact posterior with its mean shifted by ``shift`` and its sd scaled by ``scale`` (in posterior sds)."""

        def guide(x, num_data=None):
            sd = self.post_var.sqrt()
            with data_plate(x):
                pyro.sample("z", dist.Normal(self.post_loc(x) + shift * sd, scale * sd).to_event(1))

        return guide


class TanhBernoulli:
    """A 2-D latent, a ``2 -> 8 (tanh) -> 12`` Bernoulli decoder with N(0, 1) weights: a non-Gaussian posterior."""

    def __init__(self, x_dim=12):
        self.decoder = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, x_dim))
        for p in self.decoder.parameters():
            nn.init.normal_(p)

    def model(self, x, num_data=None):
        pyro.module("decoder", self.decoder)
        with data_plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def sample_x(self, num_data):
        with torch.no_grad():
            return dist.Bernoulli(logits=self.decoder(torch.randn(num_data, 2))).sample()

    def quadrature(self, x, limit=7.0, num_points=401):
        r"""
        :math:`\log p(x, z)` on a grid over :math:`[-7, 7]^2` (401^2 points, spacing 0.035; the prior
        mass outside is 1e-11), from the distributions directly rather than through a trace.

        :returns: ``(grid [G, 2], log_joint [B, G], log_px [B])``.
        """
        axis = torch.linspace(-limit, limit, num_points)
        grid = torch.cartesian_prod(axis, axis)
        with torch.no_grad():
            log_lik = dist.Bernoulli(logits=self.decoder(grid)).log_prob(x[:, None, :]).sum(-1)
        log_joint = dist.Normal(0.0, 1.0).log_prob(grid).sum(-1) + log_lik
        log_px = log_joint.logsumexp(-1) + 2 * math.log(axis[1] - axis[0])
        return grid, log_joint, log_px

    def posterior_moments(self, x):
        """:returns: the posterior means ``[B, 2]`` and covariances ``[B, 2, 2]`` by quadrature."""
        grid, log_joint, _ = self.quadrature(x)
        weights = log_joint.softmax(-1)
        mean = weights @ grid
        centered = grid - mean[:, None]
        return mean, torch.einsum("bg,bgi,bgj->bij", weights, centered, centered)

    def relative_variance(self, x, proposal):
        r"""
        :math:`\mathrm{Var}_q(w) / \mathbb{E}_q(w)^2 = \int p(z|x)^2 / q(z)\,dz - 1` by quadrature,
        for ratios :math:`w = p(z|x) / q(z)` and a ``proposal`` with batch shape ``[B, 1]``.
        """
        grid, log_joint, log_px = self.quadrature(x)
        log_post = log_joint - log_px[:, None]
        log_cell = 2 * math.log(grid[1, 1] - grid[0, 1])
        return ((2 * log_post - proposal.log_prob(grid)).logsumexp(-1) + log_cell).exp() - 1

    def hmc_tolerance(self, x, num_draws):
        r"""
        Five standard errors of the ``"hmc"`` estimate from ``num_draws`` draws: the estimate is
        :math:`-\log` of a mean of ratios :math:`q/p(x, z)` over posterior draws, of standard error
        :math:`\sqrt{\mathrm{relvar} / \mathrm{ESS}}`, with the relative variance of :math:`q/p(z|x)`
        for the ideal :math:`q` (the posterior mean, 0.8 x its covariance; 0.16 - 0.31 for this
        model) and an ESS of at least ``num_draws / 4`` (HMC with jitter; R-hat checked elsewhere).
        """
        mean, cov = self.posterior_moments(x)
        q = dist.MultivariateNormal(mean[:, None], 0.8 * cov[:, None])
        return 5 * (self.relative_variance(x, q).clamp(min=0) / (num_draws / 4)).sqrt()


def test_log_joint_matches_distributions():
    lg = LinearGaussian()
    x, z = lg.marginal.sample((4,)), torch.randn(4, 2)
    expected = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(lg.decoder(z), lg.sigma).log_prob(x).sum(-1)
    assert torch.allclose(_log_joint(_latent_space(lg.model, x), x, z), expected, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 7], ids=["one-chunk", "uneven-chunks"])
def test_is_is_exact_with_the_exact_posterior(chunk_size):
    lg = LinearGaussian()
    x = lg.marginal.sample((4,))
    # q = p(z|x) makes every weight equal to p(x): the estimate is exact for any K.
    log_px = log_marginal_likelihood(lg.model, x, "is", lg.guide(), num_samples=20, chunk_size=chunk_size)
    assert torch.allclose(log_px, lg.marginal.log_prob(x), atol=1e-4)


def test_is_diagnostics_are_exact_with_the_exact_posterior():
    """Equal weights: the importance-sampling ESS is K exactly and the standard error 0."""
    lg = LinearGaussian()
    x = lg.marginal.sample((4,))
    _, info = log_marginal_likelihood(lg.model, x, "is", lg.guide(), num_samples=20, chunk_size=7, return_diagnostics=True)
    torch.testing.assert_close(info["ess"], torch.full((4,), 20.0), rtol=1e-4, atol=0)
    assert (info["stderr"] < 5e-3).all(), info["stderr"]


def test_is_takes_a_single_sample_and_names_its_bad_options():
    """K = 1 is an estimate (exact with the exact posterior); K = 0 and chunk_size = 0 are refused by name."""
    lg = LinearGaussian()
    x = lg.marginal.sample((3,))
    log_px = log_marginal_likelihood(lg.model, x, "is", lg.guide(), num_samples=1, chunk_size=1)
    assert torch.allclose(log_px, lg.marginal.log_prob(x), atol=1e-4)
    # A guide that is not the posterior: the standard error is sqrt(1 / ESS - 1 / K) of the reported ESS.
    _, info = log_marginal_likelihood(lg.model, x, "is", lg.guide(0.5, 1.5), num_samples=50, return_diagnostics=True)
    assert (info["ess"] < 50).all()
    torch.testing.assert_close(info["stderr"], (1 / info["ess"] - 1 / 50).sqrt())
    with pytest.raises(ValueError, match=r"^num_samples must be a whole number >= 1, got 0$"):
        log_marginal_likelihood(lg.model, x, "is", lg.guide(), num_samples=0)
    with pytest.raises(ValueError, match=r"^chunk_size must be a whole number >= 1, got 0$"):
        log_marginal_likelihood(lg.model, x, "is", lg.guide(), chunk_size=0)


def test_appendix_d_estimate_is_the_harmonic_mean_with_the_scaled_fit():
    """Steps 2 and 3 of Appendix D written out again in float64: q's moments (and jitter), then -log mean(q / p)."""
    from pyro_aevb.infer.marginal import appendix_d_estimate

    gen = torch.Generator().manual_seed(0)
    fit = torch.randn(400, 3, 2, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.5], dtype=torch.float64) + 1.0
    test = torch.randn(50, 3, 2, generator=gen, dtype=torch.float64)
    log_joint = -torch.rand(50, 3, generator=gen, dtype=torch.float64) * 10
    # Two draws (the fewest q is fitted to: num_samples=2, one chain; one coordinate, for a full-rank fit)
    # divide by n - 1 = 1 as well.
    for fit, test, cov_scale in ((fit, test, 0.8), (fit, test, 1.0), (fit[:2, :, :1], test[..., :1], 0.8)):
        estimate, log_ratio = appendix_d_estimate(fit, test, log_joint, cov_scale)
        mean = fit.mean(0)
        cov = torch.stack([torch.cov(fit[:, b].T).reshape(fit.shape[-1], -1) for b in range(3)])
        jitter = 1e-6 * cov.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(fit.shape[-1], dtype=cov.dtype)
        q = dist.MultivariateNormal(mean, cov_scale * cov + jitter)
        expected_ratio = q.log_prob(test) - log_joint
        torch.testing.assert_close(log_ratio, expected_ratio, rtol=0, atol=1e-5)
        expected = -torch.log(torch.exp(expected_ratio).mean(0))
        torch.testing.assert_close(estimate, expected, rtol=0, atol=1e-5)


def test_is_with_a_perturbed_guide():
    lg = LinearGaussian()
    x = lg.marginal.sample((8,))
    num_samples, shift, scale = 5000, 0.5, 1.5
    log_px = log_marginal_likelihood(lg.model, x, "is", lg.guide(shift, scale), num_samples=num_samples)
    # The weights w = p(x, z)/q(z) factorize over the 2 posterior-independent coordinates; per
    # coordinate E[w^2]/E[w]^2 = s^2 / sqrt(2 s^2 - 1) exp(d^2 / (2 s^2 - 1)) for a proposal
    # N(d, s^2) in posterior units: 1.29 here, relative variance 1.29^2 - 1 = 0.67. The standard
    # error of the log-mean-exp is sqrt(Var(w)/K)/E(w) = sqrt(0.67/5000) = 0.012: tolerance 5 SE.
    rho = scale**2 / math.sqrt(2 * scale**2 - 1) * math.exp(shift**2 / (2 * scale**2 - 1))
    tolerance = 5 * math.sqrt((rho**2 - 1) / num_samples)
    error = (log_px - lg.marginal.log_prob(x)).abs().max()
    assert error < tolerance, f"error {error:.4f} > {tolerance:.4f}"


def test_is_is_a_lower_bound_in_expectation():
    lg = LinearGaussian()
    num_estimates, num_samples = 2000, 10
    x = lg.marginal.sample().expand(num_estimates, -1)
    log_px = log_marginal_likelihood(lg.model, x, "is", lg.guide(0.5, 1.5), num_samples=num_samples)
    # Jensen: E[log p_hat] <= log p(x); the gap is about relvar / (2K) = 0.67 / 20 = 0.03 nats here.
    # Over 2,000 independent estimates the mean has standard error sd / sqrt(2000).
    gap = log_px.mean() - lg.marginal.log_prob(x[0])
    stderr = log_px.std() / math.sqrt(num_estimates)
    assert gap < 3 * stderr, f"mean estimate exceeds log p(x) by {gap:.4f} (SE {stderr:.4f})"
    assert gap < 0, "the bias of the IS estimate should be visible (negative) at K = 10"


@pytest.mark.parametrize("device", DEVICES)
def test_hmc_linear_gaussian(device):
    lg = LinearGaussian()
    x = lg.marginal.sample((8,))
    lg.decoder.to(device)
    num_chains, num_samples = 4, 100
    log_px, info = log_marginal_likelihood(
        lg.model, x.to(device), num_chains=num_chains, num_samples=num_samples, return_diagnostics=True
    )
    assert log_px.device.type == device
    # With q fitted exactly (covariance scaled by s = 0.8) the ratio q/p(z|x) has relative variance
    # (s (2 - s))^{-Nz/2} - 1 = 0.04; with L = 4 x 100 = 400 draws and an ESS of at least L/4, the
    # standard error is sqrt(0.04 / 100) = 0.02. Tolerance 0.1 (5 SE), left also for the error of the fit.
    error = (log_px.cpu() - lg.marginal.log_prob(x)).abs().max()
    assert error < 0.1, f"error {error:.4f}"
    assert not info["not_mixed"].any(), f"R-hat {info['rhat'].tolist()}"
    assert info["rhat"].shape == info["ess"].shape == info["stderr"].shape == (8,)
    assert info["accept_prob"].shape == info["step_size"].shape == (num_chains, 8)


def test_estimators_leave_parameter_gradients_alone():
    lg = LinearGaussian()
    x = lg.marginal.sample((2,))
    log_marginal_likelihood(lg.model, x, num_chains=1, num_samples=2, warmup_steps=2)
    log_marginal_likelihood(lg.model, x, "is", lg.guide(), num_samples=3)
    assert all(p.grad is None for p in lg.decoder.parameters())


def test_hmc_and_is_against_quadrature():
    tb = TanhBernoulli()
    x = tb.sample_x(4)
    _, _, exact = tb.quadrature(x)
    num_chains, num_samples = 4, 100
    log_px = log_marginal_likelihood(tb.model, x, num_chains=num_chains, num_samples=num_samples)
    tolerance = tb.hmc_tolerance(x, num_chains * num_samples)
    assert ((log_px - exact).abs() < tolerance).all(), f"hmc error {log_px - exact} vs {tolerance}"

    # IS with a diagonal Gaussian proposal: the posterior's mean and 1.5 x its sds. Standard error
    # sqrt(relvar / K), relvar of the weights by quadrature; 5 SE.
    num_is = 5000
    mean, cov = tb.posterior_moments(x)
    sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()

    def guide(x_rep, num_data=None):
        datapoint = torch.arange(x_rep.shape[0]) % x.shape[0]  # rows repeat x
        with data_plate(x_rep):
            pyro.sample("z", dist.Normal(mean[datapoint], 1.5 * sd[datapoint]).to_event(1))

    log_px = log_marginal_likelihood(tb.model, x, "is", guide, num_samples=num_is)
    proposal = dist.Normal(mean[:, None], 1.5 * sd[:, None]).to_event(1)
    tolerance = 5 * (tb.relative_variance(x, proposal) / num_is).sqrt()
    assert ((log_px - exact).abs() < tolerance).all(), f"is error {log_px - exact} vs {tolerance}"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(dict(num_chains=2, num_samples=50, warmup_steps=50, num_steps=4), id="small"),
        pytest.param(
            dict(num_chains=4, num_samples=200, warmup_steps=100, num_steps=4), id="large", marks=pytest.mark.slow
        ),
    ],
)
def test_vectorised_sampler_agrees_with_pyro_mcmc(options):
    tb = TanhBernoulli()
    x = tb.sample_x(2)
    mean, cov = tb.posterior_moments(x)
    _, _, exact = tb.quadrature(x)
    # Same settings for both; Pyro's HMC has no step-size jitter.
    ref_log_px, ref_samples = reference_hmc_mcmc(tb.model, x, **options)
    vec_log_px = log_marginal_likelihood(tb.model, x, step_size_jitter=0.0, **options)
    num_chains, num_samples = options["num_chains"], options["num_samples"]
    tolerance = tb.hmc_tolerance(x, num_chains * num_samples)
    assert ((ref_log_px - exact).abs() < tolerance).all(), f"Pyro's MCMC: {ref_log_px - exact} vs {tolerance}"
    assert ((vec_log_px - exact).abs() < tolerance).all(), f"vectorised: {vec_log_px - exact} vs {tolerance}"

    # Posterior means of the 2 * num_samples draws of each chain, pooled over chains: standard
    # error sd / sqrt(ESS), ESS >= draws / 4; 5 SE for each sampler against quadrature.
    x_chains = repeat_rows(x, num_chains)
    space = _latent_space(tb.model, x)
    draws = 2 * num_samples
    vec = hmc.sample(
        lambda z: -_log_joint(space, x_chains, z), torch.randn(len(x_chains), 2), draws, options["warmup_steps"]
    )
    vec_mean = vec.samples.reshape(draws, num_chains, 2, 2).mean((0, 1))
    ref_mean = ref_samples.mean((0, 1))
    tolerance = 5 * cov.diagonal(dim1=-2, dim2=-1).sqrt() / math.sqrt(num_chains * draws / 4)
    assert ((ref_mean - mean).abs() < tolerance).all(), f"Pyro's MCMC posterior mean {ref_mean} vs {mean}"
    assert ((vec_mean - mean).abs() < tolerance).all(), f"vectorised posterior mean {vec_mean} vs {mean}"


def test_not_mixed_flags_a_bimodal_posterior():
    # x ~ N(z^2, 0.1^2) with x = 4: modes at z = +-2 that HMC cannot cross, and chains started
    # from the prior land in both (all 8 in one mode has probability 2^-7 per datapoint).
    def model(x, num_data=None):
        with data_plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.pow(2), 0.1).to_event(1), obs=x)

    x = torch.full((4, 1), 4.0)
    _, info = log_marginal_likelihood(model, x, num_chains=8, num_samples=20, warmup_steps=50, return_diagnostics=True)
    assert info["not_mixed"].all(), f"R-hat {info['rhat'].tolist()}"


class TwoModes:
    r"""
    :math:`z \sim \mathcal{N}(0, 1)` and a likelihood with two bumps, a low broad one at -0.5 and a
    high narrow one at 2,

    .. math:: p(x|z) = 0.05\, e^{-(z + 0.5)^2 / (2 \cdot 0.5^2)} + 10^4\, e^{-(z - 2)^2 / (2 \cdot 0.2^2)},

    so the posterior has a local mode near -0.4 holding 7e-5 of its mass, whose basin (z < 0.82)
    takes in 80% of the prior's draws, and the rest of the mass at 1.92 (sd 0.197).
    """

    @staticmethod
    def log_likelihood(z):
        low = math.log(0.05) - (z + 0.5) ** 2 / (2 * 0.5**2)
        high = math.log(1e4) - (z - 2.0) ** 2 / (2 * 0.2**2)
        return torch.logaddexp(low, high).sum(-1)

    def model(self, x, num_data=None):
        with data_plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.factor("x", self.log_likelihood(z))

    def log_px(self):
        """By quadrature on [-8, 8], spacing 0.0016."""
        z = torch.linspace(-8.0, 8.0, 10001, dtype=torch.float64)[:, None]
        log_joint = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + self.log_likelihood(z)
        return (log_joint.logsumexp(0) + math.log(z[1, 0] - z[0, 0])).item()


def test_hmc_without_guide_starts_chains_near_the_posterior_mass():
    two = TwoModes()
    x = torch.zeros(8, 1)
    exact = two.log_px()
    # Chains resampled from 1,000 prior draws: the high mode's region (|z - 1.92| < 0.4, prior mass
    # 0.054) holds about 54 of them and all but 7e-5 of the weight, so all 32 chains start there with
    # probability 1 - 2e-3. There the posterior is Gaussian to within 7e-5 of its mass: with
    # q_cov_scale = 0.8 the ratio's relative variance is (0.8 x 1.2)^-1/2 - 1 = 0.02, and 4 x 100
    # draws (ESS >= 100) give a standard error of 0.014. Tolerance 0.1 (7 SE), as for the
    # linear-Gaussian model.
    log_px = log_marginal_likelihood(two.model, x, num_chains=4, num_samples=100)
    assert ((log_px - exact).abs() < 0.1).all(), f"error {log_px - exact}"
    # Started from single prior draws, four chains in five settle in the low mode, which 100
    # warm-up transitions do not leave, and the estimate falls far short for most datapoints (6 to 8
    # of 8 over ten seeds; all four chains of a datapoint in the high mode has probability 0.2^4).
    log_px = log_marginal_likelihood(two.model, x, num_chains=4, num_samples=100, init_proposals=1)
    assert ((log_px - exact) < -1.0).sum() >= 4, f"error {log_px - exact}"


@pytest.mark.parametrize("proposal", ["guide", "prior"])
def test_resampled_start_draws_from_the_posterior(proposal):
    # Sampling-importance-resampling with K proposals approaches exact posterior draws as K grows.
    # Proposals: the posterior with 2x its sds, or the prior (sds 1 against the posterior's 0.24 and
    # 0.45, means 0.47 and -0.4 for the datapoint x = W z0 + b, z0 = (0.5, -0.5): an importance ESS
    # of K prod_j s_j (2 - s_j^2)^1/2 exp(-m_j^2 / (2 - s_j^2)) = 166 of K = 1,000). 200 resampled
    # draws, standardised by the exact posterior: mean within 5 SE = 5 / sqrt(200) = 0.35 of 0, sd
    # within 0.3 of 1 (5 SE of a sample sd, 1 / sqrt(400) = 0.05, and the slight underdispersion of
    # resampling finitely many proposals).
    lg = LinearGaussian()
    x = lg.decoder(torch.tensor([[0.5, -0.5]])).detach()
    guide = lg.guide(scale=2.0) if proposal == "guide" else None
    space = _latent_space(lg.model, x)
    z = resampled_start(space, guide, repeat_rows(x, 200), 1000)
    u = (z - lg.post_loc(x)) / lg.post_var.sqrt()
    assert (u.mean(0).abs() < 0.35).all(), f"standardised mean {u.mean(0)}"
    assert ((u.std(0) - 1).abs() < 0.3).all(), f"standardised sd {u.std(0)}"
    if proposal == "prior":  # a single proposal is a prior draw: 4.1 and 2.2 posterior sds wide
        u = (resampled_start(space, None, repeat_rows(x, 200), 1) - lg.post_loc(x)) / lg.post_var.sqrt()
        assert (u.std(0) > 1.6).all(), f"standardised sd {u.std(0)}"  # 5 SE (0.11) below 2.2


def test_hmc_warns_in_high_dimension():
    lg = LinearGaussian(z_dim=6, x_dim=8)
    x = lg.marginal.sample((2,))
    with pytest.warns(UserWarning, match="low dimensions"):
        log_marginal_likelihood(lg.model, x, num_chains=1, num_samples=2, warmup_steps=1)


@pytest.mark.parametrize(
    "estimator, kwargs",
    [
        ("hmc", dict(q_cov_scale=2.0)),
        ("hmc", dict(num_chains=0)),
        ("hmc", dict(init_proposals=0)),
        ("is", dict()),
        ("nuts", dict()),
    ],
    ids=["q-too-wide", "no-chains", "no-proposals", "is-without-guide", "unknown-estimator"],
)
def test_invalid_arguments(estimator, kwargs):
    lg = LinearGaussian()
    with pytest.raises(ValueError):
        log_marginal_likelihood(lg.model, lg.marginal.sample((2,)), estimator, **kwargs)
