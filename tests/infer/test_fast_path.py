"""
AEVB's fast path against Pyro's reference path (stock ``SVI`` + ``pyro.optim.Adagrad`` + Pyro's ELBO).

The direct estimator (:func:`pyro_aevb.models.closed_forms.sgvb_loss`) must compute Pyro's objective with Pyro's random
draws, :class:`~pyro_aevb.optim.FusedAdagrad` must make Adagrad's update, models that the direct
estimator cannot compute must still train through SVI, and a checkpoint must resume exactly.
"""

import io

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.models.closed_forms import sgvb_loss
from pyro_aevb.experiment.state import restore_param_store
from pyro_aevb.infer.elbo import make_elbo
from pyro_aevb.optim import FusedAdagrad
from pyro_aevb.models.variants import ContinuousBernoulliVAE, LaplacePriorVAE, MixturePriorVAE, StudentTVAE
from pyro_aevb.models.vae import VAE, data_plate

from tests.helpers.common import DEVICES

X_DIM, Z_DIM, HIDDEN, NUM_DATA = 12, 3, 8, 50
LR, WEIGHT_DECAY = 0.1, 1.0
# Four float32 Adagrad steps from paths that round differently (closed forms vs distributions, fused
# kernel vs per-tensor loop) by about one unit in the last place; Adagrad divides each gradient by its
# own running norm, which lifts those relative errors to ~1e-6 of the parameters' size (~0.3).
STEP_TOL = dict(rtol=1e-4, atol=1e-5)


class StudentTPriorVAE(VAE):
    """A user's swapped prior with no closed-form KL from the Normal guide: estimator B falls back to Monte Carlo."""

    def model(self, x, num_data=None):
        pyro.module("decoder", self.decoder)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.StudentT(4.0, x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation_dist(z), obs=x)


def _data(likelihood="bernoulli", rows=7):
    x = torch.rand(rows, X_DIM, generator=torch.Generator().manual_seed(1))
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(2)) if likelihood == "bernoulli" else x


def _vae(cls=VAE, likelihood="bernoulli", **kwargs):
    pyro.set_rng_seed(0)
    return cls(X_DIM, Z_DIM, HIDDEN, likelihood=likelihood, init_std=0.3, **kwargs)


def _reference_elbo(estimator, num_particles):
    """Pyro's ELBO; the plate nesting is given so that it does not run the model to guess it (a draw more)."""
    cls = TraceMeanField_ELBO if estimator == "B" else Trace_ELBO
    return cls(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


def _train_reference(vae, x, estimator, num_particles=1, steps=4):
    """Pyro's own pattern: SVI, one torch optimizer per parameter, validation on."""
    optim = pyro.optim.Adagrad({"lr": LR, "weight_decay": WEIGHT_DECAY})
    svi = SVI(vae.model, vae.guide, optim, _reference_elbo(estimator, num_particles))
    return [svi.step(x, NUM_DATA) for _ in range(steps)]


def _train_aevb(vae, x, estimator, num_particles=1, steps=4, **kwargs):
    method = AEVB(vae, estimator=estimator, lr=LR, num_particles=num_particles, weight_decay=WEIGHT_DECAY, **kwargs)
    for _ in range(steps):
        method.step(x, NUM_DATA)
    return method


def _store_values():
    return {name: value.detach().clone() for name, value in pyro.get_param_store().items()}


def _assert_same_params(actual, expected, message, **tol):
    assert actual.keys() == expected.keys(), f"{message}: parameter names differ"
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m: f"{message}, {name}: {m}", **(tol or STEP_TOL))


def _reference_params(make_vae, x, estimator, num_particles=1, steps=4):
    pyro.clear_param_store()
    _train_reference(make_vae(), x, estimator, num_particles, steps)
    values = _store_values()
    pyro.clear_param_store()
    return values


CASES = [
    pytest.param("B", "bernoulli", 1, id="B-bernoulli"),
    pytest.param("A", "bernoulli", 1, id="A-bernoulli"),
    pytest.param("B", "gaussian", 2, id="B-gaussian-L2"),
    pytest.param("A", "gaussian", 2, id="A-gaussian-L2"),
]


