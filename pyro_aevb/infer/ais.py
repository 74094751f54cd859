r"""
Annealed importance sampling [1] with HMC transitions, over plain functions of a flat tensor
(:func:`pilot_step_sizes`, :func:`run`), and on the posterior of a model's latent sites
(:func:`anneal`, :func:`log_marginal`). :mod:`pyro_aevb.infer.bdmc` runs it in both directions
(BDMC, [2]) to bracket :math:`\log p_\theta(x)` on simulated data.

The path is geometric, :math:`f_t(z) = p_0(z)^{1 - \beta_t}\, p(x, z)^{\beta_t}`, from
:math:`\beta_0 = 0` to :math:`\beta_T = 1`; :math:`p_0` is a normalised density that can be sampled
exactly (the prior, or a recognition model). A forward chain draws :math:`z_0 \sim p_0`, and for
:math:`t = 1, \dots, T` multiplies its weight by :math:`f_t(z_{t-1}) / f_{t-1}(z_{t-1})` and, for
:math:`t < T`, moves :math:`z_t \sim \mathcal{T}_t(\cdot | z_{t-1})` with an HMC kernel that leaves
:math:`f_t` invariant. The weight is unbiased for :math:`Z_T / Z_0 = p(x)`, so its log is a
stochastic lower bound. A reverse chain starts from an exact posterior draw :math:`z_T \sim p(z|x)`
and runs the same kernels backwards; its weight is unbiased for :math:`1 / p(x)`, so minus its log
is a stochastic upper bound [2].

Both statements need each kernel :math:`\mathcal{T}_t` to be fixed before the chain runs: a step
size adapted from a chain's own acceptance makes the kernel depend on the chain's past, and the
weights of both directions become biased (measured: forward 0.07 nats above the exact value,
reverse 0.16 below: the bracket inverted). Here the step sizes, one per temperature and datapoint,
come from a separate pilot run (:func:`pilot_step_sizes`) whose chains are discarded; the chains
whose weights are kept then run with that fixed schedule (:func:`run`).

Every function is batched over ``C`` chains of ``B`` datapoints: states are ``[C, B, D]``, and the
callable ``densities(z) -> (log_p0, log_joint)`` maps them to two ``[C, B]`` tensors,
differentiable in ``z``.

**References**

[1] `Annealed importance sampling`, Radford M. Neal (2001)

[2] `Sandwiching the marginal likelihood using bidirectional Monte Carlo`, Roger B. Grosse, Zoubin
Ghahramani, Ryan P. Adams (2015)

[3] `On the quantitative analysis of decoder-based generative models`, Yuhuai Wu, Yuri Burda, Ruslan
Salakhutdinov, Roger Grosse (2017)
"""

import math
import warnings
from collections import namedtuple

import pyro
import torch

from pyro_aevb._checks import check_whole
from pyro_aevb.infer import hmc
from pyro_aevb.infer.importance_weights import log_mean_exp
from pyro_aevb.infer.progress import part, report
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.util import closed_forms_of, repeat_rows

__all__ = [
    "AISResult", "anneal", "bf16_supported", "default_chunk_size", "linear_schedule", "log_marginal",
    "pilot_step_sizes", "run", "schedule", "sigmoid_schedule",
]

AISResult = namedtuple("AISResult", ["log_weights", "z", "accept_prob"])
AISResult.__doc__ = """
The output of :func:`run`: the log-weights ``[C, B]`` (of :math:`p(x)` forwards, of :math:`1/p(x)`
in reverse), the final states ``[C, B, D]``, and each chain's mean acceptance probability ``[C, B]``
over its transitions (NaN when there were none).
"""


