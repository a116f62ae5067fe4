"""One error type for every user-facing failure, and the CLI wrapper that prints it as one line."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class EttinError(Exception):
    """A user-facing error: the message says what was wrong, where, and what was expected."""


def cli_entry(main: Callable[..., object]) -> Callable[..., object]:
    """Run a CLI ``main``: an EttinError becomes ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except EttinError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
