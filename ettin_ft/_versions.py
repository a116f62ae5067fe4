"""The dependency guard: warn once, on import, about installed versions outside the tested set."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import Version

# The set tested together (pyproject.toml pins the same ranges).
TESTED = {
    "torch": "==2.11.0",
    "transformers": "==5.3.0",
    "sentence-transformers": "==5.3.0",
    "pylate": "==1.6.0",
    "trl": ">=1.16,<1.17",
    "peft": ">=0.21,<0.22",
    "datasets": ">=5.2,<6",
    "accelerate": ">=1.15,<2",
    "torch-optimi": "==0.3.3",
}


def version_mismatches() -> list[str]:
    """Each installed (or missing) package outside the tested set, as 'name X (tested: spec)'."""
    problems = []
    for name, spec in TESTED.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} missing (tested: {spec})")
            continue
        # Local build tags (+cu130, +cpu) do not change the release that was tested.
        if Version(Version(installed).base_version) not in SpecifierSet(spec):
            problems.append(f"{name} {installed} (tested: {spec})")
    return problems


def warn_on_mismatch() -> None:
    problems = version_mismatches()
    if problems:
        print(
            "ettin-ft warning: installed versions differ from the tested set: " + "; ".join(problems),
            file=sys.stderr,
        )
