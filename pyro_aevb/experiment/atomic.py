"""
Files replaced atomically: the new contents are written to a temporary file beside the target, then
renamed over it, so a reader (or a run killed at any instant) sees the old file or the new one, never
a torn one.

How durable a replacement is depends on the caller: ``durable`` flushes the new file to the disk before
the rename (it then survives a power cut once the folder is flushed too), and ``sync_folder`` flushes the
folder after it (the rename itself survives). Checkpoints and their digests use both; files that can be
written again from a checkpoint (``config.json``, ``metrics.csv``) only the first; figures and results
neither.

Temporary files are named ``.<name>.<random>.tmp`` (``.<name>.<random>.tmp<suffix>`` where the writer
needs the suffix, as matplotlib does to choose the format), so that a run folder's leftovers are found
by :func:`remove_temporary`.
"""

import contextlib
import os
import secrets
from pathlib import Path

from pyro_aevb.experiment import _faultpoints as faultpoints

__all__ = ["TEMPORARY_PATTERNS", "move_into_place", "remove_quietly", "remove_temporary", "replacing", "sync_folder",
           "write_atomic", "write_temporary"]

#: Patterns of the temporary files a killed writer may leave; the last two are those of earlier versions.
TEMPORARY_PATTERNS = (".*.tmp", ".*.tmp.*", "*.json.tmp", "*.csv.tmp")


def _create_temporary(path, suffix, mode):
    """A new file beside ``path``, created exclusively: ``(file descriptor, its path)``."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode), tmp
        except FileExistsError:
            continue


def write_temporary(path, data, durable=True, mode=0o666, point=None):
    """
    Write ``data`` (bytes or a buffer) to a new temporary file beside ``path``.

    :param bool durable: flush the file to the disk (``fsync``) before returning.
    :param int mode: its permissions, less the umask (``0o600``: for its owner only).
    :param str point: a fault point (``PYRO_AEVB_FAULT_KILL_AT``, for the tests that kill a run
        mid-write) reached when half of ``data`` is written and flushed.
    :returns: the temporary file's path; on an error, it is removed and the error raised.
    """
    path = Path(path)
    fd, tmp = _create_temporary(path, "", mode)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if point:
                f.flush()
                faultpoints.reached(point)
            f.write(data[half:])
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def move_into_place(tmp, path, sync=True):
    """
    Rename the temporary file ``tmp`` over ``path``, atomically; with ``sync``, then flush the folder
    (:func:`sync_folder`). If the rename fails, ``tmp`` is removed and the error raised.
    """
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    if sync:
        sync_folder(Path(path).parent)


def write_atomic(path, data, durable=True, sync=True, mode=0o666, point=None):
    """
    Replace ``path``'s contents by ``data`` (bytes, a buffer, or text, written as UTF-8) atomically:
    :func:`write_temporary`, then :func:`move_into_place`. On an error ``path`` is as it was and no
    temporary file is left.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    move_into_place(write_temporary(path, data, durable=durable, mode=mode, point=point), path, sync=sync)


@contextlib.contextmanager
def replacing(path):
    """
    For a writer that takes a file name (``savefig``): yields a temporary path beside ``path``, with
    its suffix; once the block ends without an error, the file written there is renamed over ``path``.
    The temporary file is removed in any case. Nothing is flushed to the disk.
    """
    path = Path(path)
    fd, tmp = _create_temporary(path, path.suffix, 0o666)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        remove_quietly(tmp)


def sync_folder(folder):
    """Flush ``folder``'s entries (the renames in it) to the disk, where the system allows it (POSIX)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path):
    """Remove the file ``path`` if it can be removed; never raises."""
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_temporary(folder):
    """Remove the temporary files that a killed writer left in ``folder``."""
    folder = Path(folder)
    for pattern in TEMPORARY_PATTERNS:
        for leftover in folder.glob(pattern):
            remove_quietly(leftover)
