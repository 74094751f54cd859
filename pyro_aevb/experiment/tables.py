"""
Results tables of the experiments (:mod:`~pyro_aevb.experiment.reproduce`): rows of numbers written as CSV
and as Markdown.
"""

import csv
from pathlib import Path

__all__ = ["rounded", "write_table"]


def write_table(rows, path):
    """Write ``rows`` (dicts with the same keys) as ``path``.csv and as a Markdown table ``path``.md."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return rows


def rounded(value, digits=2):
    """``value`` rounded to ``digits`` for a table cell; an empty cell for ``None``."""
    return "" if value is None else round(float(value), digits)
