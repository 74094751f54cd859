"""
The Appendix D estimator of [1] (``estimator="hmc"`` of
:func:`pyro_aevb.infer.marginal.log_marginal_likelihood`) run the obvious, slow way: the reference that
``bench_marginal.py`` times the vectorised estimator against, and that the tests check it with.

[1] Auto-Encoding Variational Bayes, Kingma & Welling (2013)
"""

import torch
from pyro.infer.mcmc import HMC, MCMC

from pyro_aevb.infer.marginal import appendix_d_estimate
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.util import repeat_rows


def reference_hmc_mcmc(
    model, x, guide=None, *, num_samples, num_chains, warmup_steps, num_steps, target_accept_prob=0.8, q_cov_scale=0.8
):
    """
    Pyro's :class:`~pyro.infer.mcmc.HMC` through :class:`~pyro.infer.mcmc.MCMC`, one chain of one
    datapoint at a time, with the settings of the vectorised ``"hmc"`` estimator (identity mass matrix,
    ``num_steps`` leapfrog steps, step size adapted by dual averaging, no step-size jitter); the options
    mean what they mean for ``"hmc"``.

    :returns: ``(log_px [B], samples [2 * num_samples, num_chains, B, Nz])``.
    """

    class FixedStepsHMC(HMC):
        # Pyro's HMC keeps the trajectory length fixed while the step size adapts; [1] fixes num_steps.
        @property
        def num_steps(self):
            return num_steps

    def log_joint(x_rows, u):
        log_prior, log_lik = space.log_joint(x_rows, u)
        return log_prior + log_lik

    space = check_model(model, x, guide)
    draws = []
    for b in range(x.shape[0]):
        x_b = x[b : b + 1]
        with torch.no_grad():
            x_init = repeat_rows(x_b, num_chains)
            z_init = space.sample_start(x_init, guide)
        chains = []
        for c in range(num_chains):
            kernel = FixedStepsHMC(
                potential_fn=lambda params: -log_joint(x_b, params["u"]).sum(),
                num_steps=num_steps,
                adapt_step_size=True,
                adapt_mass_matrix=False,
                target_accept_prob=target_accept_prob,
            )
            mcmc = MCMC(
                kernel,
                num_samples=2 * num_samples,
                warmup_steps=warmup_steps,
                initial_params={"u": z_init[c : c + 1]},
                disable_progbar=True,
            )
            mcmc.run()
            chains.append(mcmc.get_samples()["u"].reshape(2 * num_samples, -1))
        draws.append(torch.stack(chains, 1))
    samples = torch.stack(draws, 2)  # [2L, C, B, Nz]
    test = samples[num_samples:].flatten(0, 1)
    with torch.no_grad():
        test_log_joint = torch.stack([log_joint(x, z) for z in test])
        log_px, _ = appendix_d_estimate(samples[:num_samples].flatten(0, 1), test, test_log_joint, q_cov_scale)
    return log_px, samples
