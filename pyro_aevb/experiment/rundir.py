"""
The run folder: ``config.json``, ``metrics.csv``, ``checkpoint.pt`` (and ``checkpoint.prev.pt``, the
generation before it, and ``checksums.json``, the digests of both), the plots, and a lock file that keeps two runs from writing into the same folder.

Every file is replaced atomically (written beside, then renamed) except ``metrics.csv``, to which rows
are appended; the checkpoint holds the rows up to it, so a resumed run rebuilds the file from there.
A failed write becomes a :class:`~pyro_aevb.errors.RunDirError` that says what happened, what is safe,
and what to do (:meth:`RunDir.writing`).
"""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from pyro_aevb.errors import RunDirError
from pyro_aevb.experiment import _faultpoints as faultpoints
from pyro_aevb.experiment import plots
from pyro_aevb.experiment.atomic import replacing, write_atomic

__all__ = ["RunDir", "metrics_as_floats", "read_metrics"]


def _scan_metrics(path, columns=None):
    """
    ``(rows, problems)``: the well-formed rows of a ``metrics.csv`` as ``(line number, {column: text})``,
    and a sentence for each line that is not one (a stray line, a row cut short by a stopped run).
    """
    name = Path(path).name
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], [f"{name} was missing"]
    if not data.strip():
        return [], [f"{name} was empty"]
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = not text.endswith("\n")
    if not torn:
        lines.pop()  # the empty string after the last newline
    header = next(csv.reader([lines[0].rstrip("\r")]), [])
    problems = []
    if columns is not None and header != list(columns):
        problems.append(f"{name} line 1 is not its header ({lines[0][:60]!r})")
        header = list(columns)
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        values = next(csv.reader([line]), [])
        if torn and number == len(lines):
            problems.append(f"{name} line {number} was cut short (a row being written when the run stopped)")
        elif len(values) != len(header) or not all(_is_number(v) for v in values):
            problems.append(f"{name} line {number} is not a metrics row ({line[:60]!r})")
        else:
            rows.append((number, dict(zip(header, values))))
    return rows, problems


def _is_number(text):
    if text == "":
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_metrics(path, strict=True):
    """
    Rows of a ``metrics.csv`` as dicts of floats (``None`` where a column is empty). A line that is not a
    metrics row raises :class:`~pyro_aevb.errors.RunDirError` naming it, or with ``strict=False`` is skipped.
    """
    rows, problems = _scan_metrics(path)
    problems = [p for p in problems if not p.endswith("was empty")]
    if strict and problems:
        raise RunDirError(
            f"{'; '.join(problems)} (in {Path(path).parent}). `pyro-aevb train --out {Path(path).parent} --resume` "
            "rebuilds it from the checkpoint"
        )
    return [{k: (float(v) if v != "" else None) for k, v in row.items()} for _, row in rows]


def metrics_as_floats(rows):
    """Metrics rows as the training loop keeps them, as :func:`read_metrics` would read them from the file."""
    return [{k: (float(_fmt(v)) if _fmt(v) != "" else None) for k, v in row.items()} for row in rows]


