"""One loader for every recipe: hub datasets, local files and folders, and BEIR folders.

Every failure is an EttinError naming the file (or dataset), what was found and what was expected.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import datasets

from ..errors import EttinError
from ..process_state import datasets_progress_bars
from .text import check_utf8, text_lines
from ..hub import hub_offline, unreachable_because

LOCAL_FORMATS = (".jsonl", ".json", ".csv", ".parquet", ".txt")


def _read_jsonl(path: str) -> list[dict]:
    """The rows of a small .jsonl file (BEIR corpora and queries) as dicts."""
    return [row for _, row in _jsonl_rows(path)]


def _jsonl_rows(path: str, expected: str = "one JSON object per line"):
    """(line number, row) of every non-empty line, one line in memory at a time; a bad line is one error."""
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise EttinError(f"{path} line {number}: malformed JSON ({error.msg}) in {line.strip()[:40]!r}; "
                             f"expected {expected}") from None
        if not isinstance(row, dict):
            raise EttinError(f"{path} line {number}: expected a JSON object, found {type(row).__name__}")
        yield number, row


def _read_json(path: str) -> list[dict]:
    try:
        content = json.loads("".join(line for _, line in text_lines(path)))
    except json.JSONDecodeError as error:
        raise EttinError(f"{path}: malformed JSON at line {error.lineno} ({error.msg})") from None
    if isinstance(content, dict) and isinstance(content.get("data"), list):
        content = content["data"]
    if not isinstance(content, list) or not all(isinstance(row, dict) for row in content):
        raise EttinError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
    return content


# Line- and column-based files load through datasets' own builders into Arrow files that are memory-mapped,
# so a corpus larger than memory costs none; a whole-document .json is read as one object.
BUILDERS = {".jsonl": "json", ".txt": "text", ".csv": "csv", ".parquet": "parquet"}


def _first_bad_line(path: str, extension: str) -> EttinError | None:
    """The one-line error locating what in ``path`` a builder could not read, where a streaming scan finds it."""
    try:
        if extension == ".jsonl":
            for _ in _jsonl_rows(path):
                pass
        elif extension in (".txt", ".csv"):
            for _ in text_lines(path):
                pass
    except EttinError as located:
        return located
    return None


LARGE_FILES = 64 * 2**20  # bytes of data whose reading shows progress bars


def _csv_options(path: str) -> dict:
    """Every CSV field as the text written (labels too, which classification reads as names); a missing field is null."""
    header = next(csv.reader(line for _, line in text_lines(path)), [])
    return {"features": datasets.Features({name: datasets.Value("string") for name in header}),
            "keep_default_na": False, "na_values": []}


def _read_files(paths: list[str], text_column: str) -> datasets.Dataset:
    """The rows of ``paths`` (files of one type), in order; .txt files give one row per non-empty line."""
    extension = os.path.splitext(paths[0])[1].lower()
    if extension == ".json":
        return datasets.concatenate_datasets([datasets.Dataset.from_list(_read_json(p)) for p in paths])
    if extension not in BUILDERS:
        raise EttinError(f"{paths[0]}: unsupported file type {extension!r}; expected one of {', '.join(LOCAL_FORMATS)}")
    paths = [p for p in paths if os.path.getsize(p) > 0]
    if not paths:
        return datasets.Dataset.from_dict({})
    for path in paths:
        if extension != ".parquet":
            check_utf8(path)
    options = _csv_options(paths[0]) if extension == ".csv" else {}
    if extension == ".jsonl":
        for path in paths:  # the builder would read a file of JSON lists as rows of a "text" column
            next(_jsonl_rows(path), None)
    with datasets_progress_bars(sum(os.path.getsize(p) for p in paths) > LARGE_FILES):
        try:
            dataset = datasets.load_dataset(BUILDERS[extension], data_files=paths, split="train", **options)
        except Exception as error:  # the builders raise many types for unreadable files
            located = next(filter(None, (_first_bad_line(path, extension) for path in paths)), None)
            cause = error.__cause__ or error.__context__ or error
            raise located or EttinError(f"{paths[0]}: cannot read it as {extension[1:]} ({type(cause).__name__}: "
                                        f"{str(cause).splitlines()[0] if str(cause) else ''})") from None
        if extension == ".txt":
            dataset = dataset.filter(lambda batch: [bool(line.strip()) for line in batch["text"]], batched=True,
                                     desc="dropping blank lines")
        if text_column != "text":
            dataset = dataset.rename_column("text", text_column)
    return dataset


def _files_in(folder: str) -> list[str]:
    files = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if p.lower().endswith(LOCAL_FORMATS))
    if not files:
        raise EttinError(f"folder {folder} holds no data files; expected {', '.join(LOCAL_FORMATS)} files")
    extensions = {os.path.splitext(p)[1].lower() for p in files}
    if len(extensions) > 1:
        raise EttinError(f"folder {folder} mixes file types ({', '.join(sorted(extensions))}); expected one type")
    return files


def is_beir_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "corpus.jsonl")) and os.path.isfile(os.path.join(path, "queries.jsonl"))


def reach_hub_dataset(repo: str, revision: str | None = None) -> None:
    """One quick request for a hub dataset, raising the client's error: loading it would retry for minutes when
    offline. With HF_HUB_OFFLINE set the dataset must be in the local cache, else the client's not-cached error:
    both cases fail alike, before anything loads."""
    from huggingface_hub import HfApi, snapshot_download

    if hub_offline():
        snapshot_download(repo, repo_type="dataset", revision=revision, local_files_only=True)
    else:
        HfApi().dataset_info(repo, revision=revision, timeout=10)


def _load_hub(name: str, config_name: str | None, split: str, streaming: bool):
    repo = name.split("@")[0]
    revision = name.split("@")[1] if "@" in name else None
    try:
        reach_hub_dataset(repo, revision)
        return datasets.load_dataset(repo, config_name, split=split, revision=revision, streaming=streaming)
    except Exception as error:
        raise EttinError(
            f"cannot load dataset {name!r} (split {split!r}) from the Hugging Face hub ({unreachable_because(error)}); "
            "pass a local .jsonl/.csv/.parquet/.txt file or folder instead"
        ) from None


def is_local(spec: str) -> bool:
    """Whether ``spec`` names local data: an existing path, a path-like name, or anything but a hub name (org/name)."""
    return os.path.exists(spec) or spec.startswith((".", "/", "~")) or spec.count("/") != 1


def refuse_hub_choices_for_local(spec: str, config_name: str | None, split: str) -> None:
    """--data-config and --data-split choose within a hub dataset: one error when they are set for local data."""
    if is_local(spec) and (config_name is not None or split != "train"):
        chosen = " and ".join(f"--{flag} {value}" for flag, value in (("data-config", config_name), ("data-split", split))
                              if value not in (None, "train"))
        raise EttinError(f"{chosen} applies to hub datasets only; {spec} is local data (name the file to read instead)")


def load_data(
    spec: str,
    *,
    columns: Sequence[str] = (),
    split: str = "train",
    config_name: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    text_column: str = "text",
    limit: int | None = None,
    streaming: bool = False,
) -> datasets.Dataset:
    """Load ``spec`` (a local file or folder, or a hub dataset name) and check it has ``columns``.

    ``column_mapping`` renames columns first ({name in the data: name the recipe expects}); .txt files
    give one row per non-empty line in ``text_column``; ``limit`` keeps the first rows. ``split`` and
    ``config_name`` choose within a hub dataset and are refused for local data.
    """
    refuse_hub_choices_for_local(spec, config_name, split)
    if os.path.isdir(spec):
        if is_beir_folder(spec):
            raise EttinError(f"{spec} is a BEIR folder (corpus/queries/qrels); pass it as an evaluation set, not as training data")
        dataset, where = _read_files(_files_in(spec), text_column), spec
    elif os.path.isfile(spec):
        dataset, where = _read_files([spec], text_column), spec
    elif spec.lower().endswith(LOCAL_FORMATS) or spec.startswith((".", "/", "~")):
        raise EttinError(f"data file {spec} does not exist")
    elif spec.count("/") == 1:
        dataset, where = _load_hub(spec, config_name, split, streaming), f"hub dataset {spec} ({split})"
    else:
        raise EttinError(f"data {spec!r} is neither a local file or folder nor a hub dataset name (org/name)")
    if column_mapping:
        missing = [c for c in column_mapping if c not in dataset.column_names]
        if missing:
            raise EttinError(f"{where}: column mapping names {missing} but the columns are {dataset.column_names}")
        dataset = dataset.rename_columns(dict(column_mapping))
    return validate(dataset, columns, where, limit)


def hold_out_for_evaluation(dataset, count: int, where: str, unit: str = "rows"):
    """(training rows, evaluation rows) without an evaluation file: ``count`` rows (at most a tenth) split off the same
    way in every run, or one error when there are too few."""
    count = min(count, len(dataset) // 10)
    if count < 1:
        raise EttinError(f"{where}: {len(dataset)} {unit} are too few to hold out evaluation {unit}; "
                         "pass --eval-data or more data")
    split = dataset.train_test_split(test_size=count, seed=0)
    return split["train"], split["test"]


def validate(dataset, columns: Sequence[str], where: str, limit: int | None = None):
    """Check a dataset is non-empty and has ``columns``; keep the first ``limit`` rows."""
    if isinstance(dataset, datasets.Dataset) and len(dataset) == 0:
        raise EttinError(f"{where}: no rows; expected a non-empty dataset")
    found = list(dataset.column_names or [])
    missing = [c for c in columns if c not in found]
    # Streamed hub datasets may not know their columns before the first row.
    if missing and dataset.column_names is not None:
        raise EttinError(
            f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(found) or 'none'}; "
            f"expected {', '.join(columns)} (rename with a column mapping)"
        )
    if isinstance(dataset, datasets.Dataset):
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
    elif limit is not None:
        dataset = dataset.take(limit)
    return dataset



def blank_texts(values):
    """Arrow's mask of a text array: True where a value is null, empty or only whitespace."""
    import pyarrow.compute as pc

    return pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))


