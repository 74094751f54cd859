"""
The log-variance from the nets' heads to the densities, with no round trip through sigma^2.

At log sigma^2 = -200, sigma^2 = exp(-200) underflows float32; the bound and its gradients must stay
finite on both paths (the fast path's closed forms and SVI on the model and guide), and equal to the
formulas written out by hand. A log-variance that overflows must stop training with TrainingDiverged.
"""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

import pyro.distributions as dist
from pyro_aevb import TrainConfig, TrainingDiverged, VAE, lower_bound, train
from pyro_aevb.infer.wake_sleep import sleep_loss
from pyro_aevb.models.closed_forms import direct_sleep_loss, sgvb_loss
from pyro_aevb.models.distributions import LogScaleNormal

X_DIM, Z_DIM, HIDDEN, NUM_DATA = 12, 3, 8, 50


def _vae(log_var=None, likelihood="bernoulli"):
    pyro.set_rng_seed(0)
    vae = VAE(X_DIM, Z_DIM, HIDDEN, likelihood=likelihood, init_std=0.3)
    if log_var is not None:
        with torch.no_grad():
            vae.encoder.log_var.weight.zero_()
            vae.encoder.log_var.bias.fill_(log_var)
    return vae


def _data(rows=7):
    return torch.bernoulli(torch.rand(rows, X_DIM, generator=torch.Generator().manual_seed(1)))


def _exact_bound(vae, x, estimator, seed):
    """
    The estimator by hand in float64 from the heads' outputs, for sigma ~ 0 (z = mu): B is the KL of
    Appendix B plus log p(x|mu); A replaces the KL's 1/2 by its Monte Carlo estimate eps^2 / 2, with
    the eps that the seed draws first.
    """
    torch.manual_seed(seed)
    eps = torch.randn(x.shape[0], Z_DIM, dtype=torch.float32).double()
    mc_correction = 0.5 * (eps**2 - 1).sum(-1) if estimator == "A" else 0.0
    with torch.no_grad():
        loc, log_var = (t.double() for t in vae.encoder.loc_and_log_var(x))
        kl = 0.5 * (loc**2 + log_var.exp() - 1 - log_var).sum(-1)
        logits = vae.decoder(loc.float()).double()
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x.double(), reduction="none").sum(-1)
    return (log_px - kl + mc_correction).mean().item()


@pytest.mark.parametrize("log_var", [-120.0, -200.0])
@pytest.mark.parametrize("estimator", ["B", "A"])
def test_tiny_variance_gives_a_finite_bound_and_gradients_on_both_paths(log_var, estimator):
    vae, x = _vae(log_var), _data()
    params = list(vae.parameters())
    elbo = (TraceMeanField_ELBO if estimator == "B" else Trace_ELBO)(max_plate_nesting=1)
    for path, loss_fn in [
        ("fast", lambda: sgvb_loss(vae, x, NUM_DATA, estimator)),
        ("svi", lambda: elbo.differentiable_loss(vae.model, vae.guide, x, NUM_DATA)),
    ]:
        pyro.set_rng_seed(3)
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
        assert torch.isfinite(loss), f"{path} path: loss {loss.item()} at log sigma^2 = {log_var}"
        for (name, _), g in zip(vae.named_parameters(), grads):
            assert torch.isfinite(g).all(), f"{path} path, estimator {estimator}: non-finite gradient of {name}"
        # sigma ~ 0, so z = mu: the estimate is the closed form at mu, with the seed's eps for estimator A.
        torch.testing.assert_close(
            -loss.item() / NUM_DATA, _exact_bound(vae, x, estimator, 3), rtol=1e-5, atol=0,
            msg=lambda m: f"{path} path, estimator {estimator}: {m}",
        )
    bound = lower_bound(vae.model, vae.guide, x, analytic_kl=estimator == "B", seed=3)
    assert math.isclose(bound, _exact_bound(vae, x, estimator, 3), rel_tol=1e-5), f"lower_bound {bound}"


