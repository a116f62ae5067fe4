from ettin_ft import _versions


def test_guard_names_each_mismatch_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(_versions, "TESTED", {"torch": "==0.1", "transformers": "==5.3.0", "no-such-package": ">=1"})
    _versions.warn_on_mismatch()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "torch" in lines[0] and "no-such-package missing" in lines[0] and "transformers" not in lines[0]


def test_installed_set_matches_the_tested_set():
    assert _versions.version_mismatches() == []
