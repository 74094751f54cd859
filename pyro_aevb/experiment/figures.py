"""
The paper's figures, drawn from the run folders of an experiment (:mod:`~pyro_aevb.experiment.reproduce`):
Figures 2 and 3 from the runs' metrics, Figures 4 and 5 from their trained models. Each is written as
PNG and PDF. The single plots they are made of are :mod:`~pyro_aevb.experiment.plots`'.
"""

import torch

from pyro_aevb.experiment.plots import image_grid, plot_lower_bound, plot_manifold, pyplot
from pyro_aevb.experiment.rundir import RunDir, read_metrics
from pyro_aevb.experiment.runs import run_name
from pyro_aevb.experiment.load import load_run

__all__ = ["draw_figure2", "draw_figure3", "draw_manifold"]


def _save(fig, path):
    """Write ``fig`` as ``path``.png and ``path``.pdf, and close it."""
    plt = pyplot()
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        # bbox "tight": tight_layout leaves no room for the titles of axes that are switched off (Figure 5).
        fig.savefig(path.with_suffix(suffix), dpi=120, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)


def _panels(n, width=3.6, height=3.2):
    plt = pyplot()
    ncol = min(n, 3 if n > 4 else n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def _y_from(configs):
    """The panels' y-axes show the last two decades of training, as the paper's figures do (from 1e5 of 1e7)."""
    return max(c.samples for c in configs) / 100


def draw_figure2(configs, folders, dest, dataset):
    """Figure 2, as ``dest/figure2-<dataset>``: per latent size, AEVB's and wake-sleep's bounds by training samples."""
    latents = sorted({c.latent_dim for c in configs})
    fig, axes = _panels(len(latents))
    label = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep"}
    y_from = _y_from(configs)
    for ax, z in zip(axes, latents):
        curves = {label[c.method]: read_metrics(RunDir(folders[run_name(c)]).metrics_path)
                  for c in configs if c.latent_dim == z}
        plot_lower_bound(curves, None, title=f"{'MNIST' if dataset == 'mnist' else 'Frey Face'}, $N_z = {z}$", ax=ax,
                         y_from=y_from)
    _save(fig, dest / f"figure2-{dataset}")


def draw_figure3(configs, folders, dest):
    """Figure 3, as ``dest/figure3``: per training-set size, the methods' marginal likelihoods by training samples."""
    sizes = sorted({c.num_train for c in configs})
    fig, axes = _panels(len(sizes), width=4.5, height=3.6)
    label = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep", "mcem": "MCEM"}
    y_from = _y_from(configs)
    for ax, n in zip(axes, sizes):
        curves = {label[c.method]: read_metrics(RunDir(folders[run_name(c)]).metrics_path)
                  for c in configs if c.num_train == n}
        plot_lower_bound(curves, None, metric="log_marginal", title=f"$N_{{train}} = {n}$", ax=ax,
                         y_from=y_from)
    _save(fig, dest / "figure3")


def draw_manifold(configs, folders, dest):
    """Figure 4 (the learned 2-D manifolds) as ``dest/figure4``, Figure 5 (samples per latent size) as ``dest/figure5``."""
    two_d = [c for c in configs if c.latent_dim == 2]
    fig, axes = _panels(len(two_d), width=5, height=5)
    for ax, c in zip(axes, two_d):
        vae = load_run(folders[run_name(c)])
        shape = (28, 20) if c.dataset == "frey" else (28, 28)
        plot_manifold(vae, shape, None, num=20 if c.dataset == "mnist" else 12, ax=ax,
                      title=f"({'a' if c.dataset == 'frey' else 'b'}) Learned {'Frey Face' if c.dataset == 'frey' else 'MNIST'} manifold")
    _save(fig, dest / "figure4")
    mnist = [c for c in configs if c.dataset == "mnist"]
    fig, axes = _panels(len(mnist), width=3.6, height=3.8)
    for ax, c in zip(axes, mnist):
        vae = load_run(folders[run_name(c)])
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            images = vae.decode(vae.sample_prior(100))
        ax.imshow(image_grid(images.clamp(0, 1), (28, 28), 10), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"({'abcd'[mnist.index(c)]}) {c.latent_dim}-D latent space")
        ax.axis("off")
    _save(fig, dest / "figure5")
