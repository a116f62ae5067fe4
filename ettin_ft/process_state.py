"""Changes to process-wide library settings, each scoped: the block gets the setting, the caller's comes back after,
so a notebook that calls a recipe keeps its own logging and progress bars."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def datasets_progress_bars(shown: bool):
    from datasets.utils import logging

    with _switched(logging.is_progress_bar_enabled, logging.enable_progress_bar, logging.disable_progress_bar, shown):
        yield


@contextlib.contextmanager
def transformers_progress_bars(shown: bool):
    from transformers.utils import logging

    with _switched(logging.is_progress_bar_enabled, logging.enable_progress_bar, logging.disable_progress_bar, shown):
        yield


@contextlib.contextmanager
def transformers_verbosity(level: int):
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity(level)
    try:
        yield
    finally:
        logging.set_verbosity(before)


@contextlib.contextmanager
def _switched(is_on, turn_on, turn_off, on: bool):
    before = is_on()
    (turn_on if on else turn_off)()
    try:
        yield
    finally:
        (turn_on if before else turn_off)()
