"""
Any Pyro model of Section 2 of the paper, written the way Pyro users write it, trains with every method
and evaluates with every estimator: site names are found on the trace, a model may have several latent
sites and constrained ones, and one outside the class is refused with the site's name.
"""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

import pyro_aevb
from pyro_aevb import AEVB, MCEM, ImportanceMCEM, TrainConfig, WakeSleep, data_plate, log_marginal_likelihood, lower_bound
from pyro_aevb.errors import UnsupportedModelError
from pyro_aevb.infer.sites import LatentSpace
from pyro_aevb.infer.util import per_datapoint
from tests.helpers.exact_models import EXACT, TwoSiteLinearGaussian
from tests.helpers.pyro_tutorial_vae import VAE as TutorialVAE

ESTIMATORS = ["hmc", "is", "ais"]
# AIS started at the exact posterior (these models' guides) is exact for every K and T: each
# intermediate density is the posterior itself, so every increment of every chain's log-weight is
# delta_beta * log p(x). So a short path (K = 2 chains, T = 10 temperatures, 2 leapfrog steps) keeps
# the test fast, and the tolerance is float32 rounding, as for "is".
OPTIONS = {"ais": dict(num_chains=2, num_temps=10, num_steps=2)}


@pytest.mark.parametrize("name", EXACT)
def test_latent_space_finds_the_sites(name):
    model = EXACT[name]()
    x = model.sample(3)
    space = LatentSpace.from_model(model.model, x, model.guide)
    expected = {"two-sites": (["a", "b"], 3), "gamma-poisson": (["rate"], 1), "renamed": (["code"], 2)}[name]
    assert (space.names, space.dim) == expected, f"{name}: found {space.names} of size {space.dim}"
    # unpack inverts pack, and the log-density per datapoint is the sum over the sites and nested plates
    u, trace = space.sample_prior(x)
    values, _ = space.unpack(u)
    for site in space.names:
        assert torch.allclose(values[site], trace.nodes[site]["value"], atol=1e-5), f"{name}: {site} did not round-trip"
    log_prior, log_lik = space.log_joint(x, u, jacobian=False)
    trace.compute_log_prob()
    total = sum(site["log_prob_sum"] for site in trace.nodes.values() if site["type"] == "sample")
    assert torch.allclose((log_prior + log_lik).sum(), total, atol=1e-3), f"{name}: per-datapoint densities do not sum to the trace's"


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("name", EXACT)
def test_estimators_are_exact_with_free_site_names(name, estimator):
    # Importance sampling with the exact posterior as proposal has weights equal to p(x), and so has
    # AIS started there (OPTIONS): exact up to float32 rounding (1e-3 nats). Appendix D: with q a Gaussian fitted to L = 4 chains x 50 draws
    # (ESS >= 50) at 0.8 times the covariance, the relative variance of q/p(x, z) is at most
    # (0.8 * 1.2)^(-D/2) - 1 = 0.063 for D = 3 (less for a near-Gaussian 1-D posterior in log space),
    # so the sd of the log-estimate is about sqrt(0.063 / 50) = 0.035 nats: 0.2 is over 5 sd.
    pyro.set_rng_seed(1)
    model = EXACT[name]()
    x = model.sample(16)
    exact = model.log_px(x)
    estimate = log_marginal_likelihood(model.model, x, estimator, model.guide, **OPTIONS.get(estimator, {}))
    tolerance = 1e-3 if estimator in ("is", "ais") else 0.2
    error = (estimate - exact).abs().max().item()
    assert error < tolerance, f"{name}/{estimator}: off by up to {error:.4f} nats (tolerance {tolerance})"


@pytest.mark.parametrize("name", EXACT)
def test_ais_from_the_prior_with_free_site_names(name):
    # The annealing itself on several sites and a constrained one: from the prior, K = 8 chains, T = 100
    # sigmoid temperatures, 8 datapoints. Per datapoint the error is within 5 of the estimate's own
    # standard errors (sqrt(1/ESS - 1/K) from its weights) plus its bias v / (2K) <= 2.5 SE^2, plus
    # 0.1 nats for the bias that T = 100 leaves (BDMC's gap on a linear-Gaussian model at T = 100 is
    # 0.04, docs/results.md); the mean over the datapoints lies below exact + 4 SE (a lower bound).
    pyro.set_rng_seed(2)
    model = EXACT[name]()
    x = model.sample(8)
    exact = model.log_px(x)
    estimate, info = log_marginal_likelihood(
        model.model, x, "ais", num_chains=8, num_temps=100, return_diagnostics=True
    )
    error, stderr = estimate - exact, info["stderr"]
    assert (error.abs() < 5 * stderr + 2.5 * stderr**2 + 0.1).all(), f"{name}: errors {error} (SE {stderr})"
    assert error.mean() < 4 * stderr.pow(2).sum().sqrt() / len(error) + 0.01, f"{name}: mean error {error.mean():.4f}"
    assert 0.3 < info["accept_prob"].mean() < 0.99


