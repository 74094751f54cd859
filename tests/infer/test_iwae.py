"""
The importance-weighted bound (ImportanceWeightedELBO), its DReG gradient, and the methods IWAE and RWS,
against exact answers: a linear-Gaussian model with N = 1000 datapoints in minibatches of M = 10 from a
subsampled plate, whose log p(x) and posterior are known in closed form, and the bound computed
independently (float64, torch.distributions only) from many more draws.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO
from torch.distributions import Normal, kl_divergence

from tests.helpers.exact_models import EXACT
from tests.helpers.pyro_tutorial_vae import VAE as TutorialVAE

from pyro_aevb import IWAE, RWS, VAE, TrainConfig, data_plate, load_run, train
from pyro_aevb.errors import UnsupportedModelError
from pyro_aevb.infer import ImportanceWeightedELBO
from pyro_aevb.infer.util import per_datapoint

N, M, X_DIM, Z_DIM, SIGMA = 1000, 10, 3, 2, 0.7


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds contention


class ScoreNormal(dist.Normal):
    """A Normal without ``rsample``: its gradient is estimated by the score function."""

    has_rsample = False


class LinearGaussian:
    r"""
    :math:`z \sim \mathcal{N}(0, I)`, :math:`x | z \sim \mathcal{N}(Wz + b, \sigma^2 I)` with a Gaussian guide
    :math:`q(z|x) = \mathcal{N}(A(x - b) + c, \mathrm{diag}(e^{2s}))` whose parameters (``A``, ``c``, ``s``,
    leaf tensors) start away from the exact posterior, so that the bound is below :math:`\log p(x)`.
    """

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W, self.b = torch.randn(X_DIM, Z_DIM, generator=g), torch.randn(X_DIM, generator=g)
        z = torch.randn(N, Z_DIM, generator=g)
        self.data = z @ self.W.T + self.b + SIGMA * torch.randn(N, X_DIM, generator=g)
        mean_map, cov = self.posterior_map()
        self.A = (mean_map + 0.1 * torch.randn(Z_DIM, X_DIM, generator=g)).requires_grad_()
        self.c = (0.1 * torch.randn(Z_DIM, generator=g)).requires_grad_()
        self.s = (0.5 * cov.diagonal().log() + 0.3).requires_grad_()  # scales 1.35 times the posterior's

    @property
    def params(self):
        return [self.A, self.c, self.s]

    def posterior_map(self):
        cov = torch.linalg.inv(torch.eye(Z_DIM) + self.W.T @ self.W / SIGMA**2)
        return cov @ self.W.T / SIGMA**2, cov  # mean = map @ (x - b)

    def model(self, x, num_data=None):
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, SIGMA).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("z", dist.Normal((x - self.b) @ self.A.T + self.c, self.s.exp()).to_event(1))

    def log_px(self, x):
        cov = self.W @ self.W.T + SIGMA**2 * torch.eye(X_DIM)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def reference_bound(self, x, num_particles, repeats, seed=0):
        """L_K(x_i) per row and its standard error, from ``repeats`` sets of K draws, in float64 with torch.distributions."""
        g = torch.Generator().manual_seed(seed)
        x, W, b = x.double(), self.W.double(), self.b.double()
        q = Normal((x - b) @ self.A.detach().double().T + self.c.detach().double(), self.s.detach().double().exp())
        z = q.loc + q.scale * torch.randn((repeats, num_particles) + q.loc.shape, generator=g, dtype=torch.float64)
        log_w = (Normal(0.0, 1.0).log_prob(z).sum(-1) + Normal(z @ W.T + b, SIGMA).log_prob(x).sum(-1)
                 - q.log_prob(z).sum(-1))
        bounds = log_w.logsumexp(1) - math.log(num_particles)  # [repeats, M]
        return bounds.mean(0), bounds.std(0) / math.sqrt(repeats)


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


def _losses(elbo, model, x, num_data, repeats):
    with torch.no_grad():
        return torch.tensor([elbo.loss(model.model, model.guide, x, num_data) for _ in range(repeats)], dtype=torch.float64)


# -- the value -------------------------------------------------------------------------------------
def test_mean_loss_is_the_scaled_per_datapoint_bound_and_renyi_is_not(lg):
    # K = 5 on a minibatch of M = 10 from N = 1000 (scale 100). The reference L_K(x_i) comes from 20,000
    # sets of draws per point, in float64 (its standard error on the scaled sum, about 2 nats, is in the
    # tolerance). The mean of 1000 losses (each about 5,700, sd about 300) has a standard error of about
    # 9.5; with the reference's, SE is about 10: both must agree within 4 SE. pyro.infer.RenyiELBO(alpha=0)
    # takes one log-sum-exp over the N/M-scaled log-weights of the whole minibatch: its mean must lie more
    # than 20 SE away (measured: about 1,000 nats, 100 SE).
    pyro.set_rng_seed(0)
    x = lg.data[:M]
    reference, ref_se = lg.reference_bound(x, 5, 20_000)
    expected = -(N / M) * reference.sum().item()
    expected_se = (N / M) * ref_se.pow(2).sum().sqrt().item()
    ours = _losses(ImportanceWeightedELBO(5), lg, x, N, 1000)
    renyi = _losses(RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1), lg, x, N, 1000)
    se = math.hypot(ours.std().item() / math.sqrt(len(ours)), expected_se)
    assert abs(ours.mean().item() - expected) < 4 * se, f"mean loss {ours.mean():.2f}, expected {expected:.2f} (SE {se:.2f})"
    renyi_se = math.hypot(renyi.std().item() / math.sqrt(len(renyi)), expected_se)
    assert abs(renyi.mean().item() - expected) > 20 * renyi_se, (
        f"RenyiELBO's mean loss {renyi.mean():.2f} is within 20 SE ({renyi_se:.2f}) of the per-datapoint bound {expected:.2f}"
    )


def test_bound_rises_with_k_towards_log_px(lg):
    # Per datapoint, averaged over the minibatch, from 400 calls (scale 1): L_1 < L_4 < L_16 and L_1000 close
    # to log p(x). Measured gaps to log p(x) (float64 reference): about 0.57 nats at K = 1, 0.03 at K = 10,
    # 0.001 at K = 1000; the standard errors of these means are below 0.015. Each step must rise by more
    # than 3 SE; L_1000 must lie within 0.01 nats (+ 3 SE) below log p(x), and not above it by 3 SE.
    pyro.set_rng_seed(1)
    x = lg.data[:M]
    exact = lg.log_px(x).mean().item()
    bounds = []
    for k in (1, 4, 16, 1000):
        per_point = -_losses(ImportanceWeightedELBO(k), lg, x, None, 400) / M
        bounds.append((k, per_point.mean().item(), per_point.std().item() / math.sqrt(len(per_point))))
    for (k0, b0, se0), (k1, b1, se1) in zip(bounds, bounds[1:]):
        assert b1 - b0 > 3 * math.hypot(se0, se1), f"L_{k1} = {b1:.4f} is not above L_{k0} = {b0:.4f}"
    k, last, se = bounds[-1]
    assert exact - 3 * se - 0.01 < last < exact + 3 * se, f"L_{k} = {last:.4f}, log p(x) = {exact:.4f}"


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("gradient", ["reparam", "dreg"])
def test_exact_posterior_guide_gives_log_px_for_every_k(name, gradient):
    # With q the exact posterior every weight equals p(x): L_K = log p(x) for any K, whatever the site names,
    # the number of latent sites, a constrained latent or a plate nested in the data plate (float32: 1e-3 nats).
    # (These guides have no parameters, so DReG takes the two-site guide's draw of b given a.)
    model = EXACT[name]()
    x = model.sample(6)
    exact = model.log_px(x).sum().item()
    for k in (1, 7):
        loss = ImportanceWeightedELBO(k, gradient).differentiable_loss(model.model, model.guide, x)
        assert abs(loss.item() + exact) < 1e-3 * len(x), f"{name}, K = {k}: loss {loss.item():.4f}, -log p(x) = {-exact:.4f}"


# -- K = 1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reparameterized", [True, False], ids=["rsample", "score-function"])
def test_k1_equals_trace_elbo_on_the_same_draws(lg, reparameterized):
    x = lg.data[:M]

    def guide(x, num_data=None):
        with data_plate(x, num_data):
            q = (dist.Normal if reparameterized else ScoreNormal)((x - lg.b) @ lg.A.T + lg.c, lg.s.exp())
            pyro.sample("z", q.to_event(1))

    results = []
    for elbo in (ImportanceWeightedELBO(1, max_plate_nesting=1), Trace_ELBO()):
        pyro.set_rng_seed(3)
        loss = elbo.differentiable_loss(lg.model, guide, x, N)
        results.append((loss, torch.autograd.grad(loss, lg.params)))
    (ours, grads), (theirs, expected) = results
    assert torch.allclose(ours, theirs, rtol=1e-6), f"loss {ours.item()} != Trace_ELBO's {theirs.item()}"
    for name, a, b in zip("Acs", grads, expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4), f"gradient in {name} differs from Trace_ELBO's"


# -- DReG ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gradients(lg):
    """300 gradients in the guide's parameters at K = 50 for each estimator, one minibatch."""
    pyro.set_rng_seed(4)
    x = lg.data[:M]
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before the tests' one_thread fixture applies
    try:
        for gradient in ("reparam", "dreg"):
            elbo = ImportanceWeightedELBO(50, gradient, max_plate_nesting=1)
            loss = lambda: elbo.differentiable_loss(lg.model, lg.guide, x, N)  # noqa: E731
            draws = [torch.cat([g.flatten() for g in torch.autograd.grad(loss(), lg.params)]) for _ in range(300)]
            out[gradient] = torch.stack(draws).double()
    finally:
        torch.set_num_threads(threads)
    return out


