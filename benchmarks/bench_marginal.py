"""
Timing of the marginal likelihood estimator of Appendix D of [1] (``estimator="hmc"`` of
:func:`pyro_aevb.infer.marginal.log_marginal_likelihood`).

Two measurements, printed as a Markdown table of medians over ``--repeats`` runs:

1. The vectorised estimator (all chains of all datapoints in one batch) against the obvious
   implementation, Pyro's ``HMC`` kernel run through ``MCMC`` one chain of one datapoint at a time
   (``reference_hmc.py`` beside this script), at equal settings (no step-size jitter, each
   chain started at one draw of the prior) on the same ``--num-reference`` datapoints.
2. The setting of Figure 3 of [1]: a decoder ``3 -> 100 (tanh) -> 784`` with Bernoulli outputs and
   random :math:`N(0, \\text{init\\_std}^2)` weights, ``--num-data`` datapoints, the estimator at the
   paper's settings (4 leapfrog steps, L = 50 draws per chain) and its own defaults (jittered step
   sizes; chains started at prior draws resampled by their likelihood).

3. With ``--ais-data N``: annealed importance sampling (``estimator="ais"``) on ``N`` datapoints under
   the paper's own VAE class, untrained, with the same ``3 -> 100 -> 784`` decoder or another
   (``--ais-latent``, ``--ais-hidden``; so that log p(x, z) comes from the nets directly, the fast
   path), chains from the prior or the encoder (``--ais-start``), and its useful FLOP rate as a fraction of ``torch.matmul``'s,
   measured in the same run at the decoder's layer shapes with as many rows as AIS advances at once
   (chains x datapoints per chunk). Useful FLOPs are the decoder's forward and backward pass (to ``z``)
   at every leapfrog step of the kept chains, from the layer shapes; the pilot run counts as
   overhead. The ratio is given by wall time and by CPU time (both sides timed by the same clock); at
   one thread on a shared machine, the CPU time's is the one to read.

Example::

    python benchmarks/bench_marginal.py --num-reference 20 --num-data 1000 --repeats 3 --data mnist
    python benchmarks/bench_marginal.py --num-reference 0 --num-data 0 --ais-data 256 --ais-temps 200
    python benchmarks/bench_marginal.py --num-reference 0 --num-data 0 --ais-data 100 --data mnist \
        --ais-latent 20 --ais-hidden 500 --ais-start guide --ais-temps 1000 --repeats 1 --threads 1
    python benchmarks/bench_marginal.py --num-reference 0 --num-data 0 --ais-data 100 --data mnist \
        --ais-latent 50 --ais-hidden 200,200 --ais-start guide --ais-temps 100 --repeats 3 --threads 1

[1] Auto-Encoding Variational Bayes, Kingma & Welling (2013)
"""

import argparse
import json
import statistics
import time
from pathlib import Path


