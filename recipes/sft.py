"""Plain trl script: an Ettin decoder → a ChatML chat model (SFTTrainer, assistant-only loss, optional LoRA).

Ettin decoders ship without a chat template: the ChatML tokens are added and the embeddings resized.
    python recipes/sft.py --model runs/pretrain-decoder/final --data ../shared/data/sft/hh_rlhf_helpful_base_test.jsonl \
        --output-dir runs/plain-sft [--lora]
"""

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from _common import common_arguments, parser
from ettin_ft.tokenizer import CHAT_TOKENS, CHATML_TEMPLATE


def build_trainer(args, callbacks=()) -> SFTTrainer:
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    tokenizer.chat_template = CHATML_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    model.resize_token_embeddings(len(tokenizer))
    model.config.use_cache = False
    chats = load_dataset("json", data_files=args.data, split="train").select_columns(["messages"])
    peft_config = LoraConfig(r=32, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "Wo", "Wi"]) if args.lora else None
    training = SFTConfig(**common_arguments(args), max_length=args.max_seq_length, packing=args.packing,
                         assistant_only_loss=True, eos_token="<|im_end|>", gradient_checkpointing=False,
                         bf16=False, include_num_input_tokens_seen="non_padding")
    return SFTTrainer(model=model, args=training, train_dataset=chats, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=list(callbacks))


def arguments(argv=None):
    script = parser(__doc__, batch_size=2, learning_rate=2e-5, max_seq_length=512)
    script.add_argument("--lora", action="store_true")
    script.add_argument("--packing", action="store_true")
    return script.parse_args(argv)


if __name__ == "__main__":
    args = arguments()
    trainer = build_trainer(args)
    trainer.train()
    trainer.save_model(f"{args.output_dir}/final")
