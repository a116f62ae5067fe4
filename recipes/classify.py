"""Plain transformers script: an Ettin encoder or decoder → a sequence classifier (Trainer).

    python recipes/classify.py --model runs/pretrain/final --data ../shared/data/classification/sst2/train.jsonl \
        --output-dir runs/plain-sst2
"""

from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

from _common import common_arguments, parser


def build_trainer(args) -> Trainer:
    rows = load_dataset("json", data_files=args.data, split="train")
    if isinstance(rows[0]["label"], str):  # label names: numbered in sorted order
        rows = rows.class_encode_column("label")
    columns = ["text"] if "text" in rows.column_names else ["premise", "hypothesis"]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = rows.map(lambda batch: tokenizer(*(batch[c] for c in columns), truncation=True, max_length=args.max_seq_length),
                     batched=True, remove_columns=[c for c in rows.column_names if c != "label"])
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(set(rows["label"])),
                                                               pad_token_id=tokenizer.pad_token_id)
    return Trainer(model=model, args=TrainingArguments(**common_arguments(args)), train_dataset=train,
                   processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer))


if __name__ == "__main__":
    args = parser(__doc__, learning_rate=1e-3).parse_args()
    trainer = build_trainer(args)
    trainer.train()
    trainer.save_model(f"{args.output_dir}/final")
