"""
Numerical kernels under the inference algorithms, as in :mod:`pyro.ops`: the leapfrog integrator of
batched HMC chains (:mod:`~pyro_aevb.ops.integrator`).
"""
