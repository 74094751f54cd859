"""
The run folder: ``config.json``, ``metrics.csv``, ``checkpoint.pt``, the plots, and a lock file that
keeps two runs from writing into the same folder.
"""

import contextlib
import csv
import json
import os
import shutil
from pathlib import Path

from pyro_aevb.errors import RunDirError

__all__ = ["RunDir", "read_metrics"]


def read_metrics(path):
    """Rows of a ``metrics.csv`` as dicts of floats (``None`` where a column is empty)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


class RunDir:
    """Paths and file operations of one run folder."""

    def __init__(self, path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.csv"
        self.checkpoint_path = self.path / "checkpoint.pt"
        self.lock_path = self.path / ".lock"

    @contextlib.contextmanager
    def lock(self):
        """Create the folder, check it is writable, and hold its lock (fails at once if another run holds it)."""
        from filelock import FileLock, Timeout

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write to the output folder {self.path}: {e.strerror or e}") from None
        lock = FileLock(self.lock_path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirError(
                f"{self.path} is in use by another run (lock file {self.lock_path}); choose another --out"
            ) from None
        try:
            yield self
        finally:
            lock.release()

    def check_free_space(self, nbytes):
        """Raise :class:`RunDirError` unless the folder's file system has ``nbytes`` free (for the checkpoints)."""
        free = shutil.disk_usage(self.path).free
        if free < nbytes:
            raise RunDirError(
                f"only {free / 2**20:.1f} MiB free in {self.path}, and its checkpoints need about "
                f"{nbytes / 2**20:.1f} MiB; free some space or choose another --out"
            )

    def write_config(self, config):
        tmp = self.config_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.config_path)

    def start_metrics(self, columns):
        self._columns = list(columns)
        with open(self.metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(self._columns)

    def append_metrics(self, row):
        with open(self.metrics_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow({k: _fmt(row[k]) for k in self._columns})

    def truncate_metrics(self, samples):
        """Drop the rows written after the checkpoint being resumed from (they will be written again)."""
        with open(self.metrics_path, newline="") as f:
            reader = csv.DictReader(f)
            self._columns = list(reader.fieldnames)
            rows = [row for row in reader if int(float(row["samples"])) <= samples]
        tmp = self.metrics_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_path)

    def plot(self, vae, dataset):
        from pyro_aevb.experiment.plots import plot_lower_bound, plot_manifold, plot_reconstructions

        rows = read_metrics(self.metrics_path)
        for metric in ("lower_bound", "log_marginal"):
            if any(row[f"train_{metric}"] is not None for row in rows):
                plot_lower_bound({"": rows}, self.path / f"{metric}.png", metric=metric)
        plot_reconstructions(vae, dataset.eval_split("test", 10), dataset.image_shape, self.path / "reconstructions.png")
        if getattr(vae, "z_dim", None) == 2:
            plot_manifold(vae, dataset.image_shape, self.path / "manifold.png")


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6f}"
    return value

