"""Plain sentence-transformers script: an Ettin encoder → a cross-encoder reranker distilled from a teacher's scores.

What `python -m ettin_ft.rerank --loss mse` does, written against the library alone, to copy and edit; the recipe of
the released Ettin rerankers (pointwise MSE on a teacher's raw scores, a [CLS]-pooled head; configs/rerank/ettin-
reranker.yaml has their learning rates and batches). Training rows are {"query", "positive", "negatives": [...],
"scores": [...]} (the positive's score first), as `python -m ettin_ft.mine --teacher` writes them; without
"scores", --teacher (a cross-encoder) scores every (query, candidate) pair first. Held-out rows are evaluated before
and after training: each held-out query reranks every held-out passage.

    python recipes/distill_reranker.py --model runs/pretrain/final --data scored.jsonl --output-dir runs/plain-distil
    python recipes/distill_reranker.py --model runs/pretrain/final --data mined.jsonl --teacher runs/reranker/final ...
"""

import argparse
import json
import os

import torch
from datasets import Dataset, load_dataset
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments, losses
from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
from transformers import set_seed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help=".jsonl rows: query, positive, negatives and (without --teacher) scores")
    parser.add_argument("--teacher", default=None, help="a cross-encoder that scores the rows' pairs (rows without scores)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--held-out", type=int, default=100, help="rows kept out of training and evaluated (0: none)")
    parser.add_argument("--pooling", default="cls", choices=["cls", "mean"], help="the head's pooling")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_trainer(args) -> CrossEncoderTrainer:
    set_seed(args.seed)  # before the model: its new head starts from the seed

    # 1. Data: held-out rows first (at most a tenth), then the teacher's score of every training candidate
    rows = load_dataset("json", data_files=args.data, split="train")
    held_out = None
    if args.held_out:
        split = rows.train_test_split(test_size=min(args.held_out, len(rows) // 10), seed=0)
        rows, held_out = split["train"], split["test"]
    if args.teacher:
        teacher = CrossEncoder(args.teacher)
        pairs = [(row["query"], doc) for row in rows for doc in [row["positive"], *row["negatives"]]]
        raw = teacher.predict(pairs, activation_fn=torch.nn.Identity()).tolist()  # raw scores (logits)
        found, start = [], 0
        for row in rows:
            found.append(raw[start:start + 1 + len(row["negatives"])])
            start += 1 + len(row["negatives"])
        rows = rows.remove_columns([c for c in ("scores",) if c in rows.column_names]).add_column("scores", found)
    # pointwise (query, passage, score) rows, one per candidate
    flat = {"query": [], "passage": [], "score": []}
    for row in rows:
        for passage, score in zip([row["positive"], *row["negatives"]], row["scores"]):
            flat["query"].append(row["query"]), flat["passage"].append(passage), flat["score"].append(score)
    train = Dataset.from_dict(flat)

    # 2. Model: the encoder with a one-output head on [CLS] (or the mean), giving raw scores like its teacher
    model = CrossEncoder(args.model, num_labels=1, max_length=args.max_seq_length, activation_fn=torch.nn.Identity(),
                         config_kwargs={"classifier_pooling": args.pooling})

    # 3. Loss: mean squared error between the student's and the teacher's scores
    loss = losses.MSELoss(model)

    # 4. Evaluator: each held-out query reranks every held-out passage, its own positive the relevant one
    evaluator = None
    if held_out is not None:
        passages = list(dict.fromkeys(p for row in held_out for p in [row["positive"], *row["negatives"]]))
        evaluator = CrossEncoderRerankingEvaluator(
            [{"query": row["query"], "positive": [row["positive"]], "documents": passages} for row in held_out],
            at_k=10, always_rerank_positives=False, name="held_out")

    # 5. Training arguments (CPU unless a GPU is there) and trainer
    training_args = CrossEncoderTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=0, logging_steps=args.logging_steps, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), seed=args.seed)
    return CrossEncoderTrainer(model=model, args=training_args, train_dataset=train, loss=loss, evaluator=evaluator)


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