def sigmoid_schedule(num_temps, radius=4.0):
    r"""
    The sigmoidal schedule of [3]: :math:`\beta_t \propto \sigma(\delta (2t/T - 1))`, shifted and
    scaled so that :math:`\beta_0 = 0`, :math:`\beta_T = 1`, :math:`\delta` = ``radius``. It spends
    more temperatures near both ends, where :math:`f_t` changes fastest.

    :returns: ``[T + 1]`` float64 tensor.
    """
    _check_num_temps(num_temps)
    if num_temps == 1:
        return linear_schedule(1)
    s = torch.sigmoid(torch.linspace(-radius, radius, num_temps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def linear_schedule(num_temps):
    """:math:`\\beta_t = t / T`. :returns: ``[T + 1]`` float64 tensor."""
    _check_num_temps(num_temps)
    return torch.linspace(0.0, 1.0, num_temps + 1, dtype=torch.float64)


def schedule(name, num_temps):
    """The schedule ``"sigmoid"`` or ``"linear"`` with ``num_temps`` steps, ``[T + 1]``."""
    if name == "sigmoid":
        return sigmoid_schedule(num_temps)
    if name == "linear":
        return linear_schedule(num_temps)
    raise ValueError(f"schedule must be 'sigmoid' or 'linear', got {name!r}")


def _check_num_temps(num_temps):
    return check_whole("num_temps", num_temps)


class _Annealed:
    r"""
    The potential :math:`U_\beta(z) = -(1 - \beta) \log p_0(z) - \beta \log p(x, z)` of the rows
    ``[C * B, D]``, for the leapfrog integrator of :func:`_transition`. A state's *parts* are
    ``(log_p0, log_joint, grad_log_p0, grad_log_joint)``: kept per state, they give its energy and its
    gradient at any temperature, so that moving to the next temperature, and the weight's increment,
    need no further evaluation.

    :param callable densities: ``z [C, B, D] -> (log_p0 [C, B], log_joint [C, B])``.
    :param tuple shape: ``(C, B, D)``.
    :param callable gradients: ``(z [C, B, D], values) -> (log_p0, log_joint, grad_log_p0,
        grad_log_joint)``, the values ``None`` when ``values`` is false (what the inner leapfrog steps
        need); by default both by autograd through ``densities``.
    """

    def __init__(self, densities, shape, gradients=None):
        self.densities, self.shape = densities, shape
        self.gradients = gradients if gradients is not None else self._autograd
        self.beta = 0.0

    def _autograd(self, z, values=True):
        z = z.detach().requires_grad_()
        try:
            with torch.enable_grad():
                log_p0, log_joint = self.densities(z)
                grad_p0 = torch.autograd.grad(log_p0.sum(), z, retain_graph=True, allow_unused=True)[0]
                grad_joint = torch.autograd.grad(log_joint.sum(), z, allow_unused=True)[0]
        except RuntimeError as e:  # as Pyro's potential_grad: a failed Cholesky rejects the proposal
            if "singular U" not in str(e) and "input is not positive-definite" not in str(e):
                raise
            nan = z.detach().new_full(z.shape, math.nan)
            return nan[..., 0], nan[..., 0], nan, nan
        grad_p0 = torch.zeros_like(z) if grad_p0 is None else grad_p0
        grad_joint = torch.zeros_like(z) if grad_joint is None else grad_joint
        return log_p0.detach(), log_joint.detach(), grad_p0, grad_joint

    def parts(self, z, values=True):
        """The parts of the rows ``z`` ``[C * B, D]`` (their values ``None`` unless ``values``)."""
        log_p0, log_joint, grad_p0, grad_joint = self.gradients(z.reshape(self.shape), values)
        flat = (lambda t: None if t is None else t.reshape(-1))
        return flat(log_p0), flat(log_joint), grad_p0.reshape(z.shape), grad_joint.reshape(z.shape)

    def evaluate(self, z):
        """The parts of the rows ``z`` ``[C * B, D]``, values included."""
        return self.parts(z, values=True)

    def energy(self, parts, beta):
        return -((1 - beta) * parts[0] + beta * parts[1])

    def grad(self, parts, beta):
        return -((1 - beta) * parts[2] + beta * parts[3])


def _transition(potential, z, parts, step_size, num_steps):
    """
    One HMC transition of every row at ``potential.beta``: ``num_steps`` leapfrog steps (velocity
    Verlet, as :func:`pyro.ops.integrator.velocity_verlet`) that need only the gradient, the energy at
    the end of the trajectory, and :func:`~pyro_aevb.infer.hmc.accept_test`, which rejects a proposal
    whose energy is NaN. The gradient at ``z`` comes from its parts, whatever the temperature they were
    computed at. Returns the new ``z``, its parts and the acceptance probabilities.
    """
    beta = potential.beta
    energy = potential.energy(parts, beta)
    r = torch.randn_like(z)
    half_step = 0.5 * step_size[:, None]
    step = step_size[:, None]
    z_new, r_new, new_parts = z, r, parts
    for i in range(num_steps):
        r_new = r_new - half_step * potential.grad(new_parts, beta)
        z_new = z_new + step * r_new
        new_parts = potential.parts(z_new, values=i == num_steps - 1)
        r_new = r_new - half_step * potential.grad(new_parts, beta)
    accept, accept_prob = hmc.accept_test(energy, r, potential.energy(new_parts, beta), r_new)
    z = torch.where(accept[:, None], z_new, z)
    parts = tuple(torch.where(accept if old.dim() == 1 else accept[:, None], new, old) for old, new in zip(parts, new_parts))
    return z, parts, accept_prob


def _rows(z):
    if z.dim() != 3:
        raise ValueError(f"states must have shape [C, B, D], got {tuple(z.shape)}")
    return z.reshape(-1, z.shape[-1]).detach()


def _check_num_steps(num_steps):
    return check_whole("num_steps", num_steps)


def run(densities, z_init, betas, step_sizes, num_steps=10, reverse=False, gradients=None):
    r"""
    Annealed importance sampling with a fixed HMC schedule.

    Forwards (``reverse=False``), ``z_init`` must be exact draws from :math:`p_0`, and the
    log-weights estimate :math:`\log p(x)` (unbiased in :math:`p(x)`). In reverse, ``z_init`` must be
    exact draws from :math:`p(z|x) \propto f_T`, the chains visit the temperatures from
    :math:`\beta_{T-1}` down to :math:`\beta_1` with the same kernels, and the log-weights estimate
    :math:`-\log p(x)` (unbiased in :math:`1/p(x)`).

    :param callable densities: ``z [C, B, D] -> (log_p0 [C, B], log_joint [C, B])``.
    :param torch.Tensor z_init: ``[C, B, D]``.
    :param torch.Tensor betas: the schedule ``[T + 1]``, from 0 to 1.
    :param torch.Tensor step_sizes: ``[T + 1, B]``, the step size of the kernel at each temperature
        for each datapoint, fixed in advance (row ``t`` is used at :math:`\beta_t`, ``0 < t < T``).
    :param int num_steps: leapfrog steps per transition.
    :param bool reverse: run from the posterior back to :math:`p_0`.
    :param callable gradients: ``(z, values) -> (log_p0, log_joint, grad_log_p0, grad_log_joint)``, the
        same densities with their gradients in ``z`` written out (the values may be ``None`` when
        ``values`` is false: the inner leapfrog steps need only the gradients); by default autograd
        through ``densities``.
    :rtype: AISResult
    """
    num_steps = _check_num_steps(num_steps)
    shape = tuple(z_init.shape)
    num_temps = betas.shape[0] - 1
    if step_sizes.shape != (num_temps + 1, shape[1]):
        raise ValueError(f"step_sizes must have shape [{num_temps + 1}, {shape[1]}], got {tuple(step_sizes.shape)}")
    z = _rows(z_init)
    betas = [float(b) for b in betas]
    step_sizes = step_sizes.to(z).repeat(1, shape[0])  # [T + 1, C * B]: row k * B + b is datapoint b
    potential = _Annealed(densities, shape, gradients)
    parts = potential.evaluate(z)  # under the caller's validation setting: a model's mistakes surface here
    with pyro.validation_enabled(False):
        return _run(potential, z, parts, shape, betas, step_sizes, num_steps, reverse)


def _run(potential, z, parts, shape, betas, step_sizes, num_steps, reverse):
    num_temps = len(betas) - 1
    log_w = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    accept_sum = torch.zeros_like(log_w)
    order = range(num_temps, 0, -1) if reverse else range(1, num_temps + 1)
    every = max(1, num_temps // 100)
    for i, t in enumerate(order):
        if i % every == 0:
            report(i / num_temps)
        # Forwards: f_t / f_{t-1} at z_{t-1}; in reverse: f_{t-1} / f_t at z_t.
        delta_beta = betas[t - 1] - betas[t] if reverse else betas[t] - betas[t - 1]
        log_w += delta_beta * (parts[1] - parts[0]).double()
        move_at = t - 1 if reverse else t
        if 0 < move_at < num_temps:
            potential.beta = betas[move_at]
            z, parts, accept_prob = _transition(potential, z, parts, step_sizes[move_at], num_steps)
            accept_sum += accept_prob.double()
    accept = accept_sum / (num_temps - 1) if num_temps > 1 else torch.full_like(accept_sum, math.nan)
    return AISResult(log_w.reshape(shape[:2]), z.reshape(shape), accept.to(z.dtype).reshape(shape[:2]))


def pilot_step_sizes(densities, z_init, betas, num_steps=10, init_step_size=None, target_accept_prob=0.65,
                     adapt_rate=0.5, gradients=None):
    r"""
    The step-size schedule ``[T + 1, B]`` for :func:`run`, from a forward pilot run of the chains
    ``z_init`` (exact draws from :math:`p_0`, ``[P, B, D]``), which are then discarded. At each
    temperature the pilot's chains of a datapoint make one HMC transition, and the step size of that
    datapoint is multiplied by :math:`\exp(\gamma (\bar\alpha - \delta))` (:math:`\bar\alpha` the mean
    acceptance probability of its ``P`` chains, :math:`\delta` = ``target_accept_prob``,
    :math:`\gamma` = ``adapt_rate``); the adjusted value is the schedule's entry for that temperature
    and the pilot's step size at the next. The first step size is found by
    :func:`~pyro_aevb.infer.hmc.find_reasonable_step_size` at :math:`\beta_1` (unless
    ``init_step_size`` is given). ``gradients`` is as for :func:`run`.

    :returns: ``[T + 1, B]`` step sizes; row ``t`` is for the kernel at :math:`\beta_t` (rows 0 and
        ``T`` are not used by :func:`run` and repeat their neighbours).
    """
    num_steps = _check_num_steps(num_steps)
    shape = tuple(z_init.shape)
    num_chains, batch_size = shape[:2]
    num_temps = betas.shape[0] - 1
    z = _rows(z_init)
    betas = [float(b) for b in betas]
    potential = _Annealed(densities, shape, gradients)
    if init_step_size is None:
        beta = betas[1] if num_temps > 1 else 1.0

        def potential_fn(rows):
            log_p0, log_joint = densities(rows.reshape(shape))
            return -((1 - beta) * log_p0 + beta * log_joint).reshape(-1)

        found = hmc.find_reasonable_step_size(potential_fn, z).reshape(num_chains, batch_size)
        log_step = found.log().mean(0)  # geometric mean over the datapoint's pilot chains
    else:
        log_step = torch.as_tensor(init_step_size, dtype=z.dtype, device=z.device).log().expand(batch_size).clone()
    steps = log_step.new_empty(num_temps + 1, batch_size)
    steps[0] = log_step
    parts = potential.evaluate(z)
    with pyro.validation_enabled(False):
        steps = _pilot(potential, z, parts, betas, steps, log_step, num_steps, target_accept_prob, adapt_rate)
    return steps.exp()


def _pilot(potential, z, parts, betas, steps, log_step, num_steps, target_accept_prob, adapt_rate):
    num_temps = len(betas) - 1
    num_chains, batch_size = potential.shape[:2]
    every = max(1, num_temps // 100)
    for t in range(1, num_temps):
        if t % every == 0:
            report(t / num_temps)
        potential.beta = betas[t]
        z, parts, accept_prob = _transition(potential, z, parts, log_step.exp().repeat(num_chains), num_steps)
        mean_accept = accept_prob.reshape(num_chains, batch_size).mean(0)
        log_step = log_step + adapt_rate * (mean_accept - target_accept_prob)
        steps[t] = log_step
    steps[num_temps] = log_step
    if num_temps > 1:
        steps[0] = steps[1]
    return steps


# -- models ----------------------------------------------------------------------------------------

# Rows (chains x datapoints) advanced together: the datapoints are taken in chunks of this many rows.
_CHUNK_ROWS = 2**12
class _ModelPath:
    r"""
    The path of annealing distributions of a model for the ``B`` datapoints ``x``: states are the
    model's latent sites per datapoint as one unconstrained vector each
    (:class:`~pyro_aevb.infer.sites.LatentSpace`), ``[C, B, D]``, whatever the sites' names, their
    number and their supports. :math:`p_0` is the prior or the guide, both as densities in the
    unconstrained space (with the log-Jacobian of the map to each site's support), and so is the
    target :math:`p(x, z)`: the Jacobian is the same factor in both, so the path's normaliser is still
    :math:`p(x)`.

    The densities come from traces of the model and the guide, except where closed forms written out
    for them are handed in: ``closed_forms.annealing(space, model, x, guide, precision)`` (by default,
    those that the owner of the model, or else of the guide, supplies: the paper's
    :class:`~pyro_aevb.models.vae.VAE` does, :meth:`PaperVAEClosedForms.annealing
    <pyro_aevb.models.closed_forms.paper_vae.PaperVAEClosedForms.annealing>`) returns an object with the
    datapoints ``x`` it reads, ``model_densities(u) -> (log_prior, log_joint)`` (or ``None``: traced),
    ``direct_guide`` and ``log_guide(u)`` (the guide's density; ``direct_guide`` ``None``: traced),
    ``gradients`` (as :func:`run` takes them; ``None``: autograd) and ``bf16`` (whether
    ``precision="bf16"`` applies), or ``None``.

    :param LatentSpace space: the model's latent space (from :func:`~pyro_aevb.infer.sites.check_model`).
    :param str precision: ``"fp32"`` or ``"bf16"`` (see :func:`bf16_supported`).
    :param closed_forms: the closed forms to ask; ``None``: the model's or the guide's owner's.
    """

    def __init__(self, space, model, x, guide=None, precision="fp32", closed_forms=None):
        forms = closed_forms or closed_forms_of(model) or closed_forms_of(guide)
        self.closed = forms.annealing(space, model, x, guide, precision) if forms is not None else None
        closed = self.closed
        self.space, self.model, self.x, self.guide = space, model, x if closed is None else closed.x, guide
        self.batch_size = self.x.shape[0]
        self.dim = space.dim
        self._x_rows = {}
        self.direct_guide = None if closed is None else closed.direct_guide
        self.gradients = None if closed is None else closed.gradients  # None: autograd through densities
        if precision == "bf16" and (closed is None or not closed.bf16):
            warnings.warn(_BF16_ELSEWHERE, stacklevel=5)

    def rows(self, num_chains):
        """``x`` repeated ``num_chains`` times along the rows: row ``k * B + b`` is datapoint ``b``."""
        if num_chains not in self._x_rows:
            self._x_rows[num_chains] = repeat_rows(self.x, num_chains)
        return self._x_rows[num_chains]

    def sample_p0(self, num_chains):
        """Exact draws from :math:`p_0` in the unconstrained space, ``[C, B, D]``."""
        with torch.no_grad():  # with a guide, the calls "is" makes, so its draws for the same seed
            u = self.space.sample_start(self.rows(num_chains), self.guide)
        return u.reshape(num_chains, self.batch_size, self.dim)

    def densities(self, u):
        """``(log_p0, log_joint)`` ``[C, B]`` at the states ``u`` ``[C, B, D]``."""
        num_chains = u.shape[0]
        rows = u.reshape(num_chains * self.batch_size, self.dim)
        if self.closed is not None and self.closed.model_densities is not None:
            log_prior, log_joint = self.closed.model_densities(u)
        else:
            log_prior, log_lik = self.space.log_joint(self.rows(num_chains), rows, jacobian=True)
            log_joint = (log_prior + log_lik).reshape(num_chains, self.batch_size)
            log_prior = log_prior.reshape(num_chains, self.batch_size)
        if self.guide is None:
            return log_prior, log_joint
        if self.direct_guide is not None:
            return self.closed.log_guide(u), log_joint
        return self.space.log_guide(self.guide, self.rows(num_chains), rows).reshape(num_chains, self.batch_size), log_joint


_BF16_ELSEWHERE = ("precision='bf16' applies to the paper's VAE with its Bernoulli decoder (and chains from the prior "
                   "or its own encoder) only; this model runs in float32")


def default_chunk_size(num_chains):
    """
    The default ``chunk_size`` of :func:`anneal`: the datapoints advanced together, as many as make
    about :math:`2^{12}` rows with ``num_chains`` chains each.
    """
    return max(1, _CHUNK_ROWS // num_chains)


def _chunks(batch_size, num_chains, chunk_size):
    if chunk_size is None:
        chunk_size = default_chunk_size(num_chains)
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    return [slice(s, min(s + int(chunk_size), batch_size)) for s in range(0, batch_size, int(chunk_size))]


def bf16_supported():
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16), read off ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def _check_precision(precision):
    """``precision``, or ``"fp32"`` with a warning for ``"bf16"`` on a CPU without bfloat16 products."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and not bf16_supported():
        warnings.warn("precision='bf16': this CPU has neither AMX nor AVX512-BF16, so bfloat16 products would be "
                      "slower than float32; running in float32", stacklevel=5)
        return "fp32"
    return precision


def _check_options(num_chains, pilot_chains, pilot_temps):
    for name, value in (("num_chains", num_chains), ("pilot_chains", pilot_chains), ("pilot_temps", pilot_temps)):
        check_whole(name, value)


def _interpolate_steps(steps, num_temps):
    """A pilot's schedule ``[P + 1, B]`` read at the ``T + 1`` temperatures of the same schedule with ``T`` steps."""
    num_pilot = steps.shape[0] - 1
    if num_pilot == num_temps:
        return steps
    position = torch.linspace(0.0, num_pilot, num_temps + 1, dtype=torch.float64)
    lo = position.floor().long().clamp(max=num_pilot - 1)
    frac = (position - lo).to(steps)[:, None]
    log_steps = steps.log()
    return (log_steps[lo] * (1 - frac) + log_steps[lo + 1] * frac).exp()


def _annealed(path, num_chains, num_temps, num_steps, schedule_name, pilot_chains, pilot_temps, z_reverse=None):
    """Forward AIS on ``path`` (and reverse AIS from ``z_reverse [B, D]``): results and the step schedule."""
    betas = schedule(schedule_name, num_temps)
    z0 = path.sample_p0(num_chains)  # drawn first: with T = 1 these are the only draws
    # Shares of the work, for the progress report: the pilot's transitions against the kept chains'.
    num_pilot = max(2, min(num_temps, pilot_temps)) if num_temps > 1 else 0
    runs = 1 if z_reverse is None else 2
    pilot_share = num_pilot * pilot_chains / (num_pilot * pilot_chains + runs * num_temps * num_chains)
    if num_temps > 1:
        with part(0.0, pilot_share):
            pilot = pilot_step_sizes(
                path.densities, path.sample_p0(pilot_chains), schedule(schedule_name, num_pilot), num_steps,
                gradients=path.gradients,
            )
        steps = _interpolate_steps(pilot, num_temps)
    else:
        steps = z0.new_ones(num_temps + 1, path.batch_size)
    middle = pilot_share + (1 - pilot_share) / runs
    with part(pilot_share, middle):
        forward = run(path.densities, z0, betas, steps, num_steps, gradients=path.gradients)
    reverse = None
    if z_reverse is not None:
        z_post = z_reverse.expand((num_chains,) + z_reverse.shape)
        with part(middle, 1.0):
            reverse = run(path.densities, z_post, betas, steps, num_steps, reverse=True, gradients=path.gradients)
    return forward, reverse, steps


def anneal(model, x, guide=None, latents=None, *, num_chains=16, num_temps=1000, num_steps=10, schedule="sigmoid",
           pilot_chains=2, pilot_temps=200, chunk_size=None, precision="fp32"):
    r"""
    AIS on the posterior of ``model`` for each datapoint of ``x``: ``num_chains`` forward chains from
    :math:`p_0` (the prior, or ``guide``) and, given ``latents``, as many reverse chains from them back
    to :math:`p_0` through the same kernels. The datapoints are taken in chunks; for each, one pilot
    run (:func:`pilot_step_sizes`, ``pilot_chains`` chains at ``pilot_temps`` temperatures) fixes the
    step sizes, read at the ``num_temps`` temperatures of the schedule, before the kept chains run
    (:func:`run`).

    :param callable model: ``model(x)``, as for :func:`~pyro_aevb.infer.marginal.log_marginal_likelihood`.
    :param torch.Tensor x: datapoints ``[B, ...]``.
    :param callable guide: :math:`p_0` is ``guide(x)`` (the prior without it).
    :param dict latents: each latent site's name (all of the model's latent sites) to its value, one
        row per datapoint: exact draws from the posterior, where the reverse chains start.
    :param options: as for ``estimator="ais"`` of :func:`~pyro_aevb.infer.marginal.log_marginal_likelihood`.
    :returns: ``(forward, reverse, step_sizes)``: two :class:`AISResult` over the ``B`` datapoints
        (``reverse`` ``None`` without ``latents``) and the step sizes ``[T + 1, B]`` of their kernels.
    """
    _check_options(num_chains, pilot_chains, pilot_temps)
    _check_num_temps(num_temps)
    precision = _check_precision(precision)
    space = check_model(model, x, guide)
    u = None
    if latents is not None:
        if not isinstance(latents, dict) or set(latents) != set(space.names):
            given = sorted(latents) if isinstance(latents, dict) else type(latents).__name__
            raise ValueError(
                f"latents must map each of the model's latent sites {space.names} to its values, got {given}"
            )
        with torch.no_grad():
            u = space.pack(latents, x.shape[0]).to(x.dtype)
    results = []
    for rows in _chunks(x.shape[0], num_chains, chunk_size):
        path = _ModelPath(space, model, x[rows], guide, precision)
        with part(rows.start / x.shape[0], rows.stop / x.shape[0]):
            results.append(_annealed(
                path, num_chains, num_temps, num_steps, schedule, pilot_chains, pilot_temps,
                None if u is None else u[rows],
            ))
    forward, reverse, steps = zip(*results)

    def joined(chunks):  # the chunks' results side by side, along the datapoints
        return AISResult(*(torch.cat(field, 1) for field in zip(*chunks)))

    return joined(forward), None if u is None else joined(reverse), torch.cat(steps, 1)


def log_marginal(model, x, guide=None, *, num_chains=16, num_temps=1000, num_steps=10, schedule="sigmoid",
                 pilot_chains=2, pilot_temps=200, chunk_size=None, precision="fp32", diagnostics=False):
    r"""
    The ``"ais"`` estimator of :func:`~pyro_aevb.infer.marginal.log_marginal_likelihood`:
    :math:`\log \frac1K \sum_k w_k` per datapoint over ``num_chains`` forward chains from the prior (or
    from ``guide``) (:func:`anneal`). Returns ``(log_px [B], diagnostics or None)``.
    """
    forward, _, steps = anneal(
        model, x, guide, num_chains=num_chains, num_temps=num_temps, num_steps=num_steps, schedule=schedule,
        pilot_chains=pilot_chains, pilot_temps=pilot_temps, chunk_size=chunk_size, precision=precision,
    )
    log_w = forward.log_weights
    log_px = log_mean_exp(log_w).to(torch.get_default_dtype())
    if not diagnostics:
        return log_px, None
    ess = (2 * log_w.logsumexp(0) - (2 * log_w).logsumexp(0)).exp()
    return log_px, {
        "ess": ess.to(log_px),
        "stderr": (1 / ess - 1 / log_w.shape[0]).clamp(min=0).sqrt().to(log_px),
        "accept_prob": forward.accept_prob,
        "step_size": steps[-1],
    }
