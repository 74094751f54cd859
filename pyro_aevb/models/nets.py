r"""
The multilayer perceptrons of Appendix C of [1].

Each net has one hidden layer of :math:`\tanh` units (a sequence ``hidden_dim`` gives several, as in
Burda et al. (2015), and ``activation`` another nonlinearity). The encoder and the Gaussian decoder
share their hidden layers between two linear heads, one for the mean and one for the log-variance:

.. math::

    h = \tanh(W_3 x + b_3), \qquad \mu = W_4 h + b_4, \qquad \log\sigma^2 = W_5 h + b_5
    \qquad \text{(Eq. 12)}

    \log p(x|z) = \sum_i x_i \log y_i + (1 - x_i) \log(1 - y_i),
    \quad y = f_\sigma(W_2 \tanh(W_1 z + b_1) + b_2) \qquad \text{(Eq. 11)}

Called, the two-headed nets return :math:`(\mu, \sigma)`; their ``loc_and_log_var`` returns
:math:`(\mu, \log\sigma^2)` as the head gives it, which is what the model, the guide and the fast
paths read (:func:`loc_and_log_var`), so that no density takes the log of an exponential that has
underflowed or overflowed.

The nets are plain :class:`torch.nn.Module` objects that return tensors; the probabilistic meaning
(which distribution the outputs parametrise) lives in the model and the guide of
:mod:`pyro_aevb.models.vae`.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BernoulliMLPDecoder",
    "GaussianMLPDecoder",
    "GaussianMLPEncoder",
    "activation",
    "flat_rows",
    "hidden_dims",
    "hidden_layers",
    "init_normal_",
    "loc_and_log_var",
]


def flat_rows(x):
    """``x`` ``[M, ...]`` as ``[M, D]``, one flattened datapoint a row (a view where it can be): what the nets take."""
    return x if x.dim() == 2 else x.reshape(x.shape[0], -1)


def init_normal_(module, std=0.01):
    r"""
    Initialise every parameter of ``module`` (weights and biases) from :math:`\mathcal{N}(0, \mathrm{std}^2)`,
    in place. The paper: "parameters are initialized by random sampling from N(0, 0.01)"; we read 0.01
    as the standard deviation, as the authors' released code does.

    :param torch.nn.Module module: the net to initialise.
    :param float std: the standard deviation.
    :returns: ``module``.
    """
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, std)
    return module


#: Activations of the hidden layers, by name (functions of :mod:`torch.nn.functional` and :mod:`torch`).
ACTIVATIONS = (
    "tanh", "relu", "softplus", "sigmoid", "elu", "selu", "celu", "gelu", "silu", "mish", "leaky_relu",
    "relu6", "hardtanh", "softsign", "tanhshrink", "logsigmoid",
)


def activation(name):
    """The activation function of that name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return torch.tanh if name == "tanh" else getattr(nn.functional, name)


def hidden_dims(hidden_dim):
    """``hidden_dim`` (an int, or a sequence of ints for several layers) as a tuple of positive ints."""
    dims = (hidden_dim,) if isinstance(hidden_dim, int) else tuple(hidden_dim)
    if not dims or any(isinstance(h, bool) or int(h) != h or h < 1 for h in dims):
        raise ValueError(f"hidden_dim must be a positive integer or a non-empty sequence of them, got {hidden_dim!r}")
    return tuple(int(h) for h in dims)


def hidden_layers(net):
    """The hidden :class:`~torch.nn.Linear` layers of one of this module's nets, first to last."""
    return [net.hidden, *(net.deeper if net.deeper is not None else ())]


class _MLP(nn.Module):
    """
    Hidden layers (the paper: one of tanh units) followed by one or two linear heads. The first hidden
    layer is ``hidden``, the others ``deeper``, so that the paper's nets keep their parameter names.
    """

    def __init__(self, in_dim, hidden_dim, out_dim, two_heads, init_std, activation_name="tanh"):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        dims = hidden_dims(hidden_dim)
        self.act = activation(activation_name)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.hidden = nn.Linear(in_dim, dims[0])
        self.deeper = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])) if len(dims) > 1 else None
        self.loc = nn.Linear(dims[-1], out_dim)
        self.log_var = nn.Linear(dims[-1], out_dim) if two_heads else None
        if init_std is not None:
            init_normal_(self, init_std)

    def _check(self, inputs):
        if inputs.shape[-1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects inputs with last dimension {self.in_dim}, "
                f"got shape {tuple(inputs.shape)}"
            )

    def features(self, inputs):
        """The last hidden layer's activations."""
        h = self.act(self.hidden(inputs))
        if self.deeper is not None:
            for layer in self.deeper:
                h = self.act(layer(h))
        return h


