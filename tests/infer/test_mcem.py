import copy
import math

import pyro
import pytest
import torch
from tests.helpers.linear_gaussian import LinearGaussianVAE, ppca_data, ppca_max_log_likelihood, tiny_run_metrics

from pyro_aevb import VAE, TrainConfig, load_dataset, load_run, log_marginal_likelihood
from pyro_aevb.experiment.train import METHODS
from pyro_aevb.infer.hmc import hmc_step
from pyro_aevb.infer.mcem import MCEM, ImportanceMCEM, complete_log_likelihood
from pyro_aevb.infer.sites import LatentSpace

METHOD_CLASSES = {"mcem": MCEM, "mcem-is": ImportanceMCEM}


def test_log_joint_matches_hand_computed_densities():
    x = torch.rand(3, 6).round()
    vae = VAE(6, 2, 5, init_std=0.5)
    z = torch.randn(4, 3, 2)
    joint, _ = complete_log_likelihood(LatentSpace.from_model(vae.model, x), x, z)
    logits = vae.decoder(z)
    expected_likelihood = (x * logits.sigmoid().log() + (1 - x) * (-logits).sigmoid().log()).sum(-1)
    expected_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(joint, expected_prior + expected_likelihood, atol=1e-4), "the complete-data log-likelihood is wrong"


@pytest.mark.parametrize("init_proposals", [1, 1000])
def test_first_visit_start(init_proposals):
    """
    A chain's start at its datapoint's first visit: a prior draw, or (init_proposals = 1,000) one of
    1,000 prior draws resampled by likelihood, close to an exact posterior draw; a later visit keeps it.
    """
    # One datapoint x = W z0 of probabilistic PCA, z0 = (0.5, -0.5), in 200 rows: posterior sds 0.21
    # and 0.28, means 0.49 and -0.47, so prior proposals have an importance ESS of about 90 of 1,000
    # (K prod_j s_j (2 - s_j^2)^1/2 exp(-m_j^2 / (2 - s_j^2))). Standardised by the exact posterior, 200
    # resampled starts: mean within 5 SE = 0.35 of 0, sd within 0.3 of 1 (5 SE of a sample sd, 0.05,
    # and resampling's slight underdispersion); prior draws are 4.9 and 3.5 posterior sds wide (more
    # than 5 SE, 0.25 and 0.18, above 2.5).
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    vae = LinearGaussianVAE(4, 2).set_params(W, torch.zeros(4), 0.5)
    x = (torch.tensor([0.5, -0.5]) @ W.T).expand(200, 4)
    loc, cov = vae.posterior(x)
    method = MCEM(vae, init_proposals=init_proposals)
    idx = torch.arange(200)
    method._check(x)
    method._init_state(x, idx, 200)
    u = (method.z - loc) / cov.diagonal().sqrt()
    if init_proposals == 1:
        assert (u.std(0) > 2.5).all(), f"standardised sd {u.std(0)}: not prior draws"
    else:
        assert (u.mean(0).abs() < 0.35).all(), f"standardised mean {u.mean(0)}"
        assert ((u.std(0) - 1).abs() < 0.3).all(), f"standardised sd {u.std(0)}"
    start = method.z.clone()
    method._init_state(x, idx, 200)
    assert torch.equal(method.z, start), "a second visit drew the chains' start again"


@pytest.fixture(scope="module")
def e_step_run():
    r"""
    Chains of the HMC E-step started at exact draws of the posterior of a linear-Gaussian model with
    fixed parameters, moved by 20 E-steps with the step sizes adapting as in training.
    """
    pyro.set_rng_seed(0)
    num_data, x_dim, z_dim, sigma = 5000, 4, 2, 0.5
    vae = LinearGaussianVAE(x_dim, z_dim).set_params(torch.randn(x_dim, z_dim), torch.randn(x_dim), sigma)
    x = ppca_data(num_data, x_dim, z_dim, sigma, seed=1)
    loc, cov = vae.posterior(x)
    scale_tril = torch.linalg.cholesky(cov)
    method = MCEM(vae, weight_decay=0.0)
    idx = torch.arange(num_data)
    method.e_step(x, idx, num_data)  # allocates the state
    method.z[:] = loc + torch.randn(num_data, z_dim) @ scale_tril.T
    for _ in range(20):
        method.e_step(x, idx, num_data)
    whitened = torch.linalg.solve_triangular(scale_tril, (method.z - loc).T, upper=False).T
    potential_fn = lambda z: -sum(method.space.log_joint(x, z))  # noqa: E731
    accept_prob = hmc_step(potential_fn, method.z, method.adapter.final_step_size, 10).accept_prob
    pyro.clear_param_store()
    return whitened, accept_prob


