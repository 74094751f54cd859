"""
The training methods by name (:data:`METHODS`), as ``--method`` and :class:`~pyro_aevb.experiment.config.TrainConfig`
name them, and the building of each from a run's settings.
"""

import inspect

from pyro_aevb.errors import ConfigError
from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.infer.iwae import IWAE
from pyro_aevb.infer.mcem import MCEM, ImportanceMCEM
from pyro_aevb.infer.rws import RWS
from pyro_aevb.infer.wake_sleep import WakeSleep
from pyro_aevb.optim import make_optim

__all__ = ["METHODS", "MethodFactory"]


class MethodFactory:
    """
    Builds a :class:`~pyro_aevb.infer.method.TrainingMethod` subclass ``cls`` for a run: called with
    ``(vae, config)``, it builds ``cls`` as ``SVI(model, guide, ...)`` is built: the model and guide
    callables, then keyword options from the config (``lr``, ``weight_decay``, ``optim`` and
    ``num_particles`` where the class takes them), the options ``fixed`` here, and
    ``config.method_options``.

    :param type cls: the method's class.
    :param fixed: keyword options that the method's name fixes (``estimator="A"`` for ``aevb-mc``).
    """

    def __init__(self, cls, **fixed):
        self.cls = cls
        self.fixed = fixed

    @property
    def has_encoder(self):
        """Whether the method trains a guide (:attr:`TrainingMethod.has_encoder
        <pyro_aevb.infer.method.TrainingMethod.has_encoder>`), known without building it."""
        return self.cls.has_encoder

    def __call__(self, vae, config):
        """
        :param vae: the model object, with Pyro ``.model`` and ``.guide``.
        :param config: the run's :class:`~pyro_aevb.experiment.config.TrainConfig`.
        :returns: the method, ready to :meth:`~pyro_aevb.infer.method.TrainingMethod.step`.
        :raises ConfigError: for settings the method does not take, naming them.
        """
        cls = self.cls
        parameters = inspect.signature(cls).parameters
        options = dict(self.fixed, lr=config.lr, weight_decay=config.weight_decay)
        if "optim" in parameters:
            options["optim"] = make_optim(config.optim, config.lr, config.weight_decay, **config.optim_options)
        elif config.optim != "Adagrad" or config.optim_options:
            raise ConfigError(f"{config.method} trains with its own optimizer: it takes no optim ({config.optim!r})")
        if "num_particles" in parameters:
            options["num_particles"] = config.num_particles
        elif config.num_particles != 1:
            raise ConfigError(
                f"{config.method} takes no num_particles (got {config.num_particles})"
                + (": the HMC E-step keeps one sample per datapoint, and the importance-sampled one takes "
                   "method option num_proposals" if not cls.has_encoder else "")
            )
        known = set(parameters) - {"model", "guide", "optim"} - set(options)
        unknown = set(config.method_options) - known
        if unknown:
            raise ConfigError(f"unknown method options {sorted(unknown)} for {config.method}; known: {sorted(known)}")
        options.update(config.method_options)
        guide = [vae.guide] if "guide" in parameters else []
        try:
            return cls(vae.model, *guide, **options)
        except (TypeError, ValueError) as e:
            shown = {k: v for k, v in options.items() if k != "optim"}
            raise ConfigError(f"cannot build {config.method} with {shown}: {e}") from None


#: Training methods by name: each builds a :class:`~pyro_aevb.infer.method.TrainingMethod` from
#: ``(vae, config)`` (:class:`MethodFactory`); ``METHODS[name].has_encoder`` says whether it trains a guide.
METHODS = {
    "aevb": MethodFactory(AEVB, estimator="B"),
    "aevb-mc": MethodFactory(AEVB, estimator="A"),
    "wake-sleep": MethodFactory(WakeSleep),
    "mcem": MethodFactory(MCEM),
    "mcem-is": MethodFactory(ImportanceMCEM),
    "iwae": MethodFactory(IWAE),
    "rws": MethodFactory(RWS),
}
