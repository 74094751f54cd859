"""
Evaluating a trained run: the marginal likelihood of its first datapoints, with diagnostics, as the
paper reports it (Figure 3 used the first 1,000 datapoints of each split). ``pyro-aevb evaluate`` is a
thin layer over :func:`evaluate_run`.
"""

import contextlib
import json
import math
import re
import sys
import time
import warnings

import torch

from pyro_aevb._checks import check_choice, check_whole
from pyro_aevb.errors import ConfigError, RunWarning, UserError
from pyro_aevb.infer.bdmc import bdmc, simulate
from pyro_aevb.infer.elbo import lower_bound
from pyro_aevb.infer.marginal import log_marginal_likelihood
from pyro_aevb.experiment.atomic import write_atomic
from pyro_aevb.experiment.rundir import RunDir, describe_os_error
from pyro_aevb.experiment.sharded import CHUNK_POINTS, evaluation_world, map_chunks
from pyro_aevb.experiment.load import load_run
from pyro_aevb.experiment.methods import METHODS
from pyro_aevb.experiment.run_data import load_data, read_data_record

__all__ = ["evaluate_run", "has_encoder"]


def evaluate_run(run_dir, estimator="ais", split="test", num_points=100, data_dir=None, device="cpu",
                 seed=0, out=None, bdmc=None, ais_start="guide", data=None, model=None, guide=None,
                 chunk_points=CHUNK_POINTS, progress=False, trust_model_file=False, **options):
    """
    Estimate :math:`\\log p_\\theta(x)` per datapoint for the first ``num_points`` datapoints of a split.

    :param run_dir: a run folder written by :func:`pyro_aevb.train`.
    :param str estimator: ``"ais"`` (annealed importance sampling, the default: a stochastic lower bound
        whose gap ``bdmc`` measures), ``"hmc"`` (Appendix D, reliable in a few latent dimensions only)
        or ``"is"`` (importance sampling with the run's encoder). A run without a trained encoder (methods ``mcem``,
        ``mcem-is``) is evaluated without it, as the training loop does: ``"hmc"`` starts its chains
        from prior draws resampled by their likelihood, ``"ais"`` from the prior, and ``"is"``, which
        needs the encoder as proposal, is refused.
    :param str split: ``"train"`` or ``"test"``.
    :param int num_points: how many datapoints, from the start of the split (default 100: AIS at its
        defaults takes 160,000 gradient evaluations per datapoint; the paper's Figure 3 used 1,000).
    :param data_dir: where the data are (default: the run's own setting, then the usual lookup).
    :param int seed: seeds the estimator's random draws.
    :param out: if given, the result is also written there as JSON.
    :param int bdmc: also simulate this many datapoints from the run's model and bracket their
        :math:`\\log p_\\theta(x)` by :func:`pyro_aevb.infer.bdmc.bdmc`, with ``options`` if ``estimator`` is ``"ais"``;
        the result then has a ``bdmc`` entry: ``num_points``, ``lower``, ``upper``, ``gap`` (means per
        datapoint, nats). A gap above 1 nat is warned about.
    :param str ais_start: where AIS (and BDMC) start their chains: ``"guide"`` (the run's encoder, the
        default; the prior for a run without one) or ``"prior"``. The encoder was fitted to the data,
        not to the model's own samples, which for a model that fits the data badly (its samples unlike
        the data) can be far outside what the encoder has seen; BDMC from the encoder then measures a
        poor start on simulated points, not AIS on the data, and starting from the prior is the check.
    :param data: for a run trained on data passed to :func:`~pyro_aevb.train` as ``data=``, the same
        data (checked against the run's record of it); a run trained on a file reads the file again.
    :param model: your model object (and ``guide``, with a model function), built as the run's was,
        into which the run's parameters are loaded (:func:`~pyro_aevb.load_run`).
    :param bool trust_model_file: build a run whose model class is named by a file, by running that
        file (:func:`~pyro_aevb.load_run`; without it, such a run needs ``model=``).
    :param int chunk_points: the datapoints (and simulated points) are estimated in chunks of this many,
        each from its own random stream seeded by ``seed`` and the chunk's index
        (:mod:`pyro_aevb.experiment.sharded`); an evaluation of at most one chunk draws what
        :func:`pyro_aevb.log_marginal_likelihood` seeded with ``seed`` draws.
    :param bool progress: show a progress bar (on rank 0), over the datapoints of all the ranks.
    :param options: passed to :func:`pyro_aevb.log_marginal_likelihood`.
    :returns: a dict with ``estimator``, ``split``, ``num_points``, ``log_marginal_likelihood`` (mean
        per datapoint, nats), ``stderr`` (of that mean), the run's ``lower_bound`` on the same points
        when it has an encoder, ``diagnostics``, ``per_datapoint`` and ``processes``.

    Under ``torchrun``, or in a process group the caller initialised (:mod:`torch.distributed`), the
    processes share the chunks: each chunk is computed whole by one of them, so the result is the same
    for any number of processes. Every process returns it; only rank 0 writes ``out``.
    """
    check_choice("split", split, ("train", "test"))
    check_choice("ais_start", ais_start, ("guide", "prior"))
    check_whole("num_points", num_points, 1)
    check_whole("seed", seed, 0, 2**64 - 1)
    if not isinstance(device, str) or re.fullmatch(r"cpu|cuda(:\d+)?", device) is None:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    check_whole("chunk_points", chunk_points, 1)
    # The estimator and its options are checked by log_marginal_likelihood, before it draws anything.
    world = evaluation_world()
    try:
        return _evaluate(world, run_dir, estimator, split, num_points, data_dir, device, seed, out, bdmc, ais_start,
                         data, model, guide, chunk_points, progress, trust_model_file, options)
    finally:
        world.close()


