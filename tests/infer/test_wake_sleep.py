import math

import pyro
import pytest
import torch
from pyro import poutine

from tests.helpers.linear_gaussian import LinearGaussianVAE, ppca_data, tiny_run_metrics

from pyro_aevb import VAE, load_dataset, load_run, lower_bound
from pyro_aevb.models.variants import LaplacePriorVAE
from pyro_aevb.infer.wake_sleep import WakeSleep, sleep_loss, wake_loss
from pyro_aevb.models.closed_forms import direct_sleep_loss, direct_wake_loss

NUM_DATA, BATCH, X_DIM, Z_DIM = 40, 4, 6, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: a second thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _normal_log_prob(value, loc, scale):
    return (-0.5 * ((value - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _log_likelihood(vae, x, z):
    """:math:`\\log p_\\theta(x|z)` from the decoder's outputs, written out (Eqs. (11) and (12) of [1])."""
    if vae.likelihood == "bernoulli":
        logits = vae.decoder(z)
        return (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
    return _normal_log_prob(x, *vae.decoder(z))


def _grads(loss, module):
    return torch.autograd.grad(loss, list(module.parameters()))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_wake_gradient_is_gradient_of_log_joint(likelihood):
    vae = VAE(X_DIM, Z_DIM, 5, likelihood=likelihood, init_std=0.5)
    x, z = torch.rand(BATCH, X_DIM), torch.randn(BATCH, Z_DIM)  # grey levels: the cross-entropy of Eq. (11)
    loss, _ = wake_loss(vae.model, poutine.condition(vae.guide, data={"z": z}), x, NUM_DATA)
    prior = _normal_log_prob(z, torch.zeros(()), torch.ones(()))
    expected = -NUM_DATA / BATCH * (prior + _log_likelihood(vae, x, z)).sum()
    assert torch.allclose(loss, expected, rtol=1e-5), f"wake loss {loss.item()} != -N/M log p(x, z) = {expected.item()}"
    # The same sums in another order: only float32 rounding separates them.
    for got, want in zip(_grads(loss, vae.decoder), _grads(expected, vae.decoder)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), "theta-gradient differs from that of log p(x, z)"


def test_wake_loss_has_no_encoder_gradient():
    vae = VAE(X_DIM, Z_DIM, 5, init_std=0.5)
    loss, _ = wake_loss(vae.model, vae.guide, torch.rand(BATCH, X_DIM).round(), NUM_DATA)
    loss.backward()
    assert all(p.grad is None for p in vae.encoder.parameters()), "the wake loss must not reach phi"


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_sleep_gradient_is_gradient_of_log_q(likelihood):
    vae = VAE(X_DIM, Z_DIM, 5, likelihood=likelihood, init_std=0.5)
    x, z = torch.rand(BATCH, X_DIM).round(), torch.randn(BATCH, Z_DIM)
    # Conditioning the whole computation fixes the fantasies: the handler acts after the model's
    # uncondition, which is applied inside sleep_loss.
    with poutine.condition(data={"z": z, "x": x}):
        loss, guide_trace = sleep_loss(vae.model, vae.guide, torch.zeros(BATCH, X_DIM), NUM_DATA)
    assert torch.equal(guide_trace.nodes["_INPUT"]["args"][0], x), "the guide did not see the fantasy x"
    expected = -NUM_DATA / BATCH * _normal_log_prob(z, *vae.encoder(x)).sum()
    assert torch.allclose(loss, expected, rtol=1e-5), f"sleep loss {loss.item()} != -N/M log q(z|x) = {expected.item()}"
    for got, want in zip(_grads(loss, vae.encoder), _grads(expected, vae.encoder)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), "phi-gradient differs from that of log q(z|x)"


def test_sleep_loss_has_no_decoder_gradient():
    vae = VAE(X_DIM, Z_DIM, 5, likelihood="gaussian", init_std=0.5)  # Normal fantasies are rsampled
    loss, _ = sleep_loss(vae.model, vae.guide, torch.rand(BATCH, X_DIM), NUM_DATA)
    loss.backward()
    assert all(p.grad is None for p in vae.decoder.parameters()), "the sleep loss must not reach theta"


@pytest.mark.parametrize("model_class,prior_var", [(VAE, 1.0), (LaplacePriorVAE, 2.0)], ids=["normal", "laplace"])
def test_fantasies_come_from_the_model(model_class, prior_var):
    # 20,000 fantasies: the sample variance of z has sd sqrt(2/n) = 0.01 under N(0, 1) and
    # sqrt((24 - 4)/n) = 0.03 under Laplace(0, 1); tolerance 0.15.
    vae = model_class(X_DIM, Z_DIM, 5, init_std=0.5)
    with torch.no_grad():
        _, guide_trace = sleep_loss(vae.model, vae.guide, torch.rand(20_000, X_DIM), 20_000)
    fantasy_x, fantasy_z = guide_trace.nodes["_INPUT"]["args"][0], guide_trace.nodes["z"]["value"]
    assert set(fantasy_x.unique().tolist()) == {0.0, 1.0}, "Bernoulli fantasies must be binary"
    assert (fantasy_z.var(0) - prior_var).abs().max() < 0.15, f"fantasy z variance {fantasy_z.var(0).tolist()}"


def test_wake_sleep_improves_bound():
    # Probabilistic PCA, N = 300, D = 4, Nz = 1, 100 full-batch steps. The bound is estimated with
    # 100 samples per datapoint (its Monte Carlo error is below 0.01 nats); measured gains on three
    # seeds are 2.6 to 7.5 nats, ending within 0.02 nats of the exact log-likelihood.
    num_data = 300
    x = ppca_data(num_data, 4, 1, sigma=1.0)
    vae = LinearGaussianVAE(4, 1)
    method = WakeSleep(vae, lr=0.1, weight_decay=0.0)
    before = lower_bound(vae.model, vae.guide, x, num_particles=100, seed=1)
    for _ in range(100):
        method.step(x, num_data, idx=torch.arange(num_data))
    after = lower_bound(vae.model, vae.guide, x, num_particles=100, seed=1)
    assert after > before + 1.0, f"bound went from {before:.3f} to {after:.3f}"
    assert after < vae.log_likelihood(x) + 0.05, f"bound {after:.3f} above log p(x) = {vae.log_likelihood(x):.3f}"


DIRECT_CASES = [
    pytest.param(lambda: VAE(X_DIM, Z_DIM, 5, likelihood="bernoulli", init_std=0.5), id="bernoulli"),
    pytest.param(lambda: VAE(X_DIM, Z_DIM, 5, likelihood="gaussian", init_std=0.5), id="gaussian"),
    pytest.param(lambda: LinearGaussianVAE(X_DIM, Z_DIM), id="swapped-likelihood"),
]


def _minibatch(vae):
    x = torch.rand(BATCH, X_DIM, generator=torch.Generator().manual_seed(5))
    return x.round() if vae.likelihood == "bernoulli" else x


@pytest.mark.parametrize("make_vae", DIRECT_CASES)
@pytest.mark.parametrize("phase", ["wake", "sleep"])
def test_direct_losses_are_the_traced_ones(make_vae, phase):
    """Same seed: the direct loss draws the same values and has the traced loss's value and gradients."""
    vae = make_vae()
    x = _minibatch(vae)
    traced, direct = {"wake": (wake_loss, direct_wake_loss), "sleep": (sleep_loss, direct_sleep_loss)}[phase]
    torch.manual_seed(11)
    expected, _ = traced(vae.model, vae.guide, x, NUM_DATA)
    expected_grads = torch.autograd.grad(expected, list(vae.parameters()), allow_unused=True)
    torch.manual_seed(11)
    actual = direct(vae, x, NUM_DATA)
    actual_grads = torch.autograd.grad(actual, list(vae.parameters()), allow_unused=True)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-5)
    for (name, _), a, e in zip(vae.named_parameters(), actual_grads, expected_grads):
        assert (a is None) == (e is None), f"{phase}: {name} has a gradient on one path only"
        if a is not None:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=lambda m: f"{phase}, gradient of {name}: {m}")


@pytest.mark.parametrize("make_vae", DIRECT_CASES)
def test_fast_path_trains_as_the_traced_path(make_vae):
    """Five steps from the same start and seed on each path end at the same parameters (to rounding)."""
    x = _minibatch(make_vae())
    params = {}
    for fast_path in (False, True):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = make_vae()
        method = WakeSleep(vae, fast_path=fast_path)
        torch.manual_seed(1)
        for _ in range(5):
            method.step(x, NUM_DATA, idx=torch.arange(BATCH))
        assert method.uses_fast_path == fast_path
        params[fast_path] = {name: p.detach().clone() for name, p in vae.named_parameters()}
    for name, value in params[True].items():
        torch.testing.assert_close(value, params[False][name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_swapped_prior_stays_on_the_traced_path():
    vae = LaplacePriorVAE(X_DIM, Z_DIM, 5)
    method = WakeSleep(vae)
    for _ in range(2):
        method.step(torch.rand(BATCH, X_DIM).round(), NUM_DATA, idx=torch.arange(BATCH))
    assert not method.uses_fast_path, "a swapped prior is not the direct losses' model"


def test_num_particles_repeats_datapoints():
    x = torch.rand(BATCH, X_DIM).round()
    pyro.set_rng_seed(1)
    vae = VAE(X_DIM, Z_DIM, 5)
    method = WakeSleep(vae, num_particles=3)
    pyro.set_rng_seed(2)
    loss = method.step(x, NUM_DATA, idx=torch.arange(BATCH))
    # L = 3 is one sample for each of three copies of every row: the same step as L = 1 on x repeated.
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    repeated = WakeSleep(VAE(X_DIM, Z_DIM, 5))
    pyro.set_rng_seed(2)
    assert loss == repeated.step(x.repeat(3, 1), NUM_DATA, idx=torch.arange(3 * BATCH))
    for (name, p), q in zip(vae.named_parameters(), repeated.vae.parameters()):
        assert torch.equal(p, q), f"{name} differs from the step on repeated rows"
    with pytest.raises(ValueError, match="smaller than the minibatch"):
        method.step(torch.rand(BATCH, X_DIM).round(), 2 * BATCH, idx=torch.arange(BATCH))


def test_train_writes_lower_bounds(tmp_path):
    """
    The bounds the training loop writes are the trained model's: the last row's are lower_bound recomputed
    from the saved run on the evaluated points (the first 50 training points, the whole test split) with
    the evaluation's seed, config.seed + 1. A bound of other parameters, other points, another seed, sign
    or scale differs by far more than metrics.csv's six decimals and float32 rounding (rel 1e-6 of ~200 nats).
    """
    rows = tiny_run_metrics("wake-sleep", tmp_path)
    vae = load_run(tmp_path)
    dataset = load_dataset("mnist5k")
    points = {"train": dataset.eval_split("train", vae.config.eval_train_points), "test": dataset.eval_split("test")}
    for split, x in points.items():
        expected = lower_bound(vae.model, vae.guide, x, seed=vae.config.seed + 1)
        got = rows[-1][f"{split}_lower_bound"]
        assert got == pytest.approx(expected, rel=1e-6), f"{split}: the run wrote {got}, its model's bound is {expected}"
    for column in ("train_log_marginal", "test_log_marginal"):
        assert all(row[column] is None for row in rows), f"{column} was not asked for: {rows}"