class _GaussianMLP(_MLP):
    r"""An MLP with two heads, :math:`\mu` and :math:`\log\sigma^2`; called, it returns :math:`(\mu, \sigma)`."""

    def __init__(self, in_dim, hidden_dim, out_dim, init_std, activation_name):
        super().__init__(in_dim, hidden_dim, out_dim, True, init_std, activation_name)

    def forward(self, inputs):
        r""":returns: ``(loc, scale)``, :math:`\sigma = \exp(\frac12 \log\sigma^2)` from :meth:`loc_and_log_var`."""
        loc, log_var = self.loc_and_log_var(inputs)
        return loc, torch.exp(0.5 * log_var)

    def loc_and_log_var(self, inputs):
        r""":returns: ``(loc, log_var)``, :math:`(\mu, \log\sigma^2)` as the two heads give them."""
        self._check(inputs)
        h = self.features(inputs)
        return self.loc(h), self.log_var(h)


class GaussianMLPEncoder(_GaussianMLP):
    r"""
    The recognition model's net :math:`x \mapsto (\mu, \sigma)` of Appendix C.2 (Eq. 12), with separate
    linear heads for :math:`\mu` and :math:`\log\sigma^2` on a shared tanh layer. Called on ``x``
    it returns ``(z_loc, z_scale)``; ``loc_and_log_var(x)`` returns ``(z_loc, z_log_var)``, as the two
    heads give them; each of shape ``x.shape[:-1] + (z_dim,)``.

    :param int x_dim: data dimension D.
    :param hidden_dim: hidden units (500 for MNIST, 200 for Frey Face in the paper), or a sequence of
        them for several hidden layers.
    :param str activation: the hidden layers' nonlinearity (:data:`ACTIVATIONS`; the paper's tanh).
    :param int z_dim: latent dimension :math:`N_z`.
    :param float init_std: standard deviation of the N(0, std²) initialisation, or None to keep PyTorch's.
    """

    def __init__(self, x_dim, hidden_dim, z_dim, init_std=0.01, activation="tanh"):
        super().__init__(x_dim, hidden_dim, z_dim, init_std, activation)


class BernoulliMLPDecoder(_MLP):
    r"""
    The generative model's net for binary data, Appendix C.1 (Eq. 11): :math:`z \mapsto` the logits of
    :math:`y`, so that :math:`p(x|z) = \mathrm{Bernoulli}(x; \mathrm{sigmoid}(\text{logits}))`.
    Logits rather than probabilities keep :math:`\log y` and :math:`\log(1-y)` finite.
    """

    def __init__(self, z_dim, hidden_dim, x_dim, init_std=0.01, activation="tanh"):
        super().__init__(z_dim, hidden_dim, x_dim, False, init_std, activation)

    def forward(self, z):
        """:returns: logits of shape ``z.shape[:-1] + (x_dim,)``."""
        self._check(z)
        return self.loc(self.features(z))


class GaussianMLPDecoder(_GaussianMLP):
    r"""
    The generative model's net for real-valued data, Appendix C.2 (Eq. 12 with :math:`z` as input).
    As in the paper's Frey Face experiment, the mean passes through a sigmoid so that it lies in (0, 1).
    Called on ``z`` it returns ``(x_loc, x_scale)``, each of shape ``z.shape[:-1] + (x_dim,)``.
    """

    def __init__(self, z_dim, hidden_dim, x_dim, init_std=0.01, activation="tanh"):
        super().__init__(z_dim, hidden_dim, x_dim, init_std, activation)

    def loc_and_log_var(self, z):
        r""":returns: ``(x_loc, x_log_var)``, the sigmoid mean and :math:`\log\sigma^2` as the head gives it."""
        loc, log_var = super().loc_and_log_var(z)
        return torch.sigmoid(loc), log_var


def loc_and_log_var(net, inputs):
    r"""
    A two-headed net's :math:`(\mu, \log\sigma^2)`: its ``loc_and_log_var`` where it has one (the nets
    of this module), else the log of the ``(loc, scale)`` that calling it returns (a user's own net).

    The model and the guide of :class:`~pyro_aevb.models.vae.VAE`, the fast paths and wake-sleep's direct
    losses read the log-variance through this function, so that it reaches the densities without a
    round trip through :math:`\sigma^2 = \exp(\log\sigma^2)`, which underflows or overflows float32
    for :math:`|\log\sigma^2|` beyond about 100 (see :mod:`pyro_aevb.models.distributions`).
    """
    method = getattr(net, "loc_and_log_var", None)
    if method is not None:
        return method(inputs)
    loc, scale = net(inputs)
    return loc, 2 * scale.log()
