"""
The runs of the paper's experiments, as :class:`~pyro_aevb.experiment.train.TrainConfig` settings
derived from a base config: Figure 2 (AEVB against wake-sleep, per latent size), Figure 3 (AEVB,
wake-sleep and MCEM by marginal likelihood, small and large training set) and the Appendix A figures
(2-D manifolds, Figure 4; samples for several latent sizes, Figure 5).
"""

import dataclasses

__all__ = ["FIGURE2_LATENTS", "FIGURE5_LATENTS", "figure2", "figure3", "manifold"]

#: Latent sizes of the paper's Figure 2.
FIGURE2_LATENTS = {"mnist": (3, 5, 10, 20, 200), "frey": (2, 5, 10, 20)}
#: Latent sizes whose samples Figure 5 shows.
FIGURE5_LATENTS = (2, 5, 10, 20)


def _paper(config, **changes):
    return dataclasses.replace(config, **changes)


def figure2(base, dataset):
    """AEVB and wake-sleep for each latent size of Figure 2, at the paper's settings."""
    base = _paper(base, dataset=dataset)
    return [_paper(base, method=m, latent_dim=z) for z in FIGURE2_LATENTS[dataset] for m in ("aevb", "wake-sleep")]


def figure3(base, num_train=(1000, 50000), mcem_samples=None):
    """
    MNIST, Nz = 3, 100 hidden units; AEVB, wake-sleep and MCEM by marginal likelihood. MCEM's runs
    take ``mcem_samples`` (default: the same budget): its HMC E-step costs tens of times more per
    sample than the other two methods' steps, which is why the paper calls it impractical on the full
    data set.
    """
    base = _paper(base, dataset="mnist", latent_dim=3, hidden=100)
    configs = []
    for n in num_train:
        for method in ("aevb", "wake-sleep", "mcem"):
            samples = int(mcem_samples or base.samples) if method == "mcem" else base.samples
            configs.append(_paper(base, method=method, num_train=n, samples=samples, log_marginal="hmc",
                                  eval_train_points=min(base.eval_train_points, n)))
    return configs


def manifold(base):
    """Nz = 2 models on MNIST and Frey Face (Figure 4), and MNIST models with several Nz (Figure 5)."""
    configs = [_paper(base, dataset="frey", latent_dim=2, method="aevb")]
    configs += [_paper(base, dataset="mnist", latent_dim=z, method="aevb") for z in FIGURE5_LATENTS]
    return configs
