r"""
Auto-Encoding Variational Bayes, Algorithm 1 of [1], as Pyro's stochastic variational inference.

Each step draws a minibatch :math:`X^M` (the caller does), draws :math:`\epsilon \sim p(\epsilon)` inside
the guide's reparameterised ``"z"`` site, and ascends the gradient of the SGVB estimator
:math:`\widetilde{\mathcal{L}}^M(\theta, \phi; X^M, \epsilon)` with Adagrad:

- ``estimator="B"`` (method ``aevb``, the default): Eq. (7), the KL term in closed form (Eq. (10)
  for the Gaussian case)
  (:class:`~pyro.infer.TraceMeanField_ELBO`; for a prior without a closed-form KL it falls back to
  the Monte Carlo term of estimator A, site by site);
- ``estimator="A"`` (method ``aevb-mc``): Eq. (6), everything by Monte Carlo
  (:class:`~pyro.infer.Trace_ELBO`).

The minibatch scale :math:`N/M` comes from the model's plate (:func:`pyro_aevb.models.vae.data_plate`).
Weight decay is the log prior :math:`\log \mathcal{N}(\theta; 0, \lambda^{-1} I)` of the paper's MAP
objective, counted once for the N datapoints: the loss is the N-scaled negative bound, so adding
:math:`\lambda\theta` to its gradient (Adagrad's ``weight_decay=λ``) is exactly the gradient of
:math:`-\log p(\theta)`. It applies to every parameter, the encoder's included (the paper names a
prior on θ; decaying φ too keeps one objective for all parameters).

**Speed.** Pyro's bookkeeping (tracing, replay, per-site checks, one optimizer per parameter tensor)
costs more per step than the paper's small nets do. So every step uses
:class:`~pyro_aevb.optim.FusedAdagrad` (one optimizer over all parameters), and a model may hand the
method its objective written out, as :class:`~pyro.infer.SVI` is handed its loss: the object whose
``model`` and ``guide`` these are supplies ``closed_forms`` (:func:`~pyro_aevb.infer.util.closed_forms_of`),
whose ``sgvb(estimator, num_particles)`` objective, bound to the model and guide at the first step,
computes the same estimator from the same random draws without tracing. The paper's
:class:`~pyro_aevb.models.vae.VAE` does (:class:`~pyro_aevb.models.closed_forms.paper_vae.PaperVAEClosedForms`);
for any other model, or a pair its closed forms do not compute (a swapped prior, a ``pyro.param`` of
its own), every step runs :class:`~pyro.infer.SVI`. The first step traces the model and the guide under
the caller's validation setting, so that a model's mistakes surface there; later steps run without
Pyro's validation.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import pyro
from pyro.infer import SVI

from pyro_aevb.infer.descent import descend_phases, method_optim
from pyro_aevb.infer.elbo import make_elbo
from pyro_aevb.infer.method import TrainingMethod
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.util import check_num_data, closed_forms_of, model_and_guide, per_datapoint

__all__ = ["AEVB", "PAPER_STEP_SIZES"]

#: Adagrad's global step sizes among which [1] chose, by performance on the training set.
PAPER_STEP_SIZES = (0.01, 0.02, 0.1)


class AEVB(TrainingMethod):
    r"""
    The AEVB training method: :class:`~pyro.infer.SVI` on a Pyro ``model`` and ``guide``, built as
    ``SVI(model, guide, optim, loss)`` is.

    Any model and guide of the class of :mod:`pyro_aevb.infer.sites` train unchanged: site names are
    free, a model may have several latent sites or constrained ones, and it may take the data set size
    as ``num_data`` or not (then :func:`~pyro_aevb.infer.util.per_datapoint` scales it by
    :math:`N/M` with :func:`~pyro.poutine.scale`). The first step checks the pair and names the site
    of any problem (:class:`~pyro_aevb.errors.UnsupportedModelError`).

    :param callable model: the model ``model(x)`` or ``model(x, num_data)``; or an object with
        ``.model`` and ``.guide`` (a :class:`~pyro_aevb.models.vae.VAE`), with ``guide`` left out.
    :param callable guide: the guide, with the same latent sites.
    :param str estimator: ``"B"`` (Eq. (7), analytic KL) or ``"A"`` (Eq. (6)).
    :param float lr: Adagrad's global step size.
    :param int num_particles: L, samples of z per datapoint (the paper: 1).
    :param float weight_decay: precision :math:`\lambda` of the Gaussian prior on the parameters
        (the paper: 1); 0 turns it off.
    :param bool fast_path: allow the estimator written out (see the module's notes), for the paper's
        own :class:`~pyro_aevb.models.vae.VAE`; ``False`` runs :class:`~pyro.infer.SVI` at every step.
        Both give the same parameters up to floating-point rounding, for every ``num_particles``: both
        draw the same random numbers in the same order, since the SVI path is told the model's plate
        nesting (read off the first step's check) instead of guessing it with a run of the model that
        draws numbers of its own.
    :param optim: the optimizer, a :class:`~pyro.optim.PyroOptim` such as
        :func:`pyro_aevb.optim.make_optim` returns (Adam, say); ``None``: Adagrad with ``lr`` and
        ``weight_decay`` (:class:`~pyro_aevb.optim.FusedAdagrad`, the paper's).
    :param closed_form: the objective written out, an object whose ``bind(model, guide, x, num_data)``
        returns the steps (:class:`~pyro_aevb.models.closed_forms.paper_vae.Phase`) or ``None`` where it does not
        compute this pair's; ``None``: the one the model's owner supplies, if any.
    """

    has_encoder = True

    def __init__(self, model, guide=None, *, estimator="B", lr=0.02, num_particles=1, weight_decay=1.0,
                 fast_path=True, optim=None, closed_form=None):
        if estimator not in ("A", "B"):
            raise ValueError(f"estimator must be 'A' or 'B', got {estimator!r}")
        self.estimator = estimator
        elbo = make_elbo(estimator == "B", num_particles)
        self._build(model, guide, elbo, lr, weight_decay, fast_path, optim, closed_form,
                    lambda forms: forms.sgvb(estimator, elbo.num_particles))

    def _build(self, model, guide, elbo, lr, weight_decay, fast_path, optim, closed_form, owners_closed_form):
        """
        The parts every method of this kind shares: the optimizer, :class:`~pyro.infer.SVI` on ``elbo``
        (an object with Pyro's ELBO interface), and the same objective written out, ``closed_form``, or
        else ``owners_closed_form(forms)`` of the closed forms that the model's owner supplies (the fast
        path). ``optim``: as the class's parameter of that name (``None``: the paper's Adagrad with ``lr``
        and ``weight_decay``).
        """
        self.optim = method_optim(lr, weight_decay, optim)
        self.model, self.guide, self.vae = model_and_guide(model, guide)
        self.elbo = elbo
        self.svi = SVI(per_datapoint(self.model), per_datapoint(self.guide), self.optim, self.elbo)
        self.num_particles = self.elbo.num_particles
        self.fast_path = bool(fast_path)
        forms = closed_forms_of(self.model) if closed_form is None and self.fast_path else None
        self.closed_form = owners_closed_form(forms) if forms is not None else closed_form
        self._first_step = True
        self._phases = None  # the closed form's steps, once the first step has bound it

    @property
    def uses_fast_path(self):
        """Whether the steps compute the objective written out rather than through SVI (known after the first)."""
        return self._phases is not None

    def step(self, x, num_data=None, *, idx=None):
        r"""
        One step on the minibatch ``x``, called as :meth:`SVI.step <pyro.infer.SVI.step>` is, with the
        model's own arguments: ``num_data`` (the data set's size :math:`N`) is passed on to a model that
        takes it, and scales the others' log-densities by :math:`N/M`; without it the scale is 1.

        :param torch.Tensor x: the minibatch ``[M, ...]``.
        :param int num_data: the data set's size :math:`N` (``None``: scale 1).
        :param idx: the rows' indices in the data set; not used (accepted as every method's step does).
        :returns: the loss, :math:`-\widetilde{\mathcal{L}}^M`, scaled to the whole data set.
        """
        num_data = check_num_data(x, num_data)
        if self._first_step:
            self._first_step = False
            # Under the caller's validation setting: a model's mistakes surface at the first step.
            nesting = check_model(self.model, x, self.guide).max_plate_nesting
            # As Pyro's own guess counts it: one more plate for the vectorised particles.
            self.elbo.max_plate_nesting = nesting + int(self.elbo.vectorize_particles and self.num_particles > 1)
            if self.fast_path and self.closed_form is not None:
                self._phases = self.closed_form.bind(self.model, self.guide, x, num_data)
            if self._phases is None:
                return self.svi.step(x, num_data)
        with pyro.validation_enabled(False):
            if self._phases is None:
                return self.svi.step(x, num_data)
            return descend_phases(self.optim, self._phases, x, num_data)
