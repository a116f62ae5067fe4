"""Plain trl script: an Ettin decoder → a ChatML chat model (SFTTrainer, assistant-only loss, optional LoRA).

What `python -m ettin_ft.sft` does with conversations, written against trl alone, to copy and edit. Ettin decoders
ship without a chat template: the ChatML tokens are added and the embeddings resized. Held-out conversations
give the loss before and after training.

    python recipes/sft.py --model runs/pretrain-decoder/final --data ../shared/data/sft/hh_rlhf_helpful_base_test.jsonl \\
        --output-dir runs/plain-sft [--lora]
"""

import argparse
import functools
import json
import os

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

# ChatML; BOS opens every conversation as in decoder pretraining; {% generation %} marks what the loss trains on.
CHATML = ("{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
          "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
          "{% endgeneration %}{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="decoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help="conversations as .jsonl: a 'messages' list of {role, content}")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--held-out", type=int, default=100, help="conversations kept out of training and evaluated (0: none)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (r 32, alpha 16) instead of every weight")
    parser.add_argument("--no-packing", dest="packing", action="store_false", help="one conversation per row")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 2e-5, with --lora 2e-4")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def route_fused_loss_through_prediction_head(model) -> None:
    """trl 1.16's fused loss projects the backbone's output straight through the output embeddings, skipping
    ModernBertDecoder's prediction head (dense, GELU, LayerNorm): training would optimise another model than the
    one that generates. A hook passes the backbone's output through the head first, on the fused path only."""
    fused_forward = model.forward

    def through_head(module, inputs, output):
        output["last_hidden_state"] = model.lm_head(output["last_hidden_state"])
        return output

    @functools.wraps(fused_forward)
    def forward(*args, fused_lm_head=False, **kwargs):
        if not fused_lm_head:
            return fused_forward(*args, **kwargs)
        hook = model.model.register_forward_hook(through_head)
        try:
            return fused_forward(*args, fused_lm_head=True, **kwargs)
        finally:
            hook.remove()

    model.forward = forward


def build_trainer(args, callbacks=()) -> SFTTrainer:
    set_seed(args.seed)

    # 1. Model and tokenizer, with ChatML added (new embedding rows drawn around the mean of the old ones)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    if tokenizer.chat_template is None:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tokenizer.chat_template, tokenizer.eos_token = CHATML, "<|im_end|>"
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.use_cache = False  # packed rows are kept apart by a mask built only without a cache

    # 2. Data: conversations, some held out for evaluation
    chats = load_dataset("json", data_files=args.data, split="train").select_columns(["messages"])
    held_out = None
    if args.held_out:
        split = chats.train_test_split(test_size=args.held_out, seed=0)
        chats, held_out = split["train"], split["test"]

    # 3. LoRA on the attention and MLP projections, if asked for
    peft_config = LoraConfig(r=32, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "Wo", "Wi"]) if args.lora else None

    # 4. Training arguments (CPU unless a GPU is there): the loss on the assistant's tokens only, packed rows
    training_args = SFTConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate or (2e-4 if args.lora else 2e-5), warmup_steps=0,
        logging_steps=args.logging_steps, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), seed=args.seed, max_length=args.max_seq_length, packing=args.packing,
        assistant_only_loss=True, eos_token="<|im_end|>", gradient_checkpointing=True)

    # 5. Trainer, with the fused loss routed through the decoder's prediction head
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=chats, eval_dataset=held_out,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks))
    route_fused_loss_through_prediction_head(trainer.model.get_base_model() if args.lora else trainer.model)
    return trainer


def main(argv=None) -> SFTTrainer:
    args = parse_args(argv)
    trainer = build_trainer(args)

    # 6. Evaluate, train, evaluate again
    before = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainer.train()
    after = trainer.evaluate() if trainer.eval_dataset is not None else {}

    # 7. Save the model (the adapter with --lora) and the metrics
    trainer.model.config.use_cache = True
    trainer.save_model(os.path.join(args.output_dir, "final"))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as handle:
        json.dump({"before": before, "after": after}, handle, indent=2)
    print(json.dumps({"before": before, "after": after}, indent=2))
    return trainer


if __name__ == "__main__":
    main()
