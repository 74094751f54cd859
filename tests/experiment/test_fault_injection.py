"""
Faults of the disk and the run folder, each made real, and the run resumed after it.

Every fault test asserts the exit code, that the message names the file and has no traceback, and
that a resume after the fault is removed ends with the same metrics and parameters as an
uninterrupted run. The faults: SIGKILL at named points of the run (test-only hook
``PYRO_AEVB_FAULT_KILL_AT``), a full disk (a small tmpfs), a read-only run folder (a read-only bind
mount), a removed run folder (the last three under a run paused at a step with SIGSTOP), damaged
metrics.csv, config.json and checkpoint.pt (truncated, emptied, or one byte of a parameter's data flipped,
which ``torch.load`` reads without an error), and failed writes that cannot be made real cheaply (an
I/O error, the plots, the evaluate output) through mocks of the write calls.

The model is tiny (mnist5k, Nz = 2, 20 hidden units, 3,000 samples: 30 steps, checkpoints every 500
samples, evaluations at 1,000, 1,500, 2,100 and 3,000 samples), so that each command takes a few
seconds.
"""

import contextlib
import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import torch

from pyro_aevb import RunDirError, TrainConfig, load_run, train
from pyro_aevb.experiment.rundir import read_metrics

ARGS = ["--dataset", "mnist5k", "--latent-dim", 2, "--hidden", 20, "--samples", 3000, "--eval-points", 4,
        "--eval-train-points", 100, "--checkpoint-every", 500, "--no-progress"]
CONFIG = dict(dataset="mnist5k", latent_dim=2, hidden=20, samples=3000, eval_points=4, eval_train_points=100,
              checkpoint_every=500)

#: Kill points of the default suite: 9 moments (inside checkpoint writes, between the renames of the
#: rotation, before the new generation's digest is recorded alone, in the middle of a metrics row, at the start of evaluations, between steps, and inside
#: the final checkpoint). ``KILL_POINTS_SLOW`` adds 10 more under the slow marker.
KILL_POINTS = ["checkpoint-write:1", "checkpoint-rotate:3", "checkpoint-digest:4", "metrics-row:1", "metrics-row:3",
               "evaluate:2", "step:8", "step:22", "checkpoint-write:7"]
KILL_POINTS_SLOW = ["checkpoint-write:2", "checkpoint-write:4", "checkpoint-write:6", "checkpoint-rotate:2",
                    "checkpoint-rotate:7", "metrics-row:2", "metrics-row:4", "evaluate:1", "evaluate:4", "step:15"]


def cli(*args, env=None, timeout=240):
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    environ.pop("PYRO_AEVB_FAULT_KILL_AT", None)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyro_aevb", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=environ)


def train_cli(out, *extra, env=None):
    return cli("train", *ARGS, "--out", out, *extra, env=env)


def no_traceback(result):
    stderr = result["stderr"] if isinstance(result, dict) else result.stderr
    assert "Traceback" not in stderr, stderr[-3000:]


