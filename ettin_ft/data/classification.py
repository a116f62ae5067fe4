"""Labelled text for sequence classification: GLUE from the hub or local files, checked and encoded.

Labels become ids 0..n-1 with their names kept (from a ClassLabel, string labels, or a ``label_text`` column
beside integer labels); float labels mean regression (one output, as STS-B).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass

import datasets

from ..errors import EttinError
from .loading import check_texts, hold_out_for_evaluation, load_data, named_splits, validate

GLUE_HUB = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    text_columns: tuple[str, ...]
    eval_split: str = "validation"
    extra_metrics: tuple[str, ...] = ()  # beside accuracy and macro-F1 (or Pearson/Spearman)


GLUE_TASKS = {
    "sst2": GlueTask(("sentence",)),
    "cola": GlueTask(("sentence",), extra_metrics=("matthews",)),
    "mrpc": GlueTask(("sentence1", "sentence2"), extra_metrics=("f1",)),
    "qqp": GlueTask(("question1", "question2"), extra_metrics=("f1",)),
    "qnli": GlueTask(("question", "sentence")),
    "rte": GlueTask(("sentence1", "sentence2")),
    "mnli": GlueTask(("premise", "hypothesis"), eval_split="validation_matched"),
    "stsb": GlueTask(("sentence1", "sentence2")),
}
# Tried in order when --text-columns is not given.
DEFAULT_TEXT_COLUMNS = (("text",), ("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
                        ("question", "sentence"), ("sentence",))
LABEL = "label"


@dataclass
class ClassificationData:
    """Training and evaluation rows with the text columns and an encoded ``label`` column."""

    train: datasets.Dataset
    eval: datasets.Dataset
    text_columns: tuple[str, ...]
    label_names: list[str] | None  # None: regression

    @property
    def regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)

    def majority_prediction(self) -> float:
        """The most frequent training label (regression: the mean training label)."""
        labels = self.train[LABEL]
        return sum(labels) / len(labels) if self.regression else Counter(labels).most_common(1)[0][0]


def glue_task(name: str) -> GlueTask:
    if name not in GLUE_TASKS:
        raise EttinError(f"unknown GLUE task {name!r}; expected one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[name]


def text_columns_of(dataset, given: str | None, where: str) -> tuple[str, ...]:
    if given:
        return tuple(c.strip() for c in given.split(",") if c.strip())
    for columns in DEFAULT_TEXT_COLUMNS:
        if all(c in dataset.column_names for c in columns):
            return columns
    raise EttinError(f"{where}: no text column found ({', '.join(dataset.column_names)}); expected 'text' (or "
                     "sentence1,sentence2 / premise,hypothesis), or name them with --text-columns")


def _key(value):
    """A label as the key it is encoded by: text stays text, whole numbers become ints."""
    return value if isinstance(value, str) else int(value)


def _label_space(train, label_column: str, where: str) -> tuple[list[str], list] | None:
    """(class names, their label values) in id order, or None for regression (float labels)."""
    feature = train.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), list(range(len(feature.names)))
    values = train[label_column]
    for row_number, value in enumerate(values, 1):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            raise EttinError(f"{where} row {row_number}: label column {label_column!r} is "
                             f"{'null' if value is None else value}; expected a label")
    if all(isinstance(v, float) for v in values) and not all(v.is_integer() for v in values):
        return None
    if all(isinstance(v, str) for v in values):
        keys = sorted(set(values))
        return keys, keys
    if not all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):
        raise EttinError(f"{where}: label column {label_column!r} mixes types; expected integers, strings or floats")
    keys = sorted({int(v) for v in values})
    names = [str(key) for key in keys]
    if "label_text" in train.column_names:  # integer labels with their names beside, as in ../shared/data
        name_of = dict(zip((int(v) for v in values), train["label_text"]))
        names = [str(name_of[key]) for key in keys]
    return names, keys


def _encode(dataset, label_column: str, space: tuple[list[str], list] | None, text_columns, where: str):
    """Keep the text columns and an encoded ``label``; fail on labels that training never showed."""
    check_texts(dataset, text_columns, where)
    values = dataset[label_column]
    if space is None:
        encoded = [float(v) for v in values]
    else:
        names, keys = space
        id_of = {key: i for i, key in enumerate(keys)}
        unseen = sorted({str(v) for v in values if v is None or _key(v) not in id_of})
        if unseen:
            raise EttinError(f"{where}: label(s) {', '.join(unseen)} do not occur in the training data "
                             f"(training labels: {', '.join(map(str, keys))})")
        encoded = [id_of[_key(v)] for v in values]
    return dataset.select_columns(list(text_columns)).add_column(
        LABEL, encoded, feature=datasets.Value("float32" if space is None else "int64"))


def load_classification_data(*, task: str | None, data: str | None, eval_data: str | None = None,
                             text_columns: str | None = None, label_column: str = LABEL, column_mapping=None,
                             max_samples: int | None = None, held_out: int = 1000, data_config: str | None = None,
                             data_split: str = "train") -> ClassificationData:
    """Load and check labelled text: a GLUE task from the hub, or local (or hub) data with an evaluation file or
    a held-out share of the training rows (``held_out`` rows, at most a tenth)."""
    if task and data:
        raise EttinError("give either --task (GLUE from the hub) or --data (your own files), not both")
    if not task and not data:
        raise EttinError("--task (a GLUE task: " + ", ".join(GLUE_TASKS) + ") or --data (a labelled file) is required")
    if task:
        spec = glue_task(task)
        train = load_data(GLUE_HUB, config_name=task, split="train", columns=[*spec.text_columns, LABEL])
        evaluation = load_data(GLUE_HUB, config_name=task, split=spec.eval_split, columns=[*spec.text_columns, LABEL])
        train_where, eval_where, columns = f"{GLUE_HUB} {task} train", f"{GLUE_HUB} {task} {spec.eval_split}", spec.text_columns
    else:  # local files (a folder with train.* and validation.* files gives both), or a hub dataset
        splits = named_splits(data) if os.path.isdir(data) else None
        train_where, eval_where = splits or (data, None)
        eval_where = eval_data or eval_where
        train = load_data(train_where, split=data_split, config_name=data_config, column_mapping=column_mapping)
        evaluation = load_data(eval_where, column_mapping=column_mapping) if eval_where else None
        columns = text_columns_of(train, text_columns, train_where)
        for dataset, where in ((train, train_where), (evaluation, eval_where)):
            if dataset is not None:
                validate(dataset, [*columns, label_column], where)
    if max_samples:
        train = train.select(range(min(max_samples, len(train))))
    space = _label_space(train, label_column, train_where)
    if space is not None and len(set(train[label_column])) < 2:
        raise EttinError(f"{train_where}: every training row has the label {train[label_column][0]!r}; "
                         "a classifier needs at least two classes")
    train = _encode(train, label_column, space, columns, train_where)
    if evaluation is not None:
        evaluation = _encode(evaluation, label_column, space, columns, eval_where)
    else:
        train, evaluation = hold_out_for_evaluation(train, held_out, train_where)
    return ClassificationData(train, evaluation, tuple(columns), space[0] if space else None)


def tokenize_texts(dataset, tokenizer, text_columns, max_length: int | None):
    """Token ids of each row's one text or text pair (the tokenizer joins a pair), the text columns dropped."""
    return dataset.map(lambda rows: tokenizer(*(rows[c] for c in text_columns), truncation=True, max_length=max_length),
                       batched=True, remove_columns=list(text_columns))
