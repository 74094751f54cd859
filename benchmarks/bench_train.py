"""
Training throughput of AEVB (Algorithm 1 of [1]) on the paper's two models, against a plain PyTorch
loop and against Pyro's idiomatic VAE pattern, in samples per second.

Contenders (all train the same nets, from the same initial parameters, on the same objective: the
N/M-scaled negative bound plus the weight decay of the N(0, I/λ) prior on the parameters, with
Adagrad at the same step size):

- ``aevb`` / ``aevb-mc``: this project's methods (estimator B, Eq. (10) / estimator A, Eq. (6)),
  built by :data:`pyro_aevb.experiment.methods.METHODS` from a :class:`~pyro_aevb.experiment.config.TrainConfig` and fed by a
  :class:`~pyro_aevb.data.MinibatchSampler`: the code ``pyro-aevb train`` runs, without evaluation.
- ``plain-B`` / ``plain-A``: a hand-written PyTorch loop over the same nets and sampler, the bound
  written out with tensor operations, one ``torch.optim.Adagrad(fused=True)``.
- ``pyro-B`` / ``pyro-A``: the pattern of Pyro's VAE example: ``SVI`` with ``TraceMeanField_ELBO`` /
  ``Trace_ELBO``, ``pyro.optim.Adagrad`` (one optimizer per parameter), batches from a shuffling
  ``torch.utils.data.DataLoader``, Pyro's validation left on (its default).
- on request (``--contenders``), the importance-weighted bound of [2] on Burda et al.'s one-layer VAE
  (784-200-200-50, two tanh layers in each net, Bernoulli decoder) with Adam (lr 0.001, ε = 10⁻⁴, no
  weight decay), ``--num-particles`` K (default 5): ``iwae`` (:class:`~pyro_aevb.infer.iwae.IWAE` and
  its direct path, the library's Adagrad swapped for one fused ``torch.optim.Adam``) against
  ``plain-iwae`` (a hand-written PyTorch loop over the same nets, minibatches and optimizer). Burda et
  al. trained with minibatches of 20: ``--models mnist --contenders iwae plain-iwae --batch-size 20``.
- on request (``--contenders``): ``aevb-svi`` / ``aevb-mc-svi`` (AEVB with ``fast_path=False``, the
  path of a swapped prior), ``aevb-noflush`` / ``aevb-mc-noflush`` (AEVB without
  :class:`~pyro_aevb.optim.FusedAdagrad`'s flush of subnormal weights, which the plain loop does not
  do either), ``plain-B-default`` / ``plain-A-default`` (``torch.optim.Adagrad`` with PyTorch's
  default implementation, a per-tensor loop on the CPU), and ``aevb-adam`` / ``plain-B-adam`` (the
  same with Adam, ``--optim Adam``, against ``torch.optim.Adam(fused=True)``: a step with Adam should
  cost about what a step with Adagrad does).

The contenders take turns: each round runs ``--steps`` steps of each (in reverse order every other
round), and the table reports the median samples/s over ``--rounds`` rounds (the range in brackets)
and the median over rounds of its ratio to the plain loop with the same estimator in the same round
(a slow spell of a shared machine then slows both sides of a ratio alike); likewise for samples per
CPU-second. Each contender keeps its own Pyro param store and random stream across turns, so ``aevb``
and ``plain-B`` draw the same minibatches and the same noise: their test-set bounds after training
(the last column, in nats, estimator B on ``--eval-points`` test digits) agree to rounding, or within
sampling noise where rounding differences grow over training. Pyro's pattern shuffles with its own
loader, so its bound agrees within sampling noise.

Every contender first takes ``--warmup-steps`` untimed steps (200): AEVB's first step traces the
model under Pyro's validation, and in the first hundred steps tens of thousands of weights decay
through the subnormal range before they are flushed (see ``docs/performance.md``), a start-up
transient that a long run does not see.

``--samples 1e6`` instead times whole training runs on MNIST, ``--repeats`` times in alternating
order: ``pyro-aevb train --method aevb`` / ``aevb-mc`` end to end in a subprocess (the ``seconds`` of
its ``metrics.csv``, training steps only, and the whole command's time) and the plain loops
``plain-B`` / ``plain-A`` over the same number of samples, their steps timed the same way. They draw
the same minibatches and noise from the same seed, so each pair ends at the same test-set bound.

Examples::

    python benchmarks/bench_train.py --rounds 7 --steps 50 --out bench.json
    python benchmarks/bench_train.py --samples 1e6 --methods aevb plain-B aevb-mc plain-A --repeats 3
    python benchmarks/bench_train.py --device cuda --batch-size 1000

[1] Auto-Encoding Variational Bayes, Kingma & Welling (2013)

[2] Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov (2015)
"""

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import pyro.optim
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch.utils.data import DataLoader, TensorDataset

