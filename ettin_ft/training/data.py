"""Pretraining data: documents (with a held-out share), tokenised once, and the packed rows each process trains on.

Local files (Arrow, memory-mapped): each process tokenises its contiguous share of the documents once, into
DIR/tokenized/, and then reads every share memory-mapped. Rows are planned from document lengths alone, so
every process knows the global row order (the same whatever the number of processes) while it reads the
tokens of its own rows only, and a resumed run plans its way to its position without tokenising again.

Hub datasets (streamed): each process reads, tokenises and packs its share of the stream
(``split_dataset_by_node``); a resumed run reads its share again up to where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Iterator

import datasets
import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..data.loading import check_texts, load_data
from ..errors import EttinError
from .packing import SpecialIds, fill_row, make_example, pack_documents, plan_rows


def load_documents(config):
    """Training and held-out documents (the first ``eval_documents`` are held out)."""
    streaming = not os.path.exists(config.data)
    documents = load_data(config.data, columns=[config.text_column], split=config.data_split,
                          config_name=config.data_config, streaming=streaming)
    documents = documents.select_columns([config.text_column])
    if streaming:
        documents = documents.filter(lambda row: bool(row[config.text_column] and row[config.text_column].strip()))
        return documents.skip(config.eval_documents), documents.take(config.eval_documents)
    check_texts(documents, [config.text_column], config.data)
    if len(documents) <= config.eval_documents:
        raise EttinError(
            f"{config.data}: {len(documents)} documents, but {config.eval_documents} are held out for evaluation; "
            "pass more data or a smaller --eval-documents"
        )
    return (documents.select(range(config.eval_documents, len(documents))),
            documents.select(range(config.eval_documents)))


def tokenize_documents(documents: datasets.Dataset, tokenizer, text_column: str, accelerator, folder: str) -> datasets.Dataset:
    """The token ids of every document, in order. Each process tokenises its contiguous share once into an Arrow
    file under ``folder`` (kept for --resume), then every process reads all the shares memory-mapped."""
    world, rank = accelerator.num_processes, accelerator.process_index
    key = hashlib.sha256(f"{documents._fingerprint} {tokenizer.backend_tokenizer.to_str()}".encode()).hexdigest()[:16]

    def path(share: int) -> str:
        return os.path.join(folder, key, f"tokens-{share:05d}-of-{world:05d}.arrow")

    if not os.path.isfile(path(rank)):
        os.makedirs(os.path.dirname(path(rank)), exist_ok=True)
        # Few vocabularies exceed 65,536 ids (Ettin's has 50,368): two bytes a token on disk and in memory.
        ids = datasets.Value("uint16" if len(tokenizer) <= 2**16 else "int32")
        documents.shard(world, rank, contiguous=True).map(
            lambda batch: {"input_ids": tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]},
            batched=True, batch_size=1000, remove_columns=documents.column_names, cache_file_name=path(rank),
            features=datasets.Features({"input_ids": datasets.List(ids)}), desc=f"tokenising (process {rank})")
    accelerator.wait_for_everyone()
    return datasets.concatenate_datasets([datasets.Dataset.from_file(path(share)) for share in range(world)])


class TokenReader:
    """Lengths and slices of the documents' token ids, straight from the Arrow buffers (memory-mapped for files)."""

    def __init__(self, tokens: datasets.Dataset):
        chunks = tokens.data.column("input_ids").chunks
        self.offsets = [chunk.offsets.to_numpy() for chunk in chunks]
        self.values = [chunk.values.to_numpy() for chunk in chunks]
        self.first = np.cumsum([0] + [len(chunk) for chunk in chunks])

    def __len__(self) -> int:
        return int(self.first[-1])

    def lengths(self, documents: np.ndarray) -> np.ndarray:
        """Token counts of ``documents`` (indices, any order)."""
        chunks = np.searchsorted(self.first, documents, side="right") - 1
        counts = np.empty(len(documents), dtype=np.int64)
        for chunk in np.unique(chunks):
            picked = chunks == chunk
            local = documents[picked] - self.first[chunk]
            counts[picked] = self.offsets[chunk][local + 1] - self.offsets[chunk][local]
        return counts

    def read(self, document: int, start: int, end: int) -> list[int]:
        chunk = int(np.searchsorted(self.first, document, side="right")) - 1
        base = self.offsets[chunk][document - self.first[chunk]]
        return self.values[chunk][base + start:base + end].tolist()


SHUFFLE_BLOCK = 4096  # positions shuffled together; the order of blocks is shuffled too


