"""
The sha256 digest of every checkpoint generation, recorded when it is written and checked when it is read.

``torch.load`` does not check the CRCs of a checkpoint's zip archive: a byte changed inside a tensor's
data reads back as a changed tensor, without an error. So each checkpoint's digest is computed from
the bytes in memory, before they are written, and recorded in ``checksums.json`` beside the checkpoints;
a file is read only if its bytes hash to a recorded digest (:func:`verify`).

**Where a torn write cannot make them agree.** The record is a small JSON file, replaced atomically,
that maps each file name to the digests it may hold: ``{"checkpoint.pt": [...], "checkpoint.prev.pt":
[...]}``. :func:`before_rotation` records, before the two generations are renamed, every digest each
name may hold at any instant of the renames (the old one and the new one); :func:`after_rotation`
records, once they are done, the one each holds. A run killed at any point thus leaves each file
matching a digest recorded for its name, and a file torn, truncated or changed later matches none,
since the digest came from the bytes that were meant to be written, not from those on the disk.

A checkpoint written before digests were recorded has no entry (or the entry :data:`UNRECORDED`): it
is read, and the reader is told that it cannot be verified.
"""

import hashlib
import json
from pathlib import Path

from pyro_aevb.errors import DamagedCheckpoint
from pyro_aevb.experiment.atomic import write_atomic

__all__ = ["FILE_NAME", "UNRECORDED", "after_rotation", "before_rotation", "digest", "record", "verify"]

#: The record's file name, in the folder of the checkpoints.
FILE_NAME = "checksums.json"
#: The entry of a file written before digests were recorded: it is read without being verified.
UNRECORDED = "unrecorded"


def digest(data):
    """The sha256 of ``data`` (bytes or a buffer), as hexadecimal text."""
    return hashlib.sha256(data).hexdigest()


def _record_path(path):
    return Path(path).parent / FILE_NAME


def _read(folder):
    """``(table, problem)``: the recorded digests by file name (``None`` if there is no record) and why it is unusable."""
    path = Path(folder) / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path} cannot be read ({e})"
    try:
        table = json.loads(text)["sha256"]
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return None, f"{path} is damaged (not a record of digests)"
    return table, None


def _write(folder, table, durable=True):
    """Replace the record atomically (the caller flushes the folder); ``durable``: flushed to disk first."""
    text = json.dumps({"sha256": table}, indent=1, sort_keys=True) + "\n"
    write_atomic(Path(folder) / FILE_NAME, text, durable=durable, sync=False, mode=0o600)


def _held(table, path):
    """The digests ``path`` may hold now: none if it does not exist, :data:`UNRECORDED` if it was never recorded."""
    if not Path(path).exists():
        return []
    return list((table or {}).get(Path(path).name) or [UNRECORDED])


def _union(*lists):
    return list(dict.fromkeys(d for digests in lists for d in digests))


def before_rotation(path, previous, new_digest):
    """
    Record, before ``path`` becomes ``previous`` and the new file (of digest ``new_digest``) takes
    its place, what each name may hold until :func:`after_rotation`.

    :returns: the digests ``previous`` will hold, for :func:`after_rotation`.
    """
    table, _ = _read(Path(path).parent)
    current, before = _held(table, path), _held(table, previous)
    after = current or before  # without a current file nothing is renamed to previous
    table = dict(table or {})
    table[Path(path).name] = _union(current, [new_digest])
    if after:
        table[Path(previous).name] = _union(before, current)
    _write(Path(path).parent, table)
    return after


def after_rotation(path, previous, new_digest, previous_digests):
    """
    Record the digests ``path`` and ``previous`` hold once the rotation is done. Not flushed on its
    own: if it is lost, the record of :func:`before_rotation` allows what the files hold.
    """
    table, _ = _read(Path(path).parent)
    table = dict(table or {})
    table[Path(path).name] = [new_digest]
    if previous_digests:
        table[Path(previous).name] = previous_digests
    _write(Path(path).parent, table, durable=False)


def record(path, new_digest):
    """Record that ``path`` now holds ``new_digest`` (a file rewritten in place, by a conversion)."""
    table, _ = _read(Path(path).parent)
    table = dict(table or {})
    table[Path(path).name] = [new_digest]
    _write(Path(path).parent, table)


def verify(path, data):
    """
    Check the bytes ``data`` read from ``path`` against the digests recorded for it.

    :returns: ``None`` if they match one; a sentence saying that the file cannot be verified if none
        is recorded for it (a checkpoint written before digests were recorded).
    :raises DamagedCheckpoint: digests are recorded for ``path`` and its bytes match none of them.
    """
    path = Path(path)
    table, problem = _read(path.parent)
    if problem is not None:
        return f"{path} cannot be verified: {problem}"
    allowed = (table or {}).get(path.name)
    found = digest(data)
    if allowed and found in allowed:
        return None
    if not allowed or UNRECORDED in allowed:
        return (f"{path} has no recorded sha256 digest (it was written before pyro-aevb recorded them): "
                "it cannot be verified")
    raise DamagedCheckpoint(
        f"{path} ({len(data):,} bytes) does not match the sha256 digest recorded in {FILE_NAME} when it was "
        f"written (sha256 {found[:12]}..., recorded {allowed[-1][:12]}...): it has changed on disk since"
    )