def assert_same_run(out, reference):
    """The same metrics rows (but the timings) and bit-for-bit the same final parameters."""
    rows, expected = read_metrics(out / "metrics.csv"), read_metrics(reference / "metrics.csv")
    assert [r["samples"] for r in rows] == [r["samples"] for r in expected], (out / "metrics.csv").read_text()
    for row, want in zip(rows, expected):
        for key, value in want.items():
            if key != "seconds":
                assert row[key] == value, f"{key} at {want['samples']:.0f} samples"
    params, want = load_run(out).state_dict(), load_run(reference).state_dict()
    assert params.keys() == want.keys()
    for key in want:
        assert torch.equal(params[key], want[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = train_cli(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run SIGKILLed after step 17: checkpoints at 1,500 (current) and 1,000 (previous) samples, two metrics rows."""
    out = tmp_path_factory.mktemp("partial") / "run"
    result = train_cli(out, env={"PYRO_AEVB_FAULT_KILL_AT": "step:17"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["samples"] == 1500
    assert torch.load(out / "checkpoint.prev.pt", weights_only=True)["samples"] == 1000
    return out


@pytest.fixture
def partial(stopped_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    return out


# One thread, as the subprocesses run (OMP_NUM_THREADS=1), so that a run resumed in this process is
# bit-for-bit theirs (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def resume_here(out):
    """Resume in this process (no start-up cost); returns the notes it gave, one per line."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(TrainConfig(), out, resume=True, progress=False)
    return "\n".join(str(w.message) for w in caught)


def resume(out, *extra):
    result = train_cli(out, "--resume", *extra)
    no_traceback(result)
    return result


# -- SIGKILL at named points ------------------------------------------------------------------------


def _kill_and_resume(point, out, reference):
    killed = train_cli(out, env={"PYRO_AEVB_FAULT_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, f"{point} was not reached: {killed.stderr[-2000:]}"
    resume_here(out)
    assert_same_run(out, reference)
    left = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert not left, f"temporary files left after resuming: {left}"


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_at_a_named_point_resumes_exactly(point, reference, tmp_path):
    _kill_and_resume(point, tmp_path / "run", reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS_SLOW)
def test_killed_at_more_points_resumes_exactly(point, reference, tmp_path):
    _kill_and_resume(point, tmp_path / "run", reference)


# -- faults under a paused run: disk full, read-only, removed ---------------------------------------


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@contextlib.contextmanager
def paused_run(out, step=12):
    """Start a run that stops itself (SIGSTOP) after ``step``; yield while it is stopped, then let it go on."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYRO_AEVB_FAULT_KILL_AT": f"step:{step}:STOP"}
    proc = subprocess.Popen([sys.executable, "-m", "pyro_aevb", "train", *map(str, ARGS), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    start = time.time()
    while _state(proc.pid) != "T":
        if proc.poll() is not None or time.time() - start > 120:
            proc.kill()
            pytest.fail(f"the run did not stop at step {step}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    outcome = {}
    try:
        yield outcome
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        outcome["stdout"], outcome["stderr"] = proc.communicate(timeout=120)
        outcome["returncode"] = proc.returncode


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs, so that a disk can be filled for real (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs Linux and mount(8); test_write_errors_by_mock covers the messages")
    made = _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk))
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}); test_write_errors_by_mock covers the messages")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk):
    """Take all free space of ``disk``: returns the filler file."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_disk_full_mid_run_says_what_is_safe_and_resume_finishes(small_disk, reference):
    out = small_disk / "run"
    with paused_run(out, step=12) as run:  # checkpoint at 1,000 samples written; next writes: row at 1,500
        filler = _fill(small_disk)
    assert run["returncode"] == 2, run["stderr"][-3000:]
    no_traceback(run)
    message = run["stderr"]
    assert "disk is full" in message and "1,000 samples, is intact" in message and "--resume" in message, message
    assert "metrics.csv" in message or "checkpoint" in message, message
    filler.unlink()
    resume_here(out)
    assert_same_run(out, reference)


def test_disk_full_at_the_checkpoint_write(small_disk, reference):
    out = small_disk / "run"
    with paused_run(out, step=19) as run:  # the row at 1,500 is written; the next write is the checkpoint at 2,000
        filler = _fill(small_disk)
    assert run["returncode"] == 2, run["stderr"][-3000:]
    no_traceback(run)
    assert "could not write the checkpoint" in run["stderr"] and "1,500 samples, is intact" in run["stderr"], run["stderr"]
    filler.unlink()
    resume_here(out)
    assert_same_run(out, reference)


def test_evaluate_output_on_a_full_disk(small_disk, reference):
    filler = _fill(small_disk)
    try:
        result = cli("evaluate", reference, "--estimator", "is", "--num-points", 5, "--num-samples", 5,
                     "--out", small_disk / "result.json")
    finally:
        filler.unlink()
    assert result.returncode == 2, result.stderr[-3000:]
    no_traceback(result)
    assert "could not write the result" in result.stderr and "result.json" in result.stderr, result.stderr
    assert not (small_disk / "result.json").exists() and not list(small_disk.glob(".*.tmp"))


def test_read_only_folder_mid_run(tmp_path, reference):
    out = tmp_path / "run"
    if shutil.which("mount") is None:
        pytest.skip("no mount(8)")
    with paused_run(out, step=12) as run:
        bound = _mount("--bind", str(out), str(out))
        if bound.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
        remounted = _mount("-o", "remount,ro,bind", str(out))
        assert remounted.returncode == 0, remounted.stderr
    try:
        assert run["returncode"] == 2, run["stderr"][-3000:]
        no_traceback(run)
        assert "read-only" in run["stderr"] and "1,000 samples, is intact" in run["stderr"], run["stderr"]
    finally:
        subprocess.run(["umount", str(out)], capture_output=True)
    resume_here(out)
    assert_same_run(out, reference)


def test_folder_removed_mid_run(tmp_path, reference):
    out = tmp_path / "run"
    with paused_run(out, step=12) as run:
        shutil.rmtree(out)
    assert run["returncode"] == 2, run["stderr"][-3000:]
    no_traceback(run)
    assert "was removed" in run["stderr"] and "cannot be recovered" in run["stderr"], run["stderr"]
    # Nothing else broke: the same command starts the run again and it ends as the reference does.
    train(TrainConfig(**CONFIG), out, progress=False)
    assert_same_run(out, reference)


# -- damaged files --------------------------------------------------------------------------------


def _finish_and_compare(out, reference, *expected_notes):
    notes = resume_here(out)
    for note in expected_notes:
        assert note in notes, notes
    assert_same_run(out, reference)
    return notes


def test_metrics_truncated_mid_line(partial, reference):
    text = (partial / "metrics.csv").read_bytes()
    (partial / "metrics.csv").write_bytes(text[:-17])
    _finish_and_compare(partial, reference, "line 3 was cut short", "rebuilt from the 2 rows")


def test_metrics_with_a_stray_line(partial, reference):
    with open(partial / "metrics.csv", "a") as f:
        f.write("garbage\n")
    _finish_and_compare(partial, reference, "metrics.csv line 4 is not a metrics row ('garbage')")


def test_metrics_with_rows_appended(partial, reference):
    with open(partial / "metrics.csv", "a") as f:
        f.write("1200,12,-1.0,-1.0,,,0.1\n")  # a well-formed row the checkpoint does not have
    _finish_and_compare(partial, reference, "differ from those stored in the checkpoint")


def test_metrics_emptied(partial, reference):
    (partial / "metrics.csv").write_bytes(b"")
    _finish_and_compare(partial, reference, "metrics.csv was empty", "rebuilt from the 2 rows")


def test_corrupt_metrics_gives_a_message_where_it_is_read(partial):
    with open(partial / "metrics.csv", "a") as f:
        f.write("garbage\n")
    with pytest.raises(RunDirError, match="line 4 is not a metrics row"):
        read_metrics(partial / "metrics.csv")
    assert len(load_run(partial).metrics) == 2, "load_run reads the rows from the checkpoint"


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "is not valid JSON (line"),
    (lambda text: text.replace('"latent_dim": 2', '"latent_dim": "five"'), "latent_dim must be a whole number, got 'five'"),
    (lambda text: text.replace('"latent_dim": 2', '"latent_dim": 2, "future_setting": 1'), "does not know: future_setting"),
], ids=["invalid-json", "wrong-type", "unknown-field"])
def test_damaged_config_is_refused_then_resumes_once_fixed(partial, reference, damage, message):
    original = (partial / "config.json").read_text()
    (partial / "config.json").write_text(damage(original))
    refused = resume(partial)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert message in refused.stderr and "config.json" in refused.stderr and "Nothing was changed" in refused.stderr
    (partial / "config.json").write_text(original)
    _finish_and_compare(partial, reference)


def test_unknown_config_field_is_ignored_with_a_note_on_load(partial):
    path = partial / "config.json"
    path.write_text(path.read_text().replace('"latent_dim": 2', '"latent_dim": 2, "future_setting": 1'))
    with pytest.warns(UserWarning, match="future_setting"):
        vae = load_run(partial)
    assert vae.config.latent_dim == 2


def test_missing_config_is_rebuilt_from_the_checkpoint(partial, reference):
    (partial / "config.json").unlink()
    _finish_and_compare(partial, reference, "config.json was missing: written again")


def test_config_written_before_fields_were_added_loads_with_defaults(partial):
    path = partial / "config.json"
    saved = json.loads(path.read_text())
    for name in ("log_marginal_options", "method_options", "log_marginal_points"):
        del saved["config"][name]
    path.write_text(json.dumps(saved))
    config = load_run(partial).config
    assert config.log_marginal_options == {} and config.log_marginal_points == TrainConfig().log_marginal_points


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_checkpoint_falls_back_to_the_previous_generation(partial, reference, damage):
    path = partial / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3] if damage == "truncated" else b"")
    notes = _finish_and_compare(partial, reference, "using the earlier checkpoint checkpoint.prev.pt, at 1,000 samples")
    assert "checkpoint.pt" in notes
    assert (partial / "checkpoint.damaged.pt").exists(), "the damaged file is kept for inspection"