def test_hmc_e_step_leaves_posterior_invariant(e_step_run):
    # Whitened by the exact posterior, the 5000 chains are N(0, I) draws if the posterior is invariant:
    # the sample mean has sd 1/sqrt(5000) = 0.014 and each covariance entry about sqrt(2/5000) = 0.02;
    # the tolerances are 5 sd.
    whitened, _ = e_step_run
    mean, cov = whitened.mean(0), torch.cov(whitened.T)
    assert mean.abs().max() < 0.07, f"posterior mean drifted: whitened mean {mean.tolist()}"
    assert (cov - torch.eye(2)).abs().max() < 0.1, f"posterior covariance drifted: whitened covariance {cov.tolist()}"


def test_hmc_e_step_step_sizes_reach_target_acceptance(e_step_run):
    # The mean over 5000 chains has sd < 0.005; dual averaging after 20 updates is within a few percent.
    _, accept_prob = e_step_run
    assert abs(accept_prob.mean().item() - 0.9) < 0.05, f"mean acceptance {accept_prob.mean():.3f}, target 0.9"


def test_importance_weights_are_normalised_likelihoods():
    x = torch.rand(5, 6).round()
    vae = VAE(6, 2, 5, init_std=0.5)
    method = ImportanceMCEM(vae, num_proposals=7)
    method.space = LatentSpace.from_model(vae.model, x)
    z, weights = method.e_step(x, torch.arange(5), 50)
    logits = vae.decoder(z)
    log_likelihood = (x * logits.sigmoid().log() + (1 - x) * (-logits).sigmoid().log()).sum(-1)
    assert z.shape == (7, 5, 2), f"expected 7 proposals per datapoint, got shape {tuple(z.shape)}"
    assert torch.allclose(weights, log_likelihood.softmax(0), atol=1e-5), "weights are not p(x|z) normalised over z"


@pytest.mark.parametrize("method", ["mcem", "mcem-is"])
def test_converges_to_ppca_maximum_likelihood(method):
    # Probabilistic PCA, N = 300, D = 4, Nz = 1, fitted from W ~ N(0, 0.01) in 50 full-batch steps
    # (weight decay off: maximum likelihood). The parameters keep the noise of the E-step's draws, one
    # per datapoint (K = 100 for "mcem-is"), and scatter about the optimum as an estimate from N
    # points would: the expected mean log-likelihood gap is then about p / 2N = 0.015 nats for the
    # p = 9 free parameters. Measured gaps, three seeds: 0.001-0.011; we allow 0.05 (the gap at the
    # start is 2.5 nats).
    num_data, x_dim, z_dim = 300, 4, 1
    x = ppca_data(num_data, x_dim, z_dim, sigma=1.0)
    vae = LinearGaussianVAE(x_dim, z_dim)
    options = {"num_proposals": 100} if method == "mcem-is" else {}
    trainer = METHOD_CLASSES[method](vae, lr=0.1, weight_decay=0.0, **options)
    idx = torch.arange(num_data)
    for _ in range(50):
        trainer.step(x, num_data, idx=idx)
    gap = ppca_max_log_likelihood(x, z_dim) - vae.log_likelihood(x)
    assert -1e-4 < gap < 0.05, f"{method}: mean log-likelihood {gap:.4f} nats below the ML solution"


