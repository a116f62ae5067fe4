"""Repeated runs: the --seeds list, and the mean ± std over the runs that finished."""

from __future__ import annotations

import statistics

from .errors import EttinError


def parse_seeds(text) -> list[int]:
    """``"0,1,2"`` (or a list) as distinct integers, or one clear error."""
    items = text if isinstance(text, list) else str(text).split(",")
    try:
        seeds = [int(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise EttinError(f"--seeds {text!r}: expected integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise EttinError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
