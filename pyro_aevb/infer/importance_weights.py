r"""
The numerics of the importance-weighted bounds, on log-weights laid out as ``[K, M]``: K particles
(draws :math:`z_k \sim q_\phi(z|x)`) for each of M datapoints, with
:math:`\log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k|x)`.

- :func:`log_mean_exp`: the importance-weighted bound of [1], Eq. (8),
  :math:`\hat{\mathcal{L}}_K(x) = \log \frac1K \sum_{k=1}^K w_k`, per datapoint;
- :func:`normalized_weights`: the self-normalised weights :math:`\tilde w_k = w_k / \sum_j w_j`, per
  datapoint, without gradient;
- :func:`dreg_surrogate`: a surrogate whose gradient in the guide's parameters is the doubly
  reparameterised estimator of [2], Eq. (7), once the gradient reaching each :math:`z_k` is scaled by
  :math:`\tilde w_k` (:func:`scale_grad`);
- :func:`wake_phi_surrogate`: the wake-:math:`\phi` update of reweighted wake-sleep [3].

Nothing here traces a model: :mod:`pyro_aevb.infer.iw_elbo` lays out a Pyro trace's log-densities as
``[K, M]``, and :mod:`pyro_aevb.infer.iwae` writes them out for the library's own VAE.

[1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)

[2] Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, George Tucker, Dieterich
Lawson, Shixiang Gu, Chris J. Maddison (2019)

[3] Reweighted Wake-Sleep, Jörg Bornschein, Yoshua Bengio (2015)
"""

import math

import torch

__all__ = ["dreg_surrogate", "log_mean_exp", "normalized_weights", "scale_grad", "wake_phi_surrogate", "with_gradient_of"]


def log_mean_exp(log_w):
    r"""
    :math:`\log \frac1K \sum_k \exp(\log w_k)` over dim 0, computed stably: ``[K, ...] -> [...]``.
    """
    return log_w.logsumexp(0) - math.log(log_w.shape[0])


def normalized_weights(log_w):
    r""":math:`\tilde w_k = w_k / \sum_j w_j` over dim 0, as constants (no gradient): ``[K, ...]``."""
    return torch.softmax(log_w.detach(), 0)


def dreg_surrogate(log_w, log_q_direct):
    r"""
    A surrogate :math:`\sum_k \tilde w_k (\log w_k + \log q_\phi(\bar z_k|x))` per datapoint, where
    :math:`\bar z_k` is :math:`z_k` without gradient: the second term cancels the direct (score)
    dependence of :math:`\log w_k` on :math:`\phi`, leaving only the path through :math:`z_k`.

    Its gradient in the model's parameters :math:`\theta` is the importance-weighted bound's,
    :math:`\sum_k \tilde w_k \nabla_\theta \log w_k`. Its gradient in :math:`\phi` becomes the
    doubly reparameterised estimator of [2], Eq. (7),
    :math:`\sum_k \tilde w_k^2 \frac{\partial \log w_k}{\partial z_k} \frac{\partial z_k}{\partial \phi}`,
    when the caller scales the gradient that reaches each :math:`z_k` by :math:`\tilde w_k`
    (:func:`scale_grad`) before it flows into :math:`\phi`.

    :param torch.Tensor log_w: ``[K, M]`` log-weights, with gradient through :math:`z_k`.
    :param torch.Tensor log_q_direct: ``[K, M]`` :math:`\log q_\phi(\bar z_k|x)`.
    :returns: ``[M]``.
    """
    return (normalized_weights(log_w) * (log_w + log_q_direct)).sum(0)


def scale_grad(value, weight):
    """
    ``value`` itself, with the gradient that reaches it in a backward pass multiplied by ``weight``
    (broadcast to ``value``'s shape). A no-op for a tensor without gradient.
    """
    if value.requires_grad:
        value.register_hook(lambda grad: grad * weight)
    return value


def wake_phi_surrogate(log_w, log_q):
    r"""
    :math:`\sum_k \tilde w_k \log q_\phi(z_k|x)` per datapoint, whose gradient is the wake-:math:`\phi`
    update of [3]: the draws :math:`z_k` must come without gradient, so that only the density's
    parameters carry one.

    :param torch.Tensor log_w: ``[K, M]`` log-weights (only their values are used).
    :param torch.Tensor log_q: ``[K, M]`` :math:`\log q_\phi(z_k|x)` at the fixed draws.
    :returns: ``[M]``.
    """
    return (normalized_weights(log_w) * log_q).sum(0)


def with_gradient_of(value, surrogate):
    """A tensor with the value of ``value`` and the gradient of ``surrogate`` (same shape, or broadcastable)."""
    return value.detach() + (surrogate - surrogate.detach())
