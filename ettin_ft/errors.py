"""One error type for every user-facing failure, the CLI wrapper that prints it as one line, and the
argument parsing that turns bad flags and values into such errors."""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import sys
from typing import Callable


class EttinError(Exception):
    """A user-facing error: the message says what was wrong, where, and what was expected."""


def cli_entry(main: Callable[..., object]) -> Callable[..., object]:
    """Run a CLI ``main``: an EttinError becomes ``error: <message>`` on stderr and exit status 2.

    Under torchrun or accelerate launch every process checks the same inputs and fails alike, so only the
    first process (RANK 0) prints the line.
    """

    def say(message: str) -> None:
        if os.environ.get("RANK", "0") == "0":
            print(message, file=sys.stderr)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except EttinError as error:
            say(f"error: {error}")
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            say("interrupted")
            raise SystemExit(130) from None

    return wrapper


def check_output_dir(path: str | None) -> None:
    """An output folder may be new or an existing folder, never an existing file."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise EttinError(f"--output-dir {path} is an existing file; expected a folder (new or existing)")


class OneLineErrors:
    """argparse reports a bad flag or value by printing the whole usage and exiting; every ettin_ft command
    reports it as one EttinError line instead (``error: ...``, exit 2), naming the closest known flag."""

    def error(self, message: str):
        raise EttinError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.reject_unknown(unknown)
        return parsed

    def reject_unknown(self, unknown: list[str]):
        flags = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        typed = next((item for item in unknown if item.startswith("-")), unknown[0]).split("=")[0]
        # A known flag the typed one extends (--dataset → --data) is the likelier meaning than a look-alike.
        prefixes = [flag for flag in flags if typed.startswith(flag)]
        close = [max(prefixes, key=len)] if prefixes else difflib.get_close_matches(typed, flags, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        what = "unknown flag" if typed.startswith("-") else "unexpected argument"
        raise EttinError(f"{what} {typed!r}{hint} (see {self.prog} --help)")


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """argparse for the commands without a config dataclass."""