def test_bdmc_brackets_a_two_site_model():
    # BDMC on the hierarchy a -> b -> y: simulate returns both latent sites, and bdmc packs them. 60
    # datapoints, K = 4, T = 20 (a short path: a wide gap); the bracket holds within 2.5 standard
    # errors of each bound's mean error over the datapoints, and the gap is positive.
    pyro.set_rng_seed(3)
    model = TwoSiteLinearGaussian()
    x, latents = pyro_aevb.infer.bdmc.simulate(model.model, 60, torch.zeros(1, 5))
    assert set(latents) == {"a", "b"} and latents["a"].shape == (60, 2) and latents["b"].shape == (60, 1)
    exact = model.log_px(x)
    lower, upper = pyro_aevb.bdmc(model.model, x, latents, num_chains=4, num_temps=20)
    n = math.sqrt(len(exact))
    low_err, up_err = lower - exact, upper - exact
    assert low_err.mean() < 2.5 * low_err.std() / n, f"lower {low_err.mean():.4f} above exact"
    assert up_err.mean() > -2.5 * up_err.std() / n, f"upper {up_err.mean():.4f} below exact"
    assert (upper - lower).mean() > 0
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        pyro_aevb.bdmc(model.model, x, {"a": latents["a"]}, num_chains=2, num_temps=2)


# -- models outside the class ---------------------------------------------------------------------
def _normal_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))


def _global_latent(x):
    scale = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), scale).to_event(1), obs=x)


def _discrete_latent(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        flip = pyro.sample("flip", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True) * flip[:, None], 1.0).to_event(1), obs=x)


def _no_plate(x):
    z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(2))
    pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(2), obs=x)


