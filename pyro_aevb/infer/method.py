"""
The interface every training method offers to the training loop, as Pyro's
:class:`~pyro.infer.elbo.ELBO` is the interface of its losses.
"""

from abc import ABCMeta, abstractmethod

__all__ = ["TrainingMethod"]


class TrainingMethod(metaclass=ABCMeta):
    """
    :class:`TrainingMethod` is the top-level interface of the training methods: the loop of
    :func:`pyro_aevb.experiment.train.train` draws the minibatches and calls :meth:`step`, checkpoints
    with :meth:`state_dict`, resumes with :meth:`load_state_dict`, and reads :attr:`has_encoder` to know
    whether to evaluate the lower bound (which needs the guide) or the marginal likelihood.

    Most users will not use this base class directly; they build one of its subclasses:
    :class:`~pyro_aevb.infer.aevb.AEVB` and its importance-weighted kin
    (:class:`~pyro_aevb.infer.iwae.IWAE`, :class:`~pyro_aevb.infer.rws.RWS`),
    :class:`~pyro_aevb.infer.wake_sleep.WakeSleep`, :class:`~pyro_aevb.infer.mcem.MCEM` and
    :class:`~pyro_aevb.infer.mcem.ImportanceMCEM`. A method of one's own subclasses it, and is built as
    ``SVI(model, guide, ...)`` is: the model and guide callables, then keyword options.

    The default :meth:`state_dict` and :meth:`load_state_dict` keep the state of the optimizer
    ``self.optim`` (a :class:`~pyro.optim.PyroOptim`); a method with more state overrides them.
    """

    #: Whether the method trains a guide :math:`q_\phi(z|x)` (an encoder): then the loop evaluates the
    #: lower bound, and uses the guide as proposal of the marginal-likelihood estimators.
    has_encoder = True

    @abstractmethod
    def step(self, x, num_data=None, *, idx=None):
        """
        One training step on the minibatch ``x``, called as :meth:`SVI.step <pyro.infer.SVI.step>` is.

        :param torch.Tensor x: the minibatch ``[M, ...]``.
        :param int num_data: the data set's size :math:`N` (``None``: scale 1).
        :param torch.Tensor idx: the rows' indices in the data set (a method that keeps state per
            datapoint needs them).
        :returns: the loss, scaled to the whole data set.
        :rtype: float
        """
        raise NotImplementedError

    def state_dict(self):
        """:returns: what a checkpoint keeps of the method: the optimizer's state."""
        return {"optim": self.optim.get_state()}

    def load_state_dict(self, state):
        """Restore the state that :meth:`state_dict` returned."""
        self.optim.set_state(state["optim"])
