import subprocess
import sys
import warnings

from packaging.specifiers import SpecifierSet

from ettin_ft import _versions


def test_guard_names_each_mismatch_in_one_warning():
    tested = {"torch": SpecifierSet("<1"), "transformers": SpecifierSet(">=5,<6"), "no-such-package": SpecifierSet(">=1")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _versions.warn_on_mismatch(tested)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "torch" in message and "no-such-package missing" in message and "transformers" not in message


def test_the_tested_set_is_the_declared_ranges_and_the_installed_stack_is_in_them():
    from importlib.metadata import version

    from packaging.version import Version

    tested = _versions.tested_set()
    assert "pylate" not in tested and "pytest" not in tested  # extras are not part of it
    # ranges, not pins: the releases of the issue that moved ettin-ft to them are inside
    assert all(not str(spec).startswith("==") for spec in tested.values())
    assert Version("2.13.0") in tested["torch"] and Version("2.14.1") in tested["torch"]
    assert Version("6.2.0") in tested["sentence-transformers"] and Version("7.0") not in tested["sentence-transformers"]
    assert Version("5.23.0") in tested["transformers"] and Version("6.0") not in tested["transformers"]
    for name in ("torch", "transformers", "sentence-transformers"):
        assert Version(Version(version(name)).base_version) in tested[name], name
    assert _versions.version_mismatches() == []


def test_importing_the_package_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import ettin_ft"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
