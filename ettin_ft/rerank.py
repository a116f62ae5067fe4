"""Reranking: an Ettin encoder → a sentence-transformers CrossEncoder with one output.

BinaryCrossEntropyLoss with pos_weight = the number of hard negatives. Defaults, the Ettin release's settings
and data: configs/rerank.yaml. (query, positive) pairs get
hard negatives mined with sentence_transformers.util.mine_hard_negatives from an embedding model, or
offline with BM25 (``--mining-model bm25``); (query, passage, label) rows train as they are.
Evaluation reranks the BM25 top 100 of every query.

    python -m ettin_ft.rerank --model 150m --output-dir runs/reranker-150m
    python -m ettin_ft.rerank --model runs/pretrain/final --data pairs.jsonl --mining-model bm25 ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import torch
from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments,
                                                 losses)
from transformers import set_seed

from .compat import save_from_the_writing_process_only
from .data.loading import load_data
from .errors import EttinError, cli_entry
from .evaluation import BM25
from .models import load_through_library
from .recipe import (RetrievalConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe,
                     release_settings)
from .recipe_data import column_mapping, evaluators_for, load_training_data, run_evaluators, split_held_out
from .run_folder import RunFolder, SkipLastCheckpoint, publish_trained, write_results
from .runtime import model_kwargs

DEFAULTS, RELEASE_DATA = release_settings("rerank")


@dataclass
class RerankConfig(RetrievalConfig):
    INTENDED_USE = "reranking: score (query, passage) pairs with sentence-transformers' CrossEncoder, e.g. over a first stage's top 100"
    PIPELINE_TAG = "text-ranking"
    RELEASE = "rerank"

    num_negatives: int | None = field(default=None, metadata={"help": "hard negatives per query (also the loss's pos_weight)"})
    mining_model: str | None = field(default=None, metadata={"help": "embedding model for mine_hard_negatives, or 'bm25' (offline)"})
    classifier_pooling: str | None = field(default=None, metadata={"help": "ModernBERT classifier pooling: cls or mean (default: the model's)"})


def bm25_hard_negatives(pairs: datasets.Dataset, num_negatives: int, relative_margin: float = 0.05,
                        range_max: int = 50) -> datasets.Dataset:
    """Labelled pairs: each query with its positive (1) and its top BM25 passages (0).

    As in mine_hard_negatives, negatives come from each query's ``range_max`` best passages (plus
    ``num_negatives``), and a candidate must score below (1 - ``relative_margin``) × the positive's score:
    passages that match the query as well as its positive are likely unlabelled positives.
    """
    passages = list(dict.fromkeys(pairs["positive"]))
    index_of = {p: i for i, p in enumerate(passages)}
    bm25 = BM25({str(i): p for i, p in enumerate(passages)})
    queries, positives = list(pairs["query"]), [index_of[p] for p in pairs["positive"]]
    found, scores = bm25.top_k(queries, num_negatives + range_max)
    ceilings = (1 - relative_margin) * bm25.pair_scores(queries, positives)
    rows = {"query": [], "passage": [], "label": []}
    for query, positive, candidates, candidate_scores, ceiling in zip(queries, positives, found, scores, ceilings):
        negatives = [passages[i] for i, score in zip(candidates, candidate_scores) if score < ceiling][:num_negatives]
        for passage, label in [(passages[positive], 1)] + [(n, 0) for n in negatives]:
            rows["query"].append(query), rows["passage"].append(passage), rows["label"].append(label)
    return datasets.Dataset.from_dict(rows)


def training_pairs(config: RerankConfig) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(training rows, held-out rows): (query, passage, label) rows given as such, or mined from (query, positive)
    pairs (the held-out pairs are split off first and not mined)."""
    probe = load_data(config.data, limit=1, column_mapping=column_mapping(config)) if config.data else None
    if probe is not None and {"query", "passage", "label"} <= set(probe.column_names):
        # whole queries are held out, each with its labelled passages, so every held-out query can be ranked
        return split_held_out(config, load_training_data(config, ["query", "passage", "label"]), group="query")
    train, held_out = split_held_out(config, load_training_data(config, ["query", "positive"], default=RELEASE_DATA))
    if config.mining_model == "bm25":
        return bm25_hard_negatives(train, config.num_negatives), held_out
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from .hub import locate

    try:
        ref = locate(config.mining_model)
    except EttinError as error:  # its hint is about --model; here the way out is BM25
        reason = str(error).split(";")[0]
        raise EttinError(f"--mining-model {config.mining_model}: {reason}; pass --mining-model bm25 to mine hard "
                         "negatives offline, or a local embedding model folder") from None
    embedder = SentenceTransformer(ref.path, revision=ref.revision)
    mined = mine_hard_negatives(train, embedder, anchor_column_name="query", positive_column_name="positive",
                                num_negatives=config.num_negatives, output_format="labeled-pair", verbose=False)
    return mined.rename_columns(dict(zip(mined.column_names, ["query", "passage", "label"]))), held_out


def train_rerank(config: RerankConfig, args: CrossEncoderTrainingArguments, runtime=None, dry_run=False):
    """Train a cross-encoder reranker as ``config`` says; returns the trained CrossEncoder."""
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    ref = locate_base_model(config, "rerank").ref
    if config.num_negatives < 1:
        raise EttinError(f"--num-negatives must be at least 1, got {config.num_negatives}")
    train, held_out = training_pairs(config)
    evaluators = evaluators_for("rerank", config, held_out)
    pooling = {"classifier_pooling": config.classifier_pooling} if config.classifier_pooling else {}
    model = load_through_library(ref, lambda: CrossEncoder(
        ref.path, num_labels=1, revision=ref.revision, max_length=config.max_seq_length, device=str(runtime.device),
        model_kwargs=model_kwargs(runtime), config_kwargs=pooling), lambda built: built.model)
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(config.num_negatives)))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                  callbacks=[SkipLastCheckpoint()])
    save_from_the_writing_process_only(trainer)
    with RunFolder(args.output_dir).tidy_on_failure():
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
