"""SFT data in trl's three formats: conversations, prompt/completion pairs and plain text; checks and BOS."""

from __future__ import annotations

from ..errors import EttinError
from .loading import check_texts, validate_chats

FORMAT_COLUMNS = {"conversational": ["messages"], "prompt-completion": ["prompt", "completion"], "text": ["text"]}


def data_format(dataset, where: str) -> str:
    for name, columns in FORMAT_COLUMNS.items():
        if all(c in dataset.column_names for c in columns):
            return name
    raise EttinError(f"{where}: no messages column (nor prompt/completion, nor text); found "
                     f"{', '.join(dataset.column_names) or 'none'}; expected conversations in 'messages'")


def checked_split(split, fmt: str, where: str):
    """``split`` with only its format's columns, every row checked (conversations turn by turn, text non-empty)."""
    if split is None:
        return None
    split = split.select_columns(FORMAT_COLUMNS[fmt])
    if fmt == "conversational":
        validate_chats(split, where)
    elif not isinstance(split[0][FORMAT_COLUMNS[fmt][0]], list):  # plain strings, not conversational prompts
        check_texts(split, FORMAT_COLUMNS[fmt], where)
    return split


def with_bos(dataset, fmt: str, bos: str):
    """Put BOS first in non-chat rows, as in decoder pretraining (the chat template adds it to chats)."""
    column = {"prompt-completion": "prompt", "text": "text"}.get(fmt)
    if dataset is None or column is None or isinstance(dataset[0][column], list):
        return dataset
    return dataset.map(lambda row: {column: bos + row[column]})
