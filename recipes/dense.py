"""Plain sentence-transformers script: an Ettin encoder → a dense embedder (mean pooling, CachedMNRL).

What `python -m ettin_ft.dense` does, written against the library alone, to copy and edit. Held-out pairs are
evaluated before and after training as a retrieval task (each held-out query against every held-out passage).

    python recipes/dense.py --model runs/pretrain/final --data pairs.jsonl --output-dir runs/plain-dense
"""

import argparse
import json
import os

import torch
from datasets import load_dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer import losses, modules
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from transformers import set_seed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help="(query, positive[, negative]) rows as .jsonl")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--held-out", type=int, default=100, help="pairs kept out of training and evaluated (0: none)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_trainer(args) -> SentenceTransformerTrainer:
    set_seed(args.seed)

    # 1. Data: (query, positive[, negative]) rows; the other passages of a batch are each query's negatives too
    pairs = load_dataset("json", data_files=args.data, split="train")
    pairs = pairs.select_columns([c for c in ("query", "positive", "negative") if c in pairs.column_names])
    held_out = None
    if args.held_out:
        split = pairs.train_test_split(test_size=args.held_out, seed=0)
        pairs, held_out = split["train"], split["test"]

    # 2. Model: the encoder's token embeddings, mean-pooled
    transformer = modules.Transformer(args.model, max_seq_length=args.max_seq_length)
    model = SentenceTransformer(modules=[transformer, modules.Pooling(transformer.get_embedding_dimension(), "mean")])

    # 3. Loss: in-batch negatives, computed in mini-batches so large batches fit in memory
    loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=16)

    # 4. Evaluator: each held-out query against every held-out passage (negatives too), its positive the relevant one
    evaluator = None
    if held_out is not None:
        passages = list(dict.fromkeys(text for row in held_out for text in (row["positive"], row.get("negative")) if text))
        evaluator = InformationRetrievalEvaluator(
            queries={f"q{i}": query for i, query in enumerate(held_out["query"])},
            corpus={f"d{i}": passage for i, passage in enumerate(passages)},
            relevant_docs={f"q{i}": {f"d{passages.index(positive)}"} for i, positive in enumerate(held_out["positive"])},
            name="held_out")

    # 5. Training arguments (CPU unless a GPU is there; no duplicate texts in a batch) and trainer
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=0, logging_steps=args.logging_steps, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), seed=args.seed, batch_sampler="no_duplicates")
    return SentenceTransformerTrainer(model=model, args=training_args, train_dataset=pairs, loss=loss, evaluator=evaluator)


def main(argv=None) -> SentenceTransformerTrainer:
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