def make_model(z_dim, hidden_dim, x_dim, init_std, device="cpu"):
    """A model following the library's contract, with a random tanh/Bernoulli decoder."""
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn

    decoder = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, x_dim)).to(device)
    for p in decoder.parameters():
        nn.init.normal_(p, std=init_std)

    def model(x, num_data=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", num_data or x.shape[0], subsample=torch.arange(x.shape[0])):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    return model


def load_data(name, num_data, data_dir):
    import torch

    if name == "random":
        generator = torch.Generator().manual_seed(0)
        return torch.bernoulli(torch.full((num_data, 784), 0.2), generator=generator)
    from pyro_aevb.data import load_dataset

    return load_dataset("mnist", data_dir=data_dir, binarize="static", download=False).eval_split("test", num_data)


def median_time(fn, repeats):
    """:returns: the medians of the wall-clock and the CPU seconds of ``fn()`` over ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def layer_dims(z_dim, hidden_dim, x_dim):
    """The decoder's widths, ``z_dim``, each hidden layer's (an int or a sequence of ints), ``x_dim``."""
    hidden = (hidden_dim,) if isinstance(hidden_dim, int) else tuple(hidden_dim)
    return (z_dim, *hidden, x_dim)


def decoder_flops(z_dim, hidden_dim, x_dim):
    """Multiply-adds x 2 of one row through the decoder, forward and backward to ``z``."""
    dims = layer_dims(z_dim, hidden_dim, x_dim)
    forward = 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return 2 * forward


def matmul_rate(rows, z_dim, hidden_dim, x_dim, repeats=20, clock=time.perf_counter):
    """FLOP/s of ``torch.matmul`` on the decoder's forward and backward products with ``rows`` rows, by ``clock``."""
    import torch

    dims = layer_dims(z_dim, hidden_dim, x_dim)
    layers = [(torch.randn(rows, a), torch.randn(a, b), torch.randn(rows, b)) for a, b in zip(dims[:-1], dims[1:])]

    def products():
        for inputs, weight, grad in layers:
            torch.matmul(inputs, weight), torch.matmul(grad, weight.T)

    products()
    start = clock()
    for _ in range(repeats):
        products()
    seconds = (clock() - start) / repeats
    return rows * decoder_flops(z_dim, hidden_dim, x_dim) / seconds


def bench_ais(args, x):
    """Times ``estimator="ais"`` on the paper's VAE class; returns a dict with the FLOP rates."""
    from torch import nn

    from pyro_aevb import VAE
    from pyro_aevb.infer import ais
    from pyro_aevb.infer.marginal import log_marginal_likelihood

    z_dim, hidden = args.ais_latent, args.ais_hidden
    vae = VAE(784, z_dim, hidden, "bernoulli", init_std=args.init_std)
    for p in vae.parameters():
        nn.init.normal_(p, std=args.init_std)
    guide = vae.guide if args.ais_start == "guide" else None
    x = x[: args.ais_data]
    chains, temps, steps = args.ais_chains, args.ais_temps, args.num_steps_ais
    rows = chains * min(len(x), ais.default_chunk_size(chains))
    wall, cpu = median_time(
        lambda: log_marginal_likelihood(vae.model, x, "ais", guide, num_chains=chains, num_temps=temps, num_steps=steps,
                                        precision=args.ais_precision),
        args.repeats,
    )
    useful = len(x) * chains * (temps - 1) * steps * decoder_flops(z_dim, hidden, 784)
    rate = useful / wall
    reference = matmul_rate(rows, z_dim, hidden, 784)
    # On one thread the CPU time is what the process got: the ratio by CPU time holds on a shared machine too.
    cpu_reference = matmul_rate(rows, z_dim, hidden, 784, clock=time.process_time)
    return {"datapoints": len(x), "rows": rows, "wall_s": wall, "cpu_s": cpu, "useful_flops": useful,
            "useful_rate": rate, "matmul_rate": reference, "ratio": rate / reference,
            "cpu_ratio": useful / cpu / cpu_reference}


def main(args):
    import pyro
    import torch

    from reference_hmc import reference_hmc_mcmc

    from pyro_aevb.infer.marginal import log_marginal_likelihood

    if args.threads:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    pyro.enable_validation(False)
    device = torch.device(args.device)
    model = make_model(3, 100, 784, args.init_std, device)
    x = load_data(args.data, max(args.num_data, args.num_reference), args.data_dir).to(device)
    options = dict(
        num_chains=args.num_chains,
        num_samples=args.num_samples,
        warmup_steps=args.warmup_steps,
        num_steps=args.num_steps,
    )
    rows = []
    if args.num_reference > 0:
        x_ref = x[: args.num_reference]
        ref = median_time(lambda: reference_hmc_mcmc(model, x_ref, **options), args.repeats)
        # Equal settings: no step-size jitter, and each chain starts at one prior draw, as the reference's do.
        vec = median_time(
            lambda: log_marginal_likelihood(model, x_ref, step_size_jitter=0.0, init_proposals=1, **options),
            args.repeats,
        )
        rows.append(("Pyro `HMC` + `MCMC`, one chain at a time", args.num_reference, ref))
        rows.append(("vectorised `hmc`, same datapoints", args.num_reference, vec))
    if args.num_data > 0:
        x_fig = x[: args.num_data]
        fig = median_time(lambda: log_marginal_likelihood(model, x_fig, **options), args.repeats)
        rows.append(("Figure 3 setting, vectorised `hmc`", args.num_data, fig))

    title = (
        f"Appendix D estimator, decoder 3-100-784, {args.data} data, {args.num_chains} chains x "
        f"({args.warmup_steps} warmup + 2 x {args.num_samples} draws), {args.num_steps} leapfrog steps, "
        f"{torch.get_num_threads()} threads, {device}, median of {args.repeats}"
    )
    lines = [title, "", "| run | datapoints | wall s | CPU s | wall s per datapoint |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, n, (wall, cpu) in rows:
        lines.append(f"| {name} | {n} | {wall:.2f} | {cpu:.2f} | {wall / n:.4f} |")
    if args.num_reference > 0:
        (ref_wall, ref_cpu), (vec_wall, vec_cpu) = ref, vec
        lines.append(f"| speed-up, Pyro / vectorised | | {ref_wall / vec_wall:.1f}x | {ref_cpu / vec_cpu:.1f}x | |")
    ais_report = None
    if args.ais_data > 0:
        ais_report = bench_ais(args, load_data(args.data, args.ais_data, args.data_dir))
        lines += [
            "",
            f"AIS, the paper's VAE ({'-'.join(map(str, layer_dims(args.ais_latent, args.ais_hidden, 784)))}, untrained, N(0, {args.init_std}^2) "
            f"weights, chains from the {args.ais_start}, {args.ais_precision}), {ais_report['datapoints']} datapoints, {args.ais_chains} chains, "
            f"{args.ais_temps} temperatures, {args.num_steps_ais} leapfrog steps, {ais_report['rows']} rows per chunk: "
            f"{ais_report['wall_s']:.2f} s, useful {ais_report['useful_rate'] / 1e9:.2f} GFLOP/s, "
            f"torch.matmul at the same shapes {ais_report['matmul_rate'] / 1e9:.2f} GFLOP/s, "
            f"ratio {ais_report['ratio']:.2f}; by CPU time {ais_report['cpu_s']:.2f} s, ratio {ais_report['cpu_ratio']:.2f}",
        ]
    print("\n".join(lines))
    if args.out:
        report = {
            "title": title, "arguments": {k: str(v) for k, v in vars(args).items()},
            "rows": [{"run": name, "datapoints": n, "wall_s": wall, "cpu_s": cpu} for name, n, (wall, cpu) in rows],
            "ais": ais_report,
        }
        Path(args.out).write_text(json.dumps(report, indent=2))
    return rows

def hidden_layers(text):
    """``--ais-hidden``: one width (``100``) or several (``200,200``)."""
    widths = [int(w) for w in text.split(",")]
    return widths[0] if len(widths) == 1 else widths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-reference", type=int, default=20, help="datapoints for the Pyro MCMC comparison (0 skips it)")
    parser.add_argument("--num-data", type=int, default=1000, help="datapoints for the Figure 3 setting (0 skips it)")
    parser.add_argument("--data", choices=["random", "mnist"], default="random", help="random binary data or MNIST test digits")
    parser.add_argument("--data-dir", default=None, help="data directory for --data mnist (see pyro_aevb.data)")
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=50, help="L, draws per chain per stage")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--num-steps", type=int, default=4, help="leapfrog steps per transition")
    parser.add_argument("--init-std", type=float, default=0.01, help="std of the random decoder weights")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ais-data", type=int, default=0, help="datapoints for the AIS timing (0 skips it)")
    parser.add_argument("--ais-chains", type=int, default=16, help="AIS chains per datapoint")
    parser.add_argument("--ais-temps", type=int, default=100, help="AIS temperatures")
    parser.add_argument("--num-steps-ais", type=int, default=10, help="AIS leapfrog steps per transition")
    parser.add_argument("--ais-latent", type=int, default=3, help="Nz of the AIS timing's VAE")
    parser.add_argument("--ais-hidden", type=hidden_layers, default=100,
                        help="hidden units of the AIS timing's VAE, or a comma-separated list for several layers (200,200)")
    parser.add_argument("--ais-start", choices=["prior", "guide"], default="prior", help="AIS chains start from")
    parser.add_argument("--ais-precision", choices=["fp32", "bf16"], default="fp32",
                        help="AIS: bf16 products at the inner leapfrog steps (the matmul reference stays float32)")
    parser.add_argument("--threads", type=int, help="torch threads [PyTorch's default: one per core]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the results as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
