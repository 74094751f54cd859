"""The example registry: every script in examples/ runs here with tiny arguments."""

import subprocess
import sys

import pytest

from tests.helpers.common import REPO

EXAMPLES_DIR = REPO / "examples"

# script -> tiny arguments. {out} is a fresh folder, {data} the shared data folder.
EXAMPLES = {
    "mnist.py": "--dataset mnist5k --samples 1000 --eval-points 2 --no-progress --out {out}",
    "frey_face.py": "--data-dir {data} --latent-dim 2 --samples 1000 --eval-points 2 --grid 5 --no-progress --out {out}",
    "custom_prior.py": "--samples 1000 --num-points 5 --num-proposals 10 --num-chains 2 --num-temps 5 --bdmc 3 --latent-dim 2 --hidden 50 --eval-points 2 --no-progress --out {out}",
    "custom_likelihood.py": "--samples 1000 --num-points 5 --num-proposals 10 --latent-dim 2 --hidden 50 --eval-points 2 --no-progress --out {out}",
    "own_data.py": "--num-points 300 --hidden 16 --samples 1000 --eval-points 2 --eval-test-points 5 --num-chains 2 --num-temps 5 --no-progress --out {out}",
}


def test_coverage():
    scripts = {p.name for p in EXAMPLES_DIR.glob("*.py")}
    missing = scripts - set(EXAMPLES)
    assert not missing, f"examples missing from the registry in tests/test_examples.py: {sorted(missing)}"
    stale = set(EXAMPLES) - scripts
    assert not stale, f"registry names examples that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script, tmp_path, shared_data):
    args = EXAMPLES[script].format(out=tmp_path / "run", data=shared_data).split()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    # The comparison examples write one run folder per model under {out}.
    assert any((tmp_path / "run").rglob("metrics.csv")), f"{script} wrote no metrics.csv"
    if script == "own_data.py":  # loaded back into the script's own class, evaluated by AIS, logged to TensorBoard
        assert "log p(x) by AIS" in result.stdout, result.stdout
        assert any((tmp_path / "run" / "tensorboard").iterdir()), "no TensorBoard event files"
    if script == "custom_prior.py":  # the priors are compared by AIS, with the BDMC gap of each
        assert "By AIS the" in result.stdout and result.stdout.count("simulated digits") == 2, result.stdout


def test_examples_do_nothing_at_import(tmp_path):
    """Importing an example must not train, parse arguments or write files."""
    for script in sorted(EXAMPLES):
        code = f"import runpy; runpy.run_path({str(EXAMPLES_DIR / script)!r}, run_name='not_main')"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, f"importing {script} failed: {result.stderr}"
        assert not any(tmp_path.iterdir()), f"importing {script} wrote files: {list(tmp_path.iterdir())}"
