r"""
Monte Carlo EM, the second baseline of Section 5 of [1]: maximum likelihood for the generative model
alone, with no recognition model. Each step on a minibatch :math:`X^M` has

- an **E-step** that draws latent values for its datapoints from (an approximation of) the posterior
  :math:`p_\theta(z|x^{(i)})`, and
- an **M-step** of a few Adagrad updates of :math:`\theta` on the Monte Carlo estimate of the
  expected complete-data log-likelihood at those values,

.. math::

    Q(\theta) \simeq \frac{N}{M} \sum_{i=1}^M \sum_{k=1}^K w_{ik} \log p_\theta(x^{(i)}, z^{(ik)}),
    \qquad \sum_k w_{ik} = 1,

whose gradient at the current :math:`\theta` estimates that of the marginal likelihood,
:math:`\nabla_\theta \log p_\theta(x) = \mathbb{E}_{p_\theta(z|x)}[\nabla_\theta \log p_\theta(x, z)]`.

Two E-steps:

- :class:`MCEM` (method ``mcem``), as in Appendix E of [1]: a Hybrid Monte Carlo (HMC) E-step of 10
  leapfrog steps with a step size tuned automatically toward a 90% acceptance rate, followed by 5
  weight updates with the sample it produced. One persistent sample :math:`z^{(i)}` per training
  point (:math:`K = 1`) is moved by one HMC transition each time its datapoint is in the minibatch;
- :class:`ImportanceMCEM` (method ``mcem-is``): :math:`K` fresh draws from the model's prior,
  weighted by self-normalised importance weights :math:`w_{ik} \propto p_\theta(x^{(i)}|z^{(ik)})`.

Both read every density off the user's ``model`` (conditioned on its latent sites), so any model of the
class of :mod:`pyro_aevb.infer.sites` is trained unchanged: free site names, several latent sites, and
constrained ones, which the HMC E-step moves in the unconstrained space
(:class:`~pyro_aevb.infer.sites.LatentSpace`). Having no encoder, they are measured by the marginal likelihood
(:func:`pyro_aevb.infer.marginal.log_marginal_likelihood`) rather than by a lower bound.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import torch

from pyro_aevb._checks import check_number, check_whole
from pyro_aevb.infer.descent import ValidatedOnce, descend, method_optim, trace_params
from pyro_aevb.infer.hmc import StepSizeAdapter, hmc_step
from pyro_aevb.infer.marginal import resampled_start
from pyro_aevb.infer.method import TrainingMethod
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.util import check_num_data, minibatch_scale, model_and_guide, repeat_rows, trace_model

__all__ = ["ImportanceMCEM", "MCEM", "complete_log_likelihood"]


def complete_log_likelihood(space, x, u):
    r"""
    :math:`\log p_\theta(x^{(i)}, z^{(ki)})` for ``K`` values of the latents per datapoint.

    :param space: the model's :class:`~pyro_aevb.infer.sites.LatentSpace`.
    :param torch.Tensor x: a minibatch ``[M, D]``.
    :param torch.Tensor u: the latents ``[K, M, D_u]``, in the unconstrained space.
    :returns: the summed log-densities of all sample sites ``[K, M]`` (unscaled, without the
        log-Jacobian, which does not depend on :math:`\theta`), and the model's trace.
    :rtype: tuple
    """
    num_particles, batch_size = u.shape[:2]
    x_rep = repeat_rows(x, num_particles)
    values, _ = space.unpack(u.reshape(num_particles * batch_size, -1))
    trace = trace_model(space.model, x_rep, data=values)
    log_prior, log_lik = space.site_log_probs(trace, x_rep.shape[0])
    return (log_prior + log_lik).reshape(num_particles, batch_size), trace


class _MonteCarloEM(TrainingMethod):
    """The M-step and the optimizer; subclasses provide :meth:`e_step`."""

    has_encoder = False

    def __init__(self, model, lr, weight_decay, num_m_steps, optim=None):
        self.num_m_steps = check_whole("num_m_steps", num_m_steps)
        self.model = model_and_guide(model, need_guide=False)[0]
        self.optim = method_optim(lr, weight_decay, optim)
        self._validation = ValidatedOnce()
        self.space = None  # the model's latent sites, found at the first step

    def _check(self, x):
        """Find the model's latent sites, and check them, on the first minibatch."""
        if self.space is None:
            self.space = check_model(self.model, x)

    def e_step(self, x, idx, num_data):
        """:returns: latent values ``[K, M, D]`` (unconstrained) and their normalised weights ``[K, M]``."""
        raise NotImplementedError

    def step(self, x, num_data=None, *, idx=None):
        r"""
        One E-step and ``num_m_steps`` Adagrad updates of :math:`\theta` on the minibatch ``x``, called
        as :meth:`SVI.step <pyro.infer.SVI.step>` is, with the rows' indices ``idx`` in a data set of
        size ``num_data`` (:class:`MCEM` needs both: it keeps a chain per datapoint).

        :returns: :math:`-Q(\theta)` at the new E-step's values, before the M-step (the N-scaled
            negative complete-data log-likelihood).
        """
        num_data = check_num_data(x, num_data)
        self._check(x)
        scale = minibatch_scale(x, num_data)
        with self._validation():
            z, weights = self.e_step(x, idx, num_data)
            losses = []
            for _ in range(self.num_m_steps):
                joint, trace = complete_log_likelihood(self.space, x, z)
                losses.append(descend(self.optim, -scale * (weights * joint).sum(), trace_params(trace)))
        return losses[0]


