"""
Inference for any Pyro ``model`` / ``guide`` pair with continuous latent variables per datapoint:
AEVB with the two SGVB estimators (:mod:`~pyro_aevb.infer.aevb`), the
per-datapoint bound (:mod:`~pyro_aevb.infer.elbo`), the importance-weighted bound and its methods IWAE
and reweighted wake-sleep (:mod:`~pyro_aevb.infer.iw_elbo`, :mod:`~pyro_aevb.infer.iwae`, :mod:`~pyro_aevb.infer.rws`), the baselines wake-sleep
(:mod:`~pyro_aevb.infer.wake_sleep`) and Monte Carlo EM (:mod:`~pyro_aevb.infer.mcem`), batched HMC
(:mod:`~pyro_aevb.infer.hmc`) and the marginal-likelihood estimators (:mod:`~pyro_aevb.infer.marginal`).
"""

from pyro_aevb.infer.active_units import active_units, unit_activity
from pyro_aevb.infer.aevb import AEVB, PAPER_STEP_SIZES
from pyro_aevb.infer.elbo import lower_bound, make_elbo
from pyro_aevb.infer.iw_elbo import ImportanceWeightedELBO
from pyro_aevb.infer.iwae import IWAE
from pyro_aevb.infer.marginal import log_marginal_likelihood
from pyro_aevb.infer.mcem import MCEM, ImportanceMCEM
from pyro_aevb.infer.method import TrainingMethod
from pyro_aevb.infer.rws import RWS, ReweightedWakeSleepLoss
from pyro_aevb.infer.wake_sleep import WakeSleep

__all__ = [
    "AEVB",
    "IWAE",
    "ImportanceMCEM",
    "ImportanceWeightedELBO",
    "MCEM",
    "PAPER_STEP_SIZES",
    "RWS",
    "ReweightedWakeSleepLoss",
    "TrainingMethod",
    "WakeSleep",
    "active_units",
    "log_marginal_likelihood",
    "lower_bound",
    "make_elbo",
    "unit_activity",
]
