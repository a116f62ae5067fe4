"""What the fine-tuning recipes share about data: loading the training rows (the Ettin-release data by default),
the held-out split, column renaming, and the retrieval evaluators run before and after training."""

from __future__ import annotations

import collections
import random

from .data.loading import check_texts, load_beir, load_data
from .errors import EttinError
from .run_folder import is_main_process, wait_for_everyone

# Training columns that hold no text (every other column a recipe reads must be non-empty text); the lists of
# candidate rows are checked by distillation.candidate_rows.
NON_TEXT_COLUMNS = ("label", "negatives", "scores")


def column_mapping(config) -> dict[str, str] | None:
    if not config.column_mapping:
        return None
    pairs = [item.split(":") for item in config.column_mapping.split(",") if item.strip()]
    if any(len(pair) != 2 or not all(p.strip() for p in pair) for pair in pairs):
        raise EttinError(f"--column-mapping {config.column_mapping!r}: expected 'old:new,old2:new2'")
    return {old.strip(): new.strip() for old, new in pairs}


def load_training_data(config, columns: list[str], optional: list[str] = (), default=None):
    """The training rows with ``columns`` (plus those of ``optional`` present), in that order.

    ``optional=None`` keeps every column; ``default`` is (hub name, config, row limit) of the recipe's
    Ettin-release data (``release_settings``).
    """
    spec, data_config, limit = config.data, config.data_config, config.max_samples
    if spec is None:
        if default is None:
            raise EttinError(f"--data is required: a file or dataset with columns {', '.join(columns)}")
        spec, default_config, default_limit = default
        data_config = data_config or default_config
        limit = limit or default_limit
    dataset = load_data(spec, columns=columns, split=config.data_split, config_name=data_config,
                        column_mapping=column_mapping(config), limit=limit)
    if optional is not None:
        dataset = dataset.select_columns(list(columns) + [c for c in optional if c in dataset.column_names])
        check_texts(dataset, [c for c in dataset.column_names if c not in NON_TEXT_COLUMNS], config.data or spec)
    return dataset


def split_held_out(config, dataset, group: str | None = None):
    """(train, held-out rows): --held-out rows, at most a tenth, split off the same way in every run. With ``group``
    (a column) whole groups go, until that many rows are held out: a query with all its labelled passages."""
    held_out = min(config.held_out, len(dataset) // 10)
    if held_out < 1:
        return dataset, None
    if group is None:
        split = dataset.train_test_split(test_size=held_out, seed=0)
        return split["train"], split["test"]
    keys = dataset[group]
    sizes = collections.Counter(keys)
    chosen, rows = set(), 0
    for key in random.Random(0).sample(sorted(sizes), len(sizes)):
        if rows >= held_out:
            break
        chosen.add(key)
        rows += sizes[key]
    return (dataset.select([i for i, key in enumerate(keys) if key not in chosen]),
            dataset.select([i for i, key in enumerate(keys) if key in chosen]))


def evaluators_for(kind: str, config, held_out=None) -> dict:
    """The retrieval evaluators of a run, by the prefix their metrics are reported under: the held-out rows as a
    retrieval task ("held_out_"), --eval-beir (no prefix) and --eval-nanobeir ("nanobeir_")."""
    from .evaluation import held_out_as_beir, nanobeir_evaluator, retrieval_evaluator

    evaluators = {}
    if held_out is not None:
        evaluators["held_out_"] = retrieval_evaluator(kind, held_out_as_beir(held_out), name="held_out")
    if config.eval_beir:
        evaluators[""] = retrieval_evaluator(kind, beir_split(config))
    if config.eval_nanobeir:
        evaluators["nanobeir_"] = nanobeir_evaluator(kind, config.eval_nanobeir, config.nanobeir_dataset_id)
    return evaluators


def run_evaluators(model, evaluators: dict) -> dict[str, float]:
    """Run the retrieval evaluators on the main process (the others get {}): NDCG@10, MRR@10 and Recall@100
    (and sparse models' active dimensions) of each, under its prefix."""
    from .evaluation import shared_metrics

    results = {}
    if is_main_process():
        for prefix, evaluator in evaluators.items():
            metrics = shared_metrics(evaluator(model), evaluator.primary_metric)
            results.update({prefix + metric: value for metric, value in metrics.items()})
    wait_for_everyone()  # the evaluation is the main process's alone: the others wait for it here
    return results


def beir_split(config):
    return load_beir(config.eval_beir, config.eval_beir_split) if config.eval_beir else None