def check_texts(dataset, columns: Sequence[str], where: str) -> None:
    """Every value of ``columns`` is non-empty text; otherwise one error naming the row and the column.

    Checked on Arrow batches, so a large dataset is never materialised as Python objects.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    offset = 0
    for table in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=65_536):
        for column in columns:
            values = table[column]
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_null(values.type)):
                raise EttinError(f"{where} row {offset + 1}: column {column!r} is {values.type}; expected non-empty text")
            bad = pc.is_null(values) if pa.types.is_null(values.type) else blank_texts(values)
            if pc.any(bad).as_py():
                first = pc.index(bad, True).as_py()
                found = "empty" if values[first].is_valid else "null"
                raise EttinError(f"{where} row {offset + first + 1}: column {column!r} is {found}; expected non-empty text")
        offset += table.num_rows


SPLIT_NAMES = {"train": ("train",), "eval": ("validation", "validation_matched", "dev", "test")}


def named_splits(folder: str) -> tuple[str, str | None] | None:
    """(train file, evaluation file or None) of a folder holding a train.* file, as in the GLUE-style sets of
    ../shared/data/classification; None when the folder has no train file."""
    files = {os.path.splitext(os.path.basename(p))[0]: p for p in _files_in(folder)}
    train = next((files[name] for name in SPLIT_NAMES["train"] if name in files), None)
    if train is None:
        return None
    return train, next((files[name] for name in SPLIT_NAMES["eval"] if name in files), None)


def validate_chats(dataset, where: str, column: str = "messages") -> None:
    """Check every conversation: a list of {role, content}, an optional system message first, then user and
    assistant turns alternating from the user, with at least one assistant turn."""
    rows = (messages for batch in dataset.select_columns([column]).iter(batch_size=1024) for messages in batch[column])
    for row_number, messages in enumerate(rows, 1):
        if not isinstance(messages, list) or not messages:
            raise EttinError(f"{where} row {row_number}: {column} must be a non-empty list of {{role, content}} messages")
        expected = "user"
        for turn, message in enumerate(messages, 1):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
                raise EttinError(f"{where} row {row_number}, message {turn}: expected {{\"role\": ..., \"content\": str}}")
            role = message["role"]
            if role == "system" and turn == 1:
                continue
            if role != expected:
                raise EttinError(
                    f"{where} row {row_number}, message {turn}: role {role!r} out of order; expected {expected!r} "
                    "(an optional system message first, then user and assistant turns alternating)"
                )
            expected = "assistant" if role == "user" else "user"
        if not any(m["role"] == "assistant" for m in messages):
            raise EttinError(f"{where} row {row_number}: no assistant message to learn from")


# ------------------------------------------------------------------------------------------------- BEIR


@dataclass
class BeirSplit:
    """A BEIR evaluation split: the corpus, the judged queries and their relevance judgements."""

    corpus: dict[str, dict]  # doc id → {"title", "text"}
    queries: dict[str, str]  # query id → text (only queries with judgements)
    qrels: dict[str, dict[str, int]]  # query id → {doc id: relevance}

    def documents(self) -> dict[str, str]:
        """Doc id → 'title text' (the usual BEIR concatenation)."""
        return {i: f"{d.get('title', '')} {d.get('text', '')}".strip() for i, d in self.corpus.items()}


def load_beir(folder: str, split: str = "test") -> BeirSplit:
    """Load a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    if not os.path.isdir(folder):
        raise EttinError(f"BEIR folder {folder} does not exist")
    qrels_path = os.path.join(folder, "qrels", f"{split}.tsv")
    for path in (os.path.join(folder, "corpus.jsonl"), os.path.join(folder, "queries.jsonl"), qrels_path):
        if not os.path.isfile(path):
            raise EttinError(f"BEIR folder {folder}: missing {os.path.relpath(path, folder)}; expected corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    corpus = {}
    for row in _read_jsonl(os.path.join(folder, "corpus.jsonl")):
        if "_id" not in row or "text" not in row:
            raise EttinError(f"{folder}/corpus.jsonl: rows need _id and text; found {', '.join(row)}")
        corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row["text"] or ""}
    all_queries = {}
    for row in _read_jsonl(os.path.join(folder, "queries.jsonl")):
        if "_id" not in row or "text" not in row:
            raise EttinError(f"{folder}/queries.jsonl: rows need _id and text; found {', '.join(row)}")
        all_queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    for number, line in text_lines(qrels_path):
        fields = line.rstrip("\r\n").split("\t")
        if number == 1 and fields[0] == "query-id":
            continue
        if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
            raise EttinError(f"{qrels_path} line {number}: expected 'query-id<TAB>corpus-id<TAB>score'")
        if int(fields[2]) > 0:
            qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    if not queries:
        raise EttinError(f"BEIR folder {folder}: no judged queries in qrels/{split}.tsv match queries.jsonl")
    return BeirSplit(corpus, queries, {q: qrels[q] for q in queries})
