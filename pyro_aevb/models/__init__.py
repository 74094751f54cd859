"""
The models of [1]: the MLPs of Appendix C (:mod:`~pyro_aevb.models.nets`), the paper's variational
auto-encoder as a Pyro ``model`` and ``guide`` (:mod:`~pyro_aevb.models.vae`), that model written out
in closed form for the methods' fast paths (:mod:`~pyro_aevb.models.closed_forms`), and variants with
another prior or likelihood (:mod:`~pyro_aevb.models.variants`).

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

from pyro_aevb.models.nets import BernoulliMLPDecoder, GaussianMLPDecoder, GaussianMLPEncoder, init_normal_
from pyro_aevb.models.vae import VAE, data_plate
from pyro_aevb.models.variants import ContinuousBernoulliVAE, LaplacePriorVAE, MixturePriorVAE, StudentTVAE

__all__ = [
    "BernoulliMLPDecoder",
    "ContinuousBernoulliVAE",
    "GaussianMLPDecoder",
    "GaussianMLPEncoder",
    "LaplacePriorVAE",
    "MixturePriorVAE",
    "StudentTVAE",
    "VAE",
    "data_plate",
    "init_normal_",
]