@pytest.mark.parametrize("estimator, likelihood, num_particles", CASES)
def test_direct_estimator_is_pyros_elbo(estimator, likelihood, num_particles):
    """Same seed, same parameters: the direct loss and its gradients are those of Pyro's ELBO."""
    vae, x = _vae(likelihood=likelihood), _data(likelihood)
    elbo = _reference_elbo(estimator, num_particles)
    pyro.set_rng_seed(3)
    expected = elbo.differentiable_loss(vae.model, vae.guide, x, NUM_DATA)
    expected_grads = torch.autograd.grad(expected, list(vae.parameters()))
    pyro.set_rng_seed(3)
    actual = sgvb_loss(vae, x, NUM_DATA, estimator, num_particles)
    actual_grads = torch.autograd.grad(actual, list(vae.parameters()))
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=0, msg="the direct loss differs from Pyro's")
    for (name, _), a, e in zip(vae.named_parameters(), actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=lambda m: f"gradient of {name}: {m}")


def test_direct_estimator_defaults_and_full_batch_scale():
    """
    ``sgvb_loss(vae, x)`` is estimator B with one draw and scale 1: Pyro's mean-field ELBO of the model
    called without ``num_data``; ``num_data`` equal to the minibatch is the same loss, one below it is refused.
    """
    vae, x = _vae(), _data()
    pyro.set_rng_seed(3)
    expected = _reference_elbo("B", 1).differentiable_loss(vae.model, vae.guide, x)
    for num_data in (None, x.shape[0]):
        pyro.set_rng_seed(3)
        actual = sgvb_loss(vae, x) if num_data is None else sgvb_loss(vae, x, num_data)
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=0, msg=lambda m: f"num_data={num_data}: {m}")
    with pytest.raises(ValueError, match=r"^num_data \(6\) is smaller than the minibatch \(7\)$"):
        sgvb_loss(vae, x, 6)
    with pytest.raises(ValueError, match=r"^estimator must be 'A' or 'B', got 'C'$"):
        sgvb_loss(vae, x, estimator="C")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("estimator, likelihood, num_particles", CASES)
def test_fast_path_trains_as_pyros_reference(estimator, likelihood, num_particles, device):
    x = _data(likelihood).to(device)
    expected = _reference_params(lambda: _vae(likelihood=likelihood).to(device), x, estimator, num_particles)
    method = _train_aevb(_vae(likelihood=likelihood).to(device), x, estimator, num_particles)
    assert method.uses_fast_path, "a plain VAE should train on the direct path"
    assert all(p.device.type == device for p in _store_values().values())
    _assert_same_params(_store_values(), expected, "fast path vs stock SVI + pyro.optim.Adagrad")


@pytest.mark.parametrize("estimator", ["B", "A"])
def test_direct_path_equals_svi_with_the_same_optimizer(estimator):
    """Against SVI with the same optimizer, only the rounding of the closed forms differs."""
    x = _data()
    _train_aevb(_vae(), x, estimator, steps=6, fast_path=False)
    via_svi = _store_values()
    pyro.clear_param_store()
    method = _train_aevb(_vae(), x, estimator, steps=6)
    assert method.uses_fast_path, "a plain VAE should train on the direct path"
    _assert_same_params(_store_values(), via_svi, "direct path vs SVI with FusedAdagrad")


SWAPS = [
    pytest.param(LaplacePriorVAE, "bernoulli", {}, False, id="laplace-prior"),
    pytest.param(MixturePriorVAE, "bernoulli", {"num_components": 3}, False, id="mixture-prior-pyro.param"),
    pytest.param(StudentTPriorVAE, "bernoulli", {}, False, id="student-t-prior-no-closed-form-kl"),
    pytest.param(StudentTVAE, "gaussian", {}, False, id="student-t-likelihood-pyro.param"),
    pytest.param(ContinuousBernoulliVAE, "bernoulli", {}, True, id="continuous-bernoulli-likelihood"),
]


