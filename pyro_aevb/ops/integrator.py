r"""
The leapfrog integrator of a batch of independent HMC chains, one chain per row of ``z``.

It adapts a per-chain potential ``potential_fn: [B, ...] -> [B]`` to Pyro's
:func:`~pyro.ops.integrator.velocity_verlet` (identity mass matrix), which differentiates one scalar
potential of a dict: the chains are independent, so the gradient of the summed potential is each
chain's own gradient. Each chain has its own step size. :mod:`pyro_aevb.infer.hmc` builds its
transitions on these functions.
"""

import math

import pyro
import torch
from pyro.ops.integrator import potential_grad, velocity_verlet

__all__ = ["leapfrog", "potential_and_grad"]


def _identity_kinetic_grad(r):
    return r


class _SummedPotential:
    """
    Adapts a per-chain ``potential_fn: [B, ...] -> [B]`` to Pyro's integrator, which differentiates a
    scalar potential of a dict. The chains are independent, so the gradient of the sum is the
    per-chain gradient; the last per-chain value is kept in :attr:`last`.
    """

    def __init__(self, potential_fn, batch_size):
        self.potential_fn = potential_fn
        self.batch_size = batch_size
        self.last = None

    def __call__(self, params):
        # NaN until computed: a potential that raises (and that Pyro's integrator then handles) is rejected.
        self.last = params["z"].new_full((self.batch_size,), math.nan)
        energy = self.potential_fn(params["z"])
        if energy.shape != (self.batch_size,):
            raise ValueError(f"potential_fn must return shape [{self.batch_size}], got {tuple(energy.shape)}")
        self.last = energy.detach()
        return energy.sum()


def potential_and_grad(potential_fn, z):
    r"""
    The potential energy :math:`U(z)` of each chain and its gradient.

    :param callable potential_fn: maps ``z`` ``[B, ...]`` to the per-chain potential energy ``[B]``,
        differentiable in ``z``.
    :param torch.Tensor z: states ``[B, ...]``, one chain per row.
    :returns: ``(potential_energy [B], z_grad [B, ...])``; a potential that fails as Pyro's
        :func:`~pyro.ops.integrator.potential_grad` tolerates (a singular Cholesky factor) gives NaN.
    """
    summed = _SummedPotential(potential_fn, z.shape[0])
    with torch.enable_grad():
        grads, _ = potential_grad(summed, {"z": z.detach().clone()})
    return summed.last, grads["z"]


def leapfrog(potential_fn, z, r, step_size, num_steps, z_grad):
    r"""
    ``num_steps`` leapfrog steps of every chain, each with its own step size.

    :param callable potential_fn: as in :func:`potential_and_grad`.
    :param torch.Tensor z: positions ``[B, ...]``.
    :param torch.Tensor r: momenta ``[B, ...]``.
    :param torch.Tensor step_size: ``[B]``.
    :param int num_steps: leapfrog steps.
    :param torch.Tensor z_grad: :math:`\nabla U(z)` ``[B, ...]``.
    :returns: ``(z_new, r_new, z_grad_new, potential_energy_new)`` at the end of the trajectory; NaN
        values on a diverging trajectory, for the accept test to reject.
    """
    summed = _SummedPotential(potential_fn, z.shape[0])
    step_size = step_size.reshape(step_size.shape + (1,) * (z.dim() - 1))
    # NaNs are expected on diverging trajectories; they are rejected by the accept test, as Pyro's HMC does.
    with torch.enable_grad(), pyro.validation_enabled(False):
        z_new, r_new, grads, _ = velocity_verlet(
            {"z": z}, {"z": r}, summed, _identity_kinetic_grad, step_size, num_steps, z_grads={"z": z_grad},
        )
    return z_new["z"], r_new["z"], grads["z"], summed.last