@pytest.mark.parametrize("method", ["mcem", "mcem-is"])
def test_resume_is_exact(method):
    x = torch.rand(40, 6).round()
    options = dict(lr=0.1, **({"num_proposals": 3} if method == "mcem-is" else {}))

    def run(trainer, steps):
        for step in range(steps):
            idx = torch.arange(10 * (step % 4), 10 * (step % 4) + 10)
            trainer.step(x[idx], 40, idx=idx)

    vae = VAE(6, 2, 5, init_std=0.3)
    trainer = METHOD_CLASSES[method](vae, **options)
    run(trainer, 5)
    # A deep copy stands for the checkpoint file: optimizer states are live tensors.
    saved = copy.deepcopy({"vae": vae.state_dict(), "method": trainer.state_dict(), "rng": torch.get_rng_state()})
    run(trainer, 3)

    pyro.clear_param_store()
    resumed_vae = VAE(6, 2, 5)
    resumed_vae.load_state_dict(saved["vae"])
    resumed = METHOD_CLASSES[method](resumed_vae, **options)
    resumed.load_state_dict(saved["method"])
    torch.set_rng_state(saved["rng"])
    run(resumed, 3)
    for name, value in vae.state_dict().items():
        assert torch.equal(value, resumed_vae.state_dict()[name]), f"{method}: {name} differs after resuming"


def test_mcem_state_at_fifty_thousand_points():
    # [1] runs MCEM on at most 50,000 training points (Figure 3); the state is one Nz-vector and five
    # adaptation floats per point, allocated once.
    num_data, z_dim = 50_000, 3
    vae = VAE(8, z_dim, 10)
    trainer = MCEM(vae)
    order = torch.randperm(num_data)
    for step in range(3):
        idx = order[100 * step : 100 * step + 100]
        loss = trainer.step(torch.rand(100, 8).round(), num_data, idx=idx)
        assert math.isfinite(loss), f"step {step}: loss {loss}"
    assert trainer.z.shape == (num_data, z_dim), f"persistent samples have shape {tuple(trainer.z.shape)}"
    assert int(trainer.initialised.sum()) == 300, "only the visited datapoints should be initialised"


@pytest.mark.parametrize("method", ["mcem", "mcem-is"])
def test_unknown_option_is_rejected(method):
    with pytest.raises(TypeError, match="num_leapfrog"):
        METHOD_CLASSES[method](VAE(6, 2, 5), num_leapfrog=3)
    # From the training loop's config: a clear ConfigError that lists the known options.
    with pytest.raises(ValueError, match="unknown method options.*num_leapfrog.*known.*num_m_steps"):
        METHODS[method](VAE(6, 2, 5), TrainConfig(method=method, method_options={"num_leapfrog": 3}))


# Slow: nearly all of it is the training loop's Appendix D estimator (hundreds of sequential HMC
# transitions per split, whatever the number of datapoints), 20-25 s on a shared machine.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["mcem", "mcem-is"])
def test_train_writes_marginal_likelihoods(method, tmp_path):
    """
    Without an encoder the loop writes log p(x) by Appendix D's estimator, of the trained model: the last
    row's are log_marginal_likelihood recomputed from the saved run on the evaluated points (the first 20
    of the 50 training and of the test points) with the evaluation's seed, config.seed + 2, reseeded for
    each split. Other parameters, points, seed or estimator differ by far more than metrics.csv's six
    decimals and float32 rounding (rel 1e-6 of ~200 nats).
    """
    rows = tiny_run_metrics(method, tmp_path)
    vae = load_run(tmp_path)
    config, dataset = vae.config, load_dataset("mnist5k")
    points = {"train": dataset.eval_split("train", config.eval_train_points), "test": dataset.eval_split("test")}
    for split, x in points.items():
        with torch.random.fork_rng():
            torch.manual_seed(config.seed + 2)
            expected = log_marginal_likelihood(vae.model, x[: config.log_marginal_points], "hmc").mean().item()
        got = rows[-1][f"{split}_log_marginal"]
        assert got == pytest.approx(expected, rel=1e-6), f"{method}, {split}: the run wrote {got}, its model's is {expected}"
    for column in ("train_lower_bound", "test_lower_bound"):
        assert all(row[column] is None for row in rows), f"{column} should be empty without an encoder: {rows}"
