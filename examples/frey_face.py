"""
AEVB on the Frey Face data with a Gaussian MLP decoder, the second experiment of Section 5 of [1].

The decoder's means pass through a sigmoid, as in the paper. With ``--latent-dim 2`` the example also
draws the learned 2-D manifold of Appendix A (Figure 4b): a grid of z, placed through the inverse CDF
of the Gaussian prior, decoded to faces::

    python examples/frey_face.py --latent-dim 2 --samples 1e6 --out runs/frey-z2

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import argparse
from pathlib import Path

import pyro_aevb
from pyro_aevb.experiment.plots import plot_manifold


def main(args):
    config = pyro_aevb.TrainConfig(
        dataset="frey", data_dir=args.data_dir, latent_dim=args.latent_dim, hidden=args.hidden,
        samples=int(args.samples), lr=args.lr, eval_points=args.eval_points,
    )
    vae = pyro_aevb.train(config, args.out, progress=not args.no_progress)
    final = vae.metrics[-1]
    print(f"Frey Face, Nz={args.latent_dim}: lower bound {final['train_lower_bound']:.1f} (train), "
          f"{final['test_lower_bound']:.1f} (test) nats per datapoint after {final['samples']:.0f} samples")
    if args.latent_dim == 2:
        path = Path(args.out) / "manifold.png"
        plot_manifold(vae, (28, 20), path, num=args.grid, title="Frey Face manifold (Figure 4b)")
        print(f"manifold written to {path}")
    return vae


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="AEVB on Frey Face (Kingma & Welling, 2013, Section 5).")
    parser.add_argument("--data-dir", default=None, help="folder with FreyFace/ (default: $PYRO_AEVB_DATA)")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--samples", type=float, default=1e6)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--eval-points", type=int, default=30)
    parser.add_argument("--grid", type=int, default=10, help="manifold grid size (Nz = 2 only)")
    parser.add_argument("--out", default="runs/frey")
    parser.add_argument("--no-progress", action="store_true")
    main(parser.parse_args())
