import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_aevb.infer import active_units, unit_activity
from pyro_aevb.models import VAE


def linear_guide(scales):
    """q(z|x) = N(x * scales, 1) for scalar data x: unit u's mean moves with x by scales[u]."""
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[:, :1] * scales, 1.0).to_event(1))
    return guide


def test_unit_activity_is_the_variance_of_the_posterior_mean():
    # x = +1 and -1 in equal numbers: the population variance of x * s is s^2 exactly. Units 2 and 4
    # ignore the datapoint; unit 3 moves just under Burda et al.'s threshold 1e-2, unit 1 just over.
    scales = torch.tensor([1.0, 0.11, 0.0, 0.09, 0.0])
    x = torch.tensor([[1.0], [-1.0]]).repeat(50, 1)
    activity = unit_activity(linear_guide(scales), x, batch_size=7)  # batches that split the +/- pairs
    assert torch.allclose(activity, scales ** 2, atol=1e-6), activity
    assert active_units(linear_guide(scales), x) == 2
    assert active_units(linear_guide(scales), x, threshold=0.0) == 3


def test_vae_units_whose_mean_ignores_x_are_inactive():
    """The VAE's encoder with the mean head's weights of units 0, 2, 4 zeroed: exactly those are inactive."""
    torch.manual_seed(0)
    vae = VAE(784, 6, (20, 20), init_std=0.5)
    x = torch.rand(200, 784)
    with torch.no_grad():
        vae.encoder.loc.weight[[0, 2, 4]] = 0.0  # their mean is the bias alone, the same for every x
    activity = unit_activity(vae.guide, x)
    assert torch.all(activity[[0, 2, 4]] == 0), activity
    assert torch.all(activity[[1, 3, 5]] > 1e-2), activity
    assert active_units(vae.guide, x) == 3


@pytest.mark.parametrize("x, match", [(torch.zeros(1, 3), "two rows"), (torch.zeros(4, 3), "no sample site 'w'")])
def test_bad_input_is_named(x, match):
    with pytest.raises(ValueError, match=match):
        unit_activity(linear_guide(torch.ones(2)), x, site="w" if x.shape[0] > 1 else "z")