@pytest.mark.parametrize("cls, likelihood, options, direct", SWAPS)
@pytest.mark.parametrize("estimator", ["B", "A"])
def test_swapped_models_train_as_pyros_reference(cls, likelihood, options, direct, estimator):
    """Swapped priors and likelihoods train as stock SVI trains them, their own pyro.param sites included."""
    x = _data(likelihood)
    expected = _reference_params(lambda: _vae(cls, likelihood, **options), x, estimator)
    method = AEVB(_vae(cls, likelihood, **options), estimator=estimator, lr=LR, weight_decay=WEIGHT_DECAY)
    method.step(x, NUM_DATA)
    after_one_step = _store_values()
    losses = [method.step(x, NUM_DATA) for _ in range(3)]
    assert method.uses_fast_path == direct, f"{cls.__name__} should train on the {'direct' if direct else 'SVI'} path"
    assert all(torch.isfinite(torch.tensor(losses))), f"{cls.__name__}: non-finite loss {losses}"
    trained = _store_values()
    _assert_same_params(trained, expected, f"{cls.__name__} through AEVB vs stock SVI")
    for name in (name for name in trained if "$$$" not in name):  # pyro.param sites outside the nets
        assert not torch.equal(trained[name], after_one_step[name]), f"{cls.__name__}: {name} is not being trained"