@pytest.mark.parametrize("damage", ["not-a-zip", "flipped-byte"])
def test_both_generations_damaged_is_refused_cleanly(partial, damage):
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if damage == "flipped-byte":
            flip_a_parameter_byte(partial / name)
        else:
            (partial / name).write_bytes(b"PK\x03\x04 not much of a zip")
    for result in (resume(partial), cli("evaluate", partial, "--estimator", "is", "--num-points", 5)):
        assert result.returncode == 2, result.stderr[-3000:]
        no_traceback(result)
        assert "checkpoint.pt" in result.stderr and "damaged too" in result.stderr, result.stderr
        assert "checkpoint.prev.pt" in result.stderr, result.stderr


#: The parameter whose data the byte-flip tests change: the decoder's output weights as the param store
#: holds them, the copy that a resumed run and load_run put in place last.
FLIPPED = "decoder$$$loc.weight"


def flip_a_parameter_byte(path):
    """
    Flip one bit of one byte in the middle of :data:`FLIPPED`'s data in the checkpoint ``path``, found
    through the zip archive's entries and their local headers; the archive stays well-formed.

    :returns: the state as ``torch.load`` read it before the flip.
    """
    state = torch.load(path, weights_only=True)
    wanted = state["param_store"]["params"][FLIPPED].numpy().tobytes()
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        # The module's state_dict holds the same values, stored first: the param store's copy is the last.
        entry = [info for info in archive.infolist() if "/data/" in info.filename and archive.read(info) == wanted][-1]
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26 : entry.header_offset + 30])
    start = entry.header_offset + 30 + name_length + extra_length
    assert data[start : start + len(wanted)] == wanted, "the tensor's bytes are not where the zip header says"
    data[start + len(wanted) // 2 + 3] ^= 0x01  # a float32's exponent: the value doubles or halves
    path.write_bytes(bytes(data))
    return state


def test_flipped_byte_in_a_parameter_is_caught_and_the_previous_generation_used(partial, reference):
    before = flip_a_parameter_byte(partial / "checkpoint.pt")
    # What is guarded against: torch.load reads the changed file without complaint, one value changed.
    changed = torch.load(partial / "checkpoint.pt", weights_only=True)["param_store"]["params"][FLIPPED]
    differs = changed != before["param_store"]["params"][FLIPPED]
    assert int(differs.sum()) == 1, "the flip should change exactly one value, silently"

    evaluated = cli("evaluate", partial, "--estimator", "is", "--num-points", 5, "--num-samples", 5)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    no_traceback(evaluated)
    assert "checkpoint.pt" in evaluated.stderr and "does not match the sha256" in evaluated.stderr, evaluated.stderr
    assert "using the earlier checkpoint checkpoint.prev.pt, at 1,000 samples" in evaluated.stderr, evaluated.stderr

    previous = torch.load(partial / "checkpoint.prev.pt", weights_only=True)["param_store"]["params"]
    with pytest.warns(UserWarning, match="does not match the sha256"):
        loaded = load_run(partial)
    assert torch.equal(loaded.decoder.loc.weight, previous[FLIPPED]), "load_run did not use checkpoint.prev.pt"

    notes = _finish_and_compare(partial, reference, "does not match the sha256 digest",
                                "using the earlier checkpoint checkpoint.prev.pt, at 1,000 samples")
    assert str(partial / "checkpoint.pt") in notes, notes
    assert (partial / "checkpoint.damaged.pt").exists(), "the damaged file is kept for inspection"


def test_checkpoint_without_a_digest_loads_with_one_note(partial, reference):
    """A run folder written before digests were recorded (no checksums.json) loads and resumes, saying so once."""
    (partial / "checksums.json").unlink()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_run(partial)
    notes = [str(w.message) for w in caught]
    assert len(notes) == 1 and "checkpoint.pt" in notes[0] and "cannot be verified" in notes[0], notes
    notes = _finish_and_compare(partial, reference, "cannot be verified")
    assert notes.count("cannot be verified") == 1, notes
    assert "checkpoint.pt" in json.loads((partial / "checksums.json").read_text())["sha256"], "digests recorded again"


def test_reproduce_goes_on_past_a_damaged_run_and_names_it(tmp_path):
    from pyro_aevb.experiment.runs import run_all, run_name

    small = dict(CONFIG, samples=500, eval_points=2)
    configs = [TrainConfig(**small), TrainConfig(**{**small, "latent_dim": 3})]
    damaged = tmp_path / "runs" / run_name(configs[0])
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{ not json")
    failures, lines = {}, []
    folders = run_all(configs, tmp_path, jobs=1, log=lines.append, failures=failures)
    assert list(failures) == [run_name(configs[0])] and "not valid JSON" in failures[run_name(configs[0])]
    assert any(run_name(configs[0]) in line for line in lines), lines
    assert (folders[run_name(configs[1])] / "reconstructions.png").exists(), "the other run did not finish"


# -- write errors that are not made real: mocks ------------------------------------------------------


def _fail(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("what, code, expected, reason", [
    ("checkpoint", errno.EIO, "could not write the checkpoint", "input/output error"),
    ("metrics", errno.ENOSPC, "could not write a row of metrics.csv", "the disk is full"),
    ("config", errno.ENOSPC, "could not write config.json", "the disk is full"),
    ("plots", errno.ENOSPC, "could not write the plots", "the disk is full"),
])
def test_write_errors_by_mock(what, code, expected, reason, tmp_path, monkeypatch):
    """The same messages where the fault is a mock of the write call (also where tmpfs cannot be mounted)."""
    import pyro_aevb.experiment.plots as plots
    import pyro_aevb.experiment.train as train_module
    from pyro_aevb.experiment.rundir import RunDir

    owner, attr = {"checkpoint": (train_module, "save_checkpoint"), "metrics": (RunDir, "append_metrics"),
                   "config": (RunDir, "write_config"), "plots": (plots, "plot_reconstructions")}[what]
    monkeypatch.setattr(owner, attr, _fail(code))
    config = TrainConfig(**dict(CONFIG, samples=1000, eval_points=2))
    with pytest.raises(RunDirError) as raised:
        train(config, tmp_path / "run", progress=False)
    message = str(raised.value)
    assert expected in message and reason in message, message
    assert "Traceback" not in message
    if what == "plots":
        assert "Training had finished" in message and "1,000 samples" in message, message
        monkeypatch.undo()
        train(config, tmp_path / "run", resume=True, progress=False)
        assert (tmp_path / "run" / "reconstructions.png").exists()


def test_reproduce_writes_what_it_can_and_names_the_damaged_run(tmp_path, monkeypatch):
    """reproduce(): the table and figures without the damaged run, then a message naming it; a failed write
    of the outputs says where and that the runs are safe."""
    import pyro_aevb.experiment.reproduce as reproduce_module
    from pyro_aevb.errors import UserError

    small = dict(CONFIG, samples=500, eval_points=2)
    configs = [TrainConfig(**small), TrainConfig(**{**small, "latent_dim": 3})]
    monkeypatch.setattr(reproduce_module, "figure2", lambda base, dataset: configs)
    damaged = tmp_path / "runs" / reproduce_module.run_name(configs[0])
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text('{"config": {"latent_dim": "five"}}')
    with pytest.raises(UserError) as raised:
        reproduce_module.reproduce("figure2", out=tmp_path, jobs=1, log=lambda line: None)
    message = str(raised.value)
    assert "1 of 2 runs could not be trained" in message and reproduce_module.run_name(configs[0]) in message, message
    rows = (tmp_path / "figure2-mnist" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and ",3," in rows[1], rows  # the header and the good run

    monkeypatch.setattr(reproduce_module, "_table", _fail(errno.ENOSPC))
    with pytest.raises(UserError, match="could not write the results of figure2 .*the disk is full.*The runs are trained"):
        reproduce_module.reproduce("figure2", out=tmp_path, jobs=1, log=lambda line: None)


# -- faults under torchrun: two CPU processes (gloo) ---------------------------------------------------


def _torchrun_command(out, logs, *extra):
    """``torchrun`` of two processes training ``ARGS`` into ``out``; each rank's output goes to its own file under ``logs``."""
    return [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node=2", "--standalone",
            "--log-dir", str(logs), "--redirects", "3", "-m", "pyro_aevb", "train", *map(str, ARGS), "--out", str(out),
            *extra]


def _rank_stderr(logs):
    """What each rank wrote to stderr, by rank (the launcher's own report goes to the launcher's stderr)."""
    return {int(p.parent.name): p.read_text() for p in sorted(Path(logs).glob("*/attempt_*/*/stderr.log"))}


def _workers(launcher):
    """``{rank: pid}`` of the launcher's worker processes."""
    found = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ranks = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"RANK=")]
            if ranks:
                found[int(ranks[0])] = int(pid)
    return found


def _alive(pid):
    return _state(pid) not in (None, "Z")


@contextlib.contextmanager
def torchrun_job(out, logs, pause=None, wait=120, env=None, resume_paused=True):
    """
    Start a job of two processes; with ``pause=(rank, step)`` that rank stops itself (SIGSTOP) after
    ``step`` and the context yields while it is stopped. On leaving, the stopped rank is let go on
    (SIGCONT; not with ``resume_paused=False``) and the launcher is given ``wait`` seconds to end. Yields a dict that then holds the
    launcher's ``returncode``, the ``seconds`` it took to end, its ``stderr``, each rank's (``ranks``) and
    whether any worker was still ``alive`` once it had ended.
    """
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    environ.pop("PYRO_AEVB_FAULT_KILL_AT", None)
    if pause is not None:
        environ.update(PYRO_AEVB_FAULT_KILL_AT=f"step:{pause[1]}:STOP", PYRO_AEVB_FAULT_RANK=str(pause[0]))
    proc = subprocess.Popen(_torchrun_command(out, logs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ)
    job = {"launcher": proc.pid, "workers": {}}
    start = time.time()
    try:
        while len(job["workers"]) < 2 or (pause and _state(job["workers"][pause[0]]) != "T"):
            if proc.poll() is not None or time.time() - start > 180:
                pytest.fail(f"the job did not start or did not stop where asked: {proc.communicate()[1][-3000:]}")
            job["workers"] = _workers(proc.pid)
            time.sleep(0.05)
        yield job
    finally:
        ended = time.time()
        for pid in job["workers"].values() if resume_paused else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        try:
            job["stdout"], job["stderr"] = proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            for pid in [*job["workers"].values(), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.communicate()
            job["stderr"] = f"the job did not end within {wait} s"
        job["seconds"] = time.time() - ended
        job["returncode"] = proc.returncode
        job["alive"] = [rank for rank, pid in job["workers"].items() if _alive(pid)]
        job["ranks"] = _rank_stderr(logs)


def torchrun_resume(out, logs):
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    environ.pop("PYRO_AEVB_FAULT_KILL_AT", None)
    done = subprocess.run(_torchrun_command(out, logs, "--resume"), capture_output=True, text=True, timeout=240,
                          env=environ)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank, text in _rank_stderr(logs).items():
        assert "Traceback" not in text, f"rank {rank}: {text[-3000:]}"


@pytest.fixture(scope="module")
def torchrun_reference(tmp_path_factory):
    """The run of two processes, never stopped: what every faulted job must end with, bit for bit, once resumed."""
    folder = tmp_path_factory.mktemp("torchrun-reference")
    with torchrun_job(folder / "run", folder / "logs") as job:
        pass
    assert job["returncode"] == 0, job["stderr"][-3000:]
    return folder / "run"


@pytest.mark.parametrize("rank", [1, 0])
def test_a_rank_killed_mid_run_ends_the_job_and_resumes_exactly(rank, torchrun_reference, tmp_path):
    out = tmp_path / "run"
    with torchrun_job(out, tmp_path / "logs", pause=(rank, 12), wait=60) as job:  # checkpoints at 500 and 1,000
        os.kill(job["workers"][rank], signal.SIGKILL)
    assert job["seconds"] < 60, f"the job took {job['seconds']:.0f} s to end: {job['stderr'][-2000:]}"
    assert job["returncode"] != 0 and not job["alive"], (job["returncode"], job["alive"], job["stderr"][-2000:])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["samples"] == 1000
    torchrun_resume(out, tmp_path / "logs-resumed")
    assert_same_run(out, torchrun_reference)


def test_sigterm_to_the_launcher_stops_every_rank_with_a_checkpoint(torchrun_reference, tmp_path):
    out = tmp_path / "run"
    # Rank 0 waits after step 12 while the signal is sent, so that the job stops at a known step: both
    # ranks see the signal before step 13's stop flag is summed.
    with torchrun_job(out, tmp_path / "logs", pause=(0, 12), wait=60) as job:
        os.kill(job["launcher"], signal.SIGTERM)
        time.sleep(0.5)
    assert job["returncode"] != 0 and not job["alive"], (job["returncode"], job["alive"], job["stderr"][-2000:])
    assert sorted(job["ranks"]) == [0, 1], job["ranks"]
    for rank, text in job["ranks"].items():
        assert "interrupted at 1300 samples; checkpoint saved" in text and "Traceback" not in text, f"rank {rank}: {text}"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["samples"] == 1300
    torchrun_resume(out, tmp_path / "logs-resumed")
    assert_same_run(out, torchrun_reference)


def test_disk_full_on_rank_0_stops_every_rank_with_the_message(small_disk, torchrun_reference, tmp_path):
    out = small_disk / "run"
    with torchrun_job(out, tmp_path / "logs", pause=(0, 19)) as job:  # the next write is the checkpoint at 2,000
        filler = _fill(small_disk)
    assert job["returncode"] != 0 and not job["alive"], (job["returncode"], job["alive"], job["stderr"][-2000:])
    assert sorted(job["ranks"]) == [0, 1], job["ranks"]
    for rank, text in job["ranks"].items():
        assert "Traceback" not in text, f"rank {rank}: {text[-3000:]}"
        assert "could not write the checkpoint" in text and "the disk is full" in text, f"rank {rank}: {text}"
        assert "1,500 samples, is intact" in text, f"rank {rank}: {text}"
    filler.unlink()
    torchrun_resume(out, tmp_path / "logs-resumed")
    assert_same_run(out, torchrun_reference)


def test_a_stalled_rank_ends_the_job_after_the_collective_timeout(tmp_path):
    """A rank stopped for good (SIGSTOP) and never let go on: the other fails after $PYRO_AEVB_DIST_TIMEOUT."""
    out = tmp_path / "run"
    # 5 s of timeout, then torchrun's 30 s of grace before it SIGKILLs the stalled rank.
    with torchrun_job(out, tmp_path / "logs", pause=(1, 12), wait=60, env={"PYRO_AEVB_DIST_TIMEOUT": "5"},
                      resume_paused=False) as job:
        pass
    assert job["seconds"] < 60, f"the job took {job['seconds']:.0f} s to end: {job['stderr'][-2000:]}"
    assert job["returncode"] != 0 and not job["alive"], (job["returncode"], job["alive"], job["stderr"][-2000:])
    assert "Timed out" in job["ranks"][0], job["ranks"][0][-2000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["samples"] == 1000
