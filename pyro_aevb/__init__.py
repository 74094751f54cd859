"""
pyro-aevb: Auto-Encoding Variational Bayes (Kingma & Welling, 2013) as a probabilistic program in Pyro.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013), arXiv:1312.6114
"""

__version__ = "0.1.0"

from .aevb import AEVB, PAPER_STEP_SIZES
from .data import DATASETS, Dataset, DataError, MinibatchSampler, load_dataset
from .errors import ConfigError, RunDirError, TrainingDiverged, UserError
from .evaluate import lower_bound, make_elbo
from .marginal import log_marginal_likelihood
from .mcem import MCEM, ImportanceMCEM
from .nets import BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder, init_normal_
from .train import METHODS, TrainConfig, load_run, train
from .vae import VAE, data_plate
from .variants import ContinuousBernoulliVAE, LaplacePriorVAE, MixturePriorVAE, StudentTVAE
from .wake_sleep import WakeSleep

__all__ = [
    "AEVB",
    "BernoulliMLPDecoder",
    "ConfigError",
    "ContinuousBernoulliVAE",
    "DATASETS",
    "DataError",
    "Dataset",
    "GaussianMLPDecoder",
    "GaussianMLPEncoder",
    "ImportanceMCEM",
    "LaplacePriorVAE",
    "MCEM",
    "METHODS",
    "MinibatchSampler",
    "MixturePriorVAE",
    "PAPER_STEP_SIZES",
    "RunDirError",
    "StudentTVAE",
    "TrainConfig",
    "TrainingDiverged",
    "UserError",
    "VAE",
    "WakeSleep",
    "data_plate",
    "init_normal_",
    "load_dataset",
    "load_run",
    "log_marginal_likelihood",
    "lower_bound",
    "make_elbo",
    "train",
]
