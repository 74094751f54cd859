"""
Checkpoints: the files of the exact state a resumed run needs (parameters, optimizer state, random
streams, the metrics rows so far, the settings; :mod:`~pyro_aevb.experiment.state`), written atomically
in two generations, checked when read.

**Data only.** A checkpoint holds tensors, numbers, strings, ``None``, lists, tuples and dicts, nothing
else (:func:`~pyro_aevb.experiment.state.check_data_only`, which :func:`save_checkpoint` applies before
it writes), and is read with ``torch.load(..., weights_only=True)``: opening a run folder never runs
code from it. A file that holds anything else is refused (:class:`~pyro_aevb.errors.UnsafeCheckpoint`)
without being run; one written by an earlier version, whose constraints and NumPy states were pickled
objects, is converted by ``pyro-aevb convert-checkpoint RUN --trust``
(:func:`~pyro_aevb.experiment.convert_checkpoint.convert_legacy`).

**Atomic, two generations.** The new checkpoint is written to a temporary file in the same folder and
flushed to disk (:mod:`~pyro_aevb.experiment.atomic`); then the current ``checkpoint.pt`` becomes
``checkpoint.prev.pt`` (a hard link renamed into place) and the new file is renamed over
``checkpoint.pt``. Each rename is atomic, so a run killed at any instant leaves a complete
``checkpoint.pt`` and, from the second checkpoint on, the generation before it. :func:`load_latest`
falls back to ``checkpoint.prev.pt`` when ``checkpoint.pt`` is damaged.

**Checked.** The sha256 of each generation is recorded when it is written and checked whenever it is
read (:mod:`~pyro_aevb.experiment.checksums`): a file whose bytes changed after it was written is
damaged, and :func:`load_latest` falls back past it, naming it. A checkpoint written before digests
were recorded is read, with a note that it cannot be verified.
"""

import io
import os
import pickle
import shutil
import threading
import zipfile
from pathlib import Path

import torch

from pyro_aevb.errors import CheckpointError, DamagedCheckpoint, UnsafeCheckpoint
from pyro_aevb.experiment import _faultpoints as faultpoints
from pyro_aevb.experiment import checksums
from pyro_aevb.experiment.atomic import move_into_place, remove_quietly, sync_folder, write_atomic, write_temporary
from pyro_aevb.experiment.state import CONSTRAINTS, check_data_only

__all__ = [
    "FORMAT",
    "atomic_save",
    "is_format1_global",
    "load_checkpoint",
    "load_latest",
    "pickled_globals",
    "previous_path",
    "save_checkpoint",
]

#: The checkpoint format this version writes. 1: pickled constraint objects and NumPy states (read only
#: after ``pyro-aevb convert-checkpoint``); 2: data only.
FORMAT = 2


# -- writing ---------------------------------------------------------------------------------------


def previous_path(path):
    """Where the generation before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_save(obj, path, digest=False):
    """
    ``torch.save`` ``obj`` to ``path`` atomically (no previous generation kept); with ``digest``,
    returns the file's sha256.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer(), mode=0o600)
    return checksums.digest(buffer.getbuffer()) if digest else None


