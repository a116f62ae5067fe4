"""Generate with an Ettin decoder: plain text or chat, greedy or sampled; LoRA adapter folders load too.

    python -m ettin_ft.generate --model runs/sft/final --prompt "Where was Ada Lovelace born?"
    python -m ettin_ft.generate --model 150m --prompt "The capital of France is" --chat no --do-sample

    from ettin_ft.generate import generate, load_generator
    model, tokenizer = load_generator("runs/lora/final")
    print(generate(model, tokenizer, [{"role": "user", "content": "Hello!"}]))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .models import load_model, load_tokenizer, locate_model
from .process_state import transformers_progress_bars
from .runtime import choose_runtime
from .config import parse_config, refuse_inapplicable
from .errors import EttinError, cli_entry


@dataclass
class GenerateConfig:
    # sampling settings do nothing in greedy decoding: set alone, they are refused
    REQUIRES: ClassVar[dict[str, str]] = {"temperature": "do_sample", "top_p": "do_sample", "seed": "do_sample"}

    model: str = field(default="150m", metadata={"help": "Ettin decoder: short name, hub id[@revision], local folder, or a LoRA adapter folder"})
    prompt: str = field(default="Hello!", metadata={"help": "the prompt (a user message in chat mode)"})
    system: str | None = field(default=None, metadata={"help": "system message (chat mode)"})
    chat: str = field(default="auto", metadata={"help": "auto (chat when the tokenizer has a chat template), yes or no"})
    max_new_tokens: int = field(default=128, metadata={"help": "tokens to generate"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling threshold"})
    seed: int = field(default=0, metadata={"help": "random seed for sampling"})

    def __post_init__(self):
        refuse_inapplicable(self)
        if self.chat not in ("auto", "yes", "no"):
            raise EttinError(f"--chat {self.chat!r}: expected auto, yes or no")
        if self.system and self.chat == "no":
            raise EttinError("--system is a chat message; it applies with --chat auto or yes, not --chat no")


def load_generator(name: str, device: str | None = None):
    """(model, tokenizer) from a decoder folder/name, or from a LoRA adapter folder over its base model."""
    from transformers import AutoTokenizer

    adapter_config = os.path.join(name, "adapter_config.json")
    if os.path.isfile(adapter_config):
        from peft import PeftModel

        with open(adapter_config, encoding="utf-8") as handle:
            base = json.load(handle).get("base_model_name_or_path")
        if not base:
            raise EttinError(f"{adapter_config} names no base_model_name_or_path; cannot load the adapter's base model")
        model = load_model(base, arch="decoder")
        tokenizer = AutoTokenizer.from_pretrained(name)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # the adapter's chat tokens
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        model = PeftModel.from_pretrained(model, name)
    else:
        located = locate_model(name, ("decoder",), hint=" (for an encoder use python -m ettin_ft.fill_mask)")
        model, tokenizer = load_model(located), load_tokenizer(located)
    runtime = choose_runtime(device)
    return model.to(runtime.device).eval(), tokenizer


def generate(model, tokenizer, prompt: str | list[dict], *, chat: bool | None = None, max_new_tokens: int = 128,
             do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9) -> str:
    """The model's continuation of ``prompt`` (a string, or chat messages), without the prompt.

    Chat prompts go through the chat template with the generation prompt; plain prompts get BOS first,
    as the decoders were trained.
    """
    if chat is None:
        chat = isinstance(prompt, list) or tokenizer.chat_template is not None
    if chat:
        if tokenizer.chat_template is None:
            raise EttinError("this tokenizer has no chat template; generate with chat off, or fine-tune with ettin_ft.sft first")
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id, use_cache=True, **sampling)
    return tokenizer.decode(output[0, len(ids):], skip_special_tokens=True)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, _ = parse_config(GenerateConfig, argv=argv, prog="python -m ettin_ft.generate",
                             description="Generate text with an Ettin decoder (or a fine-tuned / LoRA folder).")
    with transformers_progress_bars(shown=False):  # the answer is the output
        model, tokenizer = load_generator(config.model)
    torch.manual_seed(config.seed)
    prompt: str | list[dict] = config.prompt
    if config.system:
        prompt = [{"role": "system", "content": config.system}, {"role": "user", "content": config.prompt}]
    print(generate(model, tokenizer, prompt, chat={"auto": None, "yes": True, "no": False}[config.chat],
                   max_new_tokens=config.max_new_tokens, do_sample=config.do_sample,
                   temperature=config.temperature, top_p=config.top_p))


if __name__ == "__main__":
    main()
