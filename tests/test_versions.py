import subprocess
import sys
import warnings

from packaging.specifiers import SpecifierSet

from ettin_ft import _versions


def test_guard_names_each_mismatch_in_one_warning():
    tested = {"torch": SpecifierSet("==0.1"), "transformers": SpecifierSet("==5.3.0"), "no-such-package": SpecifierSet(">=1")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _versions.warn_on_mismatch(tested)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "torch" in message and "no-such-package missing" in message and "transformers" not in message


def test_the_tested_set_is_the_package_pins_and_is_installed():
    tested = _versions.tested_set()
    assert tested["torch"] == SpecifierSet("==2.11.0") and tested["pylate"] == SpecifierSet("==1.6.0")
    assert "pytest" not in tested  # extras are not part of it
    assert _versions.version_mismatches() == []


def test_importing_the_package_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import ettin_ft"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