def save_checkpoint(state, path):
    """
    Write ``state`` (checked by :func:`~pyro_aevb.experiment.state.check_data_only`) to ``path``
    atomically, keeping the checkpoint it replaces as :func:`previous_path`, and record the sha256 of
    both (:mod:`~pyro_aevb.experiment.checksums`). Raises :class:`OSError` when the disk is full or the
    folder cannot be written; ``path`` and its previous generation are then as they were.
    """
    path = Path(path)
    check_data_only(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    prev = previous_path(path)

    def record():
        # The digest of the bytes meant to be written, not of those on the disk; recorded, and flushed,
        # before the renames. hashlib lets go of the GIL: this runs while the file is written and flushed.
        new_digest = checksums.digest(data)
        prev_digests = checksums.before_rotation(path, prev, new_digest)
        sync_folder(path.parent)
        return new_digest, prev_digests

    recording = _Background(record)
    try:
        tmp = write_temporary(path, data, mode=0o600, point="checkpoint-write")
    except BaseException:
        recording.join()
        raise
    try:
        new_digest, prev_digests = recording.result()
        if path.exists():
            _keep_previous(path)
        faultpoints.reached("checkpoint-rotate")
    except BaseException:
        remove_quietly(tmp)
        raise
    move_into_place(tmp, path, sync=False)
    faultpoints.reached("checkpoint-digest")
    checksums.after_rotation(path, prev, new_digest, prev_digests)
    sync_folder(path.parent)


class _Background(threading.Thread):
    """``fn(*args)`` in a thread; :meth:`result` waits for it and returns its value or raises its error."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._call, self._value, self._error = (fn, args), None, None
        self.start()

    def run(self):
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as e:  # handed to the caller of result()
            self._error = e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _keep_previous(path):
    """Make ``path``'s current file the previous generation, atomically, leaving ``path`` in place."""
    prev = previous_path(path)
    link = prev.with_name(f".{prev.name}.tmp")
    remove_quietly(link)
    try:
        os.link(path, link)
    except OSError:  # a file system without hard links: copy (the disk needs room for it)
        shutil.copyfile(path, link)
        with open(link, "rb") as f:
            os.fsync(f.fileno())
    os.replace(link, prev)
    # If prev already was a link to path's file (a run killed after this step last time), rename(2) does
    # nothing and leaves the link behind.
    remove_quietly(link)


# -- reading ---------------------------------------------------------------------------------------

#: What format 1 pickled besides tensors: constraint classes and NumPy's random state.
_LEGACY_NUMPY = {"numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct",
                 "numpy.core.multiarray._reconstruct", "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"}
_CONSTRAINT_MODULES = ("torch.distributions.constraints.", "pyro.distributions.constraints.")


def is_format1_global(name):
    """Whether ``name``, an object that a checkpoint's pickle names, is one that format 1 stored (constraints, NumPy's)."""
    if name in _LEGACY_NUMPY or name.startswith("numpy.dtypes."):
        return True
    if name.startswith(_CONSTRAINT_MODULES):
        cls_name = name.rpartition(".")[2]
        return any(cls.__name__ == cls_name for cls, _ in CONSTRAINTS.values())
    return False


def pickled_globals(path):
    """
    The Python objects that ``path``'s pickle names beyond plain data (read without running it), or
    ``None`` where they cannot be listed.
    """
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip archive (a bare pickle, say): nothing is run, we only cannot list them
        return None


def load_checkpoint(path, map_location="cpu", log=None):
    """
    Read a checkpoint: its bytes are checked against the sha256 recorded when it was written
    (:func:`~pyro_aevb.experiment.checksums.verify`), then read with ``torch.load(..., weights_only=True)``,
    which rebuilds tensors, numbers, strings, lists and dicts and refuses anything else without running it.
    ``log`` (a function of one string) is told when the file cannot be verified (no digest recorded).

    :raises UnsafeCheckpoint: the file holds other Python objects (an earlier version's format, or a
        file that is not what ``pyro-aevb train`` writes).
    :raises DamagedCheckpoint: the file is empty, truncated, not a checkpoint, or not the bytes that were written.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path} does not exist") from None
    except OSError as e:
        raise DamagedCheckpoint(f"{path} cannot be read: {e.strerror or e}") from None
    size = len(data)
    if size == 0:
        raise DamagedCheckpoint(f"{path} is empty (0 bytes)")
    unverified = checksums.verify(path, data)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        _refuse(path)
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        reason = str(e).split(". ")[0] or type(e).__name__
        raise DamagedCheckpoint(f"{path} ({size:,} bytes) is damaged, truncated or not a checkpoint: {reason}") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int) or "samples" not in state:
        raise DamagedCheckpoint(f"{path} is not a pyro-aevb checkpoint (no format and sample count in it)")
    if state["format"] > FORMAT:
        raise CheckpointError(
            f"{path} was written by a newer pyro-aevb (checkpoint format {state['format']}; this version reads "
            f"up to {FORMAT}): upgrade pyro-aevb to use this run"
        )
    if unverified is not None and log is not None:
        log(unverified)
    return state


def _refuse(path):
    names = pickled_globals(path)
    run = path.parent
    if names and all(is_format1_global(n) for n in names):
        raise UnsafeCheckpoint(
            f"{path} is in the format of an earlier pyro-aevb, which pickled Python objects "
            f"({', '.join(sorted(names))}); this version reads only tensors, numbers, strings, lists and dicts, "
            f"and ran nothing from it. If you wrote this run, convert it once: "
            f"pyro-aevb convert-checkpoint {run} --trust"
        ) from None
    what = f" ({', '.join(sorted(names))})" if names else ""
    raise UnsafeCheckpoint(
        f"{path} holds Python objects that a pyro-aevb checkpoint never contains{what}: refused, and nothing in it "
        "was run. Do not use this run folder unless you know where the file came from."
    ) from None


def load_latest(path, map_location="cpu", log=None):
    """
    The newest intact generation of the checkpoint ``path``: ``path`` itself, or, where it is damaged
    (empty, truncated, or its bytes differ from those written) or missing, :func:`previous_path`.
    ``log`` (a function of one string) is told when the previous generation is used, naming the
    damaged file and how far back it goes, and when a generation cannot be verified.

    :returns: ``(state, the path it was read from)``.
    :raises DamagedCheckpoint: neither generation is readable.
    :raises UnsafeCheckpoint: a generation holds Python objects (never skipped over: it is reported).
    """
    path = Path(path)
    prev = previous_path(path)
    try:
        return load_checkpoint(path, map_location, log), path
    except DamagedCheckpoint as damaged:
        if not prev.exists():
            raise DamagedCheckpoint(f"{damaged}; there is no earlier checkpoint ({prev.name}) to fall back on") from None
        try:
            state = load_checkpoint(prev, map_location, log)
        except DamagedCheckpoint as also:
            raise DamagedCheckpoint(f"{damaged}; the earlier checkpoint is damaged too: {also}") from None
        if log is not None:
            log(f"{damaged}; using the earlier checkpoint {prev.name}, at {state['samples']:,} samples")
        return state, prev
