"""The ``ettin-ft`` console command: ``ettin-ft <command> ARGS`` runs ``python -m ettin_ft.<module> ARGS``.

    ettin-ft --help
    ettin-ft dense --model 150m --output-dir runs/dense
    ettin-ft fill-mask --model encoder-17m "Paris is the [MASK] of France."
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import sys

from .errors import EttinError, cli_entry

# command → module, in the order --help lists them (the pipeline's order)
COMMANDS = {
    "quickstart": "quickstart", "pretrain": "pretrain", "dense": "dense", "colbert": "colbert", "sparse": "sparse",
    "rerank": "rerank", "mine": "mine", "classify": "classify", "tag": "tag", "sft": "sft", "zeroshot": "zeroshot", "bias": "bias",
    "compare": "compare", "generate": "generate", "fill-mask": "fill_mask", "convert": "convert", "models": "models",
    "synthetic": "data.synthetic",
}


def summary(module: str) -> str:
    """The first paragraph of the module's docstring, read without importing it (imports take seconds)."""
    spec = importlib.util.find_spec(f"ettin_ft.{module}")
    with open(spec.origin, encoding="utf-8") as handle:
        docstring = ast.get_docstring(ast.parse(handle.read())) or ""
    return " ".join(docstring.split("\n\n")[0].split())


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: ettin-ft <command> [arguments]   (the same as python -m ettin_ft.<module> [arguments])", "",
             "Fine-tune, pretrain, evaluate and compare Ettin encoders and decoders. Commands:", ""]
    lines += [f"  {name.ljust(width)}  {summary(module)}" for name, module in COMMANDS.items()]
    lines += ["", "`ettin-ft <command> --help` explains a command's flags."]
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, arguments = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command.replace("_", "-"), COMMANDS, n=1)
        raise EttinError(f"unknown command {command!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                         + " (see ettin-ft --help)")
    module = importlib.import_module(f"ettin_ft.{COMMANDS[command]}")
    sys.argv = [f"ettin-ft {command}", *arguments]  # what a module reading sys.argv sees under python -m
    module.main(arguments)


if __name__ == "__main__":
    main()
