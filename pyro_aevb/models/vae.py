r"""
The generative model :math:`p_\theta(z) p_\theta(x|z)` and the recognition model :math:`q_\phi(z|x)`
of [1], Section 3, as a Pyro ``model`` and ``guide``.

Both functions take a minibatch ``x`` of shape ``[M, D]`` and the size ``num_data`` of the data set
it was drawn from. They open the plate ``"data"`` of size ``N = num_data`` over the ``M`` rows of the
minibatch, so that every log-density inside carries the scale ``N / M``: the minibatch estimator of
Eq. (8) of [1],

.. math::

    \mathcal{L}(\theta, \phi; X) \simeq \widetilde{\mathcal{L}}^M(\theta, \phi; X^M)
    = \frac{N}{M} \sum_{i=1}^M \widetilde{\mathcal{L}}(\theta, \phi; x^{(i)}).

The latent site is ``"z"`` (event shape ``[z_dim]``) and the observed site is ``"x"`` (event shape
``[x_dim]``). Any model with those two sites inside that plate works with every part of this library:
training (both SGVB estimators, wake-sleep, MCEM), both marginal-likelihood estimators and the plots.
To change the prior or the likelihood, subclass :class:`VAE` and write another ``model``; see
:mod:`pyro_aevb.models.variants` for worked examples.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_aevb.models.closed_forms import PaperVAEClosedForms
from pyro_aevb.models.distributions import LogScaleNormal
from pyro_aevb.models.nets import BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder, flat_rows, loc_and_log_var

__all__ = ["LIKELIHOODS", "VAE", "data_plate"]

LIKELIHOODS = ("bernoulli", "gaussian")


def data_plate(x, num_data=None):
    r"""
    The plate over the datapoints of a minibatch ``x``, with size ``num_data`` so that log-densities
    inside it are scaled by ``num_data / len(x)`` (the :math:`N/M` of Eq. (8) of [1]).

    :param torch.Tensor x: a minibatch, datapoints along dimension 0.
    :param int num_data: the size :math:`N` of the full data set; ``None`` means ``len(x)``
        (scale 1, as when evaluating a bound per datapoint).
    """
    batch_size = x.shape[0]
    size = batch_size if num_data is None else int(num_data)
    if size < batch_size:
        raise ValueError(f"num_data ({size}) is smaller than the minibatch ({batch_size})")
    # The row indices are only counted (for the N/M scale); passing them avoids a random subsample draw.
    return pyro.plate("data", size, subsample=torch.arange(batch_size, device=x.device))


class VAE(nn.Module):
    r"""
    The variational auto-encoder of [1]: a Gaussian MLP encoder and a Bernoulli or Gaussian MLP decoder
    (Appendix C), a standard normal prior :math:`p_\theta(z) = \mathcal{N}(z; 0, I)`, and the Pyro
    functions :meth:`model` and :meth:`guide`.

    :param int x_dim: data dimension D (784 for MNIST, 560 for Frey Face).
    :param int z_dim: latent dimension :math:`N_z`.
    :param hidden_dim: hidden units of both nets (500 for MNIST, 200 for Frey Face in [1]); a sequence
        of ints for several hidden layers (``(200, 200)``, as Burda et al. (2015)).
    :param str likelihood: ``"bernoulli"`` (binary or grey-level data in [0, 1], Appendix C.1) or
        ``"gaussian"`` (real data; the decoder's mean passes through a sigmoid, as for Frey Face).
    :param float init_std: parameters are initialised from :math:`\mathcal{N}(0, \text{init\_std}^2)`.
    :param str activation: the hidden layers' nonlinearity (:data:`~pyro_aevb.models.nets.ACTIVATIONS`;
        the paper's ``"tanh"``).

    Subclasses that change :meth:`model` keep the constructor's arguments; extra constructor arguments
    must be JSON-serialisable keyword arguments, so that :func:`pyro_aevb.load_run` can rebuild them.

    The training methods and annealed importance sampling compute this class's own model and guide in
    closed form, from the nets (:attr:`closed_forms`); a subclass that overrides :meth:`model` or
    :meth:`guide` runs through Pyro's traces instead.
    """

    #: The closed forms of the paper's model (:class:`~pyro_aevb.models.closed_forms.paper_vae.PaperVAEClosedForms`),
    #: the methods' fast paths.
    closed_forms = PaperVAEClosedForms()

    def __init__(self, x_dim, z_dim, hidden_dim, likelihood="bernoulli", init_std=0.01, activation="tanh"):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.x_dim, self.z_dim, self.hidden_dim = x_dim, z_dim, hidden_dim
        self.likelihood = likelihood
        self.init_kwargs = dict(
            x_dim=x_dim, z_dim=z_dim, hidden_dim=hidden_dim, likelihood=likelihood, init_std=init_std,
            activation=activation,
        )
        self.encoder = GaussianMLPEncoder(x_dim, hidden_dim, z_dim, init_std=init_std, activation=activation)
        decoder = BernoulliMLPDecoder if likelihood == "bernoulli" else GaussianMLPDecoder
        self.decoder = decoder(z_dim, hidden_dim, x_dim, init_std=init_std, activation=activation)

    def model(self, x, num_data=None):
        r"""
        The generative model :math:`p_\theta(z)\,p_\theta(x|z)` with :math:`p_\theta(z) = \mathcal{N}(0, I)`.
        For ``"bernoulli"`` the observation may be grey levels in [0, 1]: its log-density is then the
        cross-entropy :math:`\sum_i x_i \log y_i + (1-x_i)\log(1-y_i)` of Eq. (11) of [1].

        :param torch.Tensor x: minibatch of shape ``[M, x_dim]``, or ``[M, ...]`` with ``x_dim`` values a
            row (an image, say), which the nets see flattened.
        :param int num_data: data set size N for the :math:`N/M` scale (``None``: scale 1).
        """
        pyro.module("decoder", self.decoder)
        x = flat_rows(x)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation_dist(z), obs=x)

    def guide(self, x, num_data=None):
        r"""
        The recognition model :math:`q_\phi(z|x) = \mathcal{N}(z; \mu, \sigma^2 I)` of Eq. (9) of [1],
        with :math:`(\mu, \log\sigma^2)` from the Gaussian MLP encoder. The distribution is a
        :class:`~pyro_aevb.models.distributions.LogScaleNormal`, which takes :math:`\log\sigma =
        \frac12 \log\sigma^2` as it is, so that its density and its KL divergence from the prior stay
        finite where :math:`\sigma^2` underflows or overflows float32; no clamp limits the encoder's
        output.
        """
        pyro.module("encoder", self.encoder)
        x = flat_rows(x)
        with data_plate(x, num_data):
            z_loc, z_log_var = loc_and_log_var(self.encoder, x)
            pyro.sample("z", LogScaleNormal(z_loc, 0.5 * z_log_var).to_event(1))

    def observation_dist(self, z):
        r"""
        :math:`p_\theta(x|z)` as a distribution with event shape ``[x_dim]``.

        The Bernoulli skips Pyro's argument validation so that grey-level targets in [0, 1] are allowed;
        the training entry points check the data's support once with
        :func:`pyro_aevb.data.check_support` instead. The Gaussian is a
        :class:`~pyro_aevb.models.distributions.LogScaleNormal` on the decoder's log-variance.
        """
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1)
        x_loc, x_log_var = loc_and_log_var(self.decoder, z)
        return LogScaleNormal(x_loc, 0.5 * x_log_var).to_event(1)

    def sample_prior(self, num_samples):
        """Draw ``z`` from the prior by running :meth:`model` (so a subclass's prior is honoured)."""
        trace = self._trace_model(num_samples)
        return trace.nodes["z"]["value"]

    def decode(self, z):
        """The mean of :math:`p_\\theta(x|z)`, read off :meth:`model` conditioned on ``z``: pixel intensities."""
        trace = self._trace_model(z.shape[0], z=z)
        return trace.nodes["x"]["fn"].mean

    def reconstruct(self, x):
        """Decode the encoder's mean: :math:`E[x | z = \\mu_\\phi(x)]`."""
        z_loc, _ = self.encoder(x)
        return self.decode(z_loc)

    def _trace_model(self, num_samples, z=None):
        x = next(self.parameters()).new_zeros(num_samples, self.x_dim)
        model = self.model if z is None else pyro.poutine.condition(self.model, data={"z": z})
        with pyro.poutine.block():
            return pyro.poutine.trace(model).get_trace(x)
