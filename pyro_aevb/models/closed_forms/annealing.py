r"""
The paper's VAE along annealed importance sampling's path (:mod:`pyro_aevb.infer.ais`): the prior,
the likelihood and the guide's Gaussian written out from the nets, and for the Bernoulli decoder the
gradients too, instead of traces of the model at every leapfrog step.
"""

import torch
import torch.nn.functional as F

from pyro_aevb.models.closed_forms.densities import log_likelihood, log_normal, log_std_normal
from pyro_aevb.models.nets import hidden_layers, loc_and_log_var

__all__ = ["GaussianGuidePath", "PaperVAEPath"]


class GaussianGuidePath:
    r"""
    The guide of a :class:`~pyro_aevb.models.vae.VAE` along annealed importance sampling's path: its
    Gaussian :math:`q(z|x)` from the encoder, once per chunk of datapoints, in closed form; the model's
    densities are left to the general path.

    :ivar x: the datapoints.
    :ivar direct_guide: the encoder's :math:`(\mu, \log\sigma^2)` ``[B, D]``.
    """

    model_densities = None  #: the model's densities are traced
    gradients = None  #: by autograd
    bf16 = False  #: no bfloat16 products

    def __init__(self, x, direct_guide):
        self.x, self.direct_guide = x, direct_guide

    def log_guide(self, u):
        """:math:`\\log q(u|x)` ``[C, B]`` at the states ``u`` ``[C, B, D]``."""
        return log_normal(u, *self.direct_guide)


