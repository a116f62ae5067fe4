"""LoRA for every recipe that trains adapters (sft, classify): one argument set, whose unset values come from
configs/lora.yaml (the one home of the release's LoRA settings), and peft's LoraConfig from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import shipped_config
from .models import lora_target_modules

SETTINGS = ("lora_r", "lora_alpha", "lora_dropout")


@dataclass
class LoraArguments:
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft) instead of every weight (classify: and the classifier head)"})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank (default: configs/lora.yaml, 32)"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: configs/lora.yaml, 16)"})
    lora_dropout: float | None = field(default=None, metadata={"help": "LoRA dropout (default: configs/lora.yaml, 0.05)"})
    lora_target_modules: str | None = field(default=None, metadata={"help": "comma-separated module names to adapt (default: Ettin's attention and MLP projections; peft's choice for other models)"})

    def __post_init__(self):
        super().__post_init__()  # the recipe's checks, which refuse LoRA settings without --lora
        if self.lora:
            release = shipped_config("lora")
            for name in SETTINGS:
                if getattr(self, name) is None:
                    setattr(self, name, release[name])


def peft_config(config: LoraArguments, located, task_type: str, modules_to_save: list[str] | None = None):
    """peft's LoraConfig for ``config``'s settings on the located model."""
    from peft import LoraConfig

    targets = ([m.strip() for m in config.lora_target_modules.split(",") if m.strip()] if config.lora_target_modules
               else lora_target_modules(located))
    return LoraConfig(task_type=task_type, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets, modules_to_save=modules_to_save)
