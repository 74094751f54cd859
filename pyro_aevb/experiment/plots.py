"""
Figures: the lower bound against training samples (the paper's Figures 2 and 3), and reconstructions
and samples from a trained model. matplotlib is imported only when a figure is drawn.
"""

import math

import torch

from pyro_aevb.infer.predictive import decode, reconstruct, sample_means
from pyro_aevb.infer.sites import LatentSpace

__all__ = ["image_grid", "latent_grid", "manifold_site", "plot_lower_bound", "plot_manifold", "plot_reconstructions", "pyplot"]

# The paper's axis labels, with the unit: Figure 2 plots the bound, Figure 3 the marginal likelihood.
_YLABEL = {"lower_bound": r"$\mathcal{L}$ (nats per datapoint)", "log_marginal": "Marginal log-likelihood (nats per datapoint)"}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files, no window), imported on the first figure drawn."""
    import matplotlib  # deferred: matplotlib takes a second to import, and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lower_bound(curves, path, metric="lower_bound", title=None, ax=None, y_from=None):
    """
    Plot a metric against the number of training samples evaluated, on a log x-axis: train solid,
    test dashed, one colour per curve, as in the paper's Figure 2.

    :param dict curves: label -> list of metric rows (as from :func:`pyro_aevb.experiment.rundir.read_metrics`).
    :param path: where to save the figure (PNG or PDF by suffix), or None when drawing into ``ax``.
    :param str metric: ``"lower_bound"`` or ``"log_marginal"``.
    :param float y_from: fit the y-axis to the points from this many samples on (the earlier ones,
        often hundreds of nats lower, run off the bottom, as in the paper's figures); None: to all.
    """
    plt = pyplot()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shown = []
    for i, (label, rows) in enumerate(curves.items()):
        for split, style in (("train", "-"), ("test", "--")):
            pts = [(r["samples"], r[f"{split}_{metric}"]) for r in rows if r[f"{split}_{metric}"] is not None]
            if pts:
                xs, ys = zip(*pts)
                name = f"{label} ({split})" if label else split
                ax.plot(xs, ys, style, color=colours[i % len(colours)], label=name)
                shown += [y for x, y in pts if y_from is None or x >= y_from]
    if y_from is not None and shown:
        low, high = min(shown), max(shown)
        pad = 0.05 * (high - low) or 1.0
        ax.set_ylim(low - pad, high + pad)
    ax.set_xscale("log")
    ax.set_xlabel("# Training samples evaluated")
    ax.set_ylabel(_YLABEL[metric])
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if fig is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def image_grid(images, image_shape, nrow):
    """Tile ``images`` (``[K, ...]`` in [0, 1], ``height * width`` values each) into one array of ``nrow`` rows."""
    h, w = image_shape
    k = images.shape[0]
    ncol = -(-k // nrow)
    grid = torch.ones(nrow * (h + 1) + 1, ncol * (w + 1) + 1)
    for i, img in enumerate(images.detach().cpu().reshape(k, h, w)):
        r, c = divmod(i, ncol)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    return grid.numpy()


def plot_reconstructions(vae, x, image_shape, path, num_samples=20, seed=0):
    """
    Three panels: test images, their reconstructions :math:`E[x|z=\\mu_\\phi(x)]`, and the means of
    :math:`p_\\theta(x|z)` for ``num_samples`` draws :math:`z \\sim p_\\theta(z)`.
    """
    plt = pyplot()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        recon = reconstruct(vae.model, vae.guide, x)
        samples = sample_means(vae.model, num_samples, x)
    panels = [("data", x, 1), ("reconstructions", recon, 1), ("samples from the model", samples, 2)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4.6), height_ratios=[1, 1, 2])
    for ax, (title, images, nrow) in zip(axes, panels):
        ax.imshow(image_grid(images.clamp(0, 1), image_shape, nrow), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize="small")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latent_grid(num):
    """
    Appendix A of [1]: linearly spaced coordinates on the unit square, mapped through the inverse CDF
    of the standard Gaussian, so that the grid covers the prior evenly. Row-major, with z₂ decreasing
    down the rows and z₁ increasing along them. :returns: ``[num * num, 2]``.
    """
    z = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(num) + 0.5) / num)
    z2, z1 = torch.meshgrid(z.flip(0), z, indexing="ij")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1)


def manifold_site(model, x_like):
    """The name of the model's one latent site if it is 2-D per datapoint (a manifold can be drawn), else ``None``."""
    space = LatentSpace.from_model(model, x_like)
    return space.names[0] if space.dim == 2 and len(space.names) == 1 else None


def plot_manifold(vae, image_shape, path, num=20, ax=None, title=None, data_shape=None):
    """
    Decode :func:`latent_grid` with a model whose one latent site is 2-D: the learned data manifold
    (Figure 4 of [1]). ``vae`` is any object with a Pyro ``.model`` (its parameters on the device);
    ``data_shape`` is the shape of a datapoint as the model takes it (default: flat).
    """
    plt = pyplot()
    device = next(iter(vae.parameters())).device if hasattr(vae, "parameters") else "cpu"
    x_like = torch.zeros(num * num, *(data_shape or (math.prod(image_shape),)), device=device)
    site = manifold_site(vae.model, x_like)
    if site is None:
        raise ValueError("a manifold plot needs a model with one latent site, 2-D per datapoint")
    z = latent_grid(num).to(device)
    with torch.no_grad():
        images = decode(vae.model, {site: z}, x_like)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6 * image_shape[0] / image_shape[1]))
    ax.imshow(image_grid(images.clamp(0, 1), image_shape, num), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    if fig is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
