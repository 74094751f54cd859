r"""
The importance-weighted bound of [1] per datapoint, as an ELBO for :class:`~pyro.infer.SVI`:

.. math::

    \mathcal{L}_K(\theta, \phi; X^M) = \frac{N}{M} \sum_{i=1}^M
        \log \frac1K \sum_{k=1}^K \frac{p_\theta(x^{(i)}, z^{(i,k)})}{q_\phi(z^{(i,k)}|x^{(i)})},
    \qquad z^{(i,k)} \sim q_\phi(z|x^{(i)}).

It is the ELBO at K = 1 and tends to :math:`\log p_\theta(x)` as K grows. The K particles are one
batched run of the guide and the model in a plate (as Pyro's ``vectorize_particles=True`` runs
them). Each datapoint's log-weight is the sum of its sites' log-densities over the plates nested in
the data plate; the log-mean-exp is taken per datapoint, and the plate's scale :math:`N/M` multiplies
the per-datapoint bounds afterwards.

Why not :class:`pyro.infer.RenyiELBO` with ``alpha=0``: it takes one log-sum-exp over the particles of
the whole minibatch (as if the model had one global latent), and under subsampling it multiplies the
log-weights by :math:`N/M` before it; both give another number (``tests/infer/test_iwae.py`` shows it).
NumPyro's ``RenyiELBO`` keeps the bounds per datapoint (pyro-ppl/numpyro#1608); this follows that design.

[1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)

[2] Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, George Tucker, Dieterich
Lawson, Shixiang Gu, Chris J. Maddison (2019)
"""

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import prune_subsample_sites
from pyro.infer.util import torch_item

from pyro_aevb._checks import check_choice, check_whole
from pyro_aevb.errors import UnsupportedModelError
from pyro_aevb.infer.importance_weights import dreg_surrogate, log_mean_exp, normalized_weights, scale_grad, with_gradient_of

__all__ = ["GRADIENTS", "ImportanceWeightedELBO", "ParticleLayout", "particle_traces"]

#: The gradient estimators of :class:`ImportanceWeightedELBO`.
GRADIENTS = ("reparam", "dreg")
_PARTICLES = "num_particles_vectorized"


def particle_traces(model, guide, args, kwargs, num_particles, max_plate_nesting, rescore=False):
    """
    The guide's and the model's traces on ``num_particles`` particles at once, in a plate at dim
    ``-(max_plate_nesting + 1)``, without subsample sites, their log-densities computed.

    :param bool rescore: draw the particles without gradient and score the guide again at them (its
        parameters with gradient, its draws without), as reweighted wake-sleep needs; else the
        model runs on the guide's draws with their gradients (reparameterised where the guide's
        distributions allow).
    :returns: ``(model_trace, guide_trace)``.
    """
    particles = pyro.plate(_PARTICLES, num_particles, dim=-(max_plate_nesting + 1))
    model, guide = particles(model), particles(guide)
    model_trace, guide_trace = get_importance_trace(
        "flat", max_plate_nesting + 1, model, guide, args, kwargs, detach=rescore
    )
    if rescore:
        # Run again at the fixed draws, so that a site's density is a function of phi alone even where
        # its parameters depend on an earlier site's draw.
        guide_trace = prune_subsample_sites(poutine.trace(poutine.replay(guide, trace=guide_trace)).get_trace(*args, **kwargs))
        guide_trace.compute_log_prob()
    return model_trace, guide_trace


def _sample_sites(trace):
    return [(name, site) for name, site in trace.nodes.items() if site["type"] == "sample"]


def _frames(site):
    return {f for f in site["cond_indep_stack"] if f.vectorized and f.name != _PARTICLES}


def _scale_value(name, scale):
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise UnsupportedModelError(
                f"site {name!r} has a scale per element; the importance-weighted bound needs one scale for the minibatch"
            )
        return scale.item()
    return float(scale)


