"""Documents → fixed-size packed rows, with the labels of each training objective.

Every row holds exactly ``seq_len`` tokens: documents are cut into pieces that begin with [CLS] (and end
with [SEP] for encoders) and packed back to back; a document that does not fit is continued in the next
row, so padding only appears where a piece would be shorter than ``min_piece`` tokens. The rows are planned
from document lengths alone (``plan_rows``) and filled with tokens only where they are trained on. ``doc_ids``
numbers the pieces within a row (padding is -1) so attention never crosses documents.

Masking is seeded per global row index, so a row gets the same mask whatever the number of processes,
the micro-batch size, or a resume in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import EttinError

OBJECTIVES = ("mlm", "clm", "mntp")


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    pad: int
    mask: int
    vocab_size: int

    @classmethod
    def of(cls, tokenizer) -> "SpecialIds":
        return cls(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
                   tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.pad_token_id,
                   len(tokenizer))


def plan_rows(documents: Iterable[tuple[int, int]], seq_len: int, close_with_sep: bool,
              min_piece: int = 8) -> Iterator[list[tuple[int, int, int]]]:
    """Pack (document, token length) pairs, in order, into rows of ``seq_len`` tokens: each row as its pieces,
    (document, first token, end token). Lengths alone decide the rows, so every process can know the whole row
    order while reading the tokens of its own rows only."""
    overhead = 2 if close_with_sep else 1
    if seq_len < overhead + min_piece:
        raise EttinError(f"seq_len {seq_len} is too short; expected at least {overhead + min_piece}")
    row: list[tuple[int, int, int]] = []
    used = 0
    for document, length in documents:
        start = 0
        while start < length:
            if seq_len - used < overhead + min_piece:
                yield row
                row, used = [], 0
            take = min(length - start, seq_len - used - overhead)
            row.append((document, start, start + take))
            used += take + overhead
            start += take
            if used == seq_len:
                yield row
                row, used = [], 0
    if row:
        yield row


def fill_row(pieces: Iterable[list[int]], seq_len: int, ids: SpecialIds, close_with_sep: bool) -> tuple[list[int], list[int]]:
    """(input_ids, doc_ids) of one row from the token bodies of its pieces: [CLS] body ([SEP]), then padding."""
    input_ids: list[int] = []
    doc_ids: list[int] = []
    for number, body in enumerate(pieces):
        piece = [ids.cls, *body] + ([ids.sep] if close_with_sep else [])
        input_ids += piece
        doc_ids += [number] * len(piece)
    missing = seq_len - len(input_ids)
    return input_ids + [ids.pad] * missing, doc_ids + [-1] * missing


def pack_documents(
    documents: Iterable[list[int]], seq_len: int, ids: SpecialIds, close_with_sep: bool, min_piece: int = 8
) -> Iterator[tuple[list[int], list[int]]]:
    """Yield (input_ids, doc_ids) rows of exactly ``seq_len`` tokens from a stream of tokenized documents,
    holding only the documents of the row being filled."""
    bodies: dict[int, list[int]] = {}

    def lengths():
        for number, body in enumerate(documents):
            bodies[number] = body
            yield number, len(body)

    for pieces in plan_rows(lengths(), seq_len, close_with_sep, min_piece):
        yield fill_row((bodies[d][start:end] for d, start, end in pieces), seq_len, ids, close_with_sep)
        for done in [number for number in bodies if number < pieces[-1][0]]:
            del bodies[done]


def position_ids_of(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 at the start of every piece (padding counts as one more piece)."""
    length = doc_ids.shape[-1]
    index = torch.arange(length).expand_as(doc_ids)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[..., 1:] = doc_ids[..., 1:] != doc_ids[..., :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values
    return index - start_index


def mask_tokens(
    input_ids: torch.Tensor, ids: SpecialIds, probability: float, generator,
    mask_replace: float = 0.8, random_replace: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of one row: choose ``probability`` of the ordinary tokens; of those, ``mask_replace``
    become [MASK], ``random_replace`` a random token, the rest stay. Returns (inputs, labels)."""
    special = (input_ids == ids.cls) | (input_ids == ids.sep) | (input_ids == ids.pad)
    chosen = (uniform(input_ids.shape, generator) < probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    draw = uniform(input_ids.shape, generator)
    inputs = input_ids.clone()
    inputs[chosen & (draw < mask_replace)] = ids.mask
    random_positions = chosen & (draw >= mask_replace) & (draw < mask_replace + random_replace)
    inputs[random_positions] = token_ids(ids.vocab_size, input_ids.shape, generator)[random_positions]
    return inputs, labels


def next_token_labels(input_ids: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """CLM labels: the next token of the same piece; -100 at piece ends and on padding."""
    labels = torch.full_like(input_ids, -100)
    same_piece = (doc_ids[1:] == doc_ids[:-1]) & (doc_ids[1:] >= 0)
    labels[:-1] = torch.where(same_piece, input_ids[1:], labels[:-1])
    return labels


def shift_to_previous_position(labels: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
    """MNTP: the masked token at position i is predicted from position i-1 of the same piece."""
    shifted = torch.full_like(labels, -100)
    same_piece = doc_ids[1:] == doc_ids[:-1]
    shifted[:-1] = torch.where(same_piece, labels[1:], shifted[:-1])
    return shifted


def masking_generator(seed: int, row_index: int, held_out: bool = False):
    """The masking draws of one row. Training rows: torch's generator seeded seed × 1,000,003 + row. Held-out rows:
    numpy's PCG64 from the seed sequence (seed, row), another generator family, so a held-out row never draws a
    training row's masks at any corpus size (torch seeds its generator from 32 bits, which training rows sweep)."""
    if held_out:
        return np.random.default_rng([seed, row_index])
    return torch.Generator().manual_seed(seed * 1_000_003 + row_index)


def uniform(shape, generator) -> torch.Tensor:
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.random(tuple(shape), dtype=np.float32))
    return torch.rand(shape, generator=generator)


def token_ids(high: int, shape, generator) -> torch.Tensor:
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.integers(high, size=tuple(shape)))
    return torch.randint(high, shape, generator=generator)


def make_example(
    input_ids: list[int], doc_ids: list[int], row_index: int, objective: str, ids: SpecialIds,
    mlm_probability: float, seed: int, mask_replace: float = 0.8, random_replace: float = 0.1, held_out: bool = False,
) -> dict[str, torch.Tensor]:
    """One example (inputs, labels, positions, piece ids) for ``objective``: training row ``row_index``, or held-out
    row ``row_index``."""
    if objective not in OBJECTIVES:
        raise EttinError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    tokens = torch.tensor(input_ids, dtype=torch.long)
    docs = torch.tensor(doc_ids, dtype=torch.long)
    if objective == "clm":
        inputs, labels = tokens, next_token_labels(tokens, docs)
    else:
        inputs, labels = mask_tokens(tokens, ids, mlm_probability, masking_generator(seed, row_index, held_out),
                                     mask_replace, random_replace)
        if objective == "mntp":
            labels = shift_to_previous_position(labels, docs)
    return {"input_ids": inputs, "labels": labels, "doc_ids": docs, "position_ids": position_ids_of(docs)}
