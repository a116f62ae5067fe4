"""Plain sentence-transformers script: an Ettin encoder → a ColBERT multi-vector retriever (contrastive loss).

What `python -m ettin_ft.colbert` does with (query, positive[, negative]) rows, written against sentence-transformers'
MultiVectorEncoder alone, to copy and edit. The model is PyLate's ColBERT, as the Ettin ColBERTs were: [Q]/[D] prefix
tokens, queries padded to their length with mask tokens, punctuation left out of documents. Held-out pairs are
evaluated before and after training as a retrieval task (each held-out query against every held-out passage, by
exact MaxSim).

    python recipes/colbert.py --model runs/pretrain/final --data pairs.jsonl --output-dir runs/plain-colbert
"""

import argparse
import json
import os
import string

import torch
from datasets import load_dataset
from sentence_transformers import MultiVectorEncoder, MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorInformationRetrievalEvaluator
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
from transformers import set_seed

PREFIXES = {"query": "[Q] ", "document": "[D] "}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help="(query, positive[, negative]) rows as .jsonl")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--held-out", type=int, default=100, help="pairs kept out of training and evaluated (0: none)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--document-length", type=int, default=180)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_trainer(args) -> MultiVectorEncoderTrainer:
    set_seed(args.seed)  # before the model: its new projection layer starts from the seed

    # 1. Data: (query, positive[, negative]) rows; the other passages of a batch are each query's negatives too
    pairs = load_dataset("json", data_files=args.data, split="train")
    pairs = pairs.select_columns([c for c in ("query", "positive", "negative") if c in pairs.column_names])
    held_out = None
    if args.held_out:
        split = pairs.train_test_split(test_size=args.held_out, seed=0)
        pairs, held_out = split["train"], split["test"]

    # 2. Model: the encoder's token embeddings projected to 128 dimensions, one vector per token; [Q] and [D] join
    #    the vocabulary, queries are padded to --query-length with mask tokens the encoder does not attend to
    transformer = Transformer(args.model, document_length=args.document_length,
                              query_expansion={"strategy": "fixed", "length": args.query_length})
    transformer.auto_model.resize_token_embeddings(len(transformer.tokenizer))
    transformer.tokenizer.add_tokens(list(PREFIXES.values()))
    transformer.auto_model.resize_token_embeddings(len(transformer.tokenizer))
    projection = Dense(transformer.get_embedding_dimension(), 128, bias=False, activation_function=torch.nn.Identity(),
                       module_input_name="token_embeddings")
    model = MultiVectorEncoder(modules=[transformer, projection, MultiVectorMask(skiplist_words=list(string.punctuation)),
                                        Normalize(module_input_name="token_embeddings")], prompts=PREFIXES)

    # 3. Loss: contrastive over MaxSim scores
    loss = MultiVectorMultipleNegativesRankingLoss(model)

    # 4. Evaluator: each held-out query against every held-out passage (negatives too), its positive the relevant one
    evaluator = None
    if held_out is not None:
        passages = list(dict.fromkeys(text for row in held_out for text in (row["positive"], row.get("negative")) if text))
        evaluator = MultiVectorInformationRetrievalEvaluator(
            queries={f"q{i}": query for i, query in enumerate(held_out["query"])},
            corpus={f"d{i}": passage for i, passage in enumerate(passages)},
            relevant_docs={f"q{i}": {f"d{passages.index(positive)}"} for i, positive in enumerate(held_out["positive"])},
            name="held_out")

    # 5. Training arguments (CPU unless a GPU is there) and trainer; the prompts, by column, put [Q] and [D] in
    #    the training batches as encode_query and encode_document do
    prompts = {column: PREFIXES["query" if column == "query" else "document"] for column in pairs.column_names}
    training_args = MultiVectorEncoderTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=0, logging_steps=args.logging_steps, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), seed=args.seed, prompts=prompts)
    return MultiVectorEncoderTrainer(model=model, args=training_args, train_dataset=pairs, loss=loss, evaluator=evaluator)


def main(argv=None) -> MultiVectorEncoderTrainer:
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
