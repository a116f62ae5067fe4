"""Mine hard negatives for (query, positive) pairs, and score them with a teacher: training rows for every retrieval
recipe.

Writes one JSON row per pair, ``{"query", "positive", "negatives": [...]}``, with ``"scores"`` (the positive's, then
each negative's) when --teacher is given: the rows ``ettin_ft.rerank``, ``dense``, ``sparse`` and ``colbert`` distil
from. Negatives come from BM25 (offline) or an embedding model, as the reranker recipe mines them.

    python -m ettin_ft.mine --data pairs.jsonl --mining-model bm25 --num-negatives 5 --output mined.jsonl
    python -m ettin_ft.mine --data pairs.jsonl --mining-model bm25 --teacher runs/reranker/final --output scored.jsonl
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import ClassVar

from .config import parse_config, refuse_inapplicable
from .distillation import candidate_pairs, locate_teacher, teacher_scores_of, with_scores
from .errors import EttinError, cli_entry
from .folders import write_jsonl_whole
from .mining import mine_negatives
from .recipe_data import load_training_data
from .run_folder import is_main_process, wait_for_everyone


@dataclass
class MineConfig:
    # the teacher's settings: set without --teacher, they are refused
    REQUIRES: ClassVar[dict[str, str]] = {"batch_size": "teacher", "precision": "teacher"}

    data: str | None = field(default=None, metadata={"help": "(query, positive) pairs: a local file or folder, or a hub dataset"})
    output: str | None = field(default=None, metadata={"help": "the .jsonl file to write (replaced whole if it exists)"})
    mining_model: str = field(default="bm25", metadata={"help": "'bm25' (offline) or an embedding model (folder or hub name) for mine_hard_negatives"})
    num_negatives: int = field(default=5, metadata={"help": "hard negatives per query (fewer where not enough passages qualify)"})
    teacher: str | None = field(default=None, metadata={"help": "a cross-encoder, dense, sparse or ColBERT model that scores every (query, candidate) pair: adds 'scores' to each row"})
    batch_size: int = field(default=32, metadata={"help": "the teacher's batch size"})
    data_config: str | None = field(default=None, metadata={"help": "hub dataset configuration"})
    data_split: str = field(default="train", metadata={"help": "hub dataset split"})
    column_mapping: str | None = field(default=None, metadata={"help": "rename data columns, e.g. 'question:query,answer:positive'"})
    max_samples: int | None = field(default=None, metadata={"help": "use at most this many pairs"})
    precision: str = field(default="auto", metadata={"help": "the teacher's precision: auto (bf16 on capable GPUs, fp32 on CPU), bf16, fp16 or fp32"})

    def __post_init__(self):
        refuse_inapplicable(self)
        for name in ("data", "output"):
            if not getattr(self, name):
                raise EttinError(f"--{name} is required (see python -m ettin_ft.mine --help)")
        if os.path.isdir(self.output):
            raise EttinError(f"--output {self.output} is a folder; expected a .jsonl file to write")
        if self.teacher:  # before the mining
            locate_teacher(self.teacher)


def mine(config: MineConfig):
    """The mined (and, with a teacher, scored) rows, written to ``config.output``; returns them."""
    from .runtime import choose_runtime

    pairs = load_training_data(config, ["query", "positive"])
    rows = mine_negatives(pairs, config.mining_model, config.num_negatives)
    if config.teacher:
        runtime = choose_runtime(None, config.precision, "auto")
        rows = with_scores(rows, teacher_scores_of(config.teacher, candidate_pairs(rows), runtime, config.batch_size),
                           f"--teacher {config.teacher}")
    if is_main_process():
        write_jsonl_whole(config.output, rows)
        counts = [len(n) for n in rows["negatives"]]
        print(f"wrote {len(rows)} rows to {config.output}: {min(counts, default=0)}-{max(counts, default=0)} negatives "
              f"each ({config.mining_model})" + (f", scored by {config.teacher}" if config.teacher else ""))
    wait_for_everyone()
    return rows


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, dry_run = parse_config(MineConfig, argv=argv, prog="python -m ettin_ft.mine",
                                   description="Mine hard negatives for (query, positive) pairs, optionally scored by a teacher.")
    if dry_run:
        print(json.dumps(vars(config), indent=2))
        return
    mine(config)


if __name__ == "__main__":
    main()