class PaperVAEPath(GaussianGuidePath):
    r"""
    The paper's VAE along annealed importance sampling's path, for the ``B`` datapoints ``x``
    (flattened): its latent ``"z"`` takes any real value, so the states ``u`` ``[C, B, D]`` are ``z``
    itself, and the prior :math:`\mathcal{N}(0, I)`, the likelihood and the guide's Gaussian are written
    out from the nets, without tracing the model at each leapfrog step. For its Bernoulli decoder,
    :math:`\log p(x|z) = x \cdot \ell - \sum_j \mathrm{softplus}(\ell_j)` with the logits
    :math:`\ell = W h + b`, whose first term is :math:`h \cdot (W^\top x) + b \cdot x` with
    :math:`W^\top x` computed once per datapoint; with chains from the prior or from the VAE's own
    guide, the gradients are written out too (:meth:`fused_gradients`).

    With ``precision="bf16"``, the gradients of the inner leapfrog steps of that decoder take their
    matrix products in bfloat16 (:meth:`fused_gradients`); every density, and the gradient at the
    ends of each trajectory, stays in float32.

    :param VAE vae: the model.
    :param torch.Tensor x: the datapoints ``[B, x_dim]``.
    :param bool own_guide: the chains start from the VAE's own guide (its Gaussian in closed form).
    :param bool from_prior: the chains start from the prior.
    :param bool fused: the decoder is the library's Bernoulli MLP
        (:meth:`~pyro_aevb.models.closed_forms.paper_vae.PaperVAEClosedForms.fused_bernoulli`).
    :param str precision: ``"fp32"`` or ``"bf16"``.
    :ivar gradients: :meth:`fused_gradients`, or ``None`` (autograd through the densities).
    :ivar bool bf16: whether the inner steps take bfloat16 products.
    """

    def __init__(self, vae, x, own_guide, from_prior, fused, precision="fp32"):
        self.vae, self.x = vae, x
        self.direct_guide = None
        self._x_proj = None
        self.gradients = None
        self._bf16 = None  # the decoder's weights in bfloat16, for precision="bf16"
        with torch.no_grad():
            if own_guide:
                self.direct_guide = loc_and_log_var(vae.encoder, x)
            if fused:
                last = vae.decoder.loc
                self._x_proj = (x @ last.weight, x @ last.bias)  # [B, H] and [B]
                if from_prior or self.direct_guide is not None:
                    # The hidden layers, first to last, as (weight, bias).
                    self._layers = [(layer.weight, layer.bias) for layer in hidden_layers(vae.decoder)]
                    # The bias as one more column of the weights, against a column of ones after h: the
                    # logits in one product, without addmm's copy of the bias into every row.
                    self._w_bias = torch.cat([last.weight, last.bias[:, None]], 1)  # [X, H + 1]
                    self._x_proj_bias = x @ self._w_bias  # [B, H + 1]: (W^T x, b . x)
                    self.gradients = self.fused_gradients
                    if precision == "bf16":
                        self._bf16 = ([(w.bfloat16(), b.bfloat16()) for w, b in self._layers],
                                      self._w_bias.bfloat16(), last.weight.bfloat16())
        self.bf16 = self._bf16 is not None

    def model_densities(self, u):
        """``(log_prior, log_joint)`` ``[C, B]`` at the states ``u`` ``[C, B, D]``."""
        log_prior = log_std_normal(u)
        return log_prior, log_prior + self._log_lik(u)

    def _log_lik(self, z):
        if self._x_proj is None:
            return log_likelihood(self.vae, z, self.x)
        decoder = self.vae.decoder
        h = decoder.features(z)
        x_weight, x_bias = self._x_proj
        return (h * x_weight).sum(-1) + x_bias - F.softplus(decoder.loc(h)).sum(-1)

    def fused_gradients(self, u, values=True):
        r"""
        ``(log_p0, log_joint, grad_log_p0, grad_log_joint)`` at ``u`` ``[C, B, D]`` for the paper's VAE
        with its Bernoulli decoder of tanh layers, the gradients written out: with the hidden layers
        :math:`h_l = \tanh(W_l h_{l-1} + b_l)`, :math:`h_0 = z`, and the logits :math:`\ell = W h_L + b`,
        :math:`\nabla_{h_L} \log p(x|z) = W^\top (x - \sigma(\ell))` and, layer by layer down to
        :math:`z`, :math:`\nabla_{h_{l-1}} = W_l^\top ((1 - h_l^2) \odot \nabla_{h_l})`: one sigmoid per
        pixel and no softplus; the softplus of the log-likelihood only with ``values``.
        """
        with torch.no_grad():  # no graph through the parameters
            if self._bf16 is not None and not values:
                return None, None, self._guide_grad(u), self._bf16_grad(u) - u
            return self._fused_terms(u, values)

    @staticmethod
    def _forward(u, layers):
        """The hidden layers' activations ``[h_1, ..., h_L]`` at ``u``."""
        hs = []
        for weight, bias in layers:
            u = torch.tanh(F.linear(u, weight, bias))
            hs.append(u)
        return hs

    def _backward(self, grad_h, hs, layers):
        """:math:`\nabla_z` from :math:`\nabla_{h_L}` ``grad_h``, down through the tanh layers (the last product in float32)."""
        for (weight, _), h in zip(layers[:0:-1], hs[:0:-1]):
            grad_h = (grad_h * (1 - h.square())) @ weight
        grad_h = grad_h.float() * (1 - hs[0].float().square())
        return grad_h @ self._layers[0][0]

    def _bf16_grad(self, u):
        r"""
        :math:`\nabla_z \log p(x|z)` with the products in bfloat16 (AMX), for the inner leapfrog steps.
        Any force that is a function of the position alone keeps the leapfrog map volume-preserving and,
        used alike at the inner steps of every trajectory, reversible; the energies of the accept test
        and the weights are float32. So the chains and the weights stay exact; only the acceptance rate
        can fall.
        """
        layers, w_bias, w_last = self._bf16
        hs = self._forward(u.bfloat16(), layers)
        grad_h = self._x_proj[0] - (torch.sigmoid_(F.pad(hs[-1], (0, 1), value=1.0) @ w_bias.T) @ w_last).float()
        if len(layers) > 1:
            grad_h = grad_h.bfloat16()
        return self._backward(grad_h, hs, layers)

    def _guide_grad(self, u):
        if self.direct_guide is None:
            return -u
        loc, log_var = self.direct_guide
        return (loc - u) * torch.exp(-log_var)

    def _fused_terms(self, u, values):
        hs = self._forward(u, self._layers)
        h_one = F.pad(hs[-1], (0, 1), value=1.0)  # [C, B, H + 1]
        logits = h_one @ self._w_bias.T
        log_lik = (h_one * self._x_proj_bias).sum(-1) - F.softplus(logits).sum(-1) if values else None
        grad_h = self._x_proj[0] - torch.sigmoid_(logits) @ self.vae.decoder.loc.weight
        grad_lik = self._backward(grad_h, hs, self._layers)
        grad_p0 = self._guide_grad(u)
        if not values:
            log_p0 = None
        elif self.direct_guide is None:
            log_p0 = log_std_normal(u)
        else:
            log_p0 = self.log_guide(u)
        log_joint = log_std_normal(u) + log_lik if values else None
        return log_p0, log_joint, grad_p0, grad_lik - u
