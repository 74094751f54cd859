r"""
Vectorised Hamiltonian Monte Carlo: many independent chains advanced in one batched computation.

Every chain (a row of ``z``) has its own step size and its own Metropolis accept/reject, so a batch
of chains behaves exactly like that many separate runs of Pyro's
:class:`~pyro.infer.mcmc.HMC` kernel with an identity mass matrix and a fixed number of leapfrog
steps, but costs one batched evaluation of the potential per leapfrog step. The integrator is Pyro's
:func:`~pyro.ops.integrator.velocity_verlet`, run on every chain at once by
:func:`pyro_aevb.ops.integrator.leapfrog`; step sizes are adapted per chain by the dual averaging
scheme of [2] (Algorithm 5), with the constants of :class:`~pyro.ops.dual_averaging.DualAveraging`.

The functions are pure numerics (no loops over datapoints, no printing). :func:`hmc_step` and
:class:`StepSizeAdapter` can be driven one step at a time with state kept between calls (as the
E-step of MCEM does); :func:`sample` is the warmup-then-sample loop built on them.

**References**

[1] `MCMC using Hamiltonian dynamics`, Radford M. Neal (2011)

[2] `The No-U-Turn Sampler: Adaptively Setting Path Lengths in Hamiltonian Monte Carlo`,
Matthew D. Hoffman, Andrew Gelman (2014)
"""

import math
from collections import namedtuple

import torch

from pyro_aevb.infer.progress import report
from pyro_aevb.ops.integrator import leapfrog, potential_and_grad

__all__ = [
    "HMCSamples", "HMCStepResult", "StepSizeAdapter", "accept_test", "find_reasonable_step_size", "hmc_step", "sample",
]

HMCStepResult = namedtuple("HMCStepResult", ["z", "accept_prob", "potential_energy", "z_grad"])
HMCStepResult.__doc__ = """
One transition of every chain: the new state ``z`` ``[B, ...]``, the Metropolis acceptance
probability ``accept_prob`` ``[B]`` of the proposal, and the potential energy ``[B]`` and its gradient
``[B, ...]`` at the new state (pass them back to :func:`hmc_step` to save one gradient evaluation).
"""

HMCSamples = namedtuple("HMCSamples", ["samples", "potential_energy", "accept_prob", "step_size"])
HMCSamples.__doc__ = """
The output of :func:`sample`: ``samples`` ``[num_samples, B, ...]``, their potential energies
``[num_samples, B]``, the mean acceptance probability of each chain after warmup ``[B]``, and the
step size each chain sampled with ``[B]``.
"""


def _chain_tensor(value, z, name):
    """``value`` (a float or a ``[B]`` tensor) as a ``[B]`` tensor matching ``z``."""
    value = torch.as_tensor(value, dtype=z.dtype, device=z.device)
    if value.dim() == 0:
        value = value.expand(z.shape[:1])
    if value.shape != z.shape[:1]:
        raise ValueError(f"{name} must be a float or of shape [{z.shape[0]}], got {tuple(value.shape)}")
    return value


def _per_row(value, z):
    """A ``[B]`` tensor reshaped to broadcast against ``z`` of shape ``[B, ...]``."""
    return value.reshape(value.shape + (1,) * (z.dim() - 1))


def _kinetic_energy(r):
    return 0.5 * r.reshape(r.shape[0], -1).pow(2).sum(-1)


def accept_test(potential_energy, r, potential_energy_new, r_new):
    r"""
    The Metropolis test of each chain's proposal: accept with probability
    :math:`\min(1, \exp(H(z, r) - H(z', r')))`, :math:`H(z, r) = U(z) + \tfrac12 \lVert r \rVert^2`;
    a proposal whose energy is NaN is rejected. Draws one uniform per chain.

    :param torch.Tensor potential_energy: :math:`U(z)` ``[B]`` at the current states.
    :param torch.Tensor r: the momenta drawn at the current states ``[B, ...]``.
    :param torch.Tensor potential_energy_new: :math:`U(z')` ``[B]`` at the proposals.
    :param torch.Tensor r_new: the momenta at the proposals ``[B, ...]``.
    :returns: ``(accept [B] bool, accept_prob [B])``.
    """
    delta_energy = potential_energy_new + _kinetic_energy(r_new) - potential_energy - _kinetic_energy(r)
    delta_energy = torch.where(torch.isnan(delta_energy), torch.full_like(delta_energy, math.inf), delta_energy)
    accept_prob = (-delta_energy).exp().clamp(max=1.0)
    return torch.rand_like(accept_prob) < accept_prob, accept_prob


