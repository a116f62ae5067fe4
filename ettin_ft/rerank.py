"""Reranking: an Ettin encoder → a sentence-transformers CrossEncoder with one output.

From labels (``--loss bce``): BinaryCrossEntropyLoss with pos_weight = hard negatives per query; (query, positive)
pairs get hard negatives mined with an embedding model (mine_hard_negatives) or offline with BM25
(``--mining-model bm25``), and (query, passage, label) rows train as they are. From a teacher's scores
(``--teacher``, ``--teacher-scores`` or rows with ``scores``): pointwise MSELoss on the raw scores (``mse``, the
default then, as the released Ettin rerankers were trained) or MarginMSELoss (``margin-mse``). (query, document,
label) rows whose labels are a teacher's scores, as the released rerankers' data (cross-encoder/ettin-reranker-v1-data)
holds them, train with ``--loss mse``. The head pools the
[CLS] token (``--pooling cls``, the released rerankers' choice) or the mean. Defaults, the Ettin release's settings
and data: configs/rerank.yaml; the released rerankers' recipe: ``--config configs/rerank/ettin-reranker.yaml``.
Evaluation reranks the BM25 top 100 of every query.

    python -m ettin_ft.rerank --model 150m --output-dir runs/reranker-150m
    python -m ettin_ft.rerank --model runs/pretrain/final --data pairs.jsonl --mining-model bm25 ...
    python -m ettin_ft.rerank --model 17m --data pairs.jsonl --mining-model bm25 --teacher runs/big-reranker/final ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import datasets
import torch
from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments,
                                                 losses)
from transformers import set_seed

from .compat import save_from_the_writing_process_only
from .data.loading import load_data
from .distillation import choose_loss, learns_from_scores, load_candidate_rows, loss_columns, scored_rows
from .errors import EttinError, cli_entry
from .mining import as_labelled_pairs, mine_negatives
from .models import load_through_library
from .recipe import (RetrievalConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe,
                     release_settings)
from .recipe_data import column_mapping, evaluators_for, load_training_data, run_evaluators, split_held_out
from .run_folder import RunFolder, SkipLastCheckpoint, publish_trained, write_results
from .runtime import model_kwargs

DEFAULTS, RELEASE_DATA = release_settings("rerank")
POOLINGS = ("cls", "mean")


@dataclass
class RerankConfig(RetrievalConfig):
    INTENDED_USE = "reranking: score (query, passage) pairs with sentence-transformers' CrossEncoder, e.g. over a first stage's top 100"
    PIPELINE_TAG = "text-ranking"
    RELEASE = "rerank"

    num_negatives: int | None = field(default=None, metadata={"help": "hard negatives mined per query (and BCE's pos_weight for (query, passage, label) rows)"})
    mining_model: str | None = field(default=None, metadata={"help": "embedding model for mine_hard_negatives, or 'bm25' (offline)"})
    pooling: str | None = field(default=None, metadata={"help": "the head's pooling: cls (the released Ettin rerankers') or mean; saved in the model's config"})

    def __post_init__(self):
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise EttinError(f"--pooling {self.pooling!r}: expected one of {', '.join(POOLINGS)}")


def labelled_passage_column(config: RerankConfig) -> str | None:
    """The passage column of (query, passage, label) rows ("passage", or "document" as the release data names it),
    or None for other rows."""
    probe = load_data(config.data, limit=1, column_mapping=column_mapping(config)) if config.data else None
    columns = set(probe.column_names) if probe is not None else set()
    return next((name for name in ("passage", "document") if {"query", name, "label"} <= columns), None)


def training_rows(config: RerankConfig) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(training rows, held-out rows): (query, passage, label) rows as given, or candidate rows (query, positive,
    negatives[, scores]), their negatives mined when no row has any (the held-out rows are split off first)."""
    passage = labelled_passage_column(config)
    if passage:
        if config.teacher or config.teacher_scores:
            raise EttinError(f"{config.data}: (query, {passage}, label) rows train from their labels; a teacher scores "
                             "(query, positive[, negatives]) rows (python -m ettin_ft.mine writes them)")
        rows = load_training_data(config, ["query", passage, "label"])
        if passage != "passage":
            rows = rows.rename_column(passage, "passage")
        # whole queries are held out, each with its labelled passages, so every held-out query can be ranked
        return split_held_out(config, rows, group="query")
    train, held_out = split_held_out(config, load_candidate_rows(config, RELEASE_DATA))
    if not any(train["negatives"]):
        train = mine_negatives(train.select_columns(["query", "positive"]), config.mining_model, config.num_negatives)
    return train, held_out


