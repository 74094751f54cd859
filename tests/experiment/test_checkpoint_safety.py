"""
Run folders are data, not code: checkpoints hold only tensors, numbers, strings, lists and dicts, are
read with ``weights_only=True``, and a checkpoint holding anything else is refused by every command
that reads one, without running anything from it.
"""

import io
import os
import pickle
import random
import shutil
import subprocess
import sys

import numpy as np
import pyro
import pytest
import torch
from torch.distributions import constraints

from pyro_aevb import TrainConfig, load_run, train
from pyro_aevb.errors import CheckpointError, UnsafeCheckpoint
from pyro_aevb.experiment import checksums
from pyro_aevb.experiment.checkpoint import load_checkpoint
from pyro_aevb.experiment.state import (
    CONSTRAINTS, NAMED_CONSTRAINTS, decode_constraint, encode_constraint, get_param_store_state, get_rng_state,
    set_rng_state,
)
from pyro_aevb.experiment.runs import run_all, run_name

TINY = dict(dataset="mnist5k", latent_dim=2, hidden=20, samples=1000, eval_points=2, eval_train_points=100,
            checkpoint_every=500)


def _through_disk(obj):
    """``obj`` saved and read back as a checkpoint is: ``torch.save``, then ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# -- constraints -----------------------------------------------------------------------------------

_t = torch.tensor
#: One example of every kind in the registry, with float and tensor parameters where it takes them.
EXAMPLES = {
    "real": [constraints._Real()],
    "boolean": [constraints._Boolean()],
    "simplex": [constraints._Simplex()],
    "lower_triangular": [constraints._LowerTriangular()],
    "lower_cholesky": [constraints._LowerCholesky()],
    "corr_cholesky": [constraints._CorrCholesky()],
    "positive_definite": [constraints._PositiveDefinite()],
    "positive_semidefinite": [constraints._PositiveSemidefinite()],
    "square": [constraints._Square()],
    "symmetric": [constraints._Symmetric()],
    "one_hot": [constraints._OneHot()],
    "greater_than": [constraints.greater_than(-1.5), constraints.greater_than(_t([0.0, 2.0]))],
    "greater_than_eq": [constraints.greater_than_eq(3.0), constraints.greater_than_eq(_t(1.0))],
    "less_than": [constraints.less_than(2.5), constraints.less_than(_t([1.0, -1.0]))],
    "interval": [constraints.interval(-2.0, 3.0), constraints.interval(_t([0.0, 1.0]), _t([1.0, 5.0]))],
    "half_open_interval": [constraints.half_open_interval(0.0, 1.0), constraints.half_open_interval(_t(-1.0), _t(2.0))],
    "integer_interval": [constraints.integer_interval(0, 7)],
    "integer_greater_than": [constraints._IntegerGreaterThan(3)],
    "integer_less_than": [constraints._IntegerLessThan(4)],
    "multinomial": [constraints.multinomial(10)],
    "independent": [constraints.independent(constraints.interval(0.0, 2.0), 2)],
    "cat": [constraints.cat([constraints.positive, constraints.interval(0.0, 1.0)], dim=-1, lengths=[2, 3])],
    "stack": [constraints.stack([constraints.real, constraints.greater_than(_t(1.0))], dim=0)],
    "mixture_same_family": [constraints.MixtureSameFamilyConstraint(constraints.positive)],
}
for _name, (_cls, _args) in CONSTRAINTS.items():
    if _name not in EXAMPLES and not _args:
        EXAMPLES[_name] = [_cls()]  # Pyro's parameter-free kinds


def _same(a, b):
    assert type(a) is type(b), f"{a!r} came back as {b!r}"
    for key, value in vars(a).items():
        other = vars(b)[key]
        if isinstance(value, constraints.Constraint):
            _same(value, other)
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], constraints.Constraint):
            for x, y in zip(value, other):
                _same(x, y)
        elif isinstance(value, torch.Tensor):
            assert isinstance(other, torch.Tensor) and torch.equal(value, other), key
        else:
            assert value == other and type(value) is type(other), f"{key}: {value!r} came back as {other!r}"


def test_every_kind_in_the_registry_has_an_example():
    assert set(EXAMPLES) == set(CONSTRAINTS)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_constraint_kind_round_trips(kind):
    for constraint in EXAMPLES[kind]:
        data = encode_constraint(constraint, "p")
        assert data["constraint"] == kind
        _same(constraint, decode_constraint(_through_disk(data)))


@pytest.mark.parametrize("name", sorted(NAMED_CONSTRAINTS))
def test_named_constraint_round_trips_as_itself(name):
    obj = NAMED_CONSTRAINTS[name]
    assert decode_constraint(_through_disk(encode_constraint(obj, "p"))) is obj


def test_unrepresentable_constraint_is_refused_at_save_naming_the_param():
    from torch.distributions import transform_to
    from torch.distributions.transforms import ExpTransform

    class Odd(constraints._GreaterThan):  # a subclass of a known kind is not that kind
        def __init__(self):
            super().__init__(0.0)

    transform_to.register(Odd, lambda c: ExpTransform())
    pyro.param("odd_param", torch.ones(2), constraint=Odd())
    with pytest.raises(CheckpointError, match="odd_param"):
        get_param_store_state()


def test_constrained_params_round_trip_through_the_param_store():
    pyro.param("scale", torch.tensor([0.5, 2.0]), constraint=constraints.positive)
    pyro.param("w", torch.tensor([0.2, 0.7]), constraint=constraints.interval(_t([0.0, 0.5]), _t([1.0, 1.0])))
    pyro.param("probs", torch.tensor([0.2, 0.3, 0.5]), constraint=constraints.simplex)
    pyro.param("chol", torch.tensor([[1.0, 0.0], [0.3, 2.0]]), constraint=constraints.lower_cholesky)
    saved = _through_disk(get_param_store_state())
    before = {n: pyro.param(n).detach().clone() for n in ("scale", "w", "probs", "chol")}
    pyro.clear_param_store()
    from pyro_aevb.experiment.state import restore_param_store

    restore_param_store(saved)
    for name, value in before.items():
        assert torch.allclose(pyro.param(name), value, atol=1e-6), name
    assert pyro.get_param_store()._constraints["scale"] is constraints.positive


# -- random streams --------------------------------------------------------------------------------


def _draw():
    out = [torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), [random.random(), random.gauss(0, 1)]]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out.append(torch.rand(3, device="cuda").tolist())
    return out


def test_rng_states_are_tensors_and_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn(1)  # leave a cached Gaussian in NumPy's state
    random.gauss(0, 1)
    state = _through_disk(get_rng_state())
    assert isinstance(state["numpy"]["keys"], torch.Tensor) and isinstance(state["python"]["state"], torch.Tensor)
    expected = _draw()
    _draw()
    set_rng_state(state)
    assert _draw() == expected


# -- tampered checkpoints --------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    train(TrainConfig(**TINY), out, progress=False)
    return out


def _tamper(run, marker, how, name="checkpoint.pt", record=True):
    """
    Put a payload into a checkpoint. With ``record``, its digest is recorded too, as whoever can write
    the folder can (a sha256 is no signature): what refuses it then is the reading as data only.
    """
    path = run / name
    if how == "torch":  # a checkpoint as torch.save writes it, with a payload among the data
        state = torch.load(path, weights_only=True)
        state["method"]["extra"] = _Payload(marker)
        torch.save(state, path)
    else:  # a bare pickle
        path.write_bytes(pickle.dumps({"format": 2, "samples": 0, "x": _Payload(marker)}))
    if record:
        checksums.record(path, checksums.digest(path.read_bytes()))
    assert not marker.exists()


@pytest.fixture(params=["torch", "pickle"])
def tampered(request, good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "MARKER"
    _tamper(run, marker, request.param)
    return run, marker


def _cli(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pyro_aevb", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _refused(result, marker, path):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert str(path) in result.stderr and "nothing in it was run" in result.stderr, result.stderr
    assert not marker.exists(), "code from the checkpoint ran"


def test_tampered_checkpoint_refused_by_load_run(tampered):
    run, marker = tampered
    with pytest.raises(UnsafeCheckpoint, match="nothing in it was run"):
        load_run(run)
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(run / "checkpoint.pt")
    assert not marker.exists()


def test_tampered_checkpoint_refused_by_evaluate(tampered):
    run, marker = tampered
    _refused(_cli("evaluate", run, "--estimator", "is", "--num-points", 5, "--num-samples", 5), marker,
             run / "checkpoint.pt")


def test_tampered_checkpoint_refused_by_train_resume(tampered):
    run, marker = tampered
    _refused(_cli("train", "--out", run, "--resume", "--samples", 2000, "--no-progress"), marker, run / "checkpoint.pt")


def test_tampered_previous_generation_refused_when_the_newest_is_damaged(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "MARKER"
    (run / "checkpoint.pt").write_bytes(b"")
    _tamper(run, marker, "torch", name="checkpoint.prev.pt")
    with pytest.raises(UnsafeCheckpoint):
        load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_tampered_checkpoint_without_its_digest_is_never_read(good_run, tmp_path, how):
    """Changed after it was written and not recorded again: refused by its digest before it is read; the previous generation is used."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "MARKER"
    _tamper(run, marker, how, record=False)
    with pytest.warns(UserWarning, match="does not match the sha256 digest.*using the earlier checkpoint checkpoint.prev.pt"):
        vae = load_run(run)
    previous = load_checkpoint(run / "checkpoint.prev.pt")["vae"]
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in previous.items()), "not the previous generation"
    assert not marker.exists()