def _evaluate(world, run_dir, estimator, split, num_points, data_dir, device, seed, out, bdmc, ais_start,
              data, model, guide, chunk_points, progress, trust_model_file, options):
    if device == "cuda" and world.size > 1:
        device = f"cuda:{world.local_rank}"
    vae = load_run(run_dir, device=device, model=model, guide=guide, trust_model_file=trust_model_file)
    config = vae.config
    guide = vae.guide if has_encoder(config) else None
    p0 = guide if ais_start == "guide" else None  # where AIS and BDMC start
    if estimator == "is" and guide is None:
        raise ConfigError(
            f"estimator 'is' needs the run's encoder as proposal, and a {config.method} run has no trained "
            "encoder: use --estimator ais or hmc"
        )
    config.data_dir = data_dir or config.data_dir
    dataset = load_data(config, data, record=read_data_record(RunDir(run_dir)), device=device)[0]
    x = dataset.eval_split(split, min(num_points, getattr(dataset, f"num_{split}")))
    n = x.shape[0]

    def estimate(rows, _):
        log_px, info = log_marginal_likelihood(
            vae.model, x[rows], estimator=estimator, guide=p0 if estimator == "ais" else guide,
            return_diagnostics=True, **options
        )
        return log_px.cpu(), {key: value.detach().cpu() for key, value in info.items()}

    with _progress_bar(progress and world.is_main, n, f"{estimator}, {split} split") as bar:
        start = time.perf_counter()
        chunks = map_chunks(world, n, chunk_points, seed, estimate, bar)
        seconds = time.perf_counter() - start
    log_px = torch.cat([log_px for log_px, _ in chunks])
    info = {key: torch.cat([part[key] for _, part in chunks], dim=-1) for key in chunks[0][1]}
    with _warnings_on(world):
        _warn_non_finite_estimates(log_px)
        diagnostics = _summarise(info)
    result = {
        "run_dir": str(run_dir),
        "estimator": estimator,
        "split": split,
        "num_points": n,
        "options": options,
        **({"ais_start": "guide" if p0 is not None else "prior"} if estimator == "ais" or bdmc is not None else {}),
        "log_marginal_likelihood": float(log_px.mean()),
        "stderr": float(log_px.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "mean_estimator_stderr": float(info["stderr"].mean()),
        "seconds": seconds,
        "processes": world.size,
        "chunk_points": chunk_points,
        "diagnostics": diagnostics,
        "per_datapoint": [round(float(v), 4) for v in log_px],
    }
    if has_encoder(config):
        sums = map_chunks(world, n, chunk_points, seed,
                          lambda rows, s: lower_bound(vae.model, vae.guide, x[rows], seed=s) * (rows.stop - rows.start))
        result["lower_bound"] = sum(sums) / n
    if bdmc is not None:
        with _warnings_on(world):
            result["bdmc"] = _bdmc(world, vae, p0, x, bdmc, seed, chunk_points, options if estimator == "ais" else {},
                                   progress)
    if out is not None and world.is_main:
        _write_result(result, out)
    return result


@contextlib.contextmanager
def _progress_bar(enabled, total, what):
    """A bar over ``total`` datapoints, or ``None``; called with the datapoints done (fractions allowed)."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm  # deferred: tqdm.auto looks for a notebook front end, only needed for a bar

    bar = tqdm(total=total, desc=what, unit="points", dynamic_ncols=True, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} points [{elapsed}<{remaining}]")
    try:
        yield lambda done: bar.update(done - bar.n)
    finally:
        bar.close()


@contextlib.contextmanager
def _warnings_on(world):
    """Warnings from rank 0 only: every rank summarises the same gathered results."""
    if world.is_main:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _write_result(result, out):
    """Write ``result`` as JSON to ``out`` atomically; a failed write says so and leaves no torn file."""
    try:
        write_atomic(out, json.dumps(result, indent=2) + "\n", durable=False, sync=False)
    except OSError as e:
        reason, action = describe_os_error(e)
        raise UserError(
            f"could not write the result to {out}: {reason}. The estimate, log p(x) = "
            f"{result['log_marginal_likelihood']:.4f} nats per datapoint, was not saved there; the run folder is "
            f"unchanged. {action.capitalize()}, then run the command again."
        ) from None


def _bdmc(world, vae, guide, like_x, num_points, seed, chunk_points, options, progress):
    """BDMC on ``num_points`` datapoints simulated from the run's model: means per datapoint, and a warning for a wide gap."""
    check_whole("bdmc", num_points, 1)

    def bracket(rows, _):
        x, latents = simulate(vae.model, rows.stop - rows.start, like_x)
        lower, upper = bdmc(vae.model, x, latents, guide, **options)
        return lower.cpu(), upper.cpu()

    with _progress_bar(progress and world.is_main, num_points, "bdmc, simulated points") as bar:
        start = time.perf_counter()
        chunks = map_chunks(world, num_points, chunk_points, seed, bracket, bar)
        seconds = time.perf_counter() - start
    lower, upper = (torch.cat(bounds) for bounds in zip(*chunks))
    summary = {
        "num_points": int(num_points),
        "lower": float(lower.mean()),
        "upper": float(upper.mean()),
        "gap": float((upper - lower).mean()),
        "seconds": seconds,
    }
    if summary["gap"] > 1.0:
        also = (" or start from the prior (--ais-start prior): the encoder has not seen the model's own samples, "
                "and may fit their posteriors far worse than the data's") if guide is not None else ""
        warnings.warn(
            f"the BDMC gap is {summary['gap']:.2f} nats (more than 1): AIS has not converged on this model's "
            f"simulated data; raise --num-temps{also}",
            stacklevel=4,
        )
    return summary


def has_encoder(config):
    """Whether a run of ``config`` trains an encoder (a guide): every method but MCEM's."""
    return METHODS[config.method].has_encoder


def _warn_non_finite_estimates(log_px):
    """Name the datapoints whose estimate of log p(x) is not finite (the mean over all of them is then not)."""
    bad = (~torch.isfinite(log_px.detach().cpu())).nonzero().reshape(-1).tolist()
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (", ..." if len(bad) > 20 else "")
        warnings.warn(
            f"log p(x) is not finite at {len(bad)} of {log_px.numel()} datapoint(s): {shown}",
            RunWarning,
            stacklevel=3,
        )


def _summarise(info):
    """
    Turn per-datapoint diagnostic tensors into JSON: summaries plus the flagged datapoints. Mean, min
    and max are over the finite values; ``num_non_finite`` counts the others, and a warning names
    their datapoints (the last dimension of a diagnostic is the datapoint's).
    """
    summary = {}
    for key, value in info.items():
        value = value.detach().cpu()
        if value.dtype == torch.bool:
            flags = value.reshape(-1)
            summary["num_not_mixed"] = int(flags.sum())
            summary["not_mixed_indices"] = flags.nonzero().reshape(-1).tolist()
            continue
        value = value.float()
        is_finite = torch.isfinite(value)
        finite = value[is_finite]
        summary[key] = {
            "mean": float(finite.mean()) if finite.numel() else float("nan"),
            "min": float(finite.min()) if finite.numel() else float("nan"),
            "max": float(finite.max()) if finite.numel() else float("nan"),
            "num_non_finite": int((~is_finite).sum()),
        }
        if not is_finite.all():
            bad = (~is_finite).reshape(-1, value.shape[-1]).any(0) if value.dim() else ~is_finite.reshape(1)
            points = bad.nonzero().reshape(-1).tolist()
            shown = ", ".join(map(str, points[:20])) + (", ..." if len(points) > 20 else "")
            warnings.warn(
                f"diagnostic {key!r}: {int((~is_finite).sum())} non-finite value(s) of {value.numel()}, at "
                f"datapoint(s) {shown}; its mean, min and max leave them out",
                RunWarning,
                stacklevel=2,
            )
    return summary