def describe_os_error(error):
    """What went wrong, in words, and what the user can do about it."""
    reasons = {
        errno.ENOSPC: ("the disk is full", "free some space"),
        errno.EDQUOT: ("the disk quota is used up", "free some space"),
        errno.EROFS: ("the file system is read-only", "make it writable again"),
        errno.EACCES: ("permission denied", "make the folder writable again"),
        errno.EPERM: ("operation not permitted", "make the folder writable again"),
        errno.EIO: ("an input/output error (a failing disk?)", "check the disk"),
        errno.ENOTDIR: ("part of its path is not a folder", "restore the folder"),
    }
    reason, action = reasons.get(error.errno, (error.strerror or str(error), "fix the cause"))
    return f"{reason} [errno {error.errno}]" if error.errno else reason, action


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

    @contextlib.contextmanager
    def writing(self, what, path, checkpoint_samples=None, finished=False):
        """
        Turn an :class:`OSError` raised inside (disk full, I/O error, the folder read-only or removed) into
        a :class:`~pyro_aevb.errors.RunDirError` that says what happened to which file, what is safe (the
        last good checkpoint, at ``checkpoint_samples``), and what to do.
        """
        try:
            yield
        except OSError as e:
            raise RunDirError(self._write_failed(what, path, e, checkpoint_samples, finished)) from None

    def _write_failed(self, what, path, error, checkpoint_samples, finished):
        if not self.path.is_dir():
            return (
                f"the run folder {self.path} was removed while the run was writing {what}: its checkpoint, settings "
                "and metrics are gone and cannot be recovered. Start the run again (without --resume)."
            )
        reason, action = describe_os_error(error)
        again = f"`pyro-aevb train --out {self.path} --resume`"
        if finished:
            safe = f"Training had finished, and its final checkpoint, at {checkpoint_samples:,} samples, is saved."
            todo = f"{action.capitalize()}, then run {again} to write them."
        elif checkpoint_samples is None:
            safe = "No checkpoint had been written yet, so only the start of the run is lost."
            todo = f"{action.capitalize()}, then run the same command again."
        else:
            safe = (f"The last good checkpoint, at {checkpoint_samples:,} samples, is intact, with every metrics row "
                    "up to it.")
            todo = f"{action.capitalize()}, then run {again} to continue from it."
        return f"could not write {what} ({path}): {reason}. {safe} {todo}"

    def write_config(self, config):
        write_atomic(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n", sync=False)

    def start_metrics(self, columns):
        self._columns = list(columns)
        self._write_metrics([])

    def append_metrics(self, row):
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self._columns).writerow({k: _fmt(row[k]) for k in self._columns})
        text = line.getvalue()
        with open(self.metrics_path, "a", newline="") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            faultpoints.reached("metrics-row")
            f.write(text[len(text) // 2 :])
            f.flush()
            os.fsync(f.fileno())

    def _write_metrics(self, rows):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self._columns)
        writer.writeheader()
        writer.writerows({k: _fmt(row[k]) for k in self._columns} for row in rows)
        write_atomic(self.metrics_path, text.getvalue(), sync=False)

    def resume_metrics(self, samples, saved_rows, columns, log):
        """
        Make ``metrics.csv`` hold exactly the rows up to the checkpoint being resumed from (at ``samples``):
        rows written after it are dropped silently (they will be written again). A torn last line, a stray
        line, missing or differing rows, an emptied or missing file: the file is rebuilt from
        ``saved_rows`` (the rows the checkpoint holds) and ``log`` is told what was found; checkpoints of an
        earlier format, without rows, keep the file's well-formed rows and drop the rest.

        :returns: the rows, as the training loop keeps them.
        """
        self._columns = list(columns)
        found, problems = _scan_metrics(self.metrics_path, columns)
        kept = [row for _, row in found if float(row["samples"]) <= samples]
        if saved_rows is not None:
            rows = [dict(row) for row in saved_rows]
            if [{k: str(_fmt(r[k])) for k in columns} for r in rows] != kept and not problems:
                problems.append(f"{self.metrics_path.name} held rows that differ from those stored in the checkpoint")
            if problems:
                log(f"{'; '.join(problems)}: {self.metrics_path} was rebuilt from the {len(rows)} rows stored in the "
                    f"checkpoint (at {samples:,} samples)")
        else:
            rows = kept
            if problems:
                log(f"{'; '.join(problems)}: dropped; {self.metrics_path} keeps its {len(rows)} rows up to the checkpoint")
        self._write_metrics(rows)
        return rows

    def plot(self, vae, dataset, rows=None):
        """Draw the run's figures, each written to a temporary file and renamed into place."""
        if rows is None:
            rows = read_metrics(self.metrics_path, strict=False)
        for metric in ("lower_bound", "log_marginal"):
            if any(row[f"train_{metric}"] is not None for row in rows):
                with replacing(self.path / f"{metric}.png") as tmp:
                    plots.plot_lower_bound({"": rows}, tmp, metric=metric)
        if dataset.image_shape is None:  # data that are not images: no figures of them
            return
        with replacing(self.path / "reconstructions.png") as tmp:
            plots.plot_reconstructions(vae, dataset.eval_split("test", 10), dataset.image_shape, tmp)
        x_test = dataset.eval_split("test", 1)
        if plots.manifold_site(vae.model, x_test) is not None:
            with replacing(self.path / "manifold.png") as tmp:
                plots.plot_manifold(vae, dataset.image_shape, tmp, data_shape=dataset.data_shape)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6f}"
    return value

