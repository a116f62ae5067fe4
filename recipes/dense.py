"""Plain sentence-transformers script: an Ettin encoder → a dense embedder (mean pooling, CachedMNRL).

What `python -m ettin_ft.dense` does, written directly against the library to copy and edit:
    python recipes/dense.py --model runs/pretrain/final --data pairs.jsonl --output-dir runs/plain-dense
"""

from datasets import load_dataset
from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments,
                                   losses, models)

from _common import common_arguments, parser


def build_trainer(args) -> SentenceTransformerTrainer:
    pairs = load_dataset("json", data_files=args.data, split="train").select_columns(["query", "positive"])
    transformer = models.Transformer(args.model, max_seq_length=args.max_seq_length)
    model = SentenceTransformer(modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean")])
    return SentenceTransformerTrainer(
        model=model, train_dataset=pairs, loss=losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=16),
        args=SentenceTransformerTrainingArguments(**common_arguments(args), batch_sampler="no_duplicates"))


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    trainer = build_trainer(args)
    trainer.train()
    trainer.model.save_pretrained(f"{args.output_dir}/final")
