"""Sparse retrieval (SPLADE): an Ettin encoder's MLM head → a sentence-transformers SparseEncoder.

SpladeLoss (FLOPS regularizers on queries and documents) over SparseMultipleNegativesRankingLoss (``--loss mnrl``),
or, from a teacher's scores (``--teacher``, ``--teacher-scores`` or rows with ``scores``), SparseMarginMSELoss
(``margin-mse``, the default then) or SparseDistillKLDivLoss (``kl``), as SPLADE-v3 distils. Defaults, the Ettin
release's settings and data: configs/sparse.yaml. Evaluation also reports the average active dimensions of queries
and documents.

    python -m ettin_ft.sparse --model 150m --output-dir runs/splade-150m
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sentence_transformers.base.modules import Transformer
from sentence_transformers.sparse_encoder import (SparseEncoder, SparseEncoderTrainer, SparseEncoderTrainingArguments,
                                                  losses)
from sentence_transformers.sparse_encoder.modules import SpladePooling
from transformers import set_seed

from .compat import save_from_the_writing_process_only
from .distillation import choose_loss, learns_from_scores, load_candidate_rows, loss_columns, scored_rows
from .errors import cli_entry
from .models import load_through_library
from .recipe import (RetrievalConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe,
                     release_settings)
from .recipe_data import evaluators_for, run_evaluators, split_held_out
from .run_folder import RunFolder, SkipLastCheckpoint, publish_trained, write_results
from .runtime import transformer_kwargs

DEFAULTS, RELEASE_DATA = release_settings("sparse")


@dataclass
class SparseConfig(RetrievalConfig):
    INTENDED_USE = "sparse (SPLADE) retrieval with sentence-transformers' SparseEncoder: vocabulary-weighted vectors for an inverted index"
    PIPELINE_TAG = "feature-extraction"
    RELEASE = "sparse"

    query_regularizer_weight: float | None = field(default=None, metadata={"help": "FLOPS regularizer weight on queries"})
    document_regularizer_weight: float | None = field(default=None, metadata={"help": "FLOPS regularizer weight on documents"})


def build_splade(config: SparseConfig, runtime, located=None) -> SparseEncoder:
    ref = (located or locate_base_model(config, "sparse")).ref
    mlm = load_through_library(ref, lambda: Transformer(
        ref.path, transformer_task="fill-mask", max_seq_length=config.max_seq_length, **transformer_kwargs(ref, runtime)),
        lambda built: built.auto_model)
    return SparseEncoder(modules=[mlm, SpladePooling("max")], device=str(runtime.device))


def train_sparse(config: SparseConfig, args: SparseEncoderTrainingArguments, runtime=None, dry_run=False):
    """Train a SPLADE model as ``config`` says; returns the trained SparseEncoder."""
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    located = locate_base_model(config, "sparse")
    train, held_out = split_held_out(config, load_candidate_rows(config, RELEASE_DATA))
    config = dataclasses.replace(config, loss=choose_loss("sparse", config, train))
    evaluators = evaluators_for("sparse", config, held_out)
    model = build_splade(config, runtime, located)  # after every input check
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    with RunFolder(args.output_dir).tidy_on_failure():
        distilled = learns_from_scores("sparse", config.loss)
        train = loss_columns(scored_rows(config, train, args, runtime) if distilled else train, distilled)
        ranking = {"mnrl": losses.SparseMultipleNegativesRankingLoss, "margin-mse": losses.SparseMarginMSELoss,
                   "kl": losses.SparseDistillKLDivLoss}[config.loss](model)
        loss = losses.SpladeLoss(model, ranking, query_regularizer_weight=config.query_regularizer_weight,
                                 document_regularizer_weight=config.document_regularizer_weight)
        trainer = SparseEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                       callbacks=[SkipLastCheckpoint()])
        save_from_the_writing_process_only(trainer)
        before = run_evaluators(model, evaluators)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after = run_evaluators(model, evaluators)
        publish_trained(trainer)
        write_results(args.output_dir, config, args, before, after, trainer)
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/sparse.yaml) as (SparseConfig, SparseEncoderTrainingArguments), as the command
    line resolves them; ``overrides`` name fields of either: ``train_sparse(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(SparseConfig, SparseEncoderTrainingArguments, DEFAULTS, output_dir, overrides, "ettin_ft.sparse")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        SparseConfig, SparseEncoderTrainingArguments, DEFAULTS, argv, "python -m ettin_ft.sparse",
        "Fine-tune an Ettin encoder into a SPLADE sparse retriever (any TrainingArguments field is a flag).",
    )
    train_sparse(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
