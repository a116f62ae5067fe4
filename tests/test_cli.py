"""The ettin-ft console command: its listing, its errors, and each command equal to python -m ettin_ft.<module>."""

import subprocess
import sys
from pathlib import Path

import pytest

from ettin_ft.cli import COMMANDS

from .conftest import REPO

SCRIPT = Path(sys.executable).parent / "ettin-ft"  # installed by `pip install -e .` from [project.scripts]


def run(*command: str):
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    return result.returncode, result.stdout, result.stderr


def test_help_lists_every_module_with_one_line():
    status, out, _ = run(str(SCRIPT), "--help")
    assert status == 0
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == set(COMMANDS)
    modules = {path.stem for path in (REPO / "ettin_ft").glob("*.py") if "def main(" in path.read_text()} - {"cli"}
    assert modules <= {module for module in COMMANDS.values()}  # every command module is reachable


def test_an_unknown_command_names_the_closest():
    status, out, err = run(str(SCRIPT), "fill_mask", "--model", "x")
    assert status == 2 and err.strip() == "error: unknown command 'fill_mask'; did you mean 'fill-mask'? (see ettin-ft --help)"


@pytest.mark.parametrize("arguments", [
    pytest.param(["dense", "--model", "encoder-17m", "--learning-rate", "fast"], marks=pytest.mark.slow),
    # two fresh interpreters each that import the whole stack: the second among the release checks
    pytest.param(["zeroshot", "--data", str(REPO.parent / "shared" / "data" / "zeroshot"), "--dry-run"],
                 marks=pytest.mark.release),
])
def test_a_command_equals_python_dash_m(arguments):
    module = COMMANDS[arguments[0]]
    ours = run(str(SCRIPT), *arguments)
    theirs = run(sys.executable, "-m", f"ettin_ft.{module}", *arguments[1:])
    assert ours[0] == theirs[0] and ours[1] == theirs[1]
    assert ours[2].replace(f"ettin-ft {arguments[0]}", f"python -m ettin_ft.{module}") == theirs[2]
