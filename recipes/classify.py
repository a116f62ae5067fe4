"""Plain transformers script: an Ettin encoder or decoder → a sequence classifier (Trainer).

What `python -m ettin_ft.classify --data FILE` does, written against transformers alone, to copy and edit: ModernBERT's
GLUE optimiser settings (AdamW betas 0.9/0.98, eps 1e-6, weight decay 0.1, linear decay after 6% warmup), encoders
mean-pooled, decoders read at their last real token. A decoder's prediction head starts from random weights
(transformers' default), as in ettin-ft (whose `--head-init lm` starts it from the LM head instead, for ablations).
Held-out rows are evaluated before and after training.

    python recipes/classify.py --model runs/pretrain/final --data ../shared/data/classification/sst2/train.jsonl \\
        --output-dir runs/plain-sst2
"""

import argparse
import json
import os

import torch
from datasets import load_dataset
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments, set_seed)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder or decoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help="labelled .jsonl: text (or premise, hypothesis) and label")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--held-out", type=int, default=100, help="rows kept out of training and evaluated")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_trainer(args) -> Trainer:
    set_seed(args.seed)  # before the model: its new classifier starts from the seed

    # 1. Data: label names numbered in sorted order; some rows held out for evaluation
    rows = load_dataset("json", data_files=args.data, split="train")
    if isinstance(rows[0]["label"], str):
        rows = rows.class_encode_column("label")
    columns = ["text"] if "text" in rows.column_names else ["premise", "hypothesis"]
    rows = rows.select_columns([*columns, "label"])
    split = rows.train_test_split(test_size=args.held_out, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train, held_out = (part.map(lambda batch: tokenizer(*(batch[c] for c in columns), truncation=True,
                                                        max_length=args.max_seq_length),
                                batched=True, remove_columns=columns) for part in (split["train"], split["test"]))

    # 2. Model: a new classifier on the pretrained model, with the label names (ModernBERT encoders: mean pooling)
    names = getattr(rows.features["label"], "names", None) or [str(i) for i in sorted(set(rows["label"]))]
    pooling = {"classifier_pooling": "mean"} if AutoConfig.from_pretrained(args.model).model_type == "modernbert" else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        pad_token_id=tokenizer.pad_token_id, **pooling)

    # 3. Training arguments (CPU unless a GPU is there) and trainer, with accuracy on the held-out rows
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6,
        lr_scheduler_type="linear", warmup_steps=0.06, logging_steps=args.logging_steps, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), seed=args.seed)
    return Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
                   data_collator=DataCollatorWithPadding(tokenizer),
                   compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())})


def main(argv=None) -> Trainer:
    args = parse_args(argv)
    trainer = build_trainer(args)

    # 4. Evaluate, train, evaluate again
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()

    # 5. Save the classifier (with its label names) and the metrics
    trainer.save_model(os.path.join(args.output_dir, "final"))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as handle:
        json.dump({"before": before, "after": after}, handle, indent=2)
    print(json.dumps({"before": before, "after": after}, indent=2))
    return trainer


if __name__ == "__main__":
    main()