class MCEM(_MonteCarloEM):
    r"""
    Monte Carlo EM with an HMC E-step, as in Appendix E of [1].

    Every training point :math:`i` owns a persistent sample :math:`z^{(i)}`, drawn the first time its
    datapoint is seen (from the prior, or resampled from ``init_proposals`` prior draws by their
    likelihood), and a step size adapted by dual averaging
    (:class:`~pyro_aevb.infer.hmc.StepSizeAdapter`) toward ``target_accept_prob``. The E-step moves the
    samples of the minibatch's datapoints by one HMC transition of ``num_steps`` leapfrog steps,
    all at once (:func:`~pyro_aevb.infer.hmc.hmc_step`: one batched potential per leapfrog step, a
    Metropolis accept/reject per datapoint), with potential energy
    :math:`U(z) = -\log p_\theta(x^{(i)}, z)` (scale 1).

    The step sizes adapt for the whole run, since the posterior moves with :math:`\theta`. Each chain
    samples with its *averaged* step size :math:`\bar\epsilon` (``final_step_size``), and the
    acceptance probabilities observed at it drive the dual averaging iterate. Sampling with the raw
    iterate instead, which jumps with the chain's last few acceptances and so depends on its current
    state, shrank the posterior variance of a linear-Gaussian model by 5-8% (20,000 chains, 100
    transitions); with the average it stays within 2.5% of exact (the sampling error at 20,000
    chains is 1%), and the acceptance rate still settles at the target.

    :param callable model: the model (:mod:`pyro_aevb.infer.sites`); or an object with ``.model``.
    :param float lr: Adagrad's global step size.
    :param float weight_decay: precision of the Gaussian prior on the parameters.
    :param optim: the optimizer, a :class:`~pyro.optim.PyroOptim` such as
        :func:`pyro_aevb.optim.make_optim` returns (Adam, say); ``None``: Adagrad with ``lr`` and
        ``weight_decay`` (:class:`~pyro_aevb.optim.FusedAdagrad`, the paper's).
    :param int num_steps: leapfrog steps per transition (the paper: 10).
    :param int num_m_steps: Adagrad updates per E-step (the paper: 5).
    :param float target_accept_prob: the step sizes' target (the paper: 0.9).
    :param float step_size: every chain's initial step size.
    :param int init_proposals: where a chain starts, at its datapoint's first visit: with 1, a draw
        from the prior; with more, one of that many prior draws, picked with probability proportional
        to its likelihood :math:`p_\theta(x^{(i)}|z)` (sampling-importance-resampling,
        :func:`~pyro_aevb.infer.marginal.resampled_start`), closer to the posterior at the cost of
        that many evaluations of the decoder. [1] does not say how the chains start.

    :ivar torch.Tensor z: the persistent samples ``[N, D]`` (unconstrained), allocated on the first
        step on the data's device.
    :ivar torch.Tensor initialised: ``[N]``, whether each datapoint's sample has been drawn yet.
    :ivar adapter: the :class:`~pyro_aevb.infer.hmc.StepSizeAdapter` of the ``N`` chains.

    .. warning:: MCEM does not scale to large data sets; [1] (Figure 3) calls it not an on-line
        algorithm and runs it on at most 50,000 training points. It keeps ``N x Nz`` samples and
        ``5 N`` adaptation values, and each chain moves only once per epoch, so with many datapoints
        the samples lag behind a :math:`\theta` that has moved on since their last visit.
    """

    def __init__(self, model, *, lr=0.02, weight_decay=1.0, num_steps=10, num_m_steps=5, target_accept_prob=0.9,
                 step_size=0.1, init_proposals=1, optim=None):
        super().__init__(model, lr, weight_decay, num_m_steps, optim)
        self.num_steps = check_whole("num_steps", num_steps)
        self.init_proposals = check_whole("init_proposals", init_proposals)
        self.target_accept_prob = check_number("target_accept_prob", target_accept_prob, 0.0, 1.0)
        self.init_step_size = check_number("step_size", step_size, 0.0)
        self.z = self.initialised = self.adapter = None

    def _potential_fn(self, x):
        def potential_fn(u):  # the posterior in the unconstrained space: the log-Jacobian included
            log_prior, log_lik = self.space.log_joint(x, u)
            return -(log_prior + log_lik)

        return potential_fn

    def _init_state(self, x, idx, num_data):
        """Allocates the per-datapoint state on the first step; draws unseen datapoints' z (``init_proposals``)."""
        if self.z is None:
            self.z = x.new_zeros(num_data, self.space.dim)
            self.initialised = torch.zeros(num_data, dtype=torch.bool, device=x.device)
            self.adapter = StepSizeAdapter(x.new_full((num_data,), self.init_step_size), self.target_accept_prob)
        if self.z.shape[0] != num_data:
            raise ValueError(f"MCEM holds a sample for each of {self.z.shape[0]} datapoints, got num_data={num_data}")
        new = ~self.initialised[idx]
        if new.any():
            with torch.no_grad():
                if self.init_proposals == 1:
                    self.z[idx[new]] = self.space.sample_prior(x[new])[0]
                else:
                    self.z[idx[new]] = resampled_start(self.space, None, x[new], self.init_proposals)
            self.initialised[idx[new]] = True

    def e_step(self, x, idx, num_data):
        """
        One HMC transition of the persistent samples of the datapoints ``idx`` (distinct indices),
        and one step-size adaptation for each.

        :returns: the new samples ``[1, M, D]`` and weights 1 ``[1, M]``.
        """
        self._check(x)
        if idx is None or num_data is None:
            raise ValueError(
                "MCEM keeps a persistent HMC chain for each datapoint, so each step needs the rows' indices "
                "and the data set's size: step(x, num_data=N, idx=rows)"
            )
        idx = torch.as_tensor(idx, device=x.device)
        if idx.shape != x.shape[:1] or idx.is_floating_point():
            raise ValueError(f"idx must hold one whole-number index per row of x ({x.shape[0]}), got {tuple(idx.shape)}")
        self._init_state(x, idx, num_data)
        result = hmc_step(self._potential_fn(x), self.z[idx], self.adapter.final_step_size[idx], self.num_steps)
        self.adapter.update(result.accept_prob, idx)
        self.z[idx] = result.z
        return result.z.unsqueeze(0), x.new_ones(1, x.shape[0])

    def state_dict(self):
        state = super().state_dict()
        if self.z is not None:
            state.update(z=self.z.clone(), initialised=self.initialised.clone(), adapter=self.adapter.state_dict())
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "z" in state:
            self.z, self.initialised = state["z"].clone(), state["initialised"].clone()
            self.adapter = StepSizeAdapter(state["adapter"]["log_step_size"].exp(), self.target_accept_prob)
            self.adapter.load_state_dict(state["adapter"])


