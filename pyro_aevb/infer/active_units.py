r"""
Active units of a trained encoder, by the criterion of Burda, Grosse & Salakhutdinov (2015),
"Importance Weighted Autoencoders", Section 5.2: latent dimension :math:`u` is active when

.. math:: A_u = \mathrm{Cov}_x\big(E_{q(z|x)}[z_u]\big) > 10^{-2},

the variance over the data of the guide's posterior mean. A unit whose mean does not move with
:math:`x` carries no information about the datapoint, whatever the decoder does with it.
"""

import pyro
import torch

from pyro_aevb._checks import check_whole

__all__ = ["ACTIVITY_THRESHOLD", "active_units", "unit_activity"]

#: Burda et al.'s threshold on :math:`\mathrm{Cov}_x(E_q[z_u])`.
ACTIVITY_THRESHOLD = 1e-2


def unit_activity(guide, x, site="z", batch_size=1000):
    r"""
    :math:`A_u = \mathrm{Cov}_x(E_{q(z|x)}[z_u])` for every dimension :math:`u` of the guide's latent
    site: the population variance, over the rows of ``x``, of the mean of the site's distribution.

    :param guide: a Pyro guide ``guide(x)`` whose sample site ``site`` has a distribution with a
        ``mean`` of shape ``[M, z_dim]`` for a minibatch of ``M`` rows.
    :param torch.Tensor x: the data, one datapoint per row (Burda et al. use the test set).
    :param str site: the latent site's name.
    :param int batch_size: rows traced at a time.
    :returns: a tensor of shape ``[z_dim]``.
    :raises ValueError: for fewer than two rows, or a guide without the site.
    """
    check_whole("batch_size", batch_size, 1)
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 2:
        raise ValueError(f"x must be a tensor with at least two rows, got {getattr(x, 'shape', type(x).__name__)}")
    means = []
    with torch.no_grad(), pyro.poutine.block():
        for start in range(0, x.shape[0], batch_size):
            trace = pyro.poutine.trace(guide).get_trace(x[start:start + batch_size])
            if site not in trace.nodes or trace.nodes[site]["type"] != "sample":
                found = [name for name, node in trace.nodes.items() if node["type"] == "sample"]
                raise ValueError(f"the guide has no sample site {site!r}; its sample sites: {found}")
            means.append(trace.nodes[site]["fn"].mean.reshape(min(batch_size, x.shape[0] - start), -1))
    return torch.cat(means).double().var(0, unbiased=False).to(x.dtype)


def active_units(guide, x, site="z", threshold=ACTIVITY_THRESHOLD, batch_size=1000):
    r"""
    The number of active units of the guide on ``x``: dimensions with :func:`unit_activity` above
    ``threshold`` (Burda et al.'s :math:`10^{-2}`).

    :returns: an ``int``.
    """
    if not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    return int((unit_activity(guide, x, site, batch_size) > threshold).sum())
