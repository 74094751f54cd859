r"""
A normal distribution parameterised by its log-scale, for densities that stay finite where
:math:`\sigma^2 = \exp(\log\sigma^2)` does not.

The encoder of [1] (and the Gaussian decoder) outputs :math:`\log\sigma^2`. Turning it into
:math:`\sigma` and taking the log again inside :class:`~pyro.distributions.Normal` loses it at the
ends of float32's range: at :math:`\log\sigma^2 = -120`, :math:`\sigma^2` underflows to 0 and
Normal's log-density and its closed-form KL divergence become infinite, although the true values are
ordinary numbers. :class:`LogScaleNormal` uses :math:`\log\sigma` wherever the formulas hold it:

.. math::

    \log \mathcal{N}(z; \mu, \sigma^2) = -\tfrac12 \epsilon^2 - \log\sigma - \tfrac12\log 2\pi,
    \qquad \epsilon = (z - \mu)\, e^{-\log\sigma},

    D_{KL}(\mathcal{N}(\mu, \sigma^2) \,\|\, \mathcal{N}(m, s^2)) = \tfrac12 \left(
        e^{2(\log\sigma - \log s)} + \left(\tfrac{\mu - m}{s}\right)^2 - 1 - 2(\log\sigma - \log s)\right)

(Appendix B of [1] for :math:`m = 0, s = 1`, registered with :func:`torch.distributions.kl.register_kl`
so that :class:`~pyro.infer.TraceMeanField_ELBO` uses it). ``rsample`` draws
:math:`z = \mu + \sigma\epsilon` with the same call on the random stream as ``Normal.rsample``, and
remembers its :math:`\epsilon`: ``log_prob`` of the value it returned uses that :math:`\epsilon`
exactly instead of recovering it as :math:`(z - \mu)/\sigma`, which loses it (and its gradient) when
:math:`\sigma` is tiny. The density is finite for :math:`\log\sigma` down to about -88 (float32's
``exp(88)``) for any value, and for any finite :math:`\log\sigma` at the values it drew itself.
What is still out of range is the variance itself: :math:`\log\sigma^2 \gtrsim 88` overflows
:math:`\sigma^2` in float32, the KL divergence is infinite, and training stops with
:class:`~pyro_aevb.errors.TrainingDiverged`.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import register_kl
from torch.distributions.utils import broadcast_all

__all__ = ["HALF_LOG_2PI", "LogScaleNormal"]

#: :math:`\frac12 \log 2\pi`, the log-normaliser of a standard normal, per dimension.
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class LogScaleNormal(dist.Normal):
    r"""
    :math:`\mathcal{N}(\mu, \sigma^2)` with :math:`\log\sigma` as its parameter. It is a
    :class:`~pyro.distributions.Normal` (``scale`` is :math:`\exp(\log\sigma)`, which may underflow
    to 0 or overflow without harm to ``log_prob``, ``rsample``, ``entropy`` and the KL divergence).

    :param torch.Tensor loc: :math:`\mu`.
    :param torch.Tensor log_scale: :math:`\log\sigma` (half the log-variance), any real number.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}

    def __init__(self, loc, log_scale, validate_args=None):
        loc, log_scale = broadcast_all(loc, log_scale)
        self.log_scale = log_scale
        self._drawn = None  # (value, eps) of the last rsample
        super().__init__(loc, log_scale.exp(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """The distribution broadcast to ``batch_shape``, its log-scale with it."""
        new = self._get_checked_instance(LogScaleNormal, _instance)
        new.log_scale = self.log_scale.expand(torch.Size(batch_shape))
        new._drawn = None
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()  # as Normal.rsample
        value = self.loc + eps * self.scale
        self._drawn = (value, eps)
        return value

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if self._drawn is not None and value is self._drawn[0]:
            eps = self._drawn[1]
        else:
            eps = (value - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * eps**2 - self.log_scale - HALF_LOG_2PI

    def entropy(self):
        return 0.5 + HALF_LOG_2PI + self.log_scale


def _kl_log_scale(p_loc, p_log_scale, q_loc, q_log_scale):
    log_ratio = p_log_scale - q_log_scale
    return 0.5 * (torch.exp(2 * log_ratio) + ((p_loc - q_loc) * torch.exp(-q_log_scale)) ** 2 - 1) - log_ratio


@register_kl(LogScaleNormal, torch.distributions.Normal)
def _kl_log_scale_normal_normal(p, q):
    return _kl_log_scale(p.loc, p.log_scale, q.loc, q.scale.log())


@register_kl(LogScaleNormal, LogScaleNormal)
def _kl_log_scale_normal_log_scale_normal(p, q):
    return _kl_log_scale(p.loc, p.log_scale, q.loc, q.log_scale)

