r"""
Auto-Encoding Variational Bayes, Algorithm 1 of [1], as Pyro's stochastic variational inference.

Each step draws a minibatch :math:`X^M` (the caller does), draws :math:`\epsilon \sim p(\epsilon)` inside
the guide's reparameterised ``"z"`` site, and ascends the gradient of the SGVB estimator
:math:`\widetilde{\mathcal{L}}^M(\theta, \phi; X^M, \epsilon)` with Adagrad:

- ``estimator="B"`` (method ``aevb``, the default): Eq. (10), the KL term in closed form
  (:class:`~pyro.infer.TraceMeanField_ELBO`; for a prior without a closed-form KL it falls back to
  the Monte Carlo term of estimator A, site by site);
- ``estimator="A"`` (method ``aevb-mc``): Eq. (7), everything by Monte Carlo
  (:class:`~pyro.infer.Trace_ELBO`).

The minibatch scale :math:`N/M` comes from the model's plate (:func:`pyro_aevb.vae.data_plate`).
Weight decay is the log prior :math:`\log \mathcal{N}(\theta; 0, \lambda^{-1} I)` of the paper's MAP
objective, counted once for the N datapoints: the loss is the N-scaled negative bound, so adding
:math:`\lambda\theta` to its gradient (Adagrad's ``weight_decay=λ``) is exactly the gradient of
:math:`-\log p(\theta)`. It applies to every parameter, the encoder's included, as in the paper.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import pyro.optim
from pyro.infer import SVI

from .evaluate import make_elbo

__all__ = ["AEVB", "PAPER_STEP_SIZES"]

#: Adagrad's global step sizes among which [1] chose, by performance on the training set.
PAPER_STEP_SIZES = (0.01, 0.02, 0.1)


class AEVB:
    r"""
    The AEVB training method: :class:`~pyro.infer.SVI` on ``vae.model`` and ``vae.guide``.

    :param vae: an object with Pyro functions ``model(x, num_data)`` and ``guide(x, num_data)``.
    :param str estimator: ``"B"`` (Eq. (10), analytic KL) or ``"A"`` (Eq. (7)).
    :param float lr: Adagrad's global step size.
    :param int num_particles: L, samples of z per datapoint (the paper: 1).
    :param float weight_decay: precision :math:`\lambda` of the Gaussian prior on the parameters
        (the paper: 1); 0 turns it off.
    """

    has_encoder = True

    def __init__(self, vae, estimator="B", lr=0.02, num_particles=1, weight_decay=1.0):
        if estimator not in ("A", "B"):
            raise ValueError(f"estimator must be 'A' or 'B', got {estimator!r}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr} and {weight_decay}")
        self.vae = vae
        self.optim = pyro.optim.Adagrad({"lr": lr, "weight_decay": weight_decay})
        self.elbo = make_elbo(analytic_kl=estimator == "B", num_particles=num_particles)
        self.svi = SVI(vae.model, vae.guide, self.optim, self.elbo)

    def step(self, x, idx, num_data):
        """
        One Adagrad step on the minibatch ``x`` (rows ``idx`` of a data set of size ``num_data``).

        :returns: the loss, :math:`-\\widetilde{\\mathcal{L}}^M`, scaled to the whole data set.
        """
        return self.svi.step(x, num_data)

    def state_dict(self):
        return {"optim": self.optim.get_state()}

    def load_state_dict(self, state):
        self.optim.set_state(state["optim"])
