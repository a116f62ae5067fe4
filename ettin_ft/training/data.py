"""Pretraining data: documents (with a held-out share) and the packed row stream each process trains on."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from ..data.loading import check_texts, load_data
from ..errors import EttinError
from .packing import SpecialIds, make_example, pack_documents


def load_documents(config):
    """Training and held-out documents (the first ``eval_documents`` are held out)."""
    streaming = not os.path.exists(config.data)
    documents = load_data(config.data, columns=[config.text_column], split=config.data_split,
                          config_name=config.data_config, streaming=streaming)
    documents = documents.select_columns([config.text_column])
    if streaming:
        return documents.skip(config.eval_documents), documents.take(config.eval_documents)
    check_texts(documents, [config.text_column], config.data)
    if len(documents) <= config.eval_documents:
        raise EttinError(
            f"{config.data}: {len(documents)} documents, but {config.eval_documents} are held out for evaluation; "
            "pass more data or a smaller --eval-documents"
        )
    return (documents.select(range(config.eval_documents, len(documents))),
            documents.select(range(config.eval_documents)))


class PackedRows(IterableDataset):
    """This process's share of the global row stream, from ``start_row`` on, as training examples.

    With several data-loader workers, worker w makes the examples of this process's micro-batches
    w, w + workers, ... (of ``batch_size`` rows): the loader takes batches from its workers in turn, so the
    batches arrive in the same order as with one worker.
    """

    def __init__(self, documents, tokenizer, config, rows_per_step: int, rank: int, world_size: int,
                 start_row: int = 0, repeat: bool = True, seed_offset: int = 0, batch_size: int = 1):
        self.documents, self.tokenizer, self.config = documents, tokenizer, config
        self.rows_per_step, self.rank, self.world_size = rows_per_step, rank, world_size
        self.start_row, self.repeat, self.seed_offset = start_row, repeat, seed_offset
        self.batch_size = batch_size
        self.ids = SpecialIds.of(tokenizer)

    def _tokenized(self) -> Iterator[list[int]]:
        for epoch in itertools.count():
            # A fresh document order every epoch, the same for every process.
            ordered = self.documents.shuffle(seed=self.config.seed + epoch) if self.repeat else self.documents
            for batch in ordered.iter(batch_size=512):
                texts = [t for t in batch[self.config.text_column] if t and t.strip()]
                yield from self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            if not self.repeat:
                return

    def __iter__(self):
        per_process = self.rows_per_step // self.world_size
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        rows = pack_documents(self._tokenized(), self.config.seq_len, self.ids, close_with_sep=self.config.arch == "encoder")
        local = -1  # this process's row count
        for index, (input_ids, doc_ids) in enumerate(rows):
            if index < self.start_row or (index % self.rows_per_step) // per_process != self.rank:
                continue
            local += 1
            if (local // self.batch_size) % workers != worker_id:
                continue
            yield make_example(input_ids, doc_ids, index + self.seed_offset, self.config.objective, self.ids,
                               self.config.mlm_probability, self.config.seed, self.config.mask_replace_prob,
                               self.config.random_replace_prob)