def pointwise(rows: datasets.Dataset) -> datasets.Dataset:
    """(query, passage, score): one row per candidate with the teacher's score, as MSELoss takes them."""
    flat = {"query": [], "passage": [], "score": []}
    for query, positive, negatives, scores in zip(rows["query"], rows["positive"], rows["negatives"], rows["scores"]):
        for passage, score in zip([positive, *negatives], scores):
            flat["query"].append(query), flat["passage"].append(passage), flat["score"].append(score)
    return datasets.Dataset.from_dict(flat)


def labelled_rows_loss(config: RerankConfig, rows: datasets.Dataset) -> str:
    """(query, passage, label) rows: bce (the default) on labels from 0 to 1, or mse on labels that are a teacher's
    scores (the release data's raw mxbai-rerank scores, -12 to 22)."""
    import pyarrow.compute as pc

    loss = "bce" if config.loss in (None, "auto") else config.loss
    if loss not in ("bce", "mse"):
        raise EttinError(f"--loss {loss}: (query, passage, label) rows train with bce (labels from 0 to 1) or mse "
                         "(labels that are a teacher's scores); margin-mse takes (query, positive, negatives, scores) rows")
    if loss == "bce":
        labels = pc.min_max(rows.with_format("arrow")["label"])
        lowest, highest = labels["min"].as_py(), labels["max"].as_py()
        if not 0 <= lowest <= highest <= 1:
            raise EttinError(f"{config.data}: labels from {lowest:g} to {highest:g}, but bce takes labels from 0 to 1; "
                             "for labels that are a teacher's scores give --loss mse")
    return loss


def rerank_loss(model: CrossEncoder, config: RerankConfig, negatives_per_query: float):
    if config.loss == "bce":  # positives weighed as all of a query's negatives together
        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(negatives_per_query)))
    return losses.MSELoss(model) if config.loss == "mse" else losses.MarginMSELoss(model)


def train_rerank(config: RerankConfig, args: CrossEncoderTrainingArguments, runtime=None, dry_run=False):
    """Train a cross-encoder reranker as ``config`` says; returns the trained CrossEncoder."""
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    ref = locate_base_model(config, "rerank").ref
    train, held_out = training_rows(config)
    labelled = "label" in train.column_names  # (query, passage, label) rows train on their labels as given
    loss = labelled_rows_loss(config, train) if labelled else choose_loss("rerank", config, train)
    config = dataclasses.replace(config, loss=loss)
    evaluators = evaluators_for("rerank", config, held_out)
    distilled = learns_from_scores("rerank", config.loss)
    # a distilled reranker outputs raw scores, on its teacher's scale, as the released Ettin rerankers do
    activation = {"activation_fn": torch.nn.Identity()} if distilled else {}
    model = load_through_library(ref, lambda: CrossEncoder(
        ref.path, num_labels=1, revision=ref.revision, max_length=config.max_seq_length, device=str(runtime.device),
        model_kwargs=model_kwargs(runtime), config_kwargs={"classifier_pooling": config.pooling}, **activation),
        lambda built: built.model)
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    with RunFolder(args.output_dir).tidy_on_failure():
        negatives_per_query = config.num_negatives  # labelled rows; candidate rows count their own
        if "negatives" in train.column_names:
            negatives_per_query = sum(map(len, train["negatives"])) / len(train)
        if distilled and not labelled:
            train = scored_rows(config, train, args, runtime)
            train = pointwise(train) if config.loss == "mse" else loss_columns(train, True)
        elif "negatives" in train.column_names:
            train = as_labelled_pairs(train)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train,
                                      loss=rerank_loss(model, config, negatives_per_query), callbacks=[SkipLastCheckpoint()])
        save_from_the_writing_process_only(trainer)
        before = run_evaluators(model, evaluators)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after = run_evaluators(model, evaluators)
        publish_trained(trainer)
        write_results(args.output_dir, config, args, before, after, trainer)
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/rerank.yaml) as (RerankConfig, CrossEncoderTrainingArguments), as the command
    line resolves them; ``overrides`` name fields of either: ``train_rerank(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(RerankConfig, CrossEncoderTrainingArguments, DEFAULTS, output_dir, overrides, "ettin_ft.rerank")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        RerankConfig, CrossEncoderTrainingArguments, DEFAULTS, argv, "python -m ettin_ft.rerank",
        "Fine-tune an Ettin encoder into a cross-encoder reranker (any TrainingArguments field is a flag).",
    )
    train_rerank(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