class ImportanceMCEM(_MonteCarloEM):
    r"""
    Monte Carlo EM with a self-normalised importance-sampling E-step: for each datapoint of the
    minibatch, ``num_proposals`` draws :math:`z^{(ik)}` from the model's prior :math:`p_\theta(z)`,
    weighted by

    .. math::

        w_{ik} = \frac{p_\theta(x^{(i)}|z^{(ik)})}{\sum_{l} p_\theta(x^{(i)}|z^{(il)})},

    computed at the E-step's :math:`\theta` and held fixed (detached) through the M-step, as EM holds
    the posterior fixed. No state is kept between steps, so it scales to any ``N``; but prior
    proposals match the posterior less and less well as :math:`N_z` grows (the effective sample size
    :math:`1 / \sum_k w_{ik}^2` drops toward 1).

    ``model``, ``lr``, ``weight_decay`` and ``optim`` are as for :class:`MCEM`.

    :param int num_proposals: :math:`K`; ten draws make the E-step cost about what the ten leapfrog
        steps of :class:`MCEM`'s do; the M-step then runs on ``K M`` rows.
    :param int num_m_steps: Adagrad updates per E-step.
    """

    def __init__(self, model, *, lr=0.02, weight_decay=1.0, num_proposals=10, num_m_steps=5, optim=None):
        super().__init__(model, lr, weight_decay, num_m_steps, optim)
        self.num_proposals = check_whole("num_proposals", num_proposals)

    def e_step(self, x, idx, num_data):
        """:returns: ``num_proposals`` prior draws per datapoint ``[K, M, D]`` and their weights ``[K, M]``."""
        self._check(x)
        k, m = self.num_proposals, x.shape[0]
        with torch.no_grad():
            u, trace = self.space.sample_prior(repeat_rows(x, k))
            log_likelihood = self.space.site_log_probs(trace, k * m)[1]
        return u.reshape(k, m, -1), log_likelihood.reshape(k, m).softmax(0)
