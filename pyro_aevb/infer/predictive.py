r"""
What a trained model shows of itself, for any model of the class of :mod:`pyro_aevb.infer.sites` with
one observed site: the mean of :math:`p_\theta(x|z)` at given latents (:func:`decode`), at the
recognition model's means (:func:`reconstruct`, :math:`E[x | z = \mu_\phi(x)]`) and at draws from the
prior (:func:`sample_means`): the panels of Figure 5 and the manifolds of Figure 4 of [1].

Everything is read off the model's own trace, so a swapped prior or likelihood, and site names of the
user's choice, are honoured.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import torch

from pyro_aevb.infer.sites import LatentSpace
from pyro_aevb.infer.util import trace_model

__all__ = ["decode", "reconstruct", "sample_means"]


def _observed_mean(space, trace, x_like):
    fn = trace.nodes[space.observed_site("reconstructions and samples")]["fn"]
    try:
        mean = fn.mean
    except NotImplementedError:  # a distribution without a closed-form mean: a draw instead
        mean = fn.sample()
    return mean.reshape(x_like.shape)


def decode(model, values, x_like):
    r"""
    The mean of :math:`p_\theta(x|z)` at the latents ``values`` (a dict of the latent sites' values, one
    row per datapoint), shaped like ``x_like`` (whose values are not used).
    """
    space = LatentSpace.from_model(model, x_like)
    with torch.no_grad():
        return _observed_mean(space, trace_model(model, x_like, data=values), x_like)


def reconstruct(model, guide, x):
    r"""
    :math:`E[x | z = \mu_\phi(x)]`: the model's mean at the recognition model's mean of each latent site
    (a draw, for a guide distribution without a closed-form mean).
    """
    space = LatentSpace.from_model(model, x, guide)
    with torch.no_grad():
        guide_trace = trace_model(guide, x)
        values = {}
        for name in space.names:
            fn = guide_trace.nodes[name]["fn"]
            try:
                values[name] = fn.mean.expand_as(guide_trace.nodes[name]["value"])
            except NotImplementedError:
                values[name] = guide_trace.nodes[name]["value"]
        return _observed_mean(space, trace_model(model, x, data=values), x)


def sample_means(model, num_samples, x_like):
    r"""
    The means of :math:`p_\theta(x|z)` for ``num_samples`` draws :math:`z \sim p_\theta(z)`, shaped like
    ``num_samples`` rows of ``x_like``.
    """
    x = x_like.new_zeros((num_samples,) + tuple(x_like.shape[1:]))
    space = LatentSpace.from_model(model, x)
    with torch.no_grad():
        return _observed_mean(space, trace_model(model, x), x)
