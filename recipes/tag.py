"""Plain transformers script: an Ettin encoder or decoder → a token tagger (NER) with the Trainer.

What `python -m ettin_ft.tag --data FILE` does, written the way transformers' own NER example (run_ner.py) does it, to
copy and edit: words come pre-split, the first sub-token of each word carries its tag, seqeval scores entities.
Encoders use transformers' ModernBertForTokenClassification; transformers has no tagger for the ModernBERT decoder,
so `import ettin_ft` registers ettin-ft's with AutoModelForTokenClassification (the one thing taken from ettin-ft).
Held-out sentences (or --eval-data) are evaluated before and after training.

    python recipes/tag.py --model runs/pretrain/final --data ../shared/data/token_classification/wnut17/train.jsonl \\
        --output-dir runs/plain-wnut17
"""

import argparse
import json
import os

import torch
from datasets import load_dataset
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer,
                          TrainingArguments, set_seed)

import ettin_ft  # noqa: F401  registers the ModernBERT decoder's token-classification head


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder or decoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help=".jsonl of {\"tokens\": [...], \"tags\": [...]} sentences")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--eval-data", help="evaluation .jsonl (default: --held-out sentences of --data)")
    parser.add_argument("--held-out", type=int, default=100, help="sentences kept out of training and evaluated")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_trainer(args) -> Trainer:
    set_seed(args.seed)  # before the model: its new classifier starts from the seed

    # 1. Data: the tag names (O first, the rest sorted); some sentences held out for evaluation
    rows = load_dataset("json", data_files=args.data, split="train")
    names = sorted({tag for tags in rows["tags"] for tag in tags}, key=lambda tag: (tag != "O", tag))
    label_of = {name: i for i, name in enumerate(names)}
    if args.eval_data:
        split = {"train": rows, "test": load_dataset("json", data_files=args.eval_data, split="train")}
    else:
        split = rows.train_test_split(test_size=args.held_out, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # Byte-level BPE marks a word's start by the space before it: each pre-split word gets one, as in running text
    # (transformers 5 ignores add_prefix_space=True for these tokenizers, so it is set on the pre-tokenizer).
    tokenizer.backend_tokenizer.pre_tokenizer.add_prefix_space = True

    def tokenize_and_align(batch):
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=args.max_seq_length)
        encoded["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            labels, previous = [], None
            for word in encoded.word_ids(i):  # the first sub-token of each word: its tag; the rest and specials: -100
                labels.append(-100 if word is None or word == previous else label_of[tags[word]])
                previous = word
            encoded["labels"].append(labels)
        return encoded

    train, held_out = (part.map(tokenize_and_align, batched=True, remove_columns=part.column_names)
                       for part in (split["train"], split["test"]))

    # 2. Model: a new token classifier on the pretrained model, with the tag names
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label_of,
        pad_token_id=tokenizer.pad_token_id)

    def compute_metrics(prediction):
        gold, predicted = [], []
        for guesses, labels in zip(prediction.predictions.argmax(-1), prediction.label_ids):
            kept = labels != -100
            gold.append([names[i] for i in labels[kept]])
            predicted.append([names[i] for i in guesses[kept]])
        return {"f1": f1_score(gold, predicted, zero_division=0), "precision": precision_score(gold, predicted, zero_division=0),
                "recall": recall_score(gold, predicted, zero_division=0), "accuracy": accuracy_score(gold, predicted)}

    # 3. Training arguments (transformers' defaults, as run_ner.py; CPU unless a GPU is there) and trainer
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, logging_steps=args.logging_steps, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), seed=args.seed)
    return Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
                   data_collator=DataCollatorForTokenClassification(tokenizer), compute_metrics=compute_metrics)


def main(argv=None) -> Trainer:
    args = parse_args(argv)
    trainer = build_trainer(args)

    # 4. Evaluate, train, evaluate again
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()

    # 5. Save the tagger (with its tag names) and the metrics
    trainer.save_model(os.path.join(args.output_dir, "final"))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as handle:
        json.dump({"before": before, "after": after}, handle, indent=2)
    print(json.dumps({"before": before, "after": after}, indent=2))
    return trainer


if __name__ == "__main__":
    main()
