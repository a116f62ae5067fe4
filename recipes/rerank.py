"""Plain sentence-transformers script: an Ettin encoder → a cross-encoder reranker (binary cross-entropy).

Training rows are (query, passage, label); (query, positive) pairs get BM25 hard negatives mined offline with
ettin_ft's small BM25 (sentence-transformers' mine_hard_negatives needs an embedding model).
    python recipes/rerank.py --model runs/pretrain/final --data pairs.jsonl --output-dir runs/plain-rerank
"""

import torch
from datasets import load_dataset
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments, losses

from _common import common_arguments, parser
from ettin_ft.rerank import bm25_hard_negatives

NEGATIVES = 3


def build_trainer(args) -> CrossEncoderTrainer:
    rows = load_dataset("json", data_files=args.data, split="train")
    if "label" not in rows.column_names:
        rows = bm25_hard_negatives(rows.select_columns(["query", "positive"]), NEGATIVES)
    model = CrossEncoder(args.model, num_labels=1, max_length=args.max_seq_length)
    return CrossEncoderTrainer(model=model, train_dataset=rows, args=CrossEncoderTrainingArguments(**common_arguments(args)),
                               loss=losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(NEGATIVES))))


if __name__ == "__main__":
    args = parser(__doc__, learning_rate=1e-3).parse_args()
    trainer = build_trainer(args)
    trainer.train()
    trainer.model.save_pretrained(f"{args.output_dir}/final")