class ParticleLayout:
    r"""
    How the log-densities of a pair of :func:`particle_traces` fall into ``[K, M]``: K particles by
    the M entries of the plates that every sample site (latent, observed, factor; model and guide)
    shares, the data plate and any plate shared with it. Dims of plates nested inside are summed.

    :ivar float scale: the scale that every site carries (the data plate's :math:`N/M`, or that of
        :func:`~pyro.poutine.scale`), applied after the log-mean-exp.
    :raises UnsupportedModelError: naming the site, for a site outside the data plate (a global
        latent, a latent ``pyro.param`` with a prior), a subsampled plate that not every site is in,
        or sites with different scales.
    """

    def __init__(self, model_trace, guide_trace, num_particles, max_plate_nesting):
        sites = _sample_sites(model_trace) + [(n, s) for n, s in _sample_sites(guide_trace) if not s["is_observed"]]
        frames = {name: _frames(site) for name, site in sites}
        shared = set.intersection(*frames.values()) if frames else set()
        if not shared:
            counts = {}
            for fs in frames.values():
                for f in fs:
                    counts[f] = counts.get(f, 0) + 1
            if not counts:
                raise UnsupportedModelError("no plate over the data: the importance-weighted bound is per datapoint")
            plate = max(counts, key=lambda f: (counts[f], -f.dim))
            outside = [name for name, fs in frames.items() if plate not in fs]
            raise UnsupportedModelError(
                f"site {outside[0]!r} lies outside the plate {plate.name!r} over the data (sites outside it: {outside}): "
                "the importance-weighted bound is per datapoint and needs every site, latent or observed, in the data "
                "plate; a global latent (or a pyro.param with a prior) has no per-datapoint weight"
            )
        for name, fs in frames.items():
            for f in fs - shared:
                if f.full_size is not None and f.full_size != f.size:
                    raise UnsupportedModelError(
                        f"site {name!r} is in the plate {f.name!r}, subsampled ({f.size} of {f.full_size}), which not "
                        "every site shares: its N/M scale cannot be taken out of the per-datapoint log-weights"
                    )
        scales = {name: _scale_value(name, site["scale"]) for name, site in sites}
        first = next(iter(scales))
        for name, scale in scales.items():
            if not math.isclose(scale, scales[first], rel_tol=1e-6):
                raise UnsupportedModelError(
                    f"site {name!r} has scale {scale:g}, site {first!r} {scales[first]:g}: the importance-weighted "
                    "bound needs one scale for every site (subsample only plates that every site shares)"
                )
        self.scale = scales[first]
        self.num_particles = num_particles
        self.nesting = max_plate_nesting + 1  # the particles' plate is the outermost, at dim -nesting
        shape = [num_particles] + [1] * max_plate_nesting
        for f in shared:
            shape[f.dim] = f.size
        self.shape = torch.Size(shape)  # the batch shape that [K, M] lays out
        self._summed = [d for d in range(-max_plate_nesting, 0) if d not in {f.dim for f in shared}]

    def reduce(self, log_prob):
        """A site's log-density (batch-shaped) summed over the dims of unshared plates: ``[K, M]``."""
        extra = log_prob.dim() - self.nesting
        if extra > 0:
            raise UnsupportedModelError(f"a log-density has batch shape {tuple(log_prob.shape)}, more dims than the plates")
        log_prob = log_prob.reshape((1,) * -extra + log_prob.shape)
        if self._summed:
            log_prob = log_prob.sum(self._summed, keepdim=True)
        return log_prob.expand(self.shape).reshape(self.num_particles, -1)

    def expand(self, per_datapoint, event_dim=0):
        """``[K, M]`` back in the batch layout of the sites (with ``event_dim`` trailing dims of size 1)."""
        return per_datapoint.reshape(self.shape + (1,) * event_dim)

    def log_density(self, trace, names=None):
        """The unscaled (masked) log-densities of ``trace``'s sample sites (or of ``names``), summed per ``[K, M]``."""
        total = 0.0
        for name, site in _sample_sites(trace):
            if names is None or name in names:
                total = total + self.reduce(scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"]))
        return total


def _latents(guide_trace):
    return [(name, site) for name, site in _sample_sites(guide_trace) if not site["is_observed"]]


class ImportanceWeightedELBO(ELBO):
    r"""
    The importance-weighted bound :math:`\mathcal{L}_K` of [1] (Eq. (8)) per datapoint, with Pyro's
    ELBO interface: ``SVI(model, guide, optim, loss=ImportanceWeightedELBO(5))``. The loss is
    :math:`-\frac{N}{M}\sum_i \hat{\mathcal{L}}_K(x^{(i)})`, the scale read off the sites.

    Any model of :mod:`pyro_aevb.infer.sites` works: free site names, several or constrained latent
    sites, plates nested inside the data plate, a model that takes ``num_data`` or is scaled with
    :func:`~pyro.poutine.scale`. At ``num_particles=1`` the value and the gradients are those of
    :class:`~pyro.infer.Trace_ELBO` on the same draws.

    :param int num_particles: K, particles per datapoint.
    :param str gradient: ``"reparam"``: the gradient of the estimate, reparameterised (for a guide site
        without ``rsample``, the score-function term :math:`\sum_k \nabla_\phi \log q(z_k|x)\,
        \hat{\mathcal{L}}_K(x)` per datapoint, its direct term with :math:`1/K - \tilde w_k` in place of
        :math:`-\tilde w_k`, which has the same mean: at K = 1, Trace_ELBO's gradient); ``"dreg"``: for the
        guide's parameters, the
        doubly reparameterised estimator of [2], unbiased, whose variance does not grow with K (the
        model's parameters keep the reparameterised gradient). ``"dreg"`` needs reparameterised guide
        sites, each drawn independently of the guide's other latent sites given the data.
    :param int max_plate_nesting: the model's deepest plate nesting, without the particles' plate;
        guessed by a run of the model and guide when not given.

    .. warning:: Every sample site must lie in the data plate, and only plates that every site
        shares may be subsampled: a global latent, or a subsampled plate around some sites only, has
        no per-datapoint weight, and is refused (:class:`~pyro_aevb.errors.UnsupportedModelError`,
        naming the site) rather than given a wrong number.
    """

    def __init__(self, num_particles=5, gradient="reparam", max_plate_nesting=float("inf")):
        check_whole("num_particles", num_particles, 1)
        check_choice("gradient", gradient, GRADIENTS)
        if max_plate_nesting != float("inf"):
            check_whole("max_plate_nesting", max_plate_nesting, 0)
        super().__init__(num_particles=int(num_particles), max_plate_nesting=max_plate_nesting,
                         strict_enumeration_warning=False)
        self.gradient = gradient
        self._dreg_checked = False

    def _get_trace(self, model, guide, args, kwargs):
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        return particle_traces(model, guide, args, kwargs, self.num_particles, self.max_plate_nesting)

    def _surrogate(self, model, guide, args, kwargs):
        """The traces, and ``(value, surrogate)``: :math:`\\sum_i \\hat{\\mathcal{L}}_K` and the tensor to differentiate."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        layout = ParticleLayout(model_trace, guide_trace, self.num_particles, self.max_plate_nesting)
        latents = _latents(guide_trace)
        log_p = layout.log_density(model_trace)
        log_w = log_p - layout.log_density(guide_trace, {name for name, _ in latents})
        bound = log_mean_exp(log_w)
        if not torch.is_grad_enabled():
            return model_trace, guide_trace, layout.scale * bound.sum(), None
        if self.gradient == "dreg":
            surrogate = self._dreg(layout, latents, log_p)
        else:
            surrogate = bound
            unreparam = [name for name, site in latents if not site["fn"].has_rsample]
            if unreparam:
                # Score-function term, with 1/K - w_k in place of -w_k on the direct dependence of log w_k
                # on phi (the same mean, as E[grad log q] = 0): at K = 1 exactly Trace_ELBO's gradient.
                log_q = layout.log_density(guide_trace, set(unreparam))
                surrogate = surrogate + (log_q * (bound.detach() + 1.0 / self.num_particles)).sum(0)
        return model_trace, guide_trace, layout.scale * bound.sum(), layout.scale * surrogate.sum()

    def _dreg(self, layout, latents, log_p):
        for name, site in latents:
            if not site["fn"].has_rsample:
                raise UnsupportedModelError(
                    f"guide site {name!r} ({type(site['fn']).__name__}) is not reparameterised: "
                    "gradient='dreg' needs rsample at every guide site; use gradient='reparam'"
                )
        if not self._dreg_checked:
            self._check_independent(latents)
        log_q, log_q_direct = 0.0, 0.0
        for name, site in latents:
            value, fn, mask = site["value"], site["fn"], site["mask"]
            # At a new view of the draw: a distribution that recognises its own draw (a cached transform,
            # LogScaleNormal) would take a shortcut that has no gradient through the value.
            log_q = log_q + layout.reduce(scale_and_mask(fn.log_prob(value.view_as(value)), 1.0, mask))
            log_q_direct = log_q_direct + layout.reduce(scale_and_mask(fn.log_prob(value.detach()), 1.0, mask))
        log_w = log_p - log_q
        weights = normalized_weights(log_w)
        for name, site in latents:
            scale_grad(site["value"], layout.expand(weights, len(site["fn"].event_shape)))
        return dreg_surrogate(log_w, log_q_direct)

    def _check_independent(self, latents):
        """DReG's path derivative holds only for guide sites drawn independently of each other's draws."""
        values = [site["value"] for _, site in latents]
        for j, (name, site) in enumerate(latents[1:], 1):
            earlier = [v for v in values[:j] if v.requires_grad]
            if not earlier or not values[j].requires_grad:
                continue
            grads = torch.autograd.grad(values[j].sum(), earlier, retain_graph=True, allow_unused=True)
            if any(g is not None for g in grads):
                raise UnsupportedModelError(
                    f"guide site {name!r} depends on an earlier latent draw of the guide: gradient='dreg' supports "
                    "guides whose latent sites are independent given the data; use gradient='reparam'"
                )
        self._dreg_checked = True

    def loss(self, model, guide, *args, **kwargs):
        """:returns: the estimate of :math:`-\\mathcal{L}_K` (N-scaled), a float."""
        with torch.no_grad():
            return -torch_item(self._surrogate(model, guide, args, kwargs)[2])

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """:returns: :math:`-\\mathcal{L}_K` as a tensor whose gradient is the chosen estimator's."""
        _, _, value, surrogate = self._surrogate(model, guide, args, kwargs)
        return -(value if surrogate is None else with_gradient_of(value, surrogate))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss as :meth:`loss` returns it, having accumulated the estimator's gradients in the parameters."""
        model_trace, guide_trace, value, surrogate = self._surrogate(model, guide, args, kwargs)
        trainable = any(site["type"] == "param" for trace in (model_trace, guide_trace) for site in trace.nodes.values())
        if trainable and surrogate is not None and surrogate.requires_grad:
            (-surrogate).backward(retain_graph=self.retain_graph)
        return -torch_item(value)
