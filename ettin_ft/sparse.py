"""Sparse retrieval (SPLADE): an Ettin encoder's MLM head → a sentence-transformers SparseEncoder.

Defaults of the Ettin release: SpladeLoss over SparseMultipleNegativesRankingLoss, query/document
regularizer weights 5e-5/3e-5, lr 2e-5, batch 16, warmup 0.1, on natural-questions (first 100k rows,
1,000 held out). Evaluation also reports the average active dimensions of queries and documents.

    python -m ettin_ft.sparse --model 150m --output-dir runs/splade-150m
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sentence_transformers.sparse_encoder import (SparseEncoder, SparseEncoderTrainer,
                                                  SparseEncoderTrainingArguments, losses, models)

from .errors import cli_entry
from .recipe import (RetrievalConfig, evaluate, evaluators_for, load_training_data, locate_model, model_kwargs,
                     parse_recipe, print_dry_run, prepare_run, train_and_save)

DEFAULT_DATA = ("sentence-transformers/natural-questions", None, 100_000)
DEFAULTS = {"learning_rate": 2e-5, "per_device_train_batch_size": 16, "num_train_epochs": 1, "warmup_steps": 0.1,
            "batch_sampler": "no_duplicates", "output_dir": "runs/sparse", "save_strategy": "no",
            "logging_steps": 10, "report_to": "none"}


@dataclass
class SparseConfig(RetrievalConfig):
    query_regularizer_weight: float = field(default=5e-5, metadata={"help": "FLOPS regularizer weight on queries"})
    document_regularizer_weight: float = field(default=3e-5, metadata={"help": "FLOPS regularizer weight on documents"})


def build_model(config: SparseConfig, runtime, located=None) -> SparseEncoder:
    ref = (located or locate_model(config, "sparse")).ref
    mlm = models.MLMTransformer(ref.path, max_seq_length=config.max_seq_length,
                                model_args={**model_kwargs(runtime), "revision": ref.revision})
    return SparseEncoder(modules=[mlm, models.SpladePooling("max")], device=str(runtime.device))


def train_sparse(config: SparseConfig, args: SparseEncoderTrainingArguments, runtime=None, dry_run=False):
    """Train a SPLADE model as ``config`` says; returns the trained SparseEncoder."""
    args, runtime = prepare_run(config, args, runtime)
    located = locate_model(config, "sparse")
    train = load_training_data(config, ["query", "positive"], optional=["negative"], default=DEFAULT_DATA)
    evaluators = evaluators_for("sparse", config)
    model = build_model(config, runtime, located)  # after every input check
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    loss = losses.SpladeLoss(model, losses.SparseMultipleNegativesRankingLoss(model),
                             query_regularizer_weight=config.query_regularizer_weight,
                             document_regularizer_weight=config.document_regularizer_weight)
    trainer = SparseEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss)
    train_and_save(model, trainer, config, args, lambda: evaluate(model, evaluators))
    return model


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        SparseConfig, SparseEncoderTrainingArguments, DEFAULTS, argv, "python -m ettin_ft.sparse",
        "Fine-tune an Ettin encoder into a SPLADE sparse retriever (any TrainingArguments field is a flag).",
    )
    train_sparse(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
