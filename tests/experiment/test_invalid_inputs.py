"""
Invalid settings, generated: every invalid value of a TrainConfig field, of an option of
`pyro-aevb evaluate` and of an option of log_marginal_likelihood gets a ConfigError or ValueError
that names it, before anything is trained or drawn; none reaches a traceback from inside torch or
numpy, and none is silently replaced by a default.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_aevb import TrainConfig, VAE, log_marginal_likelihood, train
from pyro_aevb.errors import ConfigError
from pyro_aevb.experiment.evaluate import evaluate_run

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Values that are no whole number: wrong types, fractions, non-finite floats.
NOT_WHOLE = st.one_of(
    st.booleans(), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=1),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not (math.isfinite(v) and v == int(v))),
)
NOT_NUMBER = st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.sampled_from([math.nan, math.inf, -math.inf]))


def _invalid_fields():
    positive = ["latent_dim", "samples", "batch_size", "num_particles", "checkpoint_every",
                "eval_train_points", "log_marginal_points"]
    cases = [st.tuples(st.sampled_from(positive), st.one_of(NOT_WHOLE, st.integers(max_value=0)))]
    cases.append(st.tuples(st.sampled_from(["hidden", "num_train", "eval_points"]),
                           st.one_of(NOT_WHOLE.filter(lambda v: v is not None), st.integers(max_value=0))))
    cases.append(st.tuples(st.just("seed"), st.one_of(NOT_WHOLE, st.integers(max_value=-1), st.integers(min_value=2**32))))
    cases.append(st.tuples(st.just("lr"), st.one_of(NOT_NUMBER, st.floats(max_value=0.0, allow_nan=False))))
    cases.append(st.tuples(st.just("weight_decay"), st.one_of(NOT_NUMBER, st.floats(max_value=-1e-300, allow_nan=False))))
    text_fields = {"method": ["aevb"], "dataset": ["mnist", "frey", "mnist5k"], "log_marginal": [None, "is", "hmc"],
                   "binarize": [None, "none", "static", "dynamic"], "device": ["cpu"]}
    for name, valid in text_fields.items():
        cases.append(st.tuples(st.just(name), st.one_of(st.text(max_size=8), st.integers(), st.just("gpu"))
                               .filter(lambda v, valid=valid: v not in valid and not str(v).startswith("cuda"))))
    for name in ("model_options", "log_marginal_options", "method_options"):
        cases.append(st.tuples(st.just(name), st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=3),
                                                        st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2))))
    cases.append(st.tuples(st.just("model_class"), st.one_of(st.integers(), st.text(max_size=8).filter(lambda v: v.count(":") != 1))))
    return st.one_of(cases)


@SETTINGS
@given(_invalid_fields())
def test_every_invalid_field_is_refused_by_name(field_value):
    name, value = field_value
    config = TrainConfig(**{name: value})
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert name in str(info.value) or repr(value) in str(info.value), f"{name}={value!r}: {info.value}"


@SETTINGS
@given(
    latent_dim=st.integers(1, 50), samples=st.one_of(st.integers(1, 10**8), st.just(1e6)),
    batch_size=st.integers(1, 500), lr=st.floats(1e-6, 10.0), weight_decay=st.floats(0.0, 10.0),
    seed=st.integers(0, 2**32 - 3), dataset=st.sampled_from(["mnist", "frey", "mnist5k"]),
    log_marginal=st.sampled_from([None, "is", "hmc"]),
)
def test_valid_configs_pass(**fields):
    assert TrainConfig(**fields).validate().lr == fields["lr"]


@pytest.mark.parametrize("fields, words", [
    (dict(num_train=50, batch_size=100), "batch_size (100) is larger than num_train (50)"),
    (dict(log_marginal_options={"num_samples": 10}), "used only with log_marginal"),
    (dict(log_marginal="is", log_marginal_options={"num_chains": 2}), "unknown log_marginal_options ['num_chains']"),
    (dict(log_marginal="hmc", log_marginal_options={"chunk_size": 2}), "unknown log_marginal_options ['chunk_size']"),
])
def test_invalid_combinations_are_refused(fields, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**fields).validate()
    assert words in str(info.value)


def test_train_refuses_an_invalid_config(tmp_path):
    with pytest.raises(ConfigError, match="lr > 0"):
        train(TrainConfig(dataset="mnist5k", lr=math.nan), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists(), "an invalid config left a run folder behind"


# -- log_marginal_likelihood -----------------------------------------------------------------------

_VAE = VAE(4, 2, 5)
_X = torch.rand(3, 4).round()

HMC_INVALID = st.one_of(
    st.tuples(st.sampled_from(["num_chains", "num_steps", "init_proposals"]), st.one_of(NOT_WHOLE.filter(lambda v: v is not None), st.integers(max_value=0))),
    st.tuples(st.just("num_samples"), st.one_of(NOT_WHOLE, st.integers(max_value=1))),
    st.tuples(st.just("warmup_steps"), st.one_of(NOT_WHOLE, st.integers(max_value=-1))),
    st.tuples(st.just("target_accept_prob"), st.one_of(NOT_NUMBER, st.floats(max_value=0.0), st.floats(min_value=1.0))),
    st.tuples(st.just("step_size_jitter"), st.one_of(NOT_NUMBER, st.floats(max_value=-1e-9), st.floats(min_value=1.0))),
    st.tuples(st.just("q_cov_scale"), st.one_of(NOT_NUMBER, st.floats(max_value=0.0), st.floats(min_value=2.0))),
    st.tuples(st.just("rhat_threshold"), st.one_of(NOT_NUMBER, st.floats(max_value=0.999))),
    st.tuples(st.sampled_from(["chunk_size", "num_proposals", "diagnostics"]), st.integers(1, 5)),
)
IS_INVALID = st.one_of(
    st.tuples(st.just("num_samples"), st.one_of(NOT_WHOLE, st.integers(max_value=0))),
    st.tuples(st.just("chunk_size"), st.one_of(NOT_WHOLE.filter(lambda v: v is not None), st.integers(max_value=0))),
    st.tuples(st.sampled_from(["num_chains", "warmup_steps", "diagnostics"]), st.integers(1, 5)),
)


@SETTINGS
@given(st.one_of(st.tuples(st.just("hmc"), HMC_INVALID), st.tuples(st.just("is"), IS_INVALID)))
def test_every_invalid_estimator_option_is_refused_by_name(case):
    estimator, (name, value) = case
    with pytest.raises(ValueError) as info:
        log_marginal_likelihood(_VAE.model, _X, estimator, guide=_VAE.guide, **{name: value})
    assert name in str(info.value), f"{estimator} {name}={value!r}: {info.value}"


@pytest.mark.parametrize("x", [torch.rand(0, 4), torch.ones(2, 4, dtype=torch.long),
                               torch.tensor([[0.0, 1.0, math.nan, 0.0]]), [[0.0, 1.0, 1.0, 0.0]]])
@pytest.mark.parametrize("estimator", ["hmc", "is"])
def test_invalid_data_is_refused(x, estimator):
    with pytest.raises(ValueError, match="x "):
        log_marginal_likelihood(_VAE.model, x, estimator, guide=_VAE.guide)


@pytest.mark.parametrize("estimator", ["hmc", "is"])
def test_data_of_another_shape_than_the_model_takes_is_refused_by_the_model(estimator):
    """Data of any shape [N, ...] reach the model; four scalar datapoints are not what a 4-D model takes."""
    with pytest.raises(ValueError, match="last dimension 4"):
        log_marginal_likelihood(_VAE.model, torch.rand(4), estimator, guide=_VAE.guide)


# -- pyro-aevb evaluate ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("invalid") / "run"
    train(TrainConfig(dataset="mnist5k", latent_dim=2, hidden=10, samples=200, eval_points=1, eval_train_points=50), out, progress=False)
    return out


EVALUATE_INVALID = st.one_of(
    st.tuples(st.just("split"), st.one_of(st.text(max_size=6), st.integers()).filter(lambda v: v not in ("train", "test"))),
    st.tuples(st.just("num_points"), st.one_of(NOT_WHOLE, st.integers(max_value=0))),
    st.tuples(st.just("seed"), st.one_of(NOT_WHOLE, st.integers(max_value=-1))),
    st.tuples(st.just("device"), st.one_of(st.text(max_size=6), st.integers()).filter(lambda v: v != "cpu" and not str(v).startswith("cuda"))),
    st.tuples(st.just("estimator"), st.one_of(st.text(max_size=6), st.integers()).filter(lambda v: v not in ("hmc", "is", "ais"))),
    st.tuples(st.just("num_samples"), st.one_of(NOT_WHOLE, st.integers(max_value=0))),
    st.tuples(st.just("num_chains"), st.one_of(NOT_WHOLE.filter(lambda v: v is not None), st.integers(max_value=0))),
    st.tuples(st.just("no_such_option"), st.integers()),
)


@SETTINGS
@given(EVALUATE_INVALID)
def test_every_invalid_evaluate_option_is_refused_by_name(run_dir, case):
    name, value = case
    with pytest.raises(ValueError) as info:
        evaluate_run(run_dir, **{"estimator": "hmc", "num_points": 2, "num_samples": 3, name: value})
    assert name in str(info.value), f"{name}={value!r}: {info.value}"
