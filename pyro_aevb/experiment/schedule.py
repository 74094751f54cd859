"""
When a run evaluates: log-spaced sample counts, so that evaluating takes a small share of a run.
"""

import math

import numpy as np

__all__ = ["EVAL_RATIO", "EVAL_RATIO_LOG_MARGINAL", "eval_schedule"]

#: The least factor between the sample counts of two evaluations of the default schedule.
EVAL_RATIO = 2.0
#: The same when the marginal likelihood is estimated at each evaluation (tens of times the bounds' cost): decades.
EVAL_RATIO_LOG_MARGINAL = 10.0


def eval_schedule(total, batch_size, num_points=None, first=None, min_ratio=EVAL_RATIO):
    """
    Sample counts at which to evaluate, log-spaced from ``first`` (default: ten minibatches) to
    ``total``, rounded up to whole minibatches; the last is always ``total``'s step.

    With ``num_points``, that many counts (fewer where two round to the same minibatch), as the paper's
    figures have them. With ``None``, as many as keep every count at least ``min_ratio`` times the
    previous one: the evaluations' cost then grows with the log of the budget while training's grows
    with the budget. The schedule depends on these numbers only, never on measured time, so that a
    resumed run evaluates where an uninterrupted one does.
    """
    last = math.ceil(total / batch_size)
    first_step = max(1, min(last, math.ceil((first or 10 * batch_size) / batch_size)))
    if num_points is None:
        if not min_ratio > 1:
            raise ValueError(f"min_ratio must exceed 1, got {min_ratio}")
        # (1e-9: a budget of exactly 1000 first steps gets its 4 decades despite rounding in the logs)
        num_points = 1 + int(math.log(last / first_step) / math.log(min_ratio) + 1e-9) if last > first_step else 1
    steps = np.unique(np.ceil(np.geomspace(first_step, last, num_points)).astype(int))
    return [int(s) * batch_size for s in steps]

