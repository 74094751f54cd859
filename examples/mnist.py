"""
AEVB on MNIST with a Bernoulli MLP decoder, the first experiment of Section 5 of [1].

Trains the paper's model (784-500-Nz, tanh, Adagrad, M = 100, L = 1) and prints the per-datapoint
lower bound on the training subset and on the test set::

    python examples/mnist.py --latent-dim 20 --samples 1e6 --out runs/mnist-z20

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import argparse

import pyro_aevb


def main(args):
    config = pyro_aevb.TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, latent_dim=args.latent_dim,
        samples=int(args.samples), lr=args.lr, method=args.method, eval_points=args.eval_points,
    )
    vae = pyro_aevb.train(config, args.out, progress=not args.no_progress)
    final = vae.metrics[-1]
    print(f"{final['samples']:.0f} samples: lower bound {final['train_lower_bound']:.2f} (train), "
          f"{final['test_lower_bound']:.2f} (test) nats per datapoint; run in {args.out}")
    return vae


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="AEVB on MNIST (Kingma & Welling, 2013, Section 5).")
    parser.add_argument("--dataset", default="mnist", help="mnist, or mnist5k to run offline")
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw (default: $PYRO_AEVB_DATA)")
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--samples", type=float, default=1e6)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--method", default="aevb", choices=sorted(pyro_aevb.METHODS))
    parser.add_argument("--eval-points", type=int, default=30)
    parser.add_argument("--out", default="runs/mnist")
    parser.add_argument("--no-progress", action="store_true")
    main(parser.parse_args())
