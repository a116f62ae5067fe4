"""Supervised fine-tuning: an Ettin decoder → a chat model with trl's SFTTrainer, fully or with LoRA.

Defaults, the Ettin release's settings and data: configs/sft.yaml, with configs/lora.yaml over it for
--lora. Ettin decoders ship without a chat template: ChatML is added offline and the embeddings
resized; BOS ([CLS]) stays first in every sequence. Loss on assistant tokens only unless --all-tokens.

    python -m ettin_ft.sft --model 150m --output-dir runs/sft-150m
    python -m ettin_ft.sft --model 150m --lora --merge --output-dir runs/lora-150m
    python -m ettin_ft.sft --model runs/pretrain/final --data ../shared/data/sft/hh_rlhf_helpful_base_test.jsonl \
        --output-dir runs/sft
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

from .compat import route_fused_loss_through_prediction_head
from .data.sft import checked_split, data_format, with_bos
from .config import early_value, shipped_config
from .errors import EttinError, cli_entry
from .lora import LoraArguments, peft_config
from .models import load_checked
from .evaluation import language_model_metrics
from .tokenizer import add_chat_support
from .recipe import (RecipeConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe,
                     release_settings)
from .recipe_data import load_training_data, split_held_out
from .run_folder import RunFolder, SkipLastCheckpoint, publish_from_main, publish_trained, write_results
from .runtime import model_kwargs

DEFAULTS, RELEASE_DATA = release_settings("sft")
LORA_DEFAULTS = shipped_config("lora")


@dataclass
class SftRecipeConfig(LoraArguments, RecipeConfig):
    INTENDED_USE = "chat: generate assistant replies with its chat template (transformers or trl)"
    PIPELINE_TAG = "text-generation"
    RELEASE = "sft"
    REQUIRES = {name: "lora" for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge",
                                          "load_in_4bit")}

    model: str | None = field(default=None, metadata={"help": "Ettin decoder: short name (150m), hub id[@revision] or local folder"})
    held_out: int | None = field(default=None, metadata={"help": "training rows held out for the held-out loss (and the sampled answers)"})
    all_tokens: bool = field(default=False, metadata={"help": "train on every token, not only the assistant's (or the completion's)"})
    merge: bool = field(default=False, metadata={"help": "with --lora, also write the merged full model to DIR/merged"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base model in 4 bits (CUDA and the bnb extra)"})
    eval_generations: int = field(default=32, metadata={"help": "held-out conversations answered greedily before and after (exact match, samples)"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens generated per held-out answer"})


def release_defaults(argv: list[str] | None) -> dict:
    """configs/sft.yaml's defaults, with configs/lora.yaml over them (still below --config and flags) for --lora."""
    lora = str(early_value(argv, "lora", nargs="?", const="true")).lower() in ("true", "1", "yes")
    return {**DEFAULTS, **LORA_DEFAULTS} if lora else DEFAULTS


def locate_decoder(config: SftRecipeConfig):
    return locate_base_model(config, "sft", allowed=("decoder",))


def build_chat_model(config: SftRecipeConfig, runtime, located=None):
    """The decoder and its tokenizer, with ChatML added."""
    ref = (located or locate_decoder(config)).ref
    kwargs = model_kwargs(runtime)
    if config.load_in_4bit:
        if runtime.device.type != "cuda":
            raise EttinError("--load-in-4bit (QLoRA) needs a CUDA GPU; train LoRA in full precision on CPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise EttinError("--load-in-4bit needs bitsandbytes: pip install 'ettin-ft[bnb]'")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = load_checked(AutoModelForCausalLM, ref, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)
    add_chat_support(model, tokenizer)
    # Packed rows restart their position ids; the mask that keeps them apart is built only without a cache.
    model.config.use_cache = False
    return model, tokenizer


def load_sft_data(config: SftRecipeConfig):
    """(train, held-out, format): checked conversations, prompt/completion pairs or plain text."""
    train, held_out = split_held_out(config, load_training_data(config, [], optional=None, default=RELEASE_DATA))
    where = config.data or RELEASE_DATA[0]
    fmt = data_format(train, where)
    return checked_split(train, fmt, where), checked_split(held_out, fmt, where), fmt


def build_trainer(config: SftRecipeConfig, args: SFTConfig, model, tokenizer, train, held_out, fmt: str,
                  peft_config=None) -> SFTTrainer:
    """trl's SFTTrainer with the loss mask the data format calls for (on a copy of ``args``)."""
    args = dataclasses.replace(
        args, assistant_only_loss=fmt == "conversational" and not config.all_tokens,
        completion_only_loss=fmt == "prompt-completion" and not config.all_tokens,
        max_length=config.max_seq_length or args.max_length, eval_strategy=args.eval_strategy if held_out else "no")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[SkipLastCheckpoint()])
    route_fused_loss_through_prediction_head(trainer)
    return trainer


def train_sft(config: SftRecipeConfig, args: SFTConfig, runtime=None, dry_run=False):
    """Fine-tune a decoder as ``config`` says; returns the trained model (PeftModel with --lora, merged with --merge)."""
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    located = locate_decoder(config)
    train, held_out, fmt = load_sft_data(config)
    model, tokenizer = build_chat_model(config, runtime, located)  # after every input check
    train, held_out = (with_bos(split, fmt, tokenizer.bos_token) for split in (train, held_out))
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    trainer = build_trainer(config, args, model, tokenizer, train, held_out, fmt,
                            peft_config=peft_config(config, located, "CAUSAL_LM") if config.lora else None)
    generations = config.eval_generations if fmt == "conversational" else 0
    with RunFolder(args.output_dir).tidy_on_failure():
        before, answers_before = language_model_metrics(trainer, held_out, generations, config.max_new_tokens)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after, answers_after = language_model_metrics(trainer, held_out, generations, config.max_new_tokens)
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.config.use_cache = True  # off for packed training only
        publish_trained(trainer)  # the adapter with --lora
        if config.merge:
            model = model.merge_and_unload()
            model.config.use_cache = True
            publish_from_main(model, tokenizer, args.output_dir, "merged")
        samples = [{"prompt": b["prompt"], "reference": b["reference"], "answer_before": b["answer"],
                    "answer_after": a["answer"]} for b, a in zip(answers_before, answers_after)][:5]
        write_results(args.output_dir, config, args, before, after, trainer, extra={"samples": samples})
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/sft.yaml) as (SftRecipeConfig, SFTConfig), as the command
    line resolves them; ``overrides`` name fields of either: ``train_sft(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(SftRecipeConfig, SFTConfig, release_defaults(["--lora", "true"] if overrides.get("lora") else []), output_dir, overrides, "ettin_ft.sft")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        SftRecipeConfig, SFTConfig, release_defaults(argv), argv, "python -m ettin_ft.sft",
        "Fine-tune an Ettin decoder into a chat model with trl (any SFTConfig field is a flag).")
    train_sft(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
