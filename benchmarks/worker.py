"""Benchmark plumbing: run a command (or one configuration in a fresh worker process, for clean timings and
peak memory) and read back the result the worker reports."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

RESULT = "RESULT "
RECIPES_DIR = str(Path(__file__).resolve().parents[1] / "recipes")


def plain_recipe(name: str) -> ModuleType:
    """recipes/<name>.py: the plain library script a benchmark times ettin-ft against."""
    if RECIPES_DIR not in sys.path:
        sys.path.insert(0, RECIPES_DIR)
    return importlib.import_module(name)


def report(value: Any) -> None:
    """Called in the worker: hand ``value`` back to the parent."""
    print(RESULT + json.dumps(value), flush=True)


def run(command: list[str]) -> str:
    """Run ``command``; its stdout, or exit with the command and the end of its stderr."""
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{out.stderr[-3000:]}")
    return out.stdout


def run_worker(command: list[str]) -> Any:
    """Run a worker command and return the value it reported."""
    stdout = run(command)
    line = next((l for l in reversed(stdout.splitlines()) if l.startswith(RESULT)), None)
    if line is None:
        sys.exit(f"no result from: {' '.join(command)}")
    return json.loads(line[len(RESULT):])
