"""The dependency guard: warn once, on import, about installed versions outside the tested set.

The tested set is the package's own pins (pyproject.toml), read from the installed metadata, so there is no
second copy to keep in step.
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, requires, version

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version


def tested_set() -> dict[str, SpecifierSet]:
    """Each required package (extras left out) and the versions it was tested with."""
    try:
        lines = requires("ettin-ft") or []
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return {}
    requirements = (Requirement(line) for line in lines)
    return {r.name: r.specifier for r in requirements if r.marker is None and r.specifier}


def version_mismatches(tested: dict[str, SpecifierSet] | None = None) -> list[str]:
    """Each installed (or missing) package outside the tested set, as 'name X (tested: spec)'."""
    problems = []
    for name, spec in (tested_set() if tested is None else tested).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} missing (tested: {spec})")
            continue
        # Local build tags (+cu130, +cpu) do not change the release that was tested.
        if Version(Version(installed).base_version) not in spec:
            problems.append(f"{name} {installed} (tested: {spec})")
    return problems


def warn_on_mismatch(tested: dict[str, SpecifierSet] | None = None) -> None:
    problems = version_mismatches(tested)
    if problems:
        warnings.warn("ettin-ft: installed versions differ from the tested set: " + "; ".join(problems), stacklevel=2)
