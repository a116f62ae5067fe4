"""Zero-shot tasks: .jsonl files in the three row shapes of lm-evaluation-harness's log-likelihood tasks, turned
into (context, continuation) requests the way lm-eval builds them.

- multiple choice ``{"query", "choices", "gold"}``: each choice continues the query;
- schema ``{"context_options", "continuation", "gold"}``: the same continuation after each context (lm-eval's
  "partial evaluation", WinoGrande);
- cloze ``{"context", "continuation"}``: one continuation, right when every token is the greedy choice (LAMBADA).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from ..errors import EttinError
from .loading import _jsonl_rows

ROW_SHAPES = {
    "multiple_choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "cloze": ("context", "continuation"),
}
EXPECTED = ("{query, choices, gold} (multiple choice), {context_options, continuation, gold} (schema) "
            "or {context, continuation} (cloze)")


@dataclass(frozen=True)
class TaskItem:
    """One task item as lm-eval requests: ``requests[i]`` is choice i's (context, continuation)."""

    requests: tuple[tuple[str, str], ...]
    gold: int
    # Characters acc_norm divides by (lm-eval: the choice's text, without the delimiter before it).
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class Task:
    name: str
    shape: str
    items: tuple[TaskItem, ...]

    @property
    def random(self) -> float:
        """Chance accuracy: the mean of 1/choices (cloze: 0, nothing to guess among)."""
        if self.shape == "cloze":
            return 0.0
        return sum(1 / len(item.requests) for item in self.items) / len(self.items)


def continue_with(context: str, text: str) -> tuple[str, str]:
    """(context, " " + text), lm-eval's target delimiter; a context that already ends in whitespace (PIQA's
    "Answer: ") gets none, so the continuation starts with one space either way."""
    return context, ("" if context[-1:].isspace() else " ") + text


def shape_of_row(row: dict, where: str) -> str:
    for shape, keys in ROW_SHAPES.items():
        if all(key in row for key in keys):
            return shape
    raise EttinError(f"{where}: expected {EXPECTED}; found keys {', '.join(sorted(row)) or '(none)'}")


def _text(value, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EttinError(f"{where}: {field} must be a non-empty string, found {value!r}"[:300])
    return value


def _options(value, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2:
        raise EttinError(f"{where}: {field} must be a list of at least two strings, found {value!r}"[:300])
    return [_text(option, where, f"{field}[{i}]") for i, option in enumerate(value)]


def _gold(value, count: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise EttinError(f"{where}: gold must be the index of the right choice, 0 to {count - 1}; found {value!r}")
    return value


def item_of(row: dict, shape: str, where: str) -> TaskItem:
    if shape == "multiple_choice":
        query, choices = _text(row["query"], where, "query"), _options(row["choices"], where, "choices")
        return TaskItem(tuple(continue_with(query, choice) for choice in choices), _gold(row["gold"], len(choices), where),
                    tuple(len(choice) for choice in choices))
    if shape == "schema":
        options = _options(row["context_options"], where, "context_options")
        continuation = _text(row["continuation"], where, "continuation")
        return TaskItem(tuple(continue_with(option, continuation) for option in options),
                    _gold(row["gold"], len(options), where), (len(continuation),) * len(options))
    continuation = _text(row["continuation"], where, "continuation")
    return TaskItem((continue_with(_text(row["context"], where, "context"), continuation),), 0, (len(continuation),))


def load_task(path: str, limit: int | None = None) -> Task:
    """The task in one .jsonl file (named by the file's stem); every row must have the first row's shape."""
    name = os.path.splitext(os.path.basename(path))[0]
    shape, items = None, []
    for number, row in _jsonl_rows(path):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path} line {number}"
        row_shape = shape_of_row(row, where)
        if shape is not None and row_shape != shape:
            raise EttinError(f"{where}: a {row_shape.replace('_', ' ')} row in a file of {shape.replace('_', ' ')} "
                             "rows; expected one shape per file")
        shape = row_shape
        items.append(item_of(row, shape, where))
    if not items:
        raise EttinError(f"{path} is empty; expected one JSON object per line in the shape {EXPECTED}")
    return Task(name, shape, tuple(items))


def task_files(data: str | None) -> dict[str, str]:
    """Task name → file: one .jsonl file, or every .jsonl file of a folder."""
    if not data:
        raise EttinError("--data is required: a .jsonl file of zero-shot items or a folder of them "
                         "(e.g. ../shared/data/zeroshot)")
    if os.path.isfile(data):
        if not data.endswith(".jsonl"):
            raise EttinError(f"--data {data}: expected a .jsonl file (or a folder of them)")
        return {os.path.splitext(os.path.basename(data))[0]: data}
    if not os.path.isdir(data):
        raise EttinError(f"--data {data} does not exist; expected a .jsonl file or a folder of them")
    files = {name[:-len(".jsonl")]: os.path.join(data, name) for name in sorted(os.listdir(data)) if name.endswith(".jsonl")}
    if not files:
        raise EttinError(f"--data {data} holds no .jsonl files; expected one per task, named by the task")
    return files


def load_tasks(data: str | None, tasks: str | None = None, limit: int | None = None) -> list[Task]:
    """The tasks of ``data`` (all, or the comma-separated names in ``tasks``), each cut to ``limit`` items."""
    if limit is not None and limit < 1:
        raise EttinError(f"--limit {limit}: expected a positive number of items per task")
    files = task_files(data)
    names = list(files) if not tasks else [name.strip() for name in tasks.split(",") if name.strip()]
    for name in names:
        if name not in files:
            close = difflib.get_close_matches(name, files, n=1)
            raise EttinError(f"--tasks: no task {name!r} in {data}" + (f"; did you mean {close[0]!r}?" if close else "")
                             + f" (tasks there: {', '.join(files)})")
    return [load_task(files[name], limit) for name in names]
