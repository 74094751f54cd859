r"""
Worked swaps of the prior :math:`p_\theta(z)` and the likelihood :math:`p_\theta(x|z)` of [1].

Each class changes the generative model of :class:`~pyro_aevb.models.vae.VAE` and nothing else: the
recognition model (the ``guide``), the encoder, the training methods, both lower-bound estimators
and both marginal-likelihood estimators work unchanged, because they only rely on the sample sites
``"z"`` and ``"x"`` inside the plate of :func:`~pyro_aevb.models.vae.data_plate`. [1] derives AEVB for any
directed model with continuous latent variables (Section 2) and presents the Gaussian VAE as one
example (Section 3); the recognition model must stay reparameterisable (Section 2.4), the model need
only have a differentiable density.

- The priors (:class:`LaplacePriorVAE`, :class:`MixturePriorVAE`) override
  :meth:`VAE.model <pyro_aevb.models.vae.VAE.model>`, where the line that draws ``"z"`` lives.
- The likelihoods (:class:`ContinuousBernoulliVAE`, :class:`StudentTVAE`) override
  :meth:`VAE.observation_dist <pyro_aevb.models.vae.VAE.observation_dist>`, the one method that
  :meth:`VAE.model <pyro_aevb.models.vae.VAE.model>` calls for :math:`p_\theta(x|z)`, so that the model
  and everything else that reads the likelihood agree.

Use any of them by name, e.g. ``TrainConfig(model_class="pyro_aevb.models.variants:MixturePriorVAE",
model_options={"num_components": 10})`` or ``pyro-aevb train --model-class
pyro_aevb.models.variants:LaplacePriorVAE``.

**References**

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)

[2] The continuous Bernoulli: fixing a pervasive error in variational autoencoders,
Gabriel Loaiza-Ganem, John P. Cunningham (2019)
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyro_aevb.models.vae import VAE, data_plate

__all__ = ["ContinuousBernoulliVAE", "LaplacePriorVAE", "MixturePriorVAE", "StudentTVAE"]


class LaplacePriorVAE(VAE):
    r"""
    A VAE with the prior :math:`p(z) = \prod_j \mathrm{Laplace}(z_j; 0, 1)`. The one changed line of
    :meth:`model`::

        z = pyro.sample("z", dist.Laplace(x.new_zeros(self.z_dim), 1.0).to_event(1))

    PyTorch registers the KL divergence from a Normal to a Laplace in closed form, so estimator B
    (:class:`~pyro.infer.TraceMeanField_ELBO`, Eq. (7) of [1]) still computes the KL term
    analytically, as it does for the standard normal prior.
    """

    def model(self, x, num_data=None):
        pyro.module("decoder", self.decoder)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Laplace(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation_dist(z), obs=x)


class MixturePriorVAE(VAE):
    r"""
    A VAE whose prior is a learnable mixture of :math:`K` diagonal Gaussians,

    .. math::

        p_\theta(z) = \sum_{k=1}^K \pi_k \, \mathcal{N}(z; \mu_k, \mathrm{diag}\,\sigma_k^2),

    with :math:`\mu_k`, :math:`\sigma_k` (constrained positive) and the logits of :math:`\pi` among
    the generative parameters :math:`\theta`. The changed lines of :meth:`model`::

        z = pyro.sample("z", self.prior(x))

    where :meth:`prior` builds a :class:`~pyro.distributions.MixtureSameFamily` from three
    ``pyro.param`` sites. A Normal guide has no closed-form KL divergence to a mixture, so estimator B
    (:class:`~pyro.infer.TraceMeanField_ELBO`) falls back to the Monte Carlo term
    :math:`\log p_\theta(z) - \log q_\phi(z|x)` of estimator A (Eq. (6) of [1]) for ``"z"``.

    :param int num_components: :math:`K`; the other arguments are those of :class:`~pyro_aevb.models.vae.VAE`.

    .. warning:: The prior's parameters ``prior_locs``, ``prior_scales`` and ``prior_logits`` live in
        Pyro's global parameter store, not in the module: two instances in one process share them,
        and :func:`pyro_aevb.train` (which clears the store) resets them. Evaluate a trained
        instance before training another, or reload it with :func:`pyro_aevb.load_run`.
    """

    def __init__(self, x_dim, z_dim, hidden_dim, likelihood="bernoulli", init_std=0.01, num_components=10):
        if int(num_components) != num_components or num_components < 1:
            raise ValueError(f"num_components must be a positive integer, got {num_components}")
        super().__init__(x_dim, z_dim, hidden_dim, likelihood=likelihood, init_std=init_std)
        self.num_components = int(num_components)
        self.init_kwargs["num_components"] = self.num_components

    def prior(self, x):
        r"""
        :math:`p_\theta(z)` as a distribution with event shape ``[z_dim]``, on the device of ``x``.
        The component means start at :math:`\mathcal{N}(0, I)` draws (the mixture then starts close to
        the standard normal prior), the scales at 1 and the weights equal.
        """
        shape = (self.num_components, self.z_dim)
        locs = pyro.param("prior_locs", lambda: torch.randn(shape, device=x.device))
        scales = pyro.param("prior_scales", lambda: x.new_ones(shape), constraint=constraints.positive)
        logits = pyro.param("prior_logits", lambda: x.new_zeros(self.num_components))
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))

    def model(self, x, num_data=None):
        pyro.module("decoder", self.decoder)
        prior = self.prior(x)
        with data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.observation_dist(z), obs=x)


class ContinuousBernoulliVAE(VAE):
    r"""
    A VAE with the continuous Bernoulli likelihood of [2] for grey-level data in :math:`[0, 1]`
    (MNIST with ``binarize="none"``):

    .. math::

        p_\theta(x|z) = \prod_i C(\lambda_i)\, \lambda_i^{x_i} (1 - \lambda_i)^{1 - x_i},
        \qquad \lambda = \mathrm{sigmoid}(\text{decoder}(z)).

    The Bernoulli cross-entropy of Eq. (11) of [1] applied to grey levels is this density without
    its normaliser :math:`C(\lambda)`; with it, the bound is a lower bound on the log-density of
    the grey-level data. The changed line of :meth:`observation_dist`::

        return dist.ContinuousBernoulli(logits=self.decoder(z)).to_event(1)

    It uses the Bernoulli decoder's logits, so it needs ``likelihood="bernoulli"`` (the default for
    MNIST). Densities on :math:`[0, 1]^D` can exceed 1: the bounds are typically positive.
    """

    def __init__(self, x_dim, z_dim, hidden_dim, likelihood="bernoulli", init_std=0.01):
        if likelihood != "bernoulli":
            raise ValueError(
                f"ContinuousBernoulliVAE needs the logits decoder, likelihood='bernoulli'; got {likelihood!r}"
            )
        super().__init__(x_dim, z_dim, hidden_dim, likelihood=likelihood, init_std=init_std)

    def observation_dist(self, z):
        return dist.ContinuousBernoulli(logits=self.decoder(z)).to_event(1)


class StudentTVAE(VAE):
    r"""
    A VAE with a Student-t likelihood for real-valued data (Frey Face): the Gaussian decoder of the
    paper (Appendix C.2), mean through a sigmoid and scale from the log-variance head, read as the
    location and scale of a Student-t distribution with :math:`\nu` degrees of freedom,

    .. math::

        p_\theta(x|z) = \prod_i \mathrm{StudentT}(x_i; \nu, \mu_i, \sigma_i),
        \qquad (\mu, \log\sigma^2) = \text{decoder}(z).

    Heavier tails than the Gaussian make the fit less sensitive to outlying pixels. The changed
    lines of :meth:`observation_dist`::

        x_loc, x_scale = self.decoder(z)
        return dist.StudentT(self.df(z), x_loc, x_scale).to_event(1)

    It uses the Gaussian decoder's two heads, so it needs ``likelihood="gaussian"`` (the default for
    Frey Face).

    :param float df: a fixed :math:`\nu > 1`, or ``None`` (default) to learn one :math:`\nu`, shared by
        all pixels, as the ``pyro.param`` site ``"x_df"`` (constrained to :math:`\nu > 1`, started at
        5); the other arguments are those of :class:`~pyro_aevb.models.vae.VAE`.

    .. note:: :math:`\nu > 1` keeps the mean :math:`E[x|z] = \mu` defined, which the reconstructions
        and samples plot.
    """

    def __init__(self, x_dim, z_dim, hidden_dim, likelihood="gaussian", init_std=0.01, df=None):
        if likelihood != "gaussian":
            raise ValueError(
                f"StudentTVAE needs the two-headed decoder, likelihood='gaussian'; got {likelihood!r}"
            )
        if df is not None and not float(df) > 1:
            raise ValueError(f"df must be greater than 1 (or None to learn it), got {df}")
        super().__init__(x_dim, z_dim, hidden_dim, likelihood=likelihood, init_std=init_std)
        self.fixed_df = None if df is None else float(df)
        self.init_kwargs["df"] = self.fixed_df

    def df(self, z):
        """The degrees of freedom :math:`\\nu`, a scalar tensor on the device of ``z``."""
        if self.fixed_df is not None:
            return z.new_tensor(self.fixed_df)
        return pyro.param("x_df", lambda: z.new_tensor(5.0), constraint=constraints.greater_than(1.0))

    def observation_dist(self, z):
        x_loc, x_scale = self.decoder(z)
        return dist.StudentT(self.df(z), x_loc, x_scale).to_event(1)
