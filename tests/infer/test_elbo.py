"""
The SGVB estimators against exact answers: the Gaussian KL of Appendix B, estimators A and B agreeing in
expectation, the estimator's gradient against the closed-form ELBO gradient of a linear-Gaussian VAE,
and the N/M-scaled minibatch loss as an unbiased estimate of the full-data loss.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn

from pyro_aevb import VAE, data_plate, lower_bound, make_elbo


def appendix_b_neg_kl(z_loc, z_scale):
    r"""Appendix B of the paper: -KL(q||p) = ½ Σ_j (1 + log σ_j² - μ_j² - σ_j²), p = N(0, I)."""
    return 0.5 * (1 + 2 * z_scale.log() - z_loc**2 - z_scale**2).sum(-1)


def test_closed_form_kl_matches_appendix_b():
    z_loc, z_scale = torch.randn(7, 5), torch.rand(7, 5) + 0.2
    q = dist.Normal(z_loc, z_scale).to_event(1)
    p = dist.Normal(torch.zeros(5), 1.0).to_event(1)
    torch.testing.assert_close(-torch.distributions.kl_divergence(q, p), appendix_b_neg_kl(z_loc, z_scale))


def test_library_neg_kl_is_torchs_per_datapoint():
    # The library's own closed forms, per row of a [2, 7, 5] batch (summed over the last dimension only),
    # from sigma and from log sigma^2, against torch's KL of the same Gaussians.
    from pyro_aevb.models.closed_forms import gaussian_neg_kl, gaussian_neg_kl_log_var

    z_loc, z_scale = torch.randn(2, 7, 5), torch.rand(2, 7, 5) + 0.2
    q = dist.Normal(z_loc, z_scale).to_event(1)
    expected = -torch.distributions.kl_divergence(q, dist.Normal(torch.zeros(5), 1.0).to_event(1))
    assert expected.shape == (2, 7)
    torch.testing.assert_close(gaussian_neg_kl(z_loc, z_scale), expected)
    torch.testing.assert_close(gaussian_neg_kl_log_var(z_loc, 2 * z_scale.log()), expected)


def test_closed_form_kl_matches_monte_carlo():
    z_loc, z_scale = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.5, 0.8])
    q = dist.Normal(z_loc, z_scale).to_event(1)
    p = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    num_samples = 200_000
    z = q.sample((num_samples,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    # The Monte Carlo mean has standard error std/sqrt(n); 5 standard errors fail by chance < 1e-6.
    tolerance = 5 * log_ratio.std().item() / math.sqrt(num_samples)
    exact = -appendix_b_neg_kl(z_loc, z_scale).item()
    assert abs(log_ratio.mean().item() - exact) < tolerance, f"MC KL {log_ratio.mean():.4f} vs closed form {exact:.4f}"


def _loss_samples(elbo, model, guide, x, num_draws):
    with torch.no_grad():
        return torch.tensor([elbo.loss(model, guide, x) for _ in range(num_draws)])


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_estimators_a_and_b_agree_in_expectation(likelihood):
    vae = VAE(x_dim=6, z_dim=2, hidden_dim=8, likelihood=likelihood, init_std=0.5)
    x = torch.rand(4, 6).round() if likelihood == "bernoulli" else torch.rand(4, 6)
    num_draws = 3000
    a = _loss_samples(make_elbo(analytic_kl=False), vae.model, vae.guide, x, num_draws)
    b = _loss_samples(make_elbo(analytic_kl=True), vae.model, vae.guide, x, num_draws)
    # Difference of two independent means of num_draws draws: 5 standard errors.
    tolerance = 5 * math.sqrt(a.var() / num_draws + b.var() / num_draws)
    assert abs(a.mean() - b.mean()) < tolerance, f"A {a.mean():.3f} vs B {b.mean():.3f} (tol {tolerance:.3f})"
    assert b.var() < a.var(), "estimator B (analytic KL) should have lower variance than A here"


class LinearGaussianVAE(nn.Module):
    """z ~ N(0, I), x|z ~ N(Wz + b, σ²I); q(z|x) = N(Ax + c, diag(exp(2 s))). Its ELBO has a closed form."""

    def __init__(self, x_dim=4, z_dim=2, noise=0.7):
        super().__init__()
        self.z_dim, self.noise = z_dim, noise
        self.decoder = nn.Linear(z_dim, x_dim)
        self.encoder = nn.Linear(x_dim, z_dim)
        self.log_scale = nn.Parameter(torch.randn(z_dim) * 0.3)

    def model(self, x, num_data=None):
        pyro.module("decoder", self.decoder)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.noise).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        pyro.module("encoder", self.encoder)
        pyro.module("guide_scale", self)  # registers log_scale (and the nets again, harmlessly)
        with data_plate(x, num_data):
            pyro.sample("z", dist.Normal(self.encoder(x), self.log_scale.exp()).to_event(1))

    def exact_elbo(self, x):
        """Σ_i E_q[log p(x_i|z)] - KL(q(z|x_i) || p(z)) in closed form."""
        W, b = self.decoder.weight, self.decoder.bias
        mu, s2 = self.encoder(x), (2 * self.log_scale).exp()
        resid = x - mu @ W.T - b
        d = x.shape[-1]
        expected_log_lik = (
            -0.5 * d * math.log(2 * math.pi * self.noise**2)
            - 0.5 / self.noise**2 * ((resid**2).sum(-1) + (W**2 * s2).sum())
        )
        return (expected_log_lik + appendix_b_neg_kl(mu, s2.sqrt().expand_as(mu))).sum()


@pytest.mark.parametrize("analytic_kl", [False, True], ids=["estimator_A", "estimator_B"])
def test_sgvb_gradient_matches_exact_elbo_gradient(analytic_kl):
    vae = LinearGaussianVAE()
    x = torch.randn(3, 4)
    params = [p for p in vae.parameters()]
    exact = torch.autograd.grad(-vae.exact_elbo(x), params)

    num_particles, num_repeats = 2000, 10
    elbo = pyro.infer.TraceMeanField_ELBO if analytic_kl else pyro.infer.Trace_ELBO
    elbo = elbo(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    draws = []
    for _ in range(num_repeats):
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        draws.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    draws = torch.stack(draws)
    estimate, stderr = draws.mean(0), draws.std(0) / math.sqrt(num_repeats)
    exact = torch.cat([g.reshape(-1) for g in exact])
    # Each repeat averages 2,000 particles; across 10 repeats, 5 standard errors (plus a floor for
    # components whose estimator is exact, e.g. the bias of the decoder) bound the error.
    tolerance = 5 * stderr + 1e-4 * exact.abs().max()
    bad = (estimate - exact).abs() > tolerance
    assert not bad.any(), f"gradient components off: {(estimate - exact)[bad]} (tolerance {tolerance[bad]})"


def test_plate_scales_by_n_over_m():
    vae = VAE(x_dim=5, z_dim=2, hidden_dim=4)
    x = torch.rand(10, 5).round()
    trace = poutine.trace(vae.model).get_trace(x, num_data=250)
    for site in ("z", "x"):
        assert trace.nodes[site]["scale"] == 25.0, f"site {site} has scale {trace.nodes[site]['scale']}, expected N/M=25"


@pytest.mark.parametrize("analytic_kl", [False, True], ids=["estimator_A", "estimator_B"])
def test_minibatch_loss_is_unbiased_for_full_data_loss(analytic_kl):
    """Average the N/M-scaled loss over every minibatch of size M: exactly the full-data loss, when the
    guide's noise is held fixed per datapoint (so only the minibatch choice is random)."""
    num_data, batch_size = 6, 2
    vae = VAE(x_dim=5, z_dim=2, hidden_dim=4, init_std=0.5)
    x = torch.rand(num_data, 5).round()
    z = torch.randn(num_data, 2)
    elbo = make_elbo(analytic_kl)

    def loss(idx, n):
        with torch.no_grad(), _FixLatent(z[idx]):
            return elbo.loss(vae.model, vae.guide, x[idx], num_data=n)

    full = loss(torch.arange(num_data), None)
    subsets = [torch.tensor(s) for s in itertools.combinations(range(num_data), batch_size)]
    average = sum(loss(idx, num_data) for idx in subsets) / len(subsets)
    assert average == pytest.approx(full, rel=1e-5), f"mean minibatch loss {average} vs full-data loss {full}"


