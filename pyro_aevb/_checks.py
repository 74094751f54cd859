"""Argument checks shared by the entry points: each names the argument, the value and what it must be."""

import math

__all__ = ["check_choice", "check_number", "check_whole"]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_whole(name, value, minimum=1, maximum=None, error=ValueError):
    """``value`` must be a whole number (an int, or a float such as 1e6 that is one) in [minimum, maximum]."""
    whole = _is_number(value) and math.isfinite(value) and int(value) == value
    if not whole or value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise error(f"{name} must be a whole number {bound}, got {value!r}")
    return int(value)


def check_number(name, value, low=None, high=None, low_open=True, high_open=True, error=ValueError):
    """``value`` must be a finite real number in the interval from ``low`` to ``high`` (open ends by default)."""
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        right = "" if high is None else f"{high}" + (")" if high_open else "]")
        where = f" in {left or '(-inf, '}{right or 'inf)'}" if low is not None or high is not None else ""
        raise error(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


def check_choice(name, value, choices, error=ValueError):
    if not isinstance(value, str) or value not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
