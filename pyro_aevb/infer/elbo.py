r"""
The per-datapoint variational lower bound :math:`\mathcal{L}(\theta, \phi; x)` of Eq. (3) of [1],
evaluated in nats on a whole data set, with Pyro's own ELBO estimators.

With ``analytic_kl=True`` it is estimator B (Eq. (7); Eq. (10) for the Gaussian case) through
:class:`~pyro.infer.TraceMeanField_ELBO`, which falls back to the Monte Carlo estimate for any site
whose KL divergence has no closed form; with ``analytic_kl=False`` it is estimator A (Eq. (6)) through
:class:`~pyro.infer.Trace_ELBO`. Both are unbiased, so every training method (AEVB, wake-sleep) is
measured by the same code.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013), arXiv:1312.6114v10;
    equation numbers follow that version.
"""

import contextlib

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_aevb.infer.util import cuda_devices

__all__ = ["lower_bound", "make_elbo"]


def make_elbo(analytic_kl=True, num_particles=1, max_plate_nesting=None):
    """
    :param bool analytic_kl: estimator B (Eq. (7), analytic KL) if True, else estimator A (Eq. (6)).
    :param int num_particles: L, the number of samples of z per datapoint.
    :param int max_plate_nesting: the model's deepest plate nesting, where the caller knows it
        (:class:`~pyro_aevb.infer.aevb.AEVB` reads it off the first step's check of the model).
        ``None`` lets Pyro guess it when it needs it (``L > 1``), by running the guide and the model
        once at the first step: that run draws random numbers, so the steps that follow draw other
        ones than with the number given.
    :returns: a Pyro ELBO object.
    """
    if int(num_particles) != num_particles or num_particles < 1:
        raise ValueError(f"num_particles must be a positive integer, got {num_particles}")
    if max_plate_nesting is not None and (int(max_plate_nesting) != max_plate_nesting or max_plate_nesting < 0):
        raise ValueError(f"max_plate_nesting must be a non-negative integer or None, got {max_plate_nesting}")
    cls = TraceMeanField_ELBO if analytic_kl else Trace_ELBO
    nesting = {} if max_plate_nesting is None else {"max_plate_nesting": int(max_plate_nesting)}
    return cls(num_particles=int(num_particles), vectorize_particles=num_particles > 1, **nesting)


def lower_bound(model, guide, x, num_particles=1, analytic_kl=True, chunk_size=2000, seed=None):
    r"""
    Mean over the rows of ``x`` of the lower bound :math:`\mathcal{L}(\theta, \phi; x^{(i)})`, in nats.

    :param callable model: a Pyro model called as ``model(x)`` or ``model(x, num_data)``. Its sites are
        read off its trace, under any names: Pyro's ELBO scores every sample site of the model and the guide.
    :param callable guide: the matching guide, drawing the model's latent sites.
    :param torch.Tensor x: data of shape ``[N, ...]``, one datapoint a row, in the shape the model takes.
    :param int num_particles: samples of z per datapoint (L).
    :param bool analytic_kl: use estimator B where a closed-form KL exists.
    :param int chunk_size: datapoints per forward pass, to bound memory.
    :param int seed: if given, the estimate uses its own random stream seeded with ``seed`` and
        leaves the global one untouched, so evaluating inside a training loop does not change training.
    :returns: a Python float.
    """
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have shape [N, ...] with N > 0 datapoints, got {tuple(x.shape)}")
    elbo = make_elbo(analytic_kl, num_particles)
    rng = torch.random.fork_rng(devices=cuda_devices(x)) if seed is not None else contextlib.nullcontext()
    total = 0.0
    with rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for chunk in torch.split(x, chunk_size):
            total -= elbo.loss(model, guide, chunk)
    return total / x.shape[0]
