"""
Named points in the writing of a run folder where a test can kill the process outright (SIGKILL), to
prove that a run killed at any of them resumes exactly.

``PYRO_AEVB_FAULT_KILL_AT="checkpoint-write:2"`` kills the process the second time it reaches the point
``checkpoint-write``; ``"step:12:STOP"`` stops it there instead (SIGSTOP), so that a test can damage
the run folder, the disk or the file system under a paused run and let it go on (SIGCONT). In a job
under ``torchrun``, ``PYRO_AEVB_FAULT_RANK=1`` arms the point in the process of rank 1 only (unset:
in every process). The variables are read once, when this module is imported; unset (always,
outside the tests), :func:`reached` does nothing but count.

Points: ``checkpoint-write`` (half of the new checkpoint's bytes written to its temporary file),
``checkpoint-rotate`` (the previous generation renamed, the new one not yet in place),
``checkpoint-digest`` (the new one in place, its digest not yet recorded as the only one it may hold),
``metrics-row`` (half of a metrics row written to ``metrics.csv``), ``evaluate`` (at the start of an
evaluation) and ``step`` (after a training step).
"""

import os
import signal

__all__ = ["POINTS", "reached"]

POINTS = ("checkpoint-write", "checkpoint-rotate", "checkpoint-digest", "metrics-row", "evaluate", "step")


def _parse(text):
    if not text:
        return None
    name, _, rest = text.partition(":")
    count, _, how = rest.partition(":")
    if name not in POINTS or how not in ("", "KILL", "STOP"):
        raise ValueError(f"PYRO_AEVB_FAULT_KILL_AT={text!r}: expected POINT[:COUNT[:KILL|STOP]], points: {', '.join(POINTS)}")
    return name, int(count or 1), signal.SIGSTOP if how == "STOP" else signal.SIGKILL


_KILL_AT = _parse(os.environ.get("PYRO_AEVB_FAULT_KILL_AT", ""))
if os.environ.get("PYRO_AEVB_FAULT_RANK", os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
    _KILL_AT = None
_counts = dict.fromkeys(POINTS, 0)


def reached(name):
    """Count one passage through the point ``name``; SIGKILL this process if it is the armed passage."""
    _counts[name] += 1
    if _KILL_AT is not None and _KILL_AT[:2] == (name, _counts[name]):
        os.kill(os.getpid(), _KILL_AT[2])