def hmc_step(potential_fn, z, step_size, num_steps, potential_energy=None, z_grad=None):
    r"""
    One HMC transition [1] of a batch of independent chains: draw momenta
    :math:`r \sim \mathcal{N}(0, I)`, integrate ``num_steps`` leapfrog steps of size ``step_size``,
    and accept each chain's proposal with probability :math:`\min(1, \exp(H(z, r) - H(z', r')))`,
    :math:`H(z, r) = U(z) + \tfrac12 \lVert r \rVert^2`. A proposal whose energy is NaN is rejected.

    :param callable potential_fn: :math:`U`, maps ``z`` ``[B, ...]`` to the per-chain potential
        energy (negative log density up to a constant) ``[B]``; differentiable in ``z``.
    :param torch.Tensor z: current states ``[B, ...]``, one chain per row.
    :param step_size: a float, or a ``[B]`` tensor of per-chain step sizes.
    :param int num_steps: leapfrog steps per transition.
    :param torch.Tensor potential_energy: optional cached :math:`U(z)` ``[B]``.
    :param torch.Tensor z_grad: optional cached :math:`\nabla U(z)` (used only with
        ``potential_energy``).
    :returns: the new states, acceptance probabilities, and potential energies and gradients at the
        new states.
    :rtype: HMCStepResult
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    z = z.detach()
    step_size = _chain_tensor(step_size, z, "step_size")
    if potential_energy is None or z_grad is None:
        potential_energy, z_grad = potential_and_grad(potential_fn, z)
    r = torch.randn_like(z)
    z_new, r_new, z_grad_new, potential_energy_new = leapfrog(
        potential_fn, z, r, step_size, int(num_steps), z_grad
    )
    accept, accept_prob = accept_test(potential_energy, r, potential_energy_new, r_new)
    return HMCStepResult(
        torch.where(_per_row(accept, z), z_new, z),
        accept_prob,
        torch.where(accept, potential_energy_new, potential_energy),
        torch.where(_per_row(accept, z), z_grad_new, z_grad),
    )


def find_reasonable_step_size(potential_fn, z, step_size=1.0, max_doublings=50):
    r"""
    Per-chain version of the heuristic of [2] (Algorithm 4) as Pyro's HMC runs it: double (or halve)
    each chain's step size until the acceptance probability of one leapfrog step crosses
    :math:`0.8` (Stan's threshold), starting from ``step_size``.

    :param callable potential_fn: as in :func:`hmc_step`.
    :param torch.Tensor z: states ``[B, ...]``.
    :param step_size: a float or a ``[B]`` tensor, the starting step sizes.
    :param int max_doublings: the most doublings or halvings per chain.
    :returns: step sizes ``[B]``.
    """
    z = z.detach()
    step_size = _chain_tensor(step_size, z, "step_size").clone()
    potential_energy, z_grad = potential_and_grad(potential_fn, z)
    threshold = math.log(0.8)

    def increase(step):
        r = torch.randn_like(z)
        _, r_new, _, energy_new = leapfrog(potential_fn, z, r, step, 1, z_grad)
        log_accept = potential_energy + _kinetic_energy(r) - energy_new - _kinetic_energy(r_new)
        return log_accept > threshold  # False for NaN, as in Pyro

    direction = increase(step_size)
    active = torch.ones_like(direction)
    for _ in range(max_doublings):
        step_size = torch.where(active, torch.where(direction, 2 * step_size, step_size / 2), step_size)
        active = active & (increase(step_size) == direction)
        if not active.any():
            break
    return step_size


class StepSizeAdapter:
    r"""
    Dual averaging step-size adaptation [2] (Algorithm 5, Eq. (6)), one independent scheme per chain.
    With :math:`g_t = \delta - \alpha_t` (target minus observed acceptance probability) and
    :math:`\mu = \log(10\,\epsilon_0)`, each update of a chain sets

    .. math::

        \bar g_t = \Big(1 - \frac{1}{t + t_0}\Big) \bar g_{t-1} + \frac{g_t}{t + t_0}, \quad
        \log \epsilon_t = \mu - \frac{\sqrt t}{\gamma} \bar g_t, \quad
        \log \bar\epsilon_t = t^{-\kappa} \log \epsilon_t + (1 - t^{-\kappa}) \log \bar\epsilon_{t-1},

    the same recursion as :class:`~pyro.ops.dual_averaging.DualAveraging`, but with a counter
    :math:`t` per chain so that chains may be updated at different times (``index`` in
    :meth:`update`): a data set's persistent chains can be adapted minibatch by minibatch.
    Sample with :attr:`step_size` during warmup and with :attr:`final_step_size` after it.

    :param init_step_size: a float or a ``[B]`` tensor, the initial step sizes :math:`\epsilon_0`.
    :param float target_accept_prob: :math:`\delta`, in (0, 1).
    :param int num_chains: ``B``, required only when ``init_step_size`` is a float.
    :param float t0: stabilises the first iterations.
    :param float kappa: decay of the weights of the averaged iterate, in (0.5, 1].
    :param float gamma: controls the speed of convergence.
    """

    def __init__(self, init_step_size, target_accept_prob=0.8, num_chains=None, t0=10.0, kappa=0.75, gamma=0.05):
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        init_step_size = torch.as_tensor(init_step_size)
        if not init_step_size.is_floating_point():
            init_step_size = init_step_size.to(torch.get_default_dtype())
        if init_step_size.dim() == 0:
            if num_chains is None:
                raise ValueError("num_chains is required when init_step_size is a float")
            init_step_size = init_step_size.expand(num_chains)
        if init_step_size.dim() != 1 or not (init_step_size > 0).all() or not init_step_size.isfinite().all():
            raise ValueError("init_step_size must be positive and finite, a float or of shape [B]")
        self.target_accept_prob = target_accept_prob
        self.t0, self.kappa, self.gamma = t0, kappa, gamma
        log_step_size = init_step_size.log()
        self._state = {
            "prox_center": log_step_size + math.log(10.0),
            "log_step_size": log_step_size.clone(),
            "log_step_size_avg": log_step_size.clone(),
            "g_avg": torch.zeros_like(log_step_size),
            "t": torch.zeros_like(log_step_size),
        }

    @property
    def step_size(self):
        """The current (adapting) step sizes :math:`\\epsilon_t` ``[B]``, to sample with during warmup."""
        return self._state["log_step_size"].exp()

    @property
    def final_step_size(self):
        """The averaged step sizes :math:`\\bar\\epsilon_t` ``[B]``, to sample with after warmup."""
        return self._state["log_step_size_avg"].exp()

    def update(self, accept_prob, index=None):
        """
        One adaptation step of the chains ``index`` (all chains when ``None``).

        :param torch.Tensor accept_prob: acceptance probabilities of the chains' last transition,
            ``[B]`` or, with ``index``, one per indexed chain.
        :param index: a ``[B]`` boolean mask or a tensor of chain indices.
        """
        s = self._state
        idx = slice(None) if index is None else index
        accept_prob = torch.as_tensor(accept_prob, dtype=s["t"].dtype).nan_to_num(0.0)
        if accept_prob.shape != s["t"][idx].shape:
            raise ValueError(f"accept_prob must have shape {tuple(s['t'][idx].shape)}, got {tuple(accept_prob.shape)}")
        t = s["t"][idx] + 1
        g_avg = (1 - 1 / (t + self.t0)) * s["g_avg"][idx] + (self.target_accept_prob - accept_prob) / (t + self.t0)
        log_step_size = s["prox_center"][idx] - t.sqrt() / self.gamma * g_avg
        weight = t.pow(-self.kappa)
        s["log_step_size_avg"][idx] = (1 - weight) * s["log_step_size_avg"][idx] + weight * log_step_size
        s["log_step_size"][idx] = log_step_size
        s["g_avg"][idx] = g_avg
        s["t"][idx] = t

    def state_dict(self):
        """:returns: the adaptation state, a dict of ``[B]`` tensors and the constants."""
        state = {k: v.clone() for k, v in self._state.items()}
        state.update(target_accept_prob=self.target_accept_prob, t0=self.t0, kappa=self.kappa, gamma=self.gamma)
        return state

    def load_state_dict(self, state):
        """Restores a state saved by :meth:`state_dict`."""
        for key in ("target_accept_prob", "t0", "kappa", "gamma"):
            setattr(self, key, state[key])
        self._state = {k: state[k].clone() for k in self._state}


def sample(
    potential_fn,
    z_init,
    num_samples,
    warmup_steps=100,
    num_steps=4,
    step_size=None,
    target_accept_prob=0.8,
    adapt_step_size=True,
    step_size_jitter=0.0,
):
    r"""
    Runs a batch of independent HMC chains: ``warmup_steps`` transitions that adapt each chain's step
    size (:class:`StepSizeAdapter`, starting from :func:`find_reasonable_step_size`), then
    ``num_samples`` transitions at the averaged step size, which are returned.

    :param callable potential_fn: as in :func:`hmc_step`.
    :param torch.Tensor z_init: initial states ``[B, ...]``.
    :param int num_samples: transitions kept after warmup.
    :param int warmup_steps: adaptation transitions, discarded.
    :param int num_steps: leapfrog steps per transition.
    :param step_size: initial step sizes (a float or ``[B]``); ``None`` starts the search at 1.
        Without adaptation they are used throughout and are required.
    :param float target_accept_prob: the acceptance probability that adaptation aims at.
    :param bool adapt_step_size: whether to adapt the step sizes during warmup.
    :param float step_size_jitter: each transition multiplies each chain's step size by a draw from
        :math:`\mathcal{U}(1 - j, 1 + j)`, ``j = step_size_jitter`` in [0, 1), which breaks the
        periodicity of fixed-length trajectories, as [1] recommends; 0 (Pyro's HMC) by default.
    :rtype: HMCSamples
    """
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps}")
    if not 0.0 <= step_size_jitter < 1.0:
        raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter}")
    z = z_init.detach()
    if step_size is None:
        if not adapt_step_size:
            raise ValueError("step_size is required when adapt_step_size=False")
        step_size = 1.0
    step_size = _chain_tensor(step_size, z, "step_size")
    potential_energy, z_grad = potential_and_grad(potential_fn, z)

    def jitter(step):
        return step * (1 + step_size_jitter * (2 * torch.rand_like(step) - 1))

    adapter = None
    if adapt_step_size and warmup_steps > 0:
        adapter = StepSizeAdapter(find_reasonable_step_size(potential_fn, z, step_size), target_accept_prob)
    total = warmup_steps + num_samples
    for i in range(warmup_steps):
        report(i / total)
        step = step_size if adapter is None else adapter.step_size
        z, accept_prob, potential_energy, z_grad = hmc_step(
            potential_fn, z, jitter(step), num_steps, potential_energy, z_grad
        )
        if adapter is not None:
            adapter.update(accept_prob)
    if adapter is not None:
        step_size = adapter.final_step_size

    samples = z.new_empty((num_samples,) + z.shape)
    energies = z.new_empty((num_samples, z.shape[0]))
    accept_sum = torch.zeros_like(energies[0])
    for i in range(num_samples):
        report((warmup_steps + i) / total)
        z, accept_prob, potential_energy, z_grad = hmc_step(
            potential_fn, z, jitter(step_size), num_steps, potential_energy, z_grad
        )
        samples[i], energies[i] = z, potential_energy
        accept_sum += accept_prob
    report(1.0)
    return HMCSamples(samples, energies, accept_sum / num_samples, step_size)