def test_reproduce_over_a_folder_with_a_tampered_run(good_run, tmp_path):
    """run_all, as ``pyro-aevb reproduce`` calls it: the tampered run is refused and named, the other trains."""
    configs = [TrainConfig(**TINY), TrainConfig(**{**TINY, "latent_dim": 3})]
    bad = tmp_path / "runs" / run_name(configs[0])
    shutil.copytree(good_run, bad)
    (bad / "reconstructions.png").unlink()  # unfinished, so that reproduce resumes it
    marker = tmp_path / "MARKER"
    _tamper(bad, marker, "torch")
    failures, lines = {}, []
    folders = run_all(configs, tmp_path, jobs=1, log=lines.append, failures=failures)
    assert list(failures) == [run_name(configs[0])], lines
    assert "nothing in it was run" in failures[run_name(configs[0])]
    assert (folders[run_name(configs[1])] / "reconstructions.png").exists(), "the other run did not train"
    assert not marker.exists()


def test_old_format_is_named_and_converted_only_with_trust(good_run, tmp_path):
    """A format-1 checkpoint (pickled constraints and NumPy state) gets a path forward: convert-checkpoint --trust."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    expected = load_run(run).state_dict()
    legacy = dict(state, format=1)
    legacy["param_store"] = {
        "params": state["param_store"]["params"],
        "constraints": {n: decode_constraint(c) for n, c in state["param_store"]["constraints"].items()},
    }
    torch.manual_seed(0)
    legacy["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    del legacy["metrics"], legacy["config"]
    torch.save(legacy, run / "checkpoint.pt")
    (run / "checksums.json").unlink()  # written before digests were recorded
    with pytest.raises(UnsafeCheckpoint, match="convert-checkpoint"):
        load_run(run)
    result = _cli("convert-checkpoint", run)
    assert result.returncode == 2 and "--trust" in result.stderr and "Traceback" not in result.stderr
    result = _cli("convert-checkpoint", run, "--trust")
    assert result.returncode == 0, result.stderr
    params = load_run(run).state_dict()
    assert all(torch.equal(params[k], expected[k]) for k in expected)
    resumed = _cli("train", "--out", run, "--resume", "--samples", 1500, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]


# -- digests ---------------------------------------------------------------------------------------


def _bytes(samples):
    buffer = io.BytesIO()
    torch.save({"format": 2, "samples": samples, "w": torch.full((100,), float(samples))}, buffer)
    return buffer.getvalue()


def test_every_moment_of_a_rotation_leaves_each_file_verified(tmp_path):
    """
    Between the two records of a rotation each name may hold its old or its new bytes, and verifies
    either way; once it is done only the new bytes do, and a torn copy of them never does.
    """
    from pyro_aevb.errors import DamagedCheckpoint
    from pyro_aevb.experiment.checkpoint import previous_path, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    prev = previous_path(path)
    for samples in (1, 2):
        save_checkpoint({"format": 2, "samples": samples, "w": torch.full((100,), float(samples))}, path)
    current, before, new = path.read_bytes(), prev.read_bytes(), _bytes(3)
    assert checksums.verify(path, current) is None and checksums.verify(prev, before) is None
    after = checksums.before_rotation(path, prev, checksums.digest(new))
    moments = {"not yet renamed": (current, before), "previous replaced": (current, current), "new in place": (new, current)}
    for moment, (at_path, at_prev) in moments.items():
        assert checksums.verify(path, at_path) is None, f"{moment}: checkpoint.pt refused"
        assert checksums.verify(prev, at_prev) is None, f"{moment}: checkpoint.prev.pt refused"
    checksums.after_rotation(path, prev, checksums.digest(new), after)
    assert checksums.verify(path, new) is None and checksums.verify(prev, current) is None
    for name, data in [("the old bytes", current), ("a torn write", new[: len(new) // 2]), ("a flipped bit", new[:-1] + bytes([new[-1] ^ 1]))]:
        with pytest.raises(DamagedCheckpoint, match="does not match the sha256"):
            checksums.verify(path, data)
            pytest.fail(f"{name} verified")


def test_a_file_without_a_recorded_digest_is_read_with_a_note(tmp_path):
    from pyro_aevb.experiment.checkpoint import load_checkpoint as load

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(_bytes(5))
    notes = []
    assert load(path, log=notes.append)["samples"] == 5
    assert len(notes) == 1 and "cannot be verified" in notes[0] and str(path) in notes[0], notes
    (tmp_path / checksums.FILE_NAME).write_text("{ not json")
    notes.clear()
    assert load(path, log=notes.append)["samples"] == 5
    assert len(notes) == 1 and "checksums.json is damaged" in notes[0], notes