def test_log_scale_normal_is_normal_where_normal_is_finite():
    """Density, KL from N(0, 1), entropy and draws (same random stream) as torch's Normal's, in their common range."""
    loc = torch.tensor([0.3, -1.0, 2.0])
    log_scale = torch.tensor([0.2, -0.5, -3.0])
    ours, theirs = LogScaleNormal(loc, log_scale), dist.Normal(loc, log_scale.exp())
    value = torch.tensor([1.0, 2.0, 1.9])
    torch.testing.assert_close(ours.log_prob(value), theirs.log_prob(value))
    prior = dist.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(kl_divergence(ours, prior), kl_divergence(theirs, prior))
    torch.testing.assert_close(kl_divergence(ours, LogScaleNormal(torch.zeros(3), torch.zeros(3))), kl_divergence(theirs, prior))
    # ... and from any other Gaussian (neither the mean 0 nor the scale 1 of the prior), both registrations.
    other_loc, other_log_scale = torch.tensor([-0.4, 0.5, 1.0]), torch.tensor([0.7, -0.3, -2.0])
    other = dist.Normal(other_loc, other_log_scale.exp())
    torch.testing.assert_close(kl_divergence(ours, other), kl_divergence(theirs, other))
    torch.testing.assert_close(kl_divergence(ours, LogScaleNormal(other_loc, other_log_scale)), kl_divergence(theirs, other))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())
    torch.manual_seed(5)
    a = ours.rsample((4,))
    torch.manual_seed(5)
    b = theirs.rsample((4,))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.log_prob(a), theirs.log_prob(b))
    expanded = ours.expand((2, 3))
    assert expanded.batch_shape == (2, 3) and expanded.log_scale.shape == (2, 3)
    torch.testing.assert_close(expanded.log_prob(value), theirs.log_prob(value).expand(2, 3))


def test_log_scale_normal_keeps_its_own_draws_exact():
    """At sigma = e^-100, log q of its own draw is -eps^2/2 - log sigma - log(2 pi)/2 exactly, with eps the draw's."""
    loc = torch.zeros(5, requires_grad=True)
    log_scale = torch.full((5,), -100.0, requires_grad=True)
    q = LogScaleNormal(loc, log_scale)
    torch.manual_seed(1)
    z = q.rsample()
    torch.manual_seed(1)
    eps = torch.randn(5)
    expected = -0.5 * eps**2 + 100.0 - 0.5 * math.log(2 * math.pi)
    log_q = q.log_prob(z)
    torch.testing.assert_close(log_q, expected)
    # d log q(z(phi); phi) / d phi along the draw: 0 for the mean, -1 for the log-scale.
    g_loc, g_log_scale = torch.autograd.grad(log_q.sum(), (loc, log_scale), allow_unused=True)
    assert g_loc is None and torch.equal(g_log_scale, -torch.ones(5))


def test_sleep_phase_reads_the_log_variance_on_both_paths():
    """
    Wake-sleep's direct sleep loss equals the traced one at a small log-variance. (Further down, log q
    of the prior's fantasies, about -z^2 sigma^-2 / 2, is itself beyond float32, on both paths.)
    """
    vae, x = _vae(-80.0), _data()
    pyro.set_rng_seed(4)
    direct = direct_sleep_loss(vae, x, NUM_DATA)
    pyro.set_rng_seed(4)
    traced, _ = sleep_loss(vae.model, vae.guide, x, NUM_DATA)
    assert torch.isfinite(direct), direct
    torch.testing.assert_close(direct, traced, rtol=1e-6, atol=0)


def test_a_users_encoder_that_returns_a_scale_still_works():
    """A net without loc_and_log_var (returning (loc, scale) when called) is read through the log of its scale."""

    class ScaleEncoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    vae, x = _vae(), _data()
    pyro.set_rng_seed(2)
    expected = sgvb_loss(vae, x, NUM_DATA, "A")
    vae.encoder = ScaleEncoder(vae.encoder)
    pyro.set_rng_seed(2)
    torch.testing.assert_close(sgvb_loss(vae, x, NUM_DATA, "A"), expected)
    pyro.set_rng_seed(2)
    torch.testing.assert_close(Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x, NUM_DATA), expected.item(), rtol=1e-6, atol=0)


class OverflowingVAE(VAE):
    """The paper's VAE whose encoder's log-variance head is stuck at +120: sigma^2 = e^120 overflows float32."""

    def __init__(self, x_dim, z_dim, hidden_dim, likelihood="bernoulli", init_std=0.01):
        super().__init__(x_dim, z_dim, hidden_dim, likelihood=likelihood, init_std=init_std)
        with torch.no_grad():
            self.encoder.log_var.weight.zero_()
            self.encoder.log_var.bias.fill_(120.0)


@pytest.mark.parametrize("method", ["aevb", "aevb-mc"])
def test_an_overflowing_log_variance_stops_training_with_a_clear_message(method, tmp_path):
    config = TrainConfig(
        dataset="mnist5k", latent_dim=2, hidden=20, eval_points=3, eval_train_points=200, samples=500,
        method=method, model_class=f"{__name__}:OverflowingVAE",
    )
    with pytest.raises(TrainingDiverged, match="the loss became (inf|nan) at step 1 "):
        train(config, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert not any("nan" in row.lower() or "inf" in row.lower() for row in rows[1:]), rows
