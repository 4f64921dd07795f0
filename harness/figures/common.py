"""What the figure modules share: reading a CSV cell as a number, the norms' names in a figure's text."""
from __future__ import annotations

import math

NORM_TEXT = {"linf": "L$\\infty$", "l2": "L2"}


def num(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def known(x: float) -> bool:
    """Not nan: a number the CSV cell held."""
    return not math.isnan(x)
