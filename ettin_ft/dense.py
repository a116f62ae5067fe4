"""Dense embeddings: an Ettin encoder (or decoder) → a sentence-transformers embedder.

CachedMultipleNegativesRankingLoss (``--loss cmnrl``) over mean-pooled tokens, for decoders too, so the encoder and
decoder of one size compare on the same pooling (a small decoder's last token barely learns: BENCHMARKS.md,
benchmarks/decoder_pooling.py). From a teacher's scores (``--teacher``, ``--teacher-scores`` or rows with ``scores``):
MarginMSELoss (``margin-mse``, the default then) or DistillKLDivLoss (``kl``), on dot products, which the saved model
then scores with. Defaults, the Ettin release's settings and data: configs/dense.yaml.

    python -m ettin_ft.dense --model 150m --output-dir runs/dense-150m
    python -m ettin_ft.dense --model runs/pretrain/final --data pairs.jsonl \
        --eval-beir ../shared/data/retrieval_eval/scifact --output-dir runs/dense
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.evaluation import SequentialEvaluator
from sentence_transformers.sentence_transformer import losses, modules
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

DEFAULTS, RELEASE_DATA = release_settings("dense")


@dataclass
class DenseConfig(RetrievalConfig):
    INTENDED_USE = "dense retrieval and semantic similarity: encode queries and passages with sentence-transformers and compare them by cosine similarity"
    PIPELINE_TAG = "sentence-similarity"
    RELEASE = "dense"

    pooling: str | None = field(default=None, metadata={"help": "auto (mean, for encoders and decoders), mean, cls or lasttoken"})
    mini_batch_size: int | None = field(default=None, metadata={"help": "CachedMNRL mini-batch (memory), not the effective batch"})
    matryoshka_dims: str | None = field(default=None, metadata={"help": "e.g. '768,512,256,128,64' to train Matryoshka embeddings"})


def locate_base(config: DenseConfig):
    return locate_base_model(config, "dense", allowed=("encoder", "decoder"))


def build_embedder(config: DenseConfig, runtime, located=None) -> SentenceTransformer:
    located = located or locate_base(config)
    ref = located.ref
    transformer = load_through_library(ref, lambda: modules.Transformer(
        ref.path, max_seq_length=config.max_seq_length, **transformer_kwargs(ref, runtime)), lambda built: built.auto_model)
    pooling = "mean" if config.pooling == "auto" else config.pooling
    return SentenceTransformer(modules=[transformer, modules.Pooling(transformer.get_embedding_dimension(), pooling)],
                               device=str(runtime.device))


def dense_loss(model: SentenceTransformer, config: DenseConfig):
    if config.loss == "cmnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
    elif config.loss == "margin-mse":
        loss = losses.MarginMSELoss(model)
    else:
        loss = losses.DistillKLDivLoss(model)
    if config.matryoshka_dims:
        loss = losses.MatryoshkaLoss(model, loss, [int(d) for d in config.matryoshka_dims.split(",")])
    return loss


def train_dense(config: DenseConfig, args: SentenceTransformerTrainingArguments, runtime=None, dry_run=False):
    """Train a dense embedder as ``config`` says; returns the trained SentenceTransformer."""
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    located = locate_base(config)
    train, held_out = split_held_out(config, load_candidate_rows(config, RELEASE_DATA))
    config = dataclasses.replace(config, loss=choose_loss("dense", config, train))
    evaluators = evaluators_for("dense", config, held_out)
    model = build_embedder(config, runtime, located)  # after every input check
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    with RunFolder(args.output_dir).tidy_on_failure():
        distilled = learns_from_scores("dense", config.loss)
        train = loss_columns(scored_rows(config, train, args, runtime) if distilled else train, distilled)
        if distilled:  # the losses compare dot products with the teacher's scores: the model then scores with them
            model.similarity_fn_name = "dot"
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=dense_loss(model, config),
                                             evaluator=SequentialEvaluator(list(evaluators.values())) if evaluators else None,
                                             callbacks=[SkipLastCheckpoint()])
        save_from_the_writing_process_only(trainer)
        before = run_evaluators(model, evaluators)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after = run_evaluators(model, evaluators)
        publish_trained(trainer)
        write_results(args.output_dir, config, args, before, after, trainer)
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/dense.yaml) as (DenseConfig, SentenceTransformerTrainingArguments), as the command
    line resolves them; ``overrides`` name fields of either: ``train_dense(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(DenseConfig, SentenceTransformerTrainingArguments, DEFAULTS, output_dir, overrides, "ettin_ft.dense")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        DenseConfig, SentenceTransformerTrainingArguments, DEFAULTS, argv, "python -m ettin_ft.dense",
        "Fine-tune an Ettin model into a dense sentence-transformers embedder (any TrainingArguments field is a flag).",
    )
    train_dense(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