def _two_sites(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        w = pyro.sample("w", dist.Normal(z, 1.0).to_event(1))
        pyro.sample("x", dist.Normal(w.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def _plain(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def _extra_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("extra", dist.Normal(x.new_zeros(2), 1.0).to_event(1))


def _batch_shape(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(3, x.shape[0]), 1.0))
        pyro.sample("x", dist.Normal(z.sum(0)[:, None], 1.0).to_event(1), obs=x)


VIOLATIONS = {
    "global-latent": (_global_latent, _normal_guide, r"'noise' is global"),
    "discrete-latent": (_discrete_latent, _normal_guide, r"'flip' is discrete"),
    "no-plate": (_no_plate, _normal_guide, r"no plate over the data"),
    "guide-lacks-a-site": (_two_sites, _normal_guide, r"lacks the model's latent site\(s\) \['w'\]"),
    "guide-has-an-extra-site": (_plain, _extra_guide, r"\['extra'\] that the model does not draw"),
    "batch-shape": (_batch_shape, _normal_guide, r"'z' has batch shape \(3, 8\)"),
}


@pytest.mark.parametrize("case", VIOLATIONS)
def test_models_outside_the_class_are_refused_at_the_first_step(case):
    model, guide, message = VIOLATIONS[case]
    x = torch.randn(8, 1)
    with pytest.raises(UnsupportedModelError, match=message):
        AEVB(model, guide).step(x, 80, idx=torch.arange(8))
    with pytest.raises(UnsupportedModelError, match=message):
        log_marginal_likelihood(model, x, "is", guide)
    if case not in ("guide-lacks-a-site", "guide-has-an-extra-site"):
        with pytest.raises(UnsupportedModelError, match=message):
            MCEM(model).step(x, 80, idx=torch.arange(8))


def test_a_net_registered_under_two_names_is_checked_and_trained():
    # pyro.module("a", net) and pyro.module("b", net): Pyro's store keeps one name per tensor. The
    # check leaves the store as it found it, and a step trains the shared net.
    decoder = nn.Linear(2, 6)

    def model(x, num_data=None):
        pyro.module("decoder", decoder)
        pyro.module("decoder_again", decoder)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x, num_data=None):
        loc = pyro.param("loc", torch.zeros(x.shape[0], 2))
        with data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    pyro.clear_param_store()
    x = torch.rand(4, 6).bernoulli()
    assert pyro_aevb.infer.sites.check_model(model, x, guide).names == ["z"]
    assert list(pyro.get_param_store().keys()) == [], "the check leaves no parameters behind"
    before = decoder.weight.detach().clone()
    loss = AEVB(model, guide, estimator="A", lr=0.1).step(x, 4)
    assert math.isfinite(loss) and not torch.equal(before, decoder.weight), "the shared net was not trained"


# -- N/M scaling without num_data -----------------------------------------------------------------
def test_a_model_without_num_data_is_scaled_by_n_over_m():
    # The same nets in the tutorial's style (model(x), a plain plate) and in the library's (model(x,
    # num_data), data_plate): the N/M-scaled loss and its gradients agree to float32 rounding.
    vae = TutorialVAE(z_dim=3, hidden_dim=7)

    def model_with_num_data(x, num_data=None):
        pyro.module("decoder", vae.decoder)
        with data_plate(x, num_data):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(vae.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide_with_num_data(x, num_data=None):
        pyro.module("encoder", vae.encoder)
        with data_plate(x, num_data):
            z_loc, z_scale = vae.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    x = torch.rand(10, 784).bernoulli()
    results = []
    for model, guide in [(vae.model, vae.guide), (model_with_num_data, guide_with_num_data)]:
        pyro.set_rng_seed(3)
        vae.zero_grad()
        loss = Trace_ELBO().loss_and_grads(per_datapoint(model), per_datapoint(guide), x, 600)
        results.append((loss, [p.grad.clone() for p in vae.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a > 50 * 500, "the loss is not scaled by N/M = 60"
    assert math.isclose(loss_a, loss_b, rel_tol=1e-6), f"losses {loss_a} and {loss_b} differ"
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), "gradients differ"


# -- the tutorial's VAE on real MNIST -------------------------------------------------------------
@pytest.fixture
def mnist(shared_data):
    dataset = pyro_aevb.load_dataset("mnist", shared_data)
    return dataset.train[:2000], dataset.eval_split("test", 200)


def _train(method, data, steps, batch_size=100):
    train_x = data
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(train_x), (batch_size,), generator=g)
        x = train_x[idx].bernoulli(generator=g)
        loss = method.step(x, len(train_x), idx=idx)
    return loss


@pytest.mark.parametrize("method_name", ["aevb", "aevb-mc", "wake-sleep"])
def test_tutorial_vae_trains_and_its_bound_rises(mnist, method_name):
    # 300 steps of 100 digits with the paper's Adagrad: an untrained tutorial VAE scores about -543
    # nats per digit (every pixel at probability 1/2); measured after training: about -200 (AEVB)
    # and -210 (wake-sleep) on 200 test digits. A rise of 100 nats cannot happen by chance.
    train_x, test_x = mnist
    vae = TutorialVAE(z_dim=10, hidden_dim=100)
    before = lower_bound(vae.model, vae.guide, test_x, seed=0)
    if method_name == "wake-sleep":
        method = WakeSleep(vae.model, vae.guide, lr=0.02)
    else:
        method = AEVB(vae.model, vae.guide, estimator="B" if method_name == "aevb" else "A", lr=0.02)
    _train(method, train_x, 300)
    after = lower_bound(vae.model, vae.guide, test_x, seed=0)
    assert after > before + 100, f"{method_name}: the bound went from {before:.1f} to {after:.1f} nats"


@pytest.mark.parametrize("method_cls", [MCEM, ImportanceMCEM], ids=["mcem", "mcem-is"])
def test_tutorial_vae_trains_by_mcem_and_its_log_likelihood_rises(mnist, method_cls):
    # Appendix D's estimate on 30 test digits (2-D latent, where it is reliable; chains started from
    # 100 prior draws resampled by likelihood); an untrained decoder gives about -543 nats; 150 steps
    # raise it by well over 50.
    train_x, test_x = mnist
    vae = TutorialVAE(z_dim=2, hidden_dim=50)
    x = test_x[:30]
    options = dict(num_samples=20, warmup_steps=50, init_proposals=100)
    before = log_marginal_likelihood(vae.model, x, "hmc", **options).mean().item()
    _train(method_cls(vae.model, lr=0.02), train_x, 150)
    after = log_marginal_likelihood(vae.model, x, "hmc", **options).mean().item()
    assert after > before + 50, f"{method_cls.__name__}: log p(x) went from {before:.1f} to {after:.1f} nats"


def test_every_estimator_runs_on_the_tutorial_vae_and_they_agree(mnist):
    # A trained 2-D tutorial VAE: the bound (K = 1) <= importance sampling (K = 1000) <= log p(x) in
    # expectation, and Appendix D agrees with importance sampling within about a nat per digit on
    # average (both are good in two dimensions).
    train_x, test_x = mnist
    vae = TutorialVAE(z_dim=2, hidden_dim=50)
    _train(AEVB(vae.model, vae.guide, lr=0.02), train_x, 300)
    x = test_x[:30]
    bound = lower_bound(vae.model, vae.guide, x, seed=0)
    is_estimate = log_marginal_likelihood(vae.model, x, "is", vae.guide, num_samples=1000).mean().item()
    hmc_estimate = log_marginal_likelihood(vae.model, x, "hmc", vae.guide).mean().item()
    assert bound < is_estimate, f"bound {bound:.2f} above importance sampling {is_estimate:.2f}"
    assert abs(hmc_estimate - is_estimate) < 1.0, f"Appendix D {hmc_estimate:.2f} vs importance sampling {is_estimate:.2f}"


def test_a_run_with_the_tutorial_vae_resumes_exactly(shared_data, tmp_path):
    config = dict(
        dataset="mnist", data_dir=str(shared_data), num_train=1000, model_class="tests.helpers.pyro_tutorial_vae:VAE",
        latent_dim=2, hidden=30, eval_points=2, eval_train_points=100, checkpoint_every=1000,
        log_marginal="is", log_marginal_points=20,
    )
    full = pyro_aevb.train(TrainConfig(samples=4000, **config), tmp_path / "full", progress=False)
    full_params = {name: p.detach().clone() for name, p in full.named_parameters()}
    pyro_aevb.train(TrainConfig(samples=2000, **config), tmp_path / "split", progress=False)
    resumed = pyro_aevb.train(TrainConfig(**config), tmp_path / "split", resume=True, samples=4000, progress=False)
    for name, p in resumed.named_parameters():
        assert torch.equal(p, full_params[name]), f"{name} differs after resuming"
    loaded, reference = pyro_aevb.load_run(tmp_path / "split"), pyro_aevb.load_run(tmp_path / "full")
    assert type(loaded) is TutorialVAE and loaded.z_dim == 2, "load_run did not rebuild the tutorial's class"
    last, expected = loaded.metrics[-1], reference.metrics[-1]
    for column in ("samples", "test_lower_bound", "test_log_marginal"):
        assert last[column] == expected[column], f"{column}: {last[column]} after resuming, {expected[column]} without"
    from pyro_aevb.experiment.evaluate import evaluate_run

    result = evaluate_run(tmp_path / "split", estimator="is", num_points=20, num_samples=200, data_dir=str(shared_data))
    assert result["log_marginal_likelihood"] > result["lower_bound"], "importance sampling below the bound"


def test_run_folders_that_name_the_old_module_paths_still_load(tmp_path):
    # Run folders written before the package was split into subpackages name pyro_aevb.vae:VAE.
    config = TrainConfig(dataset="mnist5k", latent_dim=2, hidden=10, samples=200, eval_points=1, eval_train_points=20)
    trained = pyro_aevb.train(config, tmp_path, progress=False)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["config"]["model_class"] == "pyro_aevb.models.vae:VAE"
    saved["config"]["model_class"] = "pyro_aevb.vae:VAE"
    path.write_text(json.dumps(saved))
    loaded = pyro_aevb.load_run(tmp_path)
    assert type(loaded) is pyro_aevb.VAE, "the old path did not map to pyro_aevb.models.vae:VAE"
    for (name, p), q in zip(loaded.named_parameters(), trained.parameters()):
        assert torch.equal(p, q), f"{name} differs"
    # Only a model class is ever built from a run folder: a config that names another callable is refused.
    saved["config"]["model_class"] = "subprocess:Popen"
    path.write_text(json.dumps(saved))
    with pytest.raises(pyro_aevb.ConfigError, match="not a torch.nn.Module subclass"):
        pyro_aevb.load_run(tmp_path)


def test_simulate_and_bdmc_take_the_tutorial_vae():
    # The tutorial's observed site holds x.reshape(-1, 784), not x itself: simulate reads the fantasy
    # of the model's one observed site in x's shape. BDMC's bounds (T = 20, K = 2) keep their order on
    # average over the 20 simulated digits.
    vae = TutorialVAE(z_dim=2, hidden_dim=20)
    x, latents = pyro_aevb.infer.bdmc.simulate(vae.model, 20, torch.zeros(1, 784))
    assert x.shape == (20, 784) and set(latents) == {"latent"} and latents["latent"].shape == (20, 2)
    assert ((x == 0) | (x == 1)).all(), "Bernoulli fantasies are binary"
    lower, upper = pyro_aevb.bdmc(vae.model, x, latents, num_temps=20, num_chains=2)
    assert (upper - lower).mean() > 0, f"BDMC's bounds inverted: gap {(upper - lower).mean():.3f}"
