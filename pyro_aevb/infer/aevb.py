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
:class:`~pyro_aevb.optim.FusedAdagrad` (one optimizer over all parameters), and when ``vae`` is a
:class:`~pyro_aevb.models.vae.VAE` whose ``model`` and ``guide`` are the class's own (its likelihood,
:meth:`~pyro_aevb.models.vae.VAE.observation_dist`, may be swapped), every step computes the same estimator in
closed form (:func:`~pyro_aevb.infer.sgvb.sgvb_loss`) from the same random draws, instead of tracing the
model and the guide. Any other model (a swapped prior, a ``pyro.param`` of its own) trains through
:class:`~pyro.infer.SVI`. The first step traces the model and the guide under the caller's validation
setting, so that a model's mistakes surface there; later steps run without Pyro's validation.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import functools

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI

from pyro_aevb.infer.elbo import _cuda_devices, make_elbo
from pyro_aevb.infer.method import TrainingMethod
from pyro_aevb.optim import FusedAdagrad
from pyro_aevb.infer.sgvb import sgvb_loss
from pyro_aevb.infer.sites import check_model, check_num_data, model_and_guide, paper_vae, per_datapoint

__all__ = ["AEVB", "PAPER_STEP_SIZES"]

#: Adagrad's global step sizes among which [1] chose, by performance on the training set.
PAPER_STEP_SIZES = (0.01, 0.02, 0.1)


class AEVB(TrainingMethod):
    r"""
    The AEVB training method: :class:`~pyro.infer.SVI` on a Pyro ``model`` and ``guide``, built as
    ``SVI(model, guide, optim, loss)`` is.

    Any model and guide of the class of :mod:`pyro_aevb.infer.sites` train unchanged: site names are
    free, a model may have several latent sites or constrained ones, and it may take the data set size
    as ``num_data`` or not (then :func:`~pyro_aevb.infer.sites.per_datapoint` scales it by
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
    :param bool fast_path: allow the direct computation of the estimator for the paper's own
        :class:`~pyro_aevb.models.vae.VAE` (see the module's notes); ``False`` runs :class:`~pyro.infer.SVI`
        at every step. Both give the same parameters up to floating-point rounding, for every
        ``num_particles``: both draw the same random numbers in the same order, since the SVI path is
        told the model's plate nesting (read off the first step's check) instead of guessing it with a
        run of the model that draws numbers of its own.
    :param optim: the optimizer, a :class:`~pyro.optim.PyroOptim` such as
        :func:`pyro_aevb.optim.make_optim` returns (Adam, say); ``None``: Adagrad with ``lr`` and
        ``weight_decay`` (:class:`~pyro_aevb.optim.FusedAdagrad`, the paper's).
    """

    has_encoder = True

    def __init__(self, model, guide=None, *, estimator="B", lr=0.02, num_particles=1, weight_decay=1.0,
                 fast_path=True, optim=None):
        if estimator not in ("A", "B"):
            raise ValueError(f"estimator must be 'A' or 'B', got {estimator!r}")
        self.estimator = estimator
        elbo = make_elbo(estimator == "B", num_particles)
        direct_loss = functools.partial(sgvb_loss, estimator=estimator, num_particles=elbo.num_particles)
        self._build(model, guide, elbo, direct_loss, lr, weight_decay, fast_path, optim)

    def _build(self, model, guide, elbo, direct_loss, lr, weight_decay, fast_path, optim=None):
        """
        The parts every method of this kind shares: the optimizer, :class:`~pyro.infer.SVI` on ``elbo``
        (an object with Pyro's ELBO interface), and ``direct_loss(vae, x, num_data)``, the same objective
        written out for the paper's own :class:`~pyro_aevb.models.vae.VAE` (the fast path). ``optim``: as the
        class's parameter of that name (``None``: the paper's Adagrad with ``lr`` and ``weight_decay``).
        """
        _check_optim(lr, weight_decay)
        self.model, self.guide, self.vae = model_and_guide(model, guide)
        self.optim = FusedAdagrad({"lr": lr, "weight_decay": weight_decay}) if optim is None else optim
        self.elbo = elbo
        self.svi = SVI(per_datapoint(self.model), per_datapoint(self.guide), self.optim, self.elbo)
        self.num_particles = self.elbo.num_particles
        self.fast_path = bool(fast_path)
        self._direct_loss = direct_loss
        self._first_step = True
        self._params = None  # the trained tensors on the direct path, once the first step has found them

    @property
    def uses_fast_path(self):
        """Whether the steps compute the estimator in closed form rather than through SVI (known after the first)."""
        return self._params is not None

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
            vae = paper_vae(self.model, self.guide) if self.fast_path else None
            self._params = _direct_params(vae, x, num_data) if vae is not None else None
            if self._params is None:
                return self.svi.step(x, num_data)
        with pyro.validation_enabled(False):
            if self._params is None:
                return self.svi.step(x, num_data)
            return self._direct_step(x, num_data)

    def _direct_step(self, x, num_data):
        loss = self._direct_loss(self.vae, x, num_data)
        loss.backward()
        self.optim(self._params)
        for p in self._params:
            p.grad = None
        return loss.item()

    def state_dict(self):
        return {"optim": self.optim.get_state()}

    def load_state_dict(self, state):
        self.optim.set_state(state["optim"])


def _direct_params(vae, x, num_data):
    """
    The parameters :func:`sgvb_loss` trains, in Pyro's param store, if it computes ``vae``'s objective:
    ``vae`` is the paper's own :class:`~pyro_aevb.models.vae.VAE` (:func:`~pyro_aevb.infer.sites.paper_vae`);
    its sites must be exactly ``"z"`` and ``"x"``, and its parameters those of its modules (no
    ``pyro.param`` of its own). ``None`` otherwise.
    """
    with torch.random.fork_rng(devices=_cuda_devices(x)), torch.no_grad():
        with poutine.block():
            guide_trace = poutine.trace(vae.guide).get_trace(x, num_data)
            model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, num_data)
    traces = [poutine.util.prune_subsample_sites(trace) for trace in (model_trace, guide_trace)]
    sites = {
        kind: {name for trace in traces for name, site in trace.nodes.items() if site["type"] == kind}
        for kind in ("sample", "param")
    }
    if sites["sample"] != {"z", "x"}:
        return None
    store = pyro.get_param_store()
    params = [store[name].unconstrained() for name in sorted(sites["param"])]
    own = [p for p in vae.parameters() if p.requires_grad]
    if {id(p) for p in params} != {id(p) for p in own} or len(params) != len(own):
        return None
    return params


def _check_optim(lr, weight_decay):
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr} and {weight_decay}")