def _checkpoint(vae, optim_state):
    """What the training loop saves, through torch.save and torch.load as a checkpoint file goes."""
    buffer = io.BytesIO()
    state = {"vae": vae.state_dict(), "param_store": pyro.get_param_store().get_state(), "optim": optim_state}
    torch.save(dict(state, rng=torch.get_rng_state()), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _resume(state, vae, x):
    """What the training loop does on --resume: a fresh model and store, loaded in place."""
    pyro.clear_param_store()
    vae.load_state_dict(state["vae"])
    with torch.random.fork_rng(), pyro.poutine.block():
        vae.guide(x[:1])
        vae.model(x[:1])
    restore_param_store(state["param_store"])
    torch.set_rng_state(state["rng"])
    return vae


@pytest.mark.parametrize("cls", [VAE, MixturePriorVAE], ids=["vae-direct-path", "mixture-prior-svi-path"])
@pytest.mark.parametrize("estimator", ["B", "A"])
def test_resume_gives_the_same_next_steps(cls, estimator):
    x = _data()
    method = AEVB(_vae(cls), estimator=estimator, lr=LR, weight_decay=WEIGHT_DECAY)
    for _ in range(3):
        method.step(x, NUM_DATA)
    state = _checkpoint(method.vae, method.state_dict()["optim"])
    for _ in range(2):
        method.step(x, NUM_DATA)
    expected = _store_values()

    resumed = AEVB(_resume(state, _vae(cls), x), estimator=estimator, lr=LR, weight_decay=WEIGHT_DECAY)
    resumed.load_state_dict({"optim": state["optim"]})
    for _ in range(2):
        resumed.step(x, NUM_DATA)
    _assert_same_params(_store_values(), expected, "resumed vs uninterrupted", rtol=0, atol=0)


@pytest.mark.parametrize(
    "first, second",
    [(pyro.optim.Adagrad, FusedAdagrad), (FusedAdagrad, pyro.optim.Adagrad)],
    ids=["stock-to-fused", "fused-to-stock"],
)
def test_optimizer_state_moves_between_stock_and_fused_adagrad(first, second):
    """A checkpoint written with pyro.optim.Adagrad resumes with FusedAdagrad, and the other way round."""
    x, elbo, settings = _data(), make_elbo(True), {"lr": LR, "weight_decay": WEIGHT_DECAY}
    vae = _vae()
    svi = SVI(vae.model, vae.guide, first(settings), elbo)
    for _ in range(3):
        svi.step(x, NUM_DATA)
    state = _checkpoint(vae, svi.optim.get_state())
    for _ in range(2):
        svi.step(x, NUM_DATA)
    expected = _store_values()

    vae = _resume(state, _vae(), x)
    optim = second(settings)
    optim.set_state(state["optim"])
    svi = SVI(vae.model, vae.guide, optim, elbo)
    for _ in range(2):
        svi.step(x, NUM_DATA)
    _assert_same_params(_store_values(), expected, f"{first.__name__} then {second.__name__}")


def test_fused_adagrad_moves_only_the_given_parameters_and_takes_new_ones():
    """A parameter joins when first seen; one left out of a step keeps its value and its gradient."""
    a = pyro.param("a", torch.ones(3))
    b = pyro.param("b", torch.ones(2))
    optim = FusedAdagrad({"lr": LR, "weight_decay": WEIGHT_DECAY})
    stock = torch.optim.Adagrad([a.detach().clone().requires_grad_()], lr=LR, weight_decay=WEIGHT_DECAY)
    for step in range(3):
        a.grad = torch.full_like(a, 0.5)
        stock.param_groups[0]["params"][0].grad = torch.full_like(a, 0.5)
        b.grad = torch.full_like(b, 0.5)
        optim([a] if step < 2 else [a, b])
        stock.step()
        if step < 2:
            assert torch.equal(b.detach(), torch.ones(2)), "a parameter left out of the step moved"
            assert torch.equal(b.grad, torch.full_like(b, 0.5)), "a parameter left out of the step lost its gradient"
    torch.testing.assert_close(a.detach(), stock.param_groups[0]["params"][0].detach(), **STEP_TOL)
    assert optim.get_state()["b"]["state"][0]["step"] == 1, "the late parameter should have taken one step"


def test_validation_setting_is_left_as_found():
    method = AEVB(_vae(), estimator="B", lr=LR, weight_decay=WEIGHT_DECAY)
    for _ in range(3):
        method.step(_data(), NUM_DATA)
    assert pyro.infer.util.is_validation_enabled(), "AEVB.step changed the global validation setting"


def test_first_step_validates_the_model():
    """The first step runs under the caller's validation setting, so a model's mistakes surface at once."""

    class WrongSupport(VAE):
        def model(self, x, num_data=None):
            pyro.module("decoder", self.decoder)
            with data_plate(x, num_data):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Poisson(self.decoder(z).exp()).to_event(1), obs=x + 0.5)

    method = AEVB(_vae(WrongSupport), estimator="B", lr=LR, weight_decay=WEIGHT_DECAY)
    with pytest.raises(ValueError):
        method.step(_data(), NUM_DATA)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_adagrad_flushes_subnormal_parameters_on_schedule(dtype):
    """Every K steps (by the parameters' own step count), values below the smallest normal float become zero."""
    tiny = torch.finfo(dtype).tiny
    values = [tiny / 8, -tiny / 64, 0.5, tiny, -tiny, -tiny * (1 - torch.finfo(dtype).eps)]  # exact in each type
    w = pyro.param("w", torch.tensor(values, dtype=dtype))
    assert (w[[0, 1, 5]].abs() < tiny).all() and (w[[0, 1, 5]] != 0).all(), "the test's subnormal values"
    optim = FusedAdagrad({"lr": 1e-3}, flush_subnormals_every=2)
    for step in (1, 2):
        w.grad = torch.zeros_like(w)  # a zero gradient and no weight decay: Adagrad leaves w as it is
        optim([w])
        if step == 1:
            assert (w[[0, 1, 5]] != 0).all(), "flushed before the K-th step"
    expected = torch.tensor([0.0, 0.0, 0.5, tiny, -tiny, 0.0], dtype=dtype)
    assert torch.equal(w.detach(), expected), f"after K steps: {w.detach().tolist()}"


@pytest.mark.parametrize("num_particles", [1, 2, 5])
@pytest.mark.parametrize("estimator", ["B", "A"])
def test_fast_path_equals_aevbs_own_svi_path_for_any_number_of_particles(estimator, num_particles):
    """AEVB(fast_path=True) and AEVB(fast_path=False) draw the same numbers in the same order, for every L."""
    x = _data()
    _train_aevb(_vae(), x, estimator, num_particles, steps=20, fast_path=False)
    via_svi = _store_values()
    pyro.clear_param_store()
    method = _train_aevb(_vae(), x, estimator, num_particles, steps=20)
    assert method.uses_fast_path, "a plain VAE should train on the direct path"
    _assert_same_params(_store_values(), via_svi, f"fast path vs AEVB's SVI path, L={num_particles}", rtol=0, atol=1e-4)
