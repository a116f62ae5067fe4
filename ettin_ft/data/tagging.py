"""Word-level tagging data (NER): sentences of pre-split words, one tag per word, in any of three forms.

- jsonl rows ``{"tokens": [...], "tags": [...]}`` (.jsonl);
- a folder with ``train.jsonl``, ``validation.jsonl`` and an optional ``labels.json``;
- CoNLL text (any other file): one ``token<TAB or space>tag`` per line (with more columns, the first is the token and
  the last the tag, as in CoNLL-2003), blank lines between sentences, ``-DOCSTART-`` lines ignored.

A hub dataset with ``tokens`` and ``tags`` columns (``--column-mapping ner_tags:tags``) works too; its tag names come
from its ClassLabel feature. The labels are ``--labels``, else the folder's labels.json, else the training tags with
``O`` first and the rest sorted. Every bad row is one EttinError naming the file and line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import datasets

from ..errors import EttinError
from .loading import _jsonl_rows, hold_out_for_evaluation, is_local, load_data, refuse_hub_choices_for_local
from .text import check_utf8, text_lines

OUTSIDE = "O"


@dataclass
class TaggingData:
    train: datasets.Dataset  # columns tokens, tags (tag names)
    eval: datasets.Dataset
    label_names: tuple[str, ...]


def _checked(tokens, tags, where: str) -> tuple[list[str], list[str]]:
    for name, value in (("tokens", tokens), ("tags", tags)):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise EttinError(f"{where}: \"{name}\" must be a list of strings, found {json.dumps(value)[:60]}")
    if not tokens:
        raise EttinError(f"{where}: no tokens; expected a sentence of at least one word")
    if len(tokens) != len(tags):
        raise EttinError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; expected one tag per token")
    empty = next((i for i, token in enumerate(tokens) if not token.strip()), None)
    if empty is not None:
        raise EttinError(f"{where}: token {empty + 1} is empty; expected pre-split, non-empty words")
    return tokens, tags


def _jsonl_sentences(path: str, renames: dict[str, str]):
    expected = "one {\"tokens\": [...], \"tags\": [...]} object per line (CoNLL text belongs in a .conll file)"
    for number, row in _jsonl_rows(path, expected):
        row = {renames.get(key, key): value for key, value in row.items()}
        missing = [name for name in ("tokens", "tags") if name not in row]
        if missing:
            raise EttinError(f"{path} line {number}: no \"{missing[0]}\" field; expected {{\"tokens\": [...], \"tags\": [...]}}")
        yield _checked(row["tokens"], row["tags"], f"{path} line {number}")


def _conll_sentences(path: str, renames: dict[str, str]):
    if renames:
        raise EttinError(f"--column-mapping applies to jsonl rows and hub datasets; {path} is CoNLL text, whose columns "
                         "are the token and the tag")
    tokens, tags, start = [], [], None
    for number, line in text_lines(path):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if tokens:
                yield _checked(tokens, tags, f"{path} line {start}")
            tokens, tags = [], []
            continue
        if line.lstrip().startswith("{"):
            raise EttinError(f"{path} line {number}: a JSON row in CoNLL text; a file is either jsonl rows (.jsonl) or "
                             "CoNLL lines (token<TAB>tag), not both")
        if len(fields) < 2:
            raise EttinError(f"{path} line {number}: {line.strip()[:40]!r} has no tag; expected token<TAB or space>tag")
        start = start if tokens else number
        tokens.append(fields[0]), tags.append(fields[-1])
    if tokens:
        yield _checked(tokens, tags, f"{path} line {start}")


def read_sentences(path: str, column_mapping: dict[str, str] | None = None) -> datasets.Dataset:
    """The sentences of one local file (jsonl rows, their fields renamed by ``column_mapping``, or CoNLL text) as a
    dataset of tokens and tags."""
    if not os.path.isfile(path):
        raise EttinError(f"data file {path} does not exist")
    check_utf8(path)
    reader = _jsonl_sentences if path.lower().endswith(".jsonl") else _conll_sentences
    tokens, tags = [], []
    for sentence_tokens, sentence_tags in reader(path, column_mapping or {}):
        tokens.append(sentence_tokens), tags.append(sentence_tags)
    if not tokens:
        raise EttinError(f"{path} holds no sentences; expected {{\"tokens\", \"tags\"}} rows or CoNLL lines")
    return datasets.Dataset.from_dict({"tokens": tokens, "tags": tags})


def _hub_sentences(spec: str, config_name, split: str, column_mapping) -> datasets.Dataset:
    dataset = load_data(spec, columns=["tokens", "tags"], split=split, config_name=config_name,
                        column_mapping=column_mapping)
    feature = getattr(dataset.features["tags"], "feature", None)
    if isinstance(feature, datasets.ClassLabel):
        names = feature.names
        dataset = dataset.map(lambda row: {"tags": [names[i] for i in row["tags"]]},
                              features=datasets.Features({**dataset.features, "tags": datasets.List(datasets.Value("string"))}))
    for number, row in enumerate(dataset.select_columns(["tokens", "tags"]), 1):
        _checked(row["tokens"], row["tags"], f"hub dataset {spec} row {number}")
    return dataset.select_columns(["tokens", "tags"])


def read_labels(path: str) -> list[str]:
    """A labels.json: the list of tag names."""
    if not os.path.isfile(path):
        raise EttinError(f"labels file {path} does not exist")
    try:
        names = json.loads("".join(line for _, line in text_lines(path)))
    except json.JSONDecodeError as error:
        raise EttinError(f"{path}: malformed JSON at line {error.lineno} ({error.msg})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise EttinError(f"{path}: expected a JSON list of distinct tag names, e.g. [\"O\", \"B-person\", \"I-person\"]")
    return names


def _check_tags(dataset: datasets.Dataset, labels: list[str], where: str, source: str) -> None:
    known = set(labels)
    for number, tags in enumerate(dataset["tags"], 1):
        unknown = next((tag for tag in tags if tag not in known), None)
        if unknown is not None:
            raise EttinError(f"{where} sentence {number}: tag {unknown!r} is not among the labels ({source}: "
                             f"{', '.join(labels)})")


def load_tagging_data(*, data: str, eval_data: str | None = None, labels: str | None = None,
                      max_samples: int | None = None, held_out: int = 1000, data_config: str | None = None,
                      data_split: str = "train", column_mapping=None) -> TaggingData:
    """Training and evaluation sentences and the label names: the evaluation file (``eval_data``, else the
    folder's validation.jsonl), else ``held_out`` training sentences (at most a tenth)."""
    labels_file = labels
    refuse_hub_choices_for_local(data, data_config, data_split)
    if os.path.isdir(data):
        train_where = os.path.join(data, "train.jsonl")
        if not os.path.isfile(train_where):
            raise EttinError(f"folder {data} has no train.jsonl; expected train.jsonl, validation.jsonl and an "
                             "optional labels.json")
        validation = os.path.join(data, "validation.jsonl")
        eval_data = eval_data or (validation if os.path.isfile(validation) else None)
        folder_labels = os.path.join(data, "labels.json")
        labels_file = labels_file or (folder_labels if os.path.isfile(folder_labels) else None)
        train = read_sentences(train_where, column_mapping)
    elif is_local(data):
        train_where, train = data, read_sentences(data, column_mapping)
    else:
        train_where, train = f"hub dataset {data}", _hub_sentences(data, data_config, data_split, column_mapping)
    evaluation = read_sentences(eval_data, column_mapping) if eval_data else None
    if max_samples:
        train = train.select(range(min(max_samples, len(train))))
    if labels_file:
        names, source = read_labels(labels_file), labels_file
    else:
        seen = {tag for tags in train["tags"] for tag in tags}
        names, source = [OUTSIDE] * (OUTSIDE in seen) + sorted(seen - {OUTSIDE}), f"the tags of {train_where}"
    _check_tags(train, names, train_where, source)
    if evaluation is not None:
        _check_tags(evaluation, names, eval_data, source)
    else:
        train, evaluation = hold_out_for_evaluation(train, held_out, train_where, "sentences")
    if len(names) < 2:
        raise EttinError(f"{train_where}: every tag is {names[0]!r}; a tagger needs at least two labels")
    return TaggingData(train, evaluation, tuple(names))


def align_labels(word_ids: list[int | None], tags: list[int], label_all_tokens: bool, inside_of: dict[int, int]) -> list[int]:
    """One label per sub-token: the word's tag on its first sub-token; on the others -100 (ignored by the loss),
    or with ``label_all_tokens`` the word's tag with B- turned into I- (as in transformers' NER example)."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(tags[word])
        else:
            labels.append(inside_of.get(tags[word], tags[word]) if label_all_tokens else -100)
        previous = word
    return labels


def inside_tags(label_names) -> dict[int, int]:
    """B-X's id → I-X's id, for each B- tag whose I- tag exists."""
    index = {name: i for i, name in enumerate(label_names)}
    return {i: index["I-" + name[2:]] for i, name in enumerate(label_names)
            if name.startswith("B-") and "I-" + name[2:] in index}


def tokenize_words(dataset: datasets.Dataset, tokenizer, label_names, max_length: int | None,
                   label_all_tokens: bool = False) -> datasets.Dataset:
    """Sub-token ids of each sentence's words (``is_split_into_words``) with their labels, each sub-token's word
    (``word_ids``, -1 for special tokens) and the number of words."""
    id_of, inside = {name: i for i, name in enumerate(label_names)}, inside_tags(label_names)

    def encode(rows):
        encoded = tokenizer(rows["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        encoded["labels"], encoded["word_ids"] = [], []
        encoded["word_count"] = [len(tokens) for tokens in rows["tokens"]]
        for i, tags in enumerate(rows["tags"]):
            words = encoded.word_ids(i)
            encoded["labels"].append(align_labels(words, [id_of[t] for t in tags], label_all_tokens, inside))
            encoded["word_ids"].append([-1 if w is None else w for w in words])
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing words")
