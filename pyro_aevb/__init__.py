"""
pyro-aevb: Auto-Encoding Variational Bayes (Kingma & Welling, 2013) as a probabilistic program in Pyro.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013), arXiv:1312.6114
"""

__version__ = "0.1.0"

from pyro_aevb.infer.aevb import AEVB, PAPER_STEP_SIZES
from pyro_aevb.infer.bdmc import bdmc
from pyro_aevb.data import DATASETS, Dataset, DataError, MinibatchSampler, load_dataset
from pyro_aevb.errors import ConfigError, RunDirError, TrainingDiverged, UnsupportedModelError, UserError
from pyro_aevb.infer.elbo import lower_bound, make_elbo
from pyro_aevb.infer.iwae import IWAE
from pyro_aevb.infer.rws import RWS
from pyro_aevb.infer.marginal import log_marginal_likelihood
from pyro_aevb.infer.mcem import MCEM, ImportanceMCEM
from pyro_aevb.models.nets import BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder, init_normal_
from pyro_aevb.experiment.config import TrainConfig
from pyro_aevb.experiment.load import load_run
from pyro_aevb.experiment.methods import METHODS
from pyro_aevb.experiment.train import train
from pyro_aevb.models.vae import VAE, data_plate
from pyro_aevb.models.variants import ContinuousBernoulliVAE, LaplacePriorVAE, MixturePriorVAE, StudentTVAE
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.wake_sleep import WakeSleep

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
    "IWAE",
    "ImportanceMCEM",
    "LaplacePriorVAE",
    "MCEM",
    "METHODS",
    "MinibatchSampler",
    "MixturePriorVAE",
    "PAPER_STEP_SIZES",
    "RWS",
    "RunDirError",
    "StudentTVAE",
    "TrainConfig",
    "TrainingDiverged",
    "UnsupportedModelError",
    "UserError",
    "VAE",
    "WakeSleep",
    "check_model",
    "bdmc",
    "data_plate",
    "init_normal_",
    "load_dataset",
    "load_run",
    "log_marginal_likelihood",
    "lower_bound",
    "make_elbo",
    "train",
]
