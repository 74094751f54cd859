"""
How far a long computation has got, for whoever asked: the training loop's progress bar shows it
while an evaluation runs. The estimators call :func:`report` with the fraction done; nothing is
reported, and nothing is computed for it, outside :func:`reporting`.
"""

import contextlib

__all__ = ["report", "reporting", "part"]

_listeners = []


@contextlib.contextmanager
def reporting(callback):
    """Within the block, :func:`report` calls ``callback(fraction)``, ``fraction`` in [0, 1]."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.pop()


def report(fraction):
    """Says that ``fraction`` of the current computation is done (a no-op when nobody listens)."""
    if _listeners:
        _listeners[-1](min(max(float(fraction), 0.0), 1.0))


@contextlib.contextmanager
def part(start, stop):
    """Within the block, a reported fraction ``f`` of a part of the computation is ``start + f (stop - start)`` of it."""
    if not _listeners:
        yield
        return
    outer = _listeners[-1]
    with reporting(lambda f: outer(start + f * (stop - start))):
        yield
