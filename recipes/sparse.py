"""Plain sentence-transformers script: an Ettin encoder → SPLADE (its MLM head, max pooling, FLOPS regularisers).

    python recipes/sparse.py --model runs/pretrain/final --data pairs.jsonl --output-dir runs/plain-sparse
"""

from datasets import load_dataset
from sentence_transformers.sparse_encoder import (SparseEncoder, SparseEncoderTrainer, SparseEncoderTrainingArguments,
                                                  losses, models)

from _common import common_arguments, parser


def build_trainer(args) -> SparseEncoderTrainer:
    pairs = load_dataset("json", data_files=args.data, split="train").select_columns(["query", "positive"])
    model = SparseEncoder(modules=[models.MLMTransformer(args.model, max_seq_length=args.max_seq_length),
                                   models.SpladePooling("max")])
    loss = losses.SpladeLoss(model, losses.SparseMultipleNegativesRankingLoss(model),
                             query_regularizer_weight=5e-5, document_regularizer_weight=3e-5)
    return SparseEncoderTrainer(model=model, train_dataset=pairs, loss=loss,
                                args=SparseEncoderTrainingArguments(**common_arguments(args), batch_sampler="no_duplicates"))


if __name__ == "__main__":
    args = parser(__doc__, learning_rate=5e-4).parse_args()
    trainer = build_trainer(args)
    trainer.train()
    trainer.model.save_pretrained(f"{args.output_dir}/final")