def test_dreg_mean_gradient_equals_the_reparameterised_one(gradients):
    # 10 guide parameters; each mean of 300 draws has SE sd/sqrt(300): every element's difference is within
    # 4.5 combined SE (a false alarm somewhere among 10: below 1e-4).
    a, b = gradients["reparam"], gradients["dreg"]
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    z = ((a.mean(0) - b.mean(0)) / se).abs()
    assert z.max() < 4.5, f"DReG's mean gradient differs from the reparameterised one by {z.max():.1f} SE"


def test_dreg_has_lower_variance_at_k50(gradients):
    # Summed over the guide's 10 parameters, DReG's variance is a fraction of the reparameterised estimator's
    # (measured: 0.03; per parameter from 0.005 to 0.07); with 300 draws each the ratio's own error is
    # about 10%, so 0.5 is far.
    ratio = (gradients["dreg"].var(0).sum() / gradients["reparam"].var(0).sum()).item()
    assert ratio < 0.5, f"DReG's gradient variance is {ratio:.2f} times the reparameterised one's at K = 50"


def test_dreg_refuses_a_hierarchical_guide():
    # The two-site model's guide draws b given a; with a trainable shift of a, b's draw depends on phi through a.
    model = EXACT["two-sites"]()

    def guide(y):
        shift = pyro.param("shift", torch.zeros(2))
        with pyro.plate("rows", y.shape[0]):
            a = pyro.sample("a", dist.Normal(shift, 1.0).to_event(1))
            pyro.sample("b", dist.Normal(a[..., :1], 1.0).to_event(1))

    with pytest.raises(UnsupportedModelError, match="'b' depends on an earlier latent draw"):
        ImportanceWeightedELBO(3, "dreg").differentiable_loss(model.model, guide, model.sample(4))


