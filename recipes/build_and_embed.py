"""Workflow on the public API: pretrain a small Ettin encoder offline, then turn it into a dense retriever.

1. Pretrain a tiny encoder (MLM) on the public-domain text in ../shared/data/pretrain.
2. Fine-tune it as a sentence-transformers embedder on XQuAD question → paragraph pairs.
3. Report NDCG@10 / MRR@10 / Recall@100 on SciFact before and after.

    python recipes/build_and_embed.py --output-dir runs/example
Copy it and change the size, the data or the recipe (train_sparse / train_colbert / train_rerank work the same way).
"""

import argparse
import json
import os

import ettin_ft
import ettin_ft.dense

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--output-dir", default="runs/example")
parser.add_argument("--size", default="tiny")
parser.add_argument("--pretrain-steps", type=int, default=300)
parser.add_argument("--dense-steps", type=int, default=100)
parser.add_argument("--pretrain-data", default=os.path.join(SHARED, "pretrain"))
parser.add_argument("--pairs", default=os.path.join(SHARED, "retrieval_pairs", "xquad_en.jsonl"), help="(query, positive) rows")
parser.add_argument("--eval-beir", default=os.path.join(SHARED, "retrieval_eval", "scifact"))
args = parser.parse_args()

encoder = ettin_ft.run_pretraining(ettin_ft.PretrainConfig(
    arch="encoder", size=args.size, data=args.pretrain_data, max_steps=args.pretrain_steps,
    output_dir=os.path.join(args.output_dir, "encoder"), seq_len=256, vocab_size=8192, save_every=0, eval_every=0,
    report_to="none",
))
# The release settings (configs/dense.yaml), as the command line resolves them, with this run's changes
config, training_args = ettin_ft.dense.release(
    os.path.join(args.output_dir, "dense"), model=encoder, data=args.pairs, held_out=100, eval_beir=args.eval_beir,
    max_steps=args.dense_steps, per_device_train_batch_size=32, learning_rate=1e-4, save_strategy="no")
ettin_ft.train_dense(config, training_args)
print(json.dumps(json.load(open(os.path.join(args.output_dir, "dense", "metrics.json"))), indent=2))
