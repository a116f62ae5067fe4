"""The README's commands are copyable: each `python -m ettin_ft.<command> ...` line (torchrun and accelerate launch
ones included) parses, and stops, if at all, only for what this offline machine lacks (a hub model, a run folder the
README made earlier), never for a flag or value the command does not take."""

import re
import shlex

import pytest

from .conftest import REPO, run_cli_main

DRY_RUN = {"dense", "colbert", "sparse", "rerank", "classify", "sft", "pretrain", "compare", "zeroshot", "quickstart"}
ARGUMENT_ERRORS = ("--help)", "applies only with", "does not apply", "unknown setting")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(module, arguments) of every ettin_ft command in the README's bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            found = re.search(r"-m ettin_ft\.([\w.]+)(.*)", line.split(" #")[0])
            if found and not line.lstrip().startswith("#"):
                commands.append((found.group(1), [a for a in shlex.split(found.group(2)) if a != "..."]))
    return commands


@pytest.mark.parametrize("module, arguments", readme_commands(), ids=lambda value: value if isinstance(value, str) else None)
def test_a_readme_command_takes_its_flags(module, arguments, tmp_path, monkeypatch, capsys):
    # The README's relative paths: ../shared/data beside the checkout, configs/ inside it; runs/ goes to tmp_path.
    (tmp_path / "main").mkdir()
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    (tmp_path / "main" / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path / "main")
    dry_run = ["--dry-run"] if module in DRY_RUN else []
    if "--" in arguments and module == "compare":  # the study's own flags come before the recipe's
        cut = arguments.index("--")
        arguments = [*arguments[:cut], *dry_run, *arguments[cut:]]
        dry_run = []
    status, err, _ = run_cli_main(module, capsys, *arguments, *dry_run)
    assert status in (0, 2), (status, err[-5:])
    if status == 2:
        assert len(err) >= 1 and err[-1].startswith("error: ") and not any(e in err[-1] for e in ARGUMENT_ERRORS), err[-3:]
