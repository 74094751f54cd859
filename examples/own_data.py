"""
Your own data and your own model through the whole run machinery: a NumPy array of real-valued data
with heavy-tailed noise, a model defined in this script with a Student-t likelihood, trained by AEVB
[1] with Adam and two hidden layers, logged to TensorBoard, loaded back into a fresh object of the
same class, and evaluated by annealed importance sampling.

The model class lives in this script (``__main__``), which is why it is passed as an object
(``model=``) to ``train``, ``load_run`` and ``evaluate_run``; a class in an importable module or a
file can also be named by ``--model-class path/to/file.py:Class`` on the command line::

    python examples/own_data.py --samples 2e5 --out runs/own-data
    tensorboard --logdir runs/own-data/tensorboard

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import argparse

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyro_aevb
from pyro_aevb.experiment.evaluate import evaluate_run
from pyro_aevb.models.nets import GaussianMLPEncoder, loc_and_log_var


class StudentTDecoder(nn.Module):
    """``z`` -> the location and scale of a Student-t per data dimension: an MLP, and a learned scale."""

    def __init__(self, z_dim, hidden, x_dim):
        super().__init__()
        layers, width = [], z_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, x_dim))
        self.log_scale = nn.Parameter(torch.full((x_dim,), -1.0))

    def forward(self, z):
        return self.net(z), self.log_scale.exp()


class StudentTVAE(nn.Module):
    """
    A VAE for real-valued data with outliers: Gaussian prior, Student-t likelihood with ``df`` degrees
    of freedom, and a Gaussian recognition model; both nets have the hidden layers ``hidden``.
    """

    def __init__(self, x_dim, z_dim=2, hidden=(64, 64), df=3.0):
        super().__init__()
        self.z_dim, self.df = z_dim, df
        self.encoder = GaussianMLPEncoder(x_dim, hidden, z_dim, init_std=None, activation="relu")
        self.decoder = StudentTDecoder(z_dim, hidden, x_dim)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):  # over the minibatch: the method scales it by N/M
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            loc, scale = self.decoder(z)
            pyro.sample("x", dist.StudentT(self.df, loc, scale).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_log_var = loc_and_log_var(self.encoder, x)
            pyro.sample("z", dist.Normal(z_loc, (0.5 * z_log_var).exp()).to_event(1))


def make_data(num_points, x_dim, seed=0):
    """Points near a curved 2-D manifold in ``x_dim`` dimensions, with Student-t (df = 3) noise: a NumPy array."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_points, 2))
    weights = rng.standard_normal((2, x_dim))
    return (np.tanh(z @ weights) + 0.1 * rng.standard_t(3, (num_points, x_dim))).astype(np.float32)


def main(args):
    x = make_data(args.num_points, args.x_dim)
    hidden = (args.hidden, args.hidden)
    config = pyro_aevb.TrainConfig(
        samples=int(args.samples), batch_size=args.batch_size, optim="Adam", lr=args.lr, weight_decay=0.0,
        eval_points=args.eval_points, eval_train_points=min(1000, args.num_points // 2), log="tensorboard",
    )
    torch.manual_seed(0)
    pyro_aevb.train(config, args.out, data=x, model=StudentTVAE(args.x_dim, hidden=hidden),
                    progress=not args.no_progress)

    # Later, or in another script: build the same architecture, and load the trained weights into it.
    vae = pyro_aevb.load_run(args.out, model=StudentTVAE(args.x_dim, hidden=hidden))
    print(f"last evaluation: {vae.metrics[-1]}")
    result = evaluate_run(args.out, "ais", num_points=args.eval_test_points, data=x,
                          model=StudentTVAE(args.x_dim, hidden=hidden), num_chains=args.num_chains,
                          num_temps=args.num_temps)
    print(f"{result['num_points']} held-out points: lower bound {result['lower_bound']:.2f}, "
          f"log p(x) by AIS {result['log_marginal_likelihood']:.2f} ± {result['stderr']:.2f} nats per datapoint")
    print(f"TensorBoard: tensorboard --logdir {args.out}/tensorboard")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--num-points", type=int, default=5000, help="rows of the synthetic data [5000]")
    parser.add_argument("--x-dim", type=int, default=10, help="their dimension [10]")
    parser.add_argument("--hidden", type=int, default=64, help="units of each of the two hidden layers [64]")
    parser.add_argument("--samples", type=float, default=2e5, help="training budget in samples [2e5]")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's step size [1e-3]")
    parser.add_argument("--eval-points", type=int, default=None, help="evaluations during training [the default schedule]")
    parser.add_argument("--eval-test-points", type=int, default=200, help="held-out points evaluated by AIS [200]")
    parser.add_argument("--num-chains", type=int, default=16, help="AIS chains per point [16]")
    parser.add_argument("--num-temps", type=int, default=500, help="AIS temperatures [500]")
    parser.add_argument("--out", default="runs/own-data")
    parser.add_argument("--no-progress", action="store_true")
    main(parser.parse_args())
