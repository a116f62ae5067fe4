"""Plain sentence-transformers script: an Ettin encoder → a cross-encoder reranker (binary cross-entropy).

What `python -m ettin_ft.rerank` does, written against the library alone, to copy and edit. Training rows are
(query, passage, label); (query, positive) pairs get hard negatives mined with an embedding model
(sentence-transformers' mine_hard_negatives). Held-out rows are evaluated before and after training: each
held-out query's held-out passages reranked.

    python recipes/rerank.py --model runs/pretrain/final --data labelled.jsonl --output-dir runs/plain-rerank
"""

import argparse
import json
import os
import random
from collections import Counter

import torch
from datasets import load_dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments, losses
from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
from sentence_transformers.util import mine_hard_negatives
from transformers import set_seed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help="(query, passage, label) rows or (query, positive) pairs as .jsonl")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--held-out", type=int, default=100, help="rows kept out of training and evaluated (0: none)")
    parser.add_argument("--num-negatives", type=int, default=5, help="hard negatives per query (also BCE's pos_weight)")
    parser.add_argument("--mining-model", default="sentence-transformers/static-retrieval-mrl-en-v1",
                        help="embedding model that mines hard negatives for (query, positive) pairs")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_trainer(args) -> CrossEncoderTrainer:
    set_seed(args.seed)  # before the model: its new classifier starts from the seed

    # 1. Data: labelled (query, passage, label) rows, or (query, positive) pairs with mined hard negatives
    rows = load_dataset("json", data_files=args.data, split="train")
    labelled = {"query", "passage", "label"} <= set(rows.column_names)
    rows = rows.select_columns(["query", "passage", "label"] if labelled else ["query", "positive"])
    held_out = None
    if args.held_out and labelled:  # whole queries, each with its labelled passages, until --held-out rows
        sizes, chosen, count = Counter(rows["query"]), set(), 0
        for query in random.Random(0).sample(sorted(sizes), len(sizes)):
            if count >= args.held_out:
                break
            chosen.add(query)
            count += sizes[query]
        rows, held_out = rows.filter(lambda row: row["query"] not in chosen), rows.filter(lambda row: row["query"] in chosen)
    elif args.held_out:
        split = rows.train_test_split(test_size=args.held_out, seed=0)
        rows, held_out = split["train"], split["test"]
    if not labelled:
        rows = mine_hard_negatives(rows, SentenceTransformer(args.mining_model), num_negatives=args.num_negatives,
                                   output_format="labeled-pair")
        if held_out is not None:  # each held-out pair: its positive among the other pairs' positives
            held_out = held_out.map(lambda row: {"passage": row["positive"], "label": 1}, remove_columns=["positive"])

    # 2. Model: the encoder with a one-output classifier
    model = CrossEncoder(args.model, num_labels=1, max_length=args.max_seq_length)

    # 3. Loss: binary cross-entropy, positives weighted by the negatives per query
    loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(args.num_negatives)))

    # 4. Evaluator: each held-out query with a positive reranks every held-out passage
    evaluator = None
    if held_out is not None:
        passages = list(dict.fromkeys(held_out["passage"]))
        positives = {}
        for row in held_out:
            if row["label"] > 0:
                positives.setdefault(row["query"], []).append(row["passage"])
        evaluator = CrossEncoderRerankingEvaluator(
            [{"query": query, "positive": found, "documents": passages} for query, found in positives.items()],
            at_k=10, always_rerank_positives=False, name="held_out")

    # 5. Training arguments (CPU unless a GPU is there) and trainer
    training_args = CrossEncoderTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=0, logging_steps=args.logging_steps, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), seed=args.seed)
    return CrossEncoderTrainer(model=model, args=training_args, train_dataset=rows, loss=loss, evaluator=evaluator)


def main(argv=None) -> CrossEncoderTrainer:
    args = parse_args(argv)
    trainer = build_trainer(args)

    # 6. Evaluate, train, evaluate again
    before = trainer.evaluate() if trainer.evaluator else {}
    trainer.train()
    after = trainer.evaluate() if trainer.evaluator else {}

    # 7. Save the model and the metrics
    trainer.model.save_pretrained(os.path.join(args.output_dir, "final"))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as handle:
        json.dump({"before": before, "after": after}, handle, indent=2)
    print(json.dumps({"before": before, "after": after}, indent=2))
    return trainer


if __name__ == "__main__":
    main()
