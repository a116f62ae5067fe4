"""Model cards: every model folder a run publishes gets a README.md saying what made it.

Where the library already wrote a card (sentence-transformers, peft), ettin-ft's section is added to it;
elsewhere (classifiers, SFT models, pretraining runs) the card is made with huggingface_hub's ModelCard. Either
way it loads with ``huggingface_hub.ModelCard.load`` and gives the base model, the ettin-ft version, the command
and configuration, the training data, the key hyperparameters, the metrics before and after (as metrics.json has
them) and the intended use.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version

from .config import dump_yaml

MODEL_FOLDERS = ("final", "adapter", "merged")  # what the recipes publish in a run folder
KEY_HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                       "num_train_epochs", "warmup_ratio", "warmup_steps", "lr_scheduler_type", "weight_decay", "seed",
                       "max_length", "batch_size", "seq_len", "objective", "loss", "teacher", "pooling", "lora", "lora_r",
                       "precision")


def ettin_ft_version() -> str:
    try:
        return version("ettin-ft")
    except PackageNotFoundError:
        return "source checkout"


def command_line() -> str:
    """How this process was started, as a shell line (``python -m ettin_ft.<module> ...`` or ``ettin-ft <command>
    ...`` for the command line, ``python script.py ...`` for a script)."""
    program = sys.argv[0]
    if program.startswith("ettin-ft "):  # the console command (ettin_ft/cli.py names itself so)
        return shlex.join([*program.split(" ", 1), *sys.argv[1:]])
    if program.endswith(".py") and os.sep + "ettin_ft" + os.sep in program:
        module = "ettin_ft." + program.split(os.sep + "ettin_ft" + os.sep)[-1][:-3].replace(os.sep, ".")
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    return shlex.join(["python", *sys.argv])


def metrics_table(before: dict, after: dict) -> list[str]:
    names = [name for name in after if isinstance(after[name], (int, float)) and not isinstance(after[name], bool)]
    lines = ["| metric | before | after |", "|---|---|---|"]
    # json.dumps: the values exactly as metrics.json has them
    lines += [f"| {name} | {json.dumps(before.get(name)) if name in before else '–'} | {json.dumps(after[name])} |"
              for name in names]
    return lines


def ettin_section(*, intended_use: str, base_model: str | None, data: str | None, rows: int | None, settings: dict,
                  before: dict, after: dict) -> str:
    hyperparameters = {k: v for k, v in settings.items() if k in KEY_HYPERPARAMETERS and v is not None}
    hyperparameters.update({k: v for k, v in (settings.get("training_arguments") or {}).items()
                            if k in KEY_HYPERPARAMETERS and v is not None})
    lines = [
        "## Made with ettin-ft", "",
        f"- **Intended use:** {intended_use}",
        f"- **Base model:** {base_model or 'built from scratch'}",
        f"- **Training data:** {data or 'see the configuration'}" + (f" ({rows:,} rows)" if rows is not None else ""),
        f"- **ettin-ft version:** {ettin_ft_version()}",
        f"- **Command:** `{command_line()}`",
        "- **Key hyperparameters:** " + (", ".join(f"{k} {v}" for k, v in hyperparameters.items()) or "the defaults"), "",
        "Held-out metrics before and after training (`metrics.json` in the run folder):", "",
        *metrics_table(before, after), "",
        "<details><summary>Full configuration (config.yaml)</summary>", "", "```yaml", dump_yaml(settings).rstrip(), "```",
        "", "</details>", "",
    ]
    return "\n".join(lines)


def write_model_cards(output_dir: str, *, intended_use: str, base_model: str | None, data: str | None,
                      rows: int | None, settings: dict, before: dict, after: dict, pipeline_tag: str | None = None,
                      library_name: str = "transformers") -> None:
    """README.md in each model folder of the run: the library's card with ettin-ft's section added, or a new one."""
    from huggingface_hub import ModelCard, ModelCardData

    section = ettin_section(intended_use=intended_use, base_model=base_model, data=data, rows=rows, settings=settings,
                            before=before, after=after)
    for name in MODEL_FOLDERS:
        folder = os.path.join(output_dir, name)
        if not os.path.isdir(folder):
            continue
        path = os.path.join(folder, "README.md")
        if os.path.isfile(path):
            card = ModelCard.load(path)
            card.data.tags = sorted(set(card.data.tags or []) | {"ettin-ft"})
            card.data.pipeline_tag = card.data.pipeline_tag or pipeline_tag
            card.text = card.text.rstrip() + "\n\n" + section
        else:
            data_card = ModelCardData(library_name=library_name, pipeline_tag=pipeline_tag, tags=["ettin-ft", "ettin"],
                                      base_model=base_model if base_model and not os.path.isdir(base_model) else None)
            card = ModelCard(f"---\n{data_card.to_yaml()}\n---\n\n# {os.path.basename(os.path.abspath(output_dir))}"
                             f" ({name})\n\n{section}")
        card.save(path)
