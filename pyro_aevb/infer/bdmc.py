r"""
Bidirectional Monte Carlo [1]: stochastic lower and upper bounds on :math:`\log p_\theta(x)` for data
simulated from the model, whose gap measures the error of annealed importance sampling
(:mod:`pyro_aevb.infer.ais`).

A datapoint drawn from the model together with its latents, :math:`(x, z) \sim p_\theta(x, z)`
(:func:`simulate`), gives an exact draw :math:`z \sim p_\theta(z|x)` from the posterior: the start
of a reverse AIS chain, whose weight is unbiased for :math:`1 / p(x)`. Forward AIS from :math:`p_0`
gives weights unbiased for :math:`p(x)`. So the two bracket :math:`\log p(x)` in expectation
(:func:`bdmc`).

**References**

[1] `Sandwiching the marginal likelihood using bidirectional Monte Carlo`, Roger B. Grosse, Zoubin
Ghahramani, Ryan P. Adams (2015)
"""

import torch

from pyro_aevb._checks import check_whole
from pyro_aevb.infer import ais
from pyro_aevb.infer.importance_weights import log_mean_exp
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.util import trace_model

__all__ = ["bdmc", "simulate"]


def simulate(model, num_points, like_x):
    r"""
    Exact draws :math:`(x^{(i)}, z^{(i)}) \sim p_\theta(x, z)` from ``model``, through
    :func:`pyro.poutine.uncondition`: the observed site that ``model(x)`` conditions on ``x`` itself
    is sampled instead.

    :param callable model: ``model(x)``, as for :func:`~pyro_aevb.infer.marginal.log_marginal_likelihood`.
    :param int num_points: how many datapoints.
    :param torch.Tensor like_x: data ``[N, ...]`` whose row shape, dtype and device the draws take.
    :returns: ``(x [num_points, ...], latents)``, ``latents`` a dict from each of the model's latent
        sites (:class:`~pyro_aevb.infer.sites.LatentSpace`, whatever their names) to its value, one
        row per datapoint, as :func:`bdmc` takes them.
    """
    template = like_x[:1].expand((check_whole("num_points", num_points),) + like_x.shape[1:]).clone()
    space = check_model(model, template)
    observed = space.observed_site("simulate")
    with torch.no_grad():
        trace = trace_model(model, template, uncondition=True)
    # The observed site holds x in any shape of x's size per row (Pyro's tutorial: x.reshape(-1, 784)).
    x = trace.nodes[observed]["value"].reshape(template.shape).to(like_x.dtype)
    return x, {name: trace.nodes[name]["value"] for name in space.names}


def bdmc(model, x, latents, guide=None, *, num_chains=16, num_temps=1000, num_steps=10, schedule="sigmoid",
         pilot_chains=2, pilot_temps=200, chunk_size=None, precision="fp32"):
    r"""
    Bidirectional Monte Carlo [1]: stochastic lower and upper bounds on :math:`\log p_\theta(x^{(i)})`
    for datapoints simulated from the model together with their latents (:func:`simulate`).

    Forward AIS from :math:`p_0` (the prior, or ``guide``) to the posterior gives ``lower``,
    :math:`\log \frac1K \sum_k w_k`, whose expectation is at most :math:`\log p(x)`; reverse AIS from
    the exact posterior draw ``latents`` back to :math:`p_0`, through the same kernels (one step-size
    schedule from one pilot run, independent of both), gives ``upper``,
    :math:`-\log \frac1K \sum_k w'_k`, whose expectation is at least :math:`\log p(x)`. The gap between
    them bounds the error of either in expectation, and shrinks to 0 as ``num_temps`` grows. Both
    directions run in :func:`pyro_aevb.infer.ais.anneal`.

    :param callable model: ``model(x)``.
    :param torch.Tensor x: exact draws from the model ``[B, ...]``.
    :param dict latents: each latent site's name (all of the model's latent sites) to its value, one
        row per datapoint, drawn with ``x`` (as :func:`simulate` returns them).
    :param callable guide: start the forward chains from ``guide(x)`` (and end the reverse ones there).
    :param options: as for ``estimator="ais"`` of :func:`~pyro_aevb.infer.marginal.log_marginal_likelihood`.
    :returns: ``(lower [B], upper [B])``.
    """
    if latents is None:
        raise ValueError("bdmc needs the latents drawn with x (simulate returns them)")
    forward, reverse, _ = ais.anneal(
        model, x, guide, latents, num_chains=num_chains, num_temps=num_temps, num_steps=num_steps, schedule=schedule,
        pilot_chains=pilot_chains, pilot_temps=pilot_temps, chunk_size=chunk_size, precision=precision,
    )
    dtype = torch.get_default_dtype()
    return log_mean_exp(forward.log_weights).to(dtype), -log_mean_exp(reverse.log_weights).to(dtype)