from pyro_aevb.data import MinibatchSampler, load_dataset
from pyro_aevb import VAE, IWAE
from pyro_aevb.infer.elbo import lower_bound
from pyro_aevb.experiment.build import build_model
from pyro_aevb.experiment.config import TrainConfig
from pyro_aevb.experiment.methods import METHODS
from pyro_aevb.models.distributions import HALF_LOG_2PI
from pyro_aevb.optim import make_optim

#: The paper's two models: data set and latent dimension (hidden units: the paper's, per data set).
MODELS = {"mnist": 20, "frey": 10}
#: name -> (kind, estimator, options)
CONTENDERS = {
    "aevb": ("aevb", "B", {}),
    "aevb-mc": ("aevb", "A", {}),
    "plain-B": ("plain", "B", {"fused": True}),
    "plain-A": ("plain", "A", {"fused": True}),
    "pyro-B": ("pyro", "B", {}),
    "pyro-A": ("pyro", "A", {}),
    "aevb-svi": ("aevb", "B", {"fast_path": False}),
    "aevb-mc-svi": ("aevb", "A", {"fast_path": False}),
    "aevb-noflush": ("aevb", "B", {"flush": False}),
    "aevb-mc-noflush": ("aevb", "A", {"flush": False}),
    "aevb-adam": ("aevb", "B", {"optim": "Adam"}),
    "plain-B-adam": ("plain", "B", {"fused": True, "optim": "Adam"}),
    "plain-B-default": ("plain", "B", {}),
    "plain-A-default": ("plain", "A", {}),
    "iwae": ("iwae", "iwae", {}),
    "plain-iwae": ("plain-iwae", "iwae", {}),
}
#: Burda et al.'s one-stochastic-layer VAE for the IWAE contenders: hidden layers and latent dimension.
IWAE_HIDDEN, IWAE_LATENT = (200, 200), 50
#: Their Adam: lr (the first stage's), betas, eps.
IWAE_ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-4}
DEFAULT_CONTENDERS = ("aevb", "aevb-mc", "plain-B", "plain-A", "pyro-B", "pyro-A")