def epoch_order(reader: TokenReader, seed: int, epoch: int) -> Iterator[tuple[int, int]]:
    """(document, token length) of every document once, in the epoch's order, which every process shares.

    Positions are shuffled in blocks of SHUFFLE_BLOCK (the blocks in a random order too), and position p is
    document (stride × p + offset) mod count, with a random stride coprime to count: neighbouring positions land
    far apart, so every batch mixes the whole corpus (documents shuffled only within blocks would give batches
    of one source for dozens of steps: MLM loss 7.92 instead of 4.96 after 600 tiny steps on ../shared/data/pretrain).
    Memory stays that of one block (a whole-corpus permutation would cost 8 bytes a document).
    """
    count = len(reader)
    generator = np.random.default_rng([seed, epoch])
    stride, offset = 1, 0  # one block: its shuffle is already the whole corpus's
    if count > SHUFFLE_BLOCK:
        stride, offset = int(generator.integers(1, count)), int(generator.integers(count))
        while math.gcd(stride, count) != 1:
            stride += 1
    for block in generator.permutation(-(-count // SHUFFLE_BLOCK)):
        first = int(block) * SHUFFLE_BLOCK
        positions = first + np.random.default_rng([seed, epoch, int(block)]).permutation(min(SHUFFLE_BLOCK, count - first))
        documents = (positions.astype(object) * stride + offset) % count  # Python ints: no overflow at any count
        documents = documents.astype(np.int64)
        yield from zip(documents.tolist(), reader.lengths(documents).tolist())


class PackedRows(IterableDataset):
    """This process's share of the global row stream of tokenised documents, from ``start_row`` on: epoch after
    epoch (``epoch_order``), packed on across the epoch boundaries.

    With several data-loader workers, worker w makes the examples of this process's micro-batches
    w, w + workers, ... (of ``batch_size`` rows): the loader takes batches from its workers in turn, so the
    batches arrive in the same order as with one worker.
    """

    def __init__(self, tokens: datasets.Dataset, config, ids: SpecialIds, rows_per_step: int, rank: int,
                 world_size: int, start_row: int = 0, batch_size: int = 1):
        self.tokens, self.config, self.ids = tokens, config, ids
        self.rows_per_step, self.rank, self.world_size = rows_per_step, rank, world_size
        self.start_row, self.batch_size = start_row, batch_size

    def __iter__(self):
        per_process = self.rows_per_step // self.world_size
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        reader = TokenReader(self.tokens)
        close_with_sep = self.config.arch == "encoder"
        documents = (document for epoch in itertools.count() for document in epoch_order(reader, self.config.seed, epoch))
        local = -1  # this process's row count
        for index, pieces in enumerate(plan_rows(documents, self.config.seq_len, close_with_sep)):
            if index < self.start_row or (index % self.rows_per_step) // per_process != self.rank:
                continue
            local += 1
            if (local // self.batch_size) % workers != worker_id:
                continue
            input_ids, doc_ids = fill_row((reader.read(*piece) for piece in pieces), self.config.seq_len, self.ids,
                                          close_with_sep)
            yield example(input_ids, doc_ids, index, self.config, self.ids)


class StreamedRows(IterableDataset):
    """Rows from this process's share of a streamed dataset, tokenised and packed as they are read. ``start_batch``
    micro-batches of this process were trained on before (a resume): their rows are read again and skipped.

    datasets splits a stream between loader workers by its shard files (a worker without one reads nothing), so
    a streamed dataset is read by the process itself (``num_workers=0``)."""

    def __init__(self, documents, tokenizer, config, ids: SpecialIds, rank: int, world_size: int,
                 start_batch: int = 0, batch_size: int = 1):
        self.documents, self.tokenizer, self.config, self.ids = documents, tokenizer, config, ids
        self.rank, self.world_size = rank, world_size
        self.start_batch, self.batch_size = start_batch, batch_size

    def _bodies(self) -> Iterator[list[int]]:
        for epoch in itertools.count():
            texts = (row[self.config.text_column] for row in self.documents.shuffle(seed=self.config.seed + epoch))
            while batch := list(itertools.islice(texts, 256)):
                yield from self.tokenizer(batch, add_special_tokens=False)["input_ids"]

    def __iter__(self):
        rows = pack_documents(self._bodies(), self.config.seq_len, self.ids, self.config.arch == "encoder")
        for number, (input_ids, doc_ids) in enumerate(rows):
            if number >= self.start_batch * self.batch_size:
                yield example(input_ids, doc_ids, number * self.world_size + self.rank, self.config, self.ids)


def example(input_ids: list[int], doc_ids: list[int], row_index: int, config, ids: SpecialIds,
            held_out: bool = False) -> dict:
    return make_example(input_ids, doc_ids, row_index, config.objective, ids, config.mlm_probability, config.seed,
                        config.mask_replace_prob, config.random_replace_prob, held_out)


def held_out_examples(documents, tokenizer, config, ids: SpecialIds) -> list[dict]:
    """The first ``eval_rows`` packed rows of the held-out documents, masked alike in every run."""
    texts = [row[config.text_column] for row in documents]
    rows = pack_documents(tokenizer(texts, add_special_tokens=False)["input_ids"], config.seq_len, ids,
                          config.arch == "encoder")
    return [example(input_ids, doc_ids, number, config, ids, held_out=True)
            for number, (input_ids, doc_ids) in enumerate(itertools.islice(rows, config.eval_rows))]
