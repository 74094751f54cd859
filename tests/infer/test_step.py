"""
The methods step as :meth:`pyro.infer.SVI.step` does: ``step(x)`` with the model's own arguments,
``num_data`` passed on to a model that takes it (scale 1 without it), ``idx`` a keyword the methods
that keep per-datapoint state (MCEM) need.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.infer.elbo import make_elbo
from pyro_aevb.infer.mcem import MCEM, ImportanceMCEM
from pyro_aevb.infer.wake_sleep import WakeSleep
from pyro_aevb.models.vae import VAE

X_DIM, Z_DIM, HIDDEN, ROWS = 6, 2, 5, 8


def _x():
    return torch.bernoulli(torch.rand(ROWS, X_DIM, generator=torch.Generator().manual_seed(1)))


def _model(x):
    """A model without num_data: the method scales it by N/M."""
    loc = pyro.param("loc", torch.zeros(X_DIM))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(loc + z.unsqueeze(-1), 1.0).to_event(1), obs=x)


def _guide(x):
    scale = pyro.param("scale", torch.ones(()), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0]), scale))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "svi"])
def test_aevb_step_without_num_data_has_scale_one(fast_path):
    """The first step's loss is the negative ELBO of the minibatch alone (scale 1), from the same draws."""
    x = _x()
    vae = VAE(X_DIM, Z_DIM, HIDDEN)
    pyro.set_rng_seed(3)
    expected = make_elbo(True).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    loss = AEVB(vae, lr=1e-3, weight_decay=0.0, fast_path=fast_path).step(x)
    # float32 sums of 48 terms along two paths: rounding of order 1e-6 relative.
    assert loss == pytest.approx(expected, rel=1e-5)


def test_num_data_scales_a_model_without_it():
    """num_data=N multiplies the loss of a model that does not take it by N/M (same draws)."""
    x = _x()
    pyro.set_rng_seed(3)
    unscaled = AEVB(_model, _guide, lr=1e-3, weight_decay=0.0).step(x)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    scaled = AEVB(_model, _guide, lr=1e-3, weight_decay=0.0).step(x, num_data=5 * ROWS)
    assert scaled == pytest.approx(5 * unscaled, rel=1e-5)


@pytest.mark.parametrize("method", [AEVB, WakeSleep], ids=["aevb", "wake-sleep"])
def test_idx_is_accepted_and_ignored(method):
    """Methods without per-datapoint state take idx and ignore it: the same loss with and without it."""
    x = _x()
    losses = []
    for idx in (None, torch.arange(ROWS)):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vae = VAE(X_DIM, Z_DIM, HIDDEN)
        pyro.set_rng_seed(3)
        losses.append(method(vae).step(x, num_data=40, idx=idx))
    assert losses[0] == losses[1]


def test_old_positional_order_is_refused():
    """Indices given where num_data goes are refused by name, not read as a data set size."""
    with pytest.raises(TypeError, match="idx=rows"):
        AEVB(VAE(X_DIM, Z_DIM, HIDDEN)).step(_x(), torch.arange(ROWS))


def test_mcem_needs_idx():
    """MCEM keeps a chain per datapoint: without the rows' indices it says so."""
    vae = VAE(X_DIM, Z_DIM, HIDDEN)
    with pytest.raises(ValueError, match="rows' indices"):
        MCEM(vae.model).step(_x(), num_data=40)
    with pytest.raises(ValueError, match="one whole-number index per row"):
        MCEM(vae.model).step(_x(), num_data=40, idx=torch.arange(ROWS - 1))
    assert isinstance(MCEM(vae.model).step(_x(), num_data=40, idx=torch.arange(ROWS)), float)


def test_importance_mcem_steps_without_idx():
    """The importance-sampled E-step draws afresh at every step, so it needs no indices."""
    vae = VAE(X_DIM, Z_DIM, HIDDEN)
    assert isinstance(ImportanceMCEM(vae.model).step(_x()), float)


def test_num_data_smaller_than_minibatch_is_refused():
    with pytest.raises(ValueError, match="smaller than the minibatch"):
        AEVB(VAE(X_DIM, Z_DIM, HIDDEN)).step(_x(), num_data=ROWS - 1)
