r"""
The class of models that every method and estimator of this library accepts, read off the model's
trace rather than off names: Section 2 of [1], a directed model with continuous latent variables
per datapoint, :math:`p_\theta(x, z) = \prod_i p_\theta(z^{(i)}) p_\theta(x^{(i)}|z^{(i)})`.

For a model called on a minibatch ``x`` of ``B`` rows:

- the **data plate** is the outermost vectorised plate whose size is ``B`` (its ``subsample`` may
  give it a full size ``N``, as :func:`~pyro_aevb.models.vae.data_plate` does); plates nested inside
  it (over pixels, say) are allowed, and their log-densities are summed per datapoint;
- the **latent sites** are the unobserved sample sites inside the data plate, in the order the model
  draws them (a hierarchy :math:`z_1 \to z_2 \to x` has two); each datapoint's latents are the
  concatenation of its sites, flattened;
- the **observed sites** are the sites with ``obs``.

A latent with constrained support (a Gamma or Beta latent, say) is moved to the unconstrained space
through ``biject_to(site["fn"].support)`` and its log-Jacobian, as Pyro's own HMC does
(``pyro.infer.mcmc.util.initialize_model``), so that HMC and every estimator work in
:math:`\mathbb{R}^D`.

A model outside this class is refused with :class:`UnsupportedModelError`, naming the site and the
problem: a global latent outside the data plate, a discrete latent, no plate over the data, a guide
that lacks a latent site or has an extra one, a latent whose batch shape is not one entry per
datapoint.

A model may take the size ``N`` of the data set as a ``num_data`` argument, and scale its plate by
``N/M`` itself; a model that takes only ``x`` is scaled by Pyro's :func:`~pyro.poutine.scale`
(:func:`~pyro_aevb.infer.util.per_datapoint`).

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import contextlib

import pyro
import torch
from pyro.distributions.util import sum_rightmost
from torch.distributions import biject_to, constraints

from pyro_aevb.errors import UnsupportedModelError
from pyro_aevb.infer.util import cuda_devices, per_datapoint, trace_model

__all__ = ["LatentSpace", "check_model"]


def check_model(model, x, guide=None):
    """
    Check ``model`` (and ``guide``) on the minibatch ``x``, as the methods do at their first step, without
    drawing from the global random stream or leaving parameters in Pyro's param store.

    :returns: the :class:`LatentSpace`; its ``max_plate_nesting`` is the deepest plate nesting of both.
    :raises UnsupportedModelError: naming the site and the problem.
    """
    # Leave no trace either: the parameters that the check's run creates are removed again, so that
    # the first step creates them as it would have (a pyro.param initialised with random numbers draws
    # them from the global stream, at the point where the method's own run reaches it).
    store = pyro.get_param_store()
    before = set(store.keys())
    try:
        with torch.random.fork_rng(devices=cuda_devices(x)):
            return LatentSpace.from_model(model, x, guide)
    finally:
        for name in set(store.keys()) - before:
            # Pyro's store maps each tensor back to one name: a module registered under two names
            # (pyro.module("a", net); pyro.module("b", net)) loses that entry with the first deletion.
            with contextlib.suppress(KeyError):
                del store[name]


def _max_plate_nesting(trace):
    dims = [-frame.dim for _, site in _sample_sites(trace) for frame in site["cond_indep_stack"] if frame.vectorized]
    return max(dims, default=0)


def _name(fn):
    fn = getattr(fn, "__wrapped_fn__", fn)
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _is_factor(site):
    """``pyro.factor`` and ``pyro.deterministic`` sites: observed, but no observation of the data."""
    infer = site.get("infer") or {}
    return infer.get("_deterministic", False) or type(site["fn"]).__name__ == "Unit"


def _sample_sites(trace):
    return [(name, site) for name, site in trace.nodes.items() if site["type"] == "sample"]


def _data_frame(trace, batch_size, fn_name):
    """The outermost vectorised plate of size ``batch_size`` among the sample sites of ``trace``."""
    best = None
    for name, site in _sample_sites(trace):
        for depth, frame in enumerate(site["cond_indep_stack"]):
            if frame.vectorized and frame.size == batch_size and (best is None or depth < best[0]):
                best = (depth, frame)
    if best is None:
        plates = sorted({f"{f.name!r} (size {f.size})" for _, s in _sample_sites(trace) for f in s["cond_indep_stack"]})
        found = f"its plates: {', '.join(plates)}" if plates else "it opens no plate"
        raise UnsupportedModelError(
            f"{fn_name}: no plate over the data: expected a vectorised pyro.plate of size {batch_size} "
            f"(the rows of x) around the latent and observed sites; {found}"
        )
    return best[1]


def _unconstraining(name, fn):
    """``biject_to`` of the site's support (a mixture's support is that of its components)."""
    support = fn.support
    while isinstance(support, constraints.MixtureSameFamilyConstraint):
        support = support.base_constraint
    try:
        return biject_to(support)
    except NotImplementedError:
        raise UnsupportedModelError(
            f"latent site {name!r}: no bijection to the real numbers is registered for its support {support}"
        ) from None


def _in_frame(site, frame):
    return any(f.name == frame.name and f.dim == frame.dim for f in site["cond_indep_stack"])


class LatentSpace:
    r"""
    The latent sites of a model per datapoint, as one unconstrained vector each.

    Built by :meth:`from_model` from one trace of the model on a minibatch. For ``x`` of ``B`` rows,
    :meth:`pack` turns the sites' values into ``u`` of shape ``[B, D]`` and :meth:`unpack` turns
    ``u`` back, through ``biject_to(support)`` of each site; :meth:`log_joint` gives, per datapoint,
    :math:`\log p_\theta(z)` (plus the log-Jacobian, with ``jacobian=True``) and
    :math:`\log p_\theta(x|z)`.

    :ivar list names: the latent sites, in the model's order.
    :ivar str plate: the data plate's name.
    :ivar int dim: ``D``, the unconstrained size per datapoint.
    """

    def __init__(self, model, names, plate, sites):
        # Wrapped once: the estimators trace the model at every leapfrog step.
        self.model = per_datapoint(model)
        self._guides = {}
        self.names = list(names)
        self.plate = plate
        self._sites = sites  # name -> dict(transform, plate_dim, event_dim, shape, size)
        self.dim = sum(info["size"] for info in sites.values())
        self._plate_dim = next(iter(sites.values()))["plate_dim"]  # the data plate's dim, the same for every site

    # -- discovery ---------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, x, guide=None):
        """
        Trace ``model(x)`` (and ``guide(x)``) once and check that it is of the supported class.

        :raises UnsupportedModelError: naming the site and the problem.
        """
        batch_size = x.shape[0]
        model_name = _name(model)
        with torch.no_grad():
            trace = trace_model(model, x)
        frame = _data_frame(trace, batch_size, model_name)
        sites = {}
        observed = []
        for name, site in _sample_sites(trace):
            if site["is_observed"]:
                if _is_factor(site):  # a pyro.factor term of the likelihood, no data of its own
                    continue
                if not _in_frame(site, frame):
                    raise UnsupportedModelError(
                        f"{model_name}: observed site {name!r} lies outside the plate {frame.name!r} over the data"
                    )
                observed.append(name)
                continue
            if not _in_frame(site, frame):
                raise UnsupportedModelError(
                    f"{model_name}: latent site {name!r} is global: it lies outside the plate {frame.name!r} "
                    "over the data. Only latent variables per datapoint are supported (Section 2 of the AEVB "
                    "paper); make it a pyro.param, or draw it inside the plate"
                )
            sites[name] = cls._site_info(model_name, name, site, frame, batch_size)
        if not sites:
            raise UnsupportedModelError(f"{model_name}: no latent site inside the plate {frame.name!r} over the data")
        space = cls(model, sites.keys(), frame.name, sites)
        space.observed = observed
        space.max_plate_nesting = _max_plate_nesting(trace)
        if guide is not None:
            guide_trace = space.check_guide(guide, x)
            space.max_plate_nesting = max(space.max_plate_nesting, _max_plate_nesting(guide_trace))
        return space

    @staticmethod
    def _site_info(model_name, name, site, frame, batch_size):
        fn = site["fn"]
        if fn.support.is_discrete:
            raise UnsupportedModelError(
                f"{model_name}: latent site {name!r} is discrete ({type(fn).__name__}); AEVB needs continuous "
                "latent variables (reparameterisation, HMC). Marginalise it out, or observe it"
            )
        value = site["value"]
        event_dim = len(fn.event_shape)
        batch_shape = value.shape[: value.dim() - event_dim]
        plate_dims = {f.dim: f.size for f in site["cond_indep_stack"] if f.vectorized}
        for dim in range(-len(batch_shape), 0):
            size = batch_shape[dim]
            if plate_dims.get(dim) == size or size == 1:
                continue
            raise UnsupportedModelError(
                f"{model_name}: latent site {name!r} has batch shape {tuple(batch_shape)}: one entry per datapoint "
                f"is expected (size {batch_size} at the dim {frame.dim} of plate {frame.name!r}, and a batch dim "
                f"only for each plate the site is in); its size {size} at dim {dim} belongs to no plate. "
                "Declare per-datapoint vectors as event dims, e.g. with .to_event(1)"
            )
        if len(batch_shape) < -frame.dim or batch_shape[frame.dim] != batch_size:
            raise UnsupportedModelError(
                f"{model_name}: latent site {name!r} has batch shape {tuple(batch_shape)}, with no entry per datapoint "
                f"at dim {frame.dim} of plate {frame.name!r}"
            )
        transform = _unconstraining(name, fn)
        unconstrained = transform.inv(value)
        data_dim = frame.dim - event_dim  # the data plate's position in the value, from the right
        per_row = unconstrained.movedim(data_dim, 0).shape[1:]
        return dict(
            transform=transform,
            event_dim=event_dim,
            data_dim=data_dim,
            plate_dim=frame.dim,
            shape=per_row,
            size=per_row.numel(),
        )

    def observed_site(self, purpose):
        """
        The model's one observed site, whose value stands for ``x`` (wake-sleep's fantasies,
        reconstructions, samples, simulated data).

        :param str purpose: what needs it, for the error.
        :raises UnsupportedModelError: for a model with several observed sites, or none.
        """
        if len(self.observed) != 1:
            raise UnsupportedModelError(
                f"{purpose} needs a model with one observed site, holding x; {_name(self.model)} has "
                f"{len(self.observed)}: {self.observed}"
            )
        return self.observed[0]

    def _guide(self, guide):
        """``guide`` as :func:`~pyro_aevb.infer.util.per_datapoint` wraps it, wrapped once."""
        try:
            if guide not in self._guides:
                self._guides[guide] = per_datapoint(guide)
            return self._guides[guide]
        except TypeError:  # an unhashable callable
            return per_datapoint(guide)

    def check_guide(self, guide, x):
        """The guide's latent sites must be the model's. :returns: the guide's trace."""
        with torch.no_grad():
            trace = trace_model(guide, x)
        guide_sites = {name for name, site in _sample_sites(trace) if not site["is_observed"]}
        missing = [name for name in self.names if name not in guide_sites]
        extra = sorted(guide_sites - set(self.names))
        if missing:
            raise UnsupportedModelError(
                f"{_name(guide)}: the guide lacks the model's latent site(s) {missing}: it must draw every latent site "
                f"of the model ({self.names})"
            )
        if extra:
            raise UnsupportedModelError(
                f"{_name(guide)}: the guide has sample site(s) {extra} that the model does not draw as latent "
                f"sites ({self.names})"
            )
        return trace

    # -- values <-> vectors ------------------------------------------------------------------
    def pack(self, values, batch_size):
        """The sites' values (constrained) as unconstrained vectors ``[B, D]``."""
        parts = []
        for name in self.names:
            info = self._sites[name]
            u = info["transform"].inv(values[name])
            parts.append(u.movedim(info["data_dim"], 0).reshape(batch_size, -1))
        return torch.cat(parts, -1)

    def unpack(self, u):
        """
        ``u`` ``[B, D]`` as the sites' constrained values, and the log-Jacobian of the map per row ``[B]``.
        """
        batch_size = u.shape[0]
        values, log_jacobian, start = {}, 0.0, 0
        for name in self.names:
            info = self._sites[name]
            part = u[:, start : start + info["size"]].reshape((batch_size,) + info["shape"])
            start += info["size"]
            part = part.movedim(0, info["data_dim"])
            value = info["transform"](part)
            values[name] = value
            ladj = info["transform"].log_abs_det_jacobian(part, value)
            ladj = sum_rightmost(ladj, info["event_dim"] - info["transform"].codomain.event_dim)
            log_jacobian = log_jacobian + self._rows(ladj, info["plate_dim"], batch_size)
        return values, log_jacobian

    @staticmethod
    def _rows(log_prob, plate_dim, batch_size):
        """A site's log-density (batch-shaped) summed over every dim but the data plate's: ``[B]``."""
        if log_prob.dim() < -plate_dim:
            log_prob = log_prob.reshape((1,) * (-plate_dim - log_prob.dim()) + log_prob.shape)
        log_prob = log_prob.movedim(plate_dim, 0)
        return log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(batch_size)

    # -- densities ---------------------------------------------------------------------------
    def site_log_probs(self, trace, batch_size):
        """
        Per datapoint ``[B]``: the summed unscaled log-densities of the latent sites (the prior) and of
        the observed sites (the likelihood), from a trace of the model.
        """
        trace.compute_log_prob()
        log_prior = log_lik = 0.0
        for name, site in _sample_sites(trace):
            if name in self._sites:
                log_prior = log_prior + self._rows(site["unscaled_log_prob"], self._plate_dim, batch_size)
            elif site["is_observed"]:
                log_lik = log_lik + self._rows(site["unscaled_log_prob"], self._plate_dim, batch_size)
            else:
                raise UnsupportedModelError(
                    f"{_name(self.model)}: sample site {name!r} appeared that was not in the first trace: the model "
                    "must draw the same latent sites on every call"
                )
        return log_prior, log_lik

    def log_densities(self, x, values):
        r"""
        :math:`\log p_\theta(z)` and :math:`\log p_\theta(x|z)` per datapoint ``[B]`` at the latent
        sites' constrained ``values`` (a dict).
        """
        trace = trace_model(self.model, x, data=values)
        return self.site_log_probs(trace, x.shape[0])

    def log_joint(self, x, u, jacobian=True):
        r"""
        :math:`\log p_\theta(z)` and :math:`\log p_\theta(x|z)` per datapoint ``[B]`` at ``z =`` :meth:`unpack`
        ``(u)``; with ``jacobian``, the log prior includes the log-Jacobian, so that it is the prior's
        density in the unconstrained space.
        """
        values, log_jacobian = self.unpack(u)
        log_prior, log_lik = self.log_densities(x, values)
        return (log_prior + log_jacobian if jacobian else log_prior), log_lik

    def sample_prior(self, x):
        """Draws from the model's prior for each row of ``x``: ``u`` ``[B, D]``, and the model's trace."""
        trace = trace_model(self.model, x)
        return self.pack({name: trace.nodes[name]["value"] for name in self.names}, x.shape[0]), trace

    def sample_guide(self, guide, x, unconstrained=True):
        r"""
        Draws from the guide for each row of ``x``, and their log-density :math:`\log q(\cdot|x)` per
        datapoint ``[B]``: with ``unconstrained``, ``u`` ``[B, D]`` and the density in the
        unconstrained space (with the log-Jacobian); else the sites' values (a dict) and the density
        in the constrained space, where the guide drew them.
        """
        trace = trace_model(self._guide(guide), x)
        values = {name: trace.nodes[name]["value"] for name in self.names}
        log_q = self._latent_log_prob(trace, x.shape[0])
        if not unconstrained:
            return values, log_q
        u = self.pack(values, x.shape[0])
        return u, log_q + self.unpack(u)[1]

    def sample_start(self, x, guide=None):
        """Draws ``u`` ``[B, D]`` from the guide for each row of ``x``, or from the prior without one (where chains start)."""
        return (self.sample_prior(x) if guide is None else self.sample_guide(guide, x))[0]

    def log_guide(self, guide, x, u):
        r""":math:`\log q(u|x)` per datapoint ``[B]`` in the unconstrained space (with the log-Jacobian)."""
        values, log_jacobian = self.unpack(u)
        trace = trace_model(self._guide(guide), x, data=values)
        return log_jacobian + self._latent_log_prob(trace, x.shape[0])

    def _latent_log_prob(self, trace, batch_size):
        """The summed unscaled log-densities of the latent sites in ``trace`` (of the guide), per datapoint ``[B]``."""
        trace.compute_log_prob()
        log_q = 0.0
        for name in self.names:
            log_q = log_q + self._rows(trace.nodes[name]["unscaled_log_prob"], self._plate_dim, batch_size)
        return log_q