def _default_data_dir():
    return os.environ.get("PYRO_AEVB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


# -- the plain PyTorch loop ------------------------------------------------------------------------
def plain_loss(vae, x, num_data, estimator):
    r"""
    The negative bound of Eq. (10) (``"B"``) or Eq. (6) (``"A"``) written out in tensor operations, from
    the nets' :math:`(\mu, \log\sigma^2)` heads as the library reads them.
    """
    z_loc, z_log_var = vae.encoder.loc_and_log_var(x)
    eps = torch.randn_like(z_loc)
    z = z_loc + eps * torch.exp(0.5 * z_log_var)
    if vae.likelihood == "bernoulli":
        log_px = -F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
    else:
        x_loc, x_log_var = vae.decoder.loc_and_log_var(z)
        log_px = -0.5 * (((x - x_loc) * torch.exp(-0.5 * x_log_var)).square() + x_log_var).sum(-1) - HALF_LOG_2PI * x.shape[-1]
    if estimator == "B":  # -KL(q(z|x) || N(0, I)) in closed form
        neg_kl = 0.5 * (1 + z_log_var - z_loc**2 - torch.exp(z_log_var)).sum(-1)
    else:  # log p(z) - log q(z|x) at the drawn z (the constants cancel)
        neg_kl = (0.5 * (eps**2 - z**2 + z_log_var)).sum(-1)
    return -(num_data / x.shape[0]) * (log_px + neg_kl).sum()


def plain_iwae_loss(vae, x, num_data, num_particles):
    r"""
    :math:`-\frac{N}{M}\sum_i \log \frac1K \sum_k w_{ik}` written out in tensor operations (Bernoulli
    decoder), the constants of :math:`\log p(z) - \log q(z|x)` cancelled.
    """
    z_loc, z_log_var = vae.encoder.loc_and_log_var(x)
    eps = torch.randn((num_particles,) + z_loc.shape, device=x.device)
    z = z_loc + eps * torch.exp(0.5 * z_log_var)
    logits = vae.decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_w = log_px + (0.5 * (eps**2 - z**2 + z_log_var)).sum(-1)
    return -(num_data / x.shape[0]) * (torch.logsumexp(log_w, 0) - math.log(num_particles)).sum()


class _DeepEncoder(torch.nn.Module):
    """784-200-200 tanh layers and two linear heads, (mu, log sigma^2), the library's encoder interface."""

    def __init__(self, x_dim, hidden, z_dim):
        super().__init__()
        sizes = (x_dim,) + hidden
        self.body = torch.nn.Sequential(*[m for a, b in zip(sizes, sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.Tanh())])
        self.loc, self.log_var = torch.nn.Linear(hidden[-1], z_dim), torch.nn.Linear(hidden[-1], z_dim)

    def loc_and_log_var(self, x):
        h = self.body(x)
        return self.loc(h), self.log_var(h)

    def forward(self, x):
        loc, log_var = self.loc_and_log_var(x)
        return loc, torch.exp(0.5 * log_var)


def burda_vae(x_dim):
    """The library's :class:`~pyro_aevb.models.vae.VAE` (its model and guide) with Burda et al.'s two-layer nets."""
    vae = VAE(x_dim, IWAE_LATENT, IWAE_HIDDEN[0])
    vae.encoder = _DeepEncoder(x_dim, IWAE_HIDDEN, IWAE_LATENT)
    sizes = (IWAE_LATENT,) + IWAE_HIDDEN
    layers = [m for a, b in zip(sizes, sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.Tanh())]
    vae.decoder = torch.nn.Sequential(*layers, torch.nn.Linear(IWAE_HIDDEN[-1], x_dim))
    return vae


# -- contenders ------------------------------------------------------------------------------------
class Contender:
    """One way of training, with its own param store and random stream, stepped in turns."""

    def __init__(self, name, what, estimator, vae, fetch, update, device):
        self.name, self.what, self.estimator, self.vae = name, what, estimator, vae
        self._fetch, self._update = fetch, update  # a minibatch; one step on it
        self.device = device
        self.samples_per_s, self.samples_per_cpu_s = [], []
        self._store = {"params": {}, "constraints": {}}  # filled in by ParamStoreDict.scope
        self._rng = _get_rng(device)

    @contextlib.contextmanager
    def active(self):
        with pyro.get_param_store().scope(self._store):
            _set_rng(self.device, self._rng)
            yield
            self._rng = _get_rng(self.device)

    def run(self, steps, timed=True):
        with self.active():
            _sync(self.device)
            start, start_cpu, samples = time.perf_counter(), time.process_time(), 0
            for _ in range(steps):
                batch = self._fetch()
                self._update(*batch)
                samples += len(batch[-1])
            _sync(self.device)
            if timed:
                self.samples_per_s.append(samples / (time.perf_counter() - start))
                self.samples_per_cpu_s.append(samples / (time.process_time() - start_cpu))

    def train_steps(self, steps):
        """
        ``steps`` steps, timing the steps alone, as ``pyro-aevb train`` times them (its ``seconds``):
        :returns: the seconds.
        """
        seconds = 0.0
        with self.active():
            for _ in range(steps):
                batch = self._fetch()
                _sync(self.device)
                start = time.perf_counter()
                self._update(*batch)
                _sync(self.device)
                seconds += time.perf_counter() - start
        return seconds

    def test_bound(self, x, seed):
        with self.active():
            return lower_bound(self.vae.model, self.vae.guide, x, seed=seed)


def _get_rng(device):
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng(device, state):
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain_update(optimizer, loss_fn):
    """One step of a hand-written loop: ``loss_fn(x)``, backward, ``optimizer`` (the loss read back, as a loop logs it)."""

    def update(idx, x):
        loss = loss_fn(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return update


def make_contender(name, dataset, config, device, num_particles=5):
    """
    Build contender ``name`` for ``dataset`` at the settings of ``config``, from seed ``config.seed``
    (``num_particles``: K of the IWAE contenders).
    """
    kind, estimator, options = CONTENDERS[name]
    num_data = dataset.num_train
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    config = dataclasses.replace(config, method="aevb" if estimator == "B" else "aevb-mc")
    config.model_options = {"likelihood": dataset.likelihood}
    vae = build_model(config, dataset.x_dim).to(device)  # as pyro-aevb train builds it
    sampler = MinibatchSampler(
        dataset.train, config.batch_size, config.seed, dynamic_binarize=dataset.binarize == "dynamic"
    )
    fetch = sampler.next  # (idx, x), as pyro-aevb train draws them

    if kind in ("iwae", "plain-iwae"):
        vae = burda_vae(dataset.x_dim).to(device)
        if kind == "iwae":
            # Burda et al.'s Adam, as `pyro-aevb train --optim Adam` builds it
            method = IWAE(vae, num_particles=num_particles, weight_decay=0.0,
                          optim=make_optim("Adam", weight_decay=0.0, **IWAE_ADAM))

            def update(idx, x):
                method.step(x, num_data=num_data)

            what = f"IWAE, K = {num_particles}, fused Adam"
        else:
            optimizer = torch.optim.Adam(vae.parameters(), fused=True, **IWAE_ADAM)
            update = _plain_update(optimizer, lambda x: plain_iwae_loss(vae, x, num_data, num_particles))
            what = f"PyTorch IWAE loop, K = {num_particles}, torch.optim.Adam(fused=True)"
    elif kind == "aevb":
        config.method_options = {k: v for k, v in options.items() if k not in ("flush", "optim")}
        config.optim = options.get("optim", config.optim)
        method = METHODS[config.method](vae, config)
        if options.get("flush") is False:  # an ablation: subnormal weights left in place
            method.optim.flush_subnormals_every = None

        def update(idx, x):
            method.step(x, num_data, idx=idx)

        what = f"pyro-aevb train --method {config.method}" + {
            "fast_path": " (fast_path=False: SVI every step)", "flush": " (subnormal weights not flushed)",
            "optim": f" --optim {options.get('optim')}",
        }.get(next(iter(options), None), "")
    elif kind == "plain":
        optim = getattr(torch.optim, options.get("optim", "Adagrad"))
        fused = {k: v for k, v in options.items() if k != "optim"}
        optimizer = optim(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay, **fused)
        update = _plain_update(optimizer, lambda x: plain_loss(vae, x, num_data, estimator))
        what = f"PyTorch loop, torch.optim.{optim.__name__}(" + ("fused=True)" if fused else "defaults)")
    else:
        elbo = TraceMeanField_ELBO() if estimator == "B" else Trace_ELBO()
        svi = SVI(vae.model, vae.guide, pyro.optim.Adagrad({"lr": config.lr, "weight_decay": config.weight_decay}), elbo)
        loader = DataLoader(
            TensorDataset(dataset.train.cpu()), batch_size=config.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        batches = iter(())

        def next_batch():
            nonlocal batches
            batch = next(batches, None)
            if batch is None:
                batches = iter(loader)
                batch = next(batches)
            x = batch[0].to(device)
            return (torch.bernoulli(x) if dataset.binarize == "dynamic" else x,)

        fetch = next_batch  # a DataLoader's, as the Pyro user writes it

        def update(x):
            svi.step(x, num_data)

        what = f"SVI + {type(elbo).__name__}, pyro.optim.Adagrad, DataLoader"
    return Contender(name, what, estimator, vae, fetch, update, device)


# -- reports ---------------------------------------------------------------------------------------
def machine_info(device):
    model_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    info = {
        "cpu": model_name,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _load():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def markdown_table(results):
    lines = [
        "| model | contender | what | samples/s, median [range] | vs plain loop | samples per CPU-second (vs plain) "
        "| test bound (nats) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, rows in results.items():
        for row in rows:
            ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
            cpu_ratio = f" ({row['ratio_cpu']:.2f}x)" if "ratio_cpu" in row else ""
            lines.append(
                f"| {model} | {row['name']} | {row['what']} | {row['median']:,.0f} [{row['min']:,.0f}–{row['max']:,.0f}] "
                f"| {ratio} | {row['median_cpu']:,.0f}{cpu_ratio} | {row['test_bound']:.3f} |"
            )
    return "\n".join(lines)


# -- the two modes ---------------------------------------------------------------------------------
def compare(args, device):
    results, load = {}, {"start": _load()}
    for model in args.models:
        dataset = load_dataset(model, args.data_dir, device=device, download=False)
        config = TrainConfig(
            dataset=model, latent_dim=MODELS[model], seed=args.seed, device=str(device), batch_size=args.batch_size
        )
        contenders = [make_contender(name, dataset, config, device, args.num_particles) for name in args.contenders]
        for c in contenders:  # warm-up, untimed: AEVB's first step is SVI's (with validation)
            c.run(args.warmup_steps, timed=False)
        for r in range(args.rounds):
            # Reversed every other round, so that no contender always follows the same one.
            for c in contenders if r % 2 == 0 else contenders[::-1]:
                c.run(args.steps)
            print(f"{model} round {r + 1}/{args.rounds}: " + ", ".join(f"{c.name} {c.samples_per_s[-1]:,.0f}" for c in contenders), file=sys.stderr)
        x_test = dataset.eval_split("test", min(args.eval_points, dataset.test.shape[0]))
        plain = {c.estimator: c for c in contenders if c.name in ("plain-B", "plain-A", "plain-iwae")}
        results[model] = []
        for c in contenders:
            row = {
                "name": c.name, "what": c.what, "estimator": c.estimator,
                "median": statistics.median(c.samples_per_s), "min": min(c.samples_per_s), "max": max(c.samples_per_s),
                "median_cpu": statistics.median(c.samples_per_cpu_s),
                "samples_per_s": c.samples_per_s, "samples_per_cpu_s": c.samples_per_cpu_s,
                "test_bound": c.test_bound(x_test, args.seed + 1),
            }
            base = plain.get(c.estimator)
            if base is not None:  # paired within rounds: a slow spell of the machine hits both alike
                row["ratio"] = statistics.median(a / b for a, b in zip(c.samples_per_s, base.samples_per_s))
                row["ratio_cpu"] = statistics.median(a / b for a, b in zip(c.samples_per_cpu_s, base.samples_per_cpu_s))
            results[model].append(row)
    load["end"] = _load()
    return {"results": results, "load_average": load}


def time_train(args, device):
    """
    ``--samples``: ``pyro-aevb train`` on MNIST (``aevb``, ``aevb-mc``; in a subprocess, end to end) and
    the plain loop (``plain-B``, ``plain-A``; in this process), ``--repeats`` times in alternating order.
    Every run times its steps alone (the ``seconds`` of ``metrics.csv``) and reports the test-set bound.
    """
    runs = []
    methods = list(args.methods)
    if args.baseline:  # the same commands from another source tree, e.g. a worktree of an earlier commit
        methods += [f"{method}@baseline" for method in args.methods if method in METHODS]
    for r in range(args.repeats):
        for method in methods if r % 2 == 0 else methods[::-1]:
            load_before = _load()
            if method.endswith("@baseline"):
                run = _train_cli(method.split("@")[0], args, device, source=args.baseline)
            elif method in METHODS:
                run = _train_cli(method, args, device)
            else:
                run = _train_plain(method, args, device)
            run.update(method=method, repeat=r, samples_per_s=run["samples"] / run["step_seconds"],
                       load_average={"start": load_before, "end": _load()})
            runs.append(run)
            print(
                f"{method} ({r + 1}/{args.repeats}): {run['samples']:,} samples, {run['step_seconds']:.1f} s of steps"
                + (f", {run['total_seconds']:.1f} s in all" if run["total_seconds"] else ""), file=sys.stderr,
            )
    summary = []
    for method in methods:
        mine = [run for run in runs if run["method"] == method]
        row = {
            "method": method, "samples": mine[0]["samples"],
            "step_seconds": [run["step_seconds"] for run in mine], "test_bound": [run["test_bound"] for run in mine],
            "total_seconds": [run["total_seconds"] for run in mine if run["total_seconds"]],
        }
        plain = "plain-" + CONTENDERS[method.split("@")[0]][1]
        if plain in args.methods:  # paired by repeat
            base = [run["step_seconds"] for run in runs if run["method"] == plain]
            row["ratio"] = statistics.median(b / a for a, b in zip(row["step_seconds"], base))
        if f"{method}@baseline" in methods:  # this tree's steps against the baseline's, paired by repeat
            base = [run["step_seconds"] for run in runs if run["method"] == f"{method}@baseline"]
            row["vs_baseline"] = statistics.median(b / a for a, b in zip(row["step_seconds"], base))
        summary.append(row)
    lines = [
        "| method | samples | steps, seconds: median [range] | samples/s | vs plain loop | vs baseline "
        "| whole command, seconds | test bound (nats) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_samples_row(row) for row in summary]
    return {"train_runs": runs, "summary": summary}, "\n".join(lines)


def _samples_row(row):
    steps, totals = row["step_seconds"], row["total_seconds"]
    median = statistics.median(steps)
    ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
    baseline = f"{row['vs_baseline']:.3f}x" if "vs_baseline" in row else ""
    total = f"{statistics.median(totals):.1f}" if totals else ""
    bounds = ", ".join(f"{b:.2f}" for b in row["test_bound"])
    return (
        f"| {row['method']} | {row['samples']:,} | {median:.1f} [{min(steps):.1f}–{max(steps):.1f}] "
        f"| {row['samples'] / median:,.0f} | {ratio} | {baseline} | {total} | {bounds} |"
    )


def _train_cli(method, args, device, source=None):
    """
    ``pyro-aevb train --method method`` in a subprocess: its steps' seconds, its whole time and bound;
    the package imported from the source tree ``source`` when given (run from there, so that it comes
    first on the path), else from this one.
    """
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(Path(source).resolve())
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "pyro_aevb", "train", "--dataset", "mnist", "--latent-dim", "20",
            "--method", method, "--samples", str(args.samples), "--eval-points", "2", "--no-progress",
            "--data-dir", str(Path(args.data_dir).resolve()), "--device", str(device), "--seed", str(args.seed), "--out", str(out),
            "--batch-size", str(args.batch_size),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=sys.stderr, cwd=source)  # stdout: the table alone
        total = time.perf_counter() - start
        with open(out / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
    return {
        "samples": int(last["samples"]), "step_seconds": float(last["seconds"]), "total_seconds": total,
        "test_bound": float(last["test_lower_bound"]), "command": " ".join(command[1:]),
    }


def _train_plain(name, args, device):
    """The plain loop ``name`` over ``args.samples`` MNIST samples, its steps timed as ``pyro-aevb train`` times them."""
    dataset = load_dataset("mnist", args.data_dir, device=device, download=False)
    config = TrainConfig(
        dataset="mnist", latent_dim=MODELS["mnist"], seed=args.seed, device=str(device), batch_size=args.batch_size
    )
    contender = make_contender(name, dataset, config, device)
    steps = math.ceil(args.samples / config.batch_size)
    seconds = contender.train_steps(steps)
    return {
        "samples": steps * config.batch_size, "step_seconds": seconds, "total_seconds": None,
        "test_bound": contender.test_bound(dataset.eval_split("test"), args.seed + 1),
    }


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_info(device)
    print(
        f"Machine: {info['cpu']}" + (f", {info['gpu']}" if "gpu" in info else "") + f", {info['cores']} cores; "
        f"torch {info['torch']} ({info['torch_threads']} thread{'s' if info['torch_threads'] != 1 else ''}), pyro {info['pyro']}, Python {info['python']}; "
        f"device {info['device']}\n"
    )
    if args.samples:
        report, table = time_train(args, device)
    else:
        report = compare(args, device)
        table = markdown_table(report["results"])
    report.update(machine=info, arguments={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def _count(text):
    value = float(text)
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(DEFAULT_CONTENDERS))
    parser.add_argument("--rounds", type=int, default=7, help="turns of every contender [7]")
    parser.add_argument("--steps", type=int, default=50, help="minibatches per contender per round [50]")
    parser.add_argument(
        "--warmup-steps", type=int, default=200,
        help="untimed minibatches per contender first, past the start-up transient [200]",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size M [100, the paper's]")
    parser.add_argument("--num-particles", type=int, default=5, help="K of the iwae contenders [5]")
    parser.add_argument("--eval-points", type=int, default=1000, help="test points for the final bound (at most the test set) [1000]")
    parser.add_argument("--samples", type=_count, help="instead: time `pyro-aevb train` on MNIST for this many samples, e.g. 1e6")
    parser.add_argument(
        "--methods", nargs="+", choices=["aevb", "aevb-mc", "plain-B", "plain-A"], default=["aevb", "plain-B"],
        help="with --samples: pyro-aevb train's methods and the plain loops [aevb plain-B]",
    )
    parser.add_argument("--repeats", type=int, default=1, help="with --samples: runs of each method, alternating [1]")
    parser.add_argument(
        "--baseline", type=Path,
        help="with --samples: also run pyro-aevb train's methods from this source tree (e.g. `git worktree add "
        "../base HEAD~5`), alternating with this tree's, and report this tree's steps' time against it",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(_default_data_dir()), help="[$PYRO_AEVB_DATA or ../shared/data]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads [PyTorch's default: one per core]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the results as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