def test_dreg_refuses_a_site_without_rsample(lg):
    def guide(x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("z", ScoreNormal(x.new_zeros(Z_DIM), 1.0).to_event(1))

    with pytest.raises(UnsupportedModelError, match="guide site 'z'.*not reparameterised"):
        ImportanceWeightedELBO(3, "dreg").differentiable_loss(lg.model, guide, lg.data[:M], N)


# -- models outside the class --------------------------------------------------------------------------
def _global_latent():
    def model(x):
        scale = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, scale), obs=x[:, 0])

    def guide(x):
        pyro.sample("noise", dist.Delta(pyro.param("noise_map", torch.tensor(1.0))))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x[:, 0] / 2, 0.7))

    return model, guide, r"site 'noise' lies outside the plate 'data'"


def _unshared_subsample():
    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("pixels", 20, subsample_size=x.shape[1], dim=-2):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x.T)

    def guide(x):
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    return model, guide, r"site 'x' is in the plate 'pixels', subsampled \(4 of 20\)"


@pytest.mark.parametrize("case", [_global_latent, _unshared_subsample], ids=["global-latent", "unshared-subsample"])
def test_models_outside_the_class_are_refused_naming_the_site(case):
    model, guide, message = case()
    with pytest.raises(UnsupportedModelError, match=message):
        ImportanceWeightedELBO(3).loss(model, guide, torch.randn(5, 4))