class _FixLatent(Messenger):
    """Give the guide's ``"z"`` a fixed value without marking it observed (the ELBO still treats it as latent)."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def _pyro_sample(self, msg):
        if msg["name"] == "z" and not msg["is_observed"]:
            msg["value"] = self.value


def test_lower_bound_leaves_global_rng_alone_and_is_repeatable():
    vae = VAE(x_dim=5, z_dim=2, hidden_dim=4, init_std=0.5)
    x = torch.rand(50, 5).round()
    state = torch.get_rng_state()
    first = lower_bound(vae.model, vae.guide, x, seed=3, chunk_size=7)
    assert torch.equal(torch.get_rng_state(), state), "a seeded lower_bound must not move the global RNG"
    assert lower_bound(vae.model, vae.guide, x, seed=3, chunk_size=7) == pytest.approx(first, rel=1e-6)


def test_lower_bound_is_below_log_likelihood_of_a_tractable_model():
    """For the linear-Gaussian model, log p(x) = log N(x; b, WWᵀ + σ²I) ≥ the ELBO, with equality at the exact posterior."""
    vae = LinearGaussianVAE()
    x = torch.randn(20, 4)
    W, b = vae.decoder.weight.detach(), vae.decoder.bias.detach()
    cov = W @ W.T + vae.noise**2 * torch.eye(4)
    log_px = dist.MultivariateNormal(b, cov).log_prob(x).mean().item()
    with torch.no_grad():
        exact_bound = vae.exact_elbo(x).item() / len(x)
    estimate = lower_bound(vae.model, vae.guide, x, num_particles=4000)
    assert exact_bound < log_px, "the ELBO must be below log p(x)"
    # 4,000 particles x 20 points: the estimate's standard error is well under 0.05 nats here.
    assert estimate == pytest.approx(exact_bound, abs=0.05), f"lower_bound {estimate} vs closed form {exact_bound}"