# -- the methods -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, options",
    [(IWAE, {}), (IWAE, {"gradient": "dreg"}), (RWS, {}), (RWS, {"sleep_phi": True})],
    ids=["iwae", "iwae-dreg", "rws", "rws-sleep"],
)
def test_direct_path_equals_the_traced_one(cls, options):
    # The paper's VAE: the steps computed from the nets and the steps through SVI on the traced model draw
    # the same numbers; after 5 steps the parameters agree to float32 rounding.
    x = torch.rand(8, 6).round()
    params, losses = [], []
    for fast_path in (True, False):
        pyro.clear_param_store()
        pyro.set_rng_seed(5)
        vae = VAE(6, 2, 5, init_std=0.5)
        method = cls(vae, num_particles=4, fast_path=fast_path, **options)
        losses.append([method.step(x, num_data=40) for _ in range(5)])
        assert method.uses_fast_path == fast_path, f"fast_path={fast_path} but uses_fast_path={method.uses_fast_path}"
        params.append([p.detach().clone() for p in vae.parameters()])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5), f"losses {losses[0]} and {losses[1]}"
    for a, b in zip(*params):
        assert torch.allclose(a, b, atol=1e-5), "the direct and traced steps ended at other parameters"


def test_rws_wake_phi_moves_the_guide_to_the_posterior(lg):
    # The model is fixed (no parameters), so RWS trains only the guide, by wake-phi: 150 Adagrad steps on
    # minibatches of 10 with K = 20. KL(p(z|x) || q(z|x)), averaged over 200 datapoints in closed form, falls
    # to below a twentieth of its start (measured: from 1.05 to 0.009 nats). Weights that were not
    # self-normalised per datapoint would not move it there: uniform ones have a gradient of mean zero.
    def kl(params):
        A, c, s = params
        x = lg.data[:200]
        mean_map, cov = lg.posterior_map()
        posterior = dist.MultivariateNormal((x - lg.b) @ mean_map.T, cov)
        guide = dist.MultivariateNormal((x - lg.b) @ A.T + c, torch.diag_embed(torch.exp(2 * s).expand(200, Z_DIM)))
        return kl_divergence(posterior, guide).mean().item()

    def guide(x, num_data=None):
        A, c, s = (pyro.param(n, p.detach().clone()) for n, p in zip("Acs", lg.params))
        with data_plate(x, num_data):
            pyro.sample("z", dist.Normal((x - lg.b) @ A.T + c, s.exp()).to_event(1))

    pyro.set_rng_seed(6)
    before = kl(lg.params)
    method = RWS(lg.model, guide, num_particles=20, lr=0.1, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        method.step(lg.data[torch.randint(N, (M,), generator=g)], num_data=N)
    after = kl([pyro.param(n).detach() for n in "Acs"])
    assert after < before / 20, f"KL(posterior || guide) went from {before:.3f} to {after:.3f}"


@pytest.mark.parametrize("method, options", [("iwae", {"gradient": "dreg"}), ("rws", {"sleep_phi": True})])
def test_a_run_resumes_exactly(method, options, tmp_path):
    config = dict(dataset="mnist5k", method=method, num_particles=3, method_options=options, latent_dim=2, hidden=20,
                  eval_points=2, eval_train_points=50, checkpoint_every=300)
    full = train(TrainConfig(samples=600, **config), tmp_path / "full", progress=False)
    train(TrainConfig(samples=300, **config), tmp_path / "split", progress=False)
    resumed = train(TrainConfig(**config), tmp_path / "split", resume=True, samples=600, progress=False)
    for (name, p), q in zip(resumed.named_parameters(), full.parameters()):
        assert torch.equal(p, q), f"{method}: {name} differs after resuming"
    assert load_run(tmp_path / "split").metrics[-1]["samples"] == 600


def test_a_model_scaled_by_poutine_scale_gives_trace_elbo_at_k1():
    # Pyro's tutorial VAE takes no num_data: per_datapoint scales it by N/M with poutine.scale, not a
    # subsampled plate. At K = 1 the loss and gradients are Trace_ELBO's on the same draws.
    vae = TutorialVAE(z_dim=3, hidden_dim=7)
    model, guide = per_datapoint(vae.model), per_datapoint(vae.guide)
    x = torch.rand(10, 784).bernoulli()
    results = []
    for elbo in (ImportanceWeightedELBO(1, max_plate_nesting=1), Trace_ELBO()):
        pyro.set_rng_seed(7)
        loss = elbo.differentiable_loss(model, guide, x, 600)
        results.append((loss, torch.autograd.grad(loss, list(vae.parameters()))))
    (ours, grads), (theirs, expected) = results
    assert ours.item() > 50 * 500, "the loss is not scaled by N/M = 60"
    assert torch.allclose(ours, theirs, rtol=1e-6), f"loss {ours.item()} != Trace_ELBO's {theirs.item()}"
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), "gradients differ from Trace_ELBO's"
