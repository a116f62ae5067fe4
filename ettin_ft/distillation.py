"""Learning from a teacher's scores, shared by the reranker, dense, SPLADE and ColBERT recipes.

Training rows are candidate rows: (query, positive, negatives) with, when a teacher has judged them, ``scores``
(the positive's first, then each negative's). The scores come with the data, from ``--teacher-scores FILE`` or
from ``--teacher MODEL``, which scores every (query, candidate) pair of the training rows once, before training,
into the run folder's ``teacher_scores.jsonl`` (one ``{"query", "document", "score"}`` row per pair; a resumed run
reads it back). Each recipe's ``--loss`` then takes the columns its sentence-transformers loss expects.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass

import datasets

from .data.loading import blank_texts
from .errors import EttinError
from .folders import write_jsonl_whole
from .process_state import datasets_progress_bars
from .recipe_data import load_training_data
from .run_folder import is_main_process, processes, wait_for_everyone

SCORES_FILE = "teacher_scores.jsonl"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Losses:
    from_labels: str  # the default without scores
    from_scores: str  # the default with scores: the recipe's distillation loss
    needing_scores: tuple[str, ...]
    others: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.from_labels, *self.others, *self.needing_scores)))


LOSSES = {
    # the released Ettin rerankers: pointwise MSE on the teacher's raw scores
    "rerank": Losses("bce", "mse", ("mse", "margin-mse")),
    "dense": Losses("cmnrl", "margin-mse", ("margin-mse", "kl")),
    "sparse": Losses("mnrl", "margin-mse", ("margin-mse", "kl")),
    # PyLate's and ColBERTv2's distillation: KL on the teacher's scores
    "colbert": Losses("contrastive", "distillation", ("distillation", "margin-mse")),
}


def choose_loss(recipe: str, config, rows: datasets.Dataset) -> str:
    """The loss a run trains with: --loss, else the recipe's distillation loss when the rows have scores or
    --teacher / --teacher-scores will give them, else its loss from labels."""
    losses, teacher = LOSSES[recipe], config.teacher or config.teacher_scores
    scored = bool(teacher) or "scores" in rows.column_names
    if config.loss in (None, "auto"):
        return losses.from_scores if scored else losses.from_labels
    if config.loss not in losses.names:
        raise EttinError(f"unknown --loss {config.loss!r} for {recipe}; expected auto or one of {', '.join(losses.names)}")
    if config.loss in losses.needing_scores and not scored:
        raise EttinError(f"--loss {config.loss} learns from a teacher's scores: give --teacher MODEL or --teacher-scores "
                         "FILE, or rows with a 'scores' list (python -m ettin_ft.mine --teacher writes them)")
    if teacher and config.loss not in losses.needing_scores:
        raise EttinError(f"--loss {config.loss} does not learn from scores, so the teacher would go unused; choose one "
                         f"of {', '.join(losses.needing_scores)} or leave --loss unset")
    return config.loss


def learns_from_scores(recipe: str, loss: str) -> bool:
    return loss in LOSSES[recipe].needing_scores


# Training columns a candidate row may have beside (query, positive).
CANDIDATE_COLUMNS = ["negative", "negatives", "scores"]


def load_candidate_rows(config, default=None) -> datasets.Dataset:
    """The training rows as candidate rows, checked before any split, so a bad row is named by its place in the
    data; ``default``: the recipe's release data (``load_training_data``)."""
    rows = load_training_data(config, ["query", "positive"], optional=CANDIDATE_COLUMNS, default=default)
    return candidate_rows(rows, config.data or default[0])


def candidate_rows(rows: datasets.Dataset, where: str) -> datasets.Dataset:
    """(query, positive, negatives[, scores]) from rows with a ``negatives`` list, one ``negative`` or none; every
    row's ``scores``, if any, is one number per candidate, the positive's first."""
    if "negatives" not in rows.column_names:
        single = ["negative"] if "negative" in rows.column_names else []
        with datasets_progress_bars(False):
            rows = rows.map(lambda row: {"negatives": [row[c] for c in single]}, remove_columns=single)
    rows = rows.select_columns(["query", "positive", "negatives"] + (["scores"] if "scores" in rows.column_names else []))
    candidates = rows.select_columns([c for c in ("negatives", "scores") if c in rows.column_names])
    if not all(_well_formed(batch) for batch in candidates.with_format("arrow").iter(batch_size=100_000)):
        _name_the_first_bad_row(candidates, where)
    return rows


def _well_formed(batch) -> bool:
    """Arrow's check of a batch of rows at once: lists of non-empty texts and one number per candidate. Row by row in
    Python it took 13 s per million rows, half an hour for the release's 143M. False leaves the verdict to the
    row-by-row check, which names the first bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def list_of(column, is_value_type) -> bool:
        kind = column.type
        return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and is_value_type(kind.value_type) \
            and not column.null_count

    negatives = batch.column("negatives")
    if not list_of(negatives, lambda kind: pa.types.is_string(kind) or pa.types.is_large_string(kind)) \
            or pc.any(blank_texts(pc.list_flatten(negatives))).as_py():
        return False
    if "scores" not in batch.column_names:
        return True
    scores = batch.column("scores")
    if not list_of(scores, lambda kind: pa.types.is_integer(kind) or pa.types.is_floating(kind)) \
            or pc.list_flatten(scores).null_count:
        return False
    return pc.all(pc.equal(pc.list_value_length(scores), pc.add(pc.list_value_length(negatives), 1))).as_py() is True


def _name_the_first_bad_row(candidates: datasets.Dataset, where: str) -> None:
    for number, row in enumerate(candidates, start=1):
        negatives = row["negatives"]
        if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
            raise EttinError(f"{where} row {number}: 'negatives' must be a list of non-empty texts")
        if "scores" in row:
            scores = row["scores"]
            if not isinstance(scores, list) or not all(isinstance(s, (int, float)) for s in scores):
                raise EttinError(f"{where} row {number}: 'scores' must be a list of numbers")
            if len(scores) != 1 + len(negatives):
                raise EttinError(f"{where} row {number}: 'scores' has {len(scores)} values for {1 + len(negatives)} "
                                 "candidates; expected one per candidate, the positive's first, then each negative's")


def locate_teacher(name: str):
    """Where the teacher is (a folder, or the hub or its cache), or one line naming --teacher."""
    from .hub import locate_for

    return locate_for("--teacher", name, "pass a local cross-encoder, dense, sparse or ColBERT folder, or "
                      "--teacher-scores FILE")


def load_teacher(name: str, runtime):
    """(the teacher model, its kind: rerank, dense, sparse or colbert) from a local folder or the hub."""
    from sentence_transformers import CrossEncoder, MultiVectorEncoder, SentenceTransformer, SparseEncoder
    from sentence_transformers.util import load_file_path

    from .runtime import model_kwargs

    ref = locate_teacher(name)
    found = {file: load_file_path(ref.path, file, revision=ref.revision)
             for file in ("config_sentence_transformers.json", "modules.json", "config.json")}
    settings = read_json(found["config_sentence_transformers.json"])
    architectures = read_json(found["config.json"]).get("architectures") or []
    kinds = {"CrossEncoder": "rerank", "SentenceTransformer": "dense", "SparseEncoder": "sparse", "ColBERT": "colbert",
             "MultiVectorEncoder": "colbert"}
    kind = kinds.get(settings.get("model_type"))
    if kind is None and any(a.endswith("ForSequenceClassification") for a in architectures):
        kind = "rerank"  # a cross-encoder saved by transformers or an older sentence-transformers
    if kind is None and found["modules.json"]:
        kind = "dense"
    if kind is None:
        raise EttinError(f"--teacher {name}: not a cross-encoder, dense, sparse or ColBERT model (no "
                         "config_sentence_transformers.json, modules.json or sequence-classification head)")
    model_class = {"rerank": CrossEncoder, "dense": SentenceTransformer, "sparse": SparseEncoder,
                   "colbert": MultiVectorEncoder}[kind]
    # inference only: the weights themselves in the run's precision (a trainer's autocast does not reach the teacher)
    teacher = model_class(ref.path, revision=ref.revision, device=str(runtime.device),
                          model_kwargs={**model_kwargs(runtime), "dtype": runtime.dtype})
    return teacher, kind


def read_json(path: str | None) -> dict:
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


CHUNK = 4096  # pairs scored per step: bounds the embeddings held at once


def score_pairs(teacher, kind: str, pairs: list[tuple[str, str]], batch_size: int) -> list[float]:
    """The teacher's score of every (query, document) pair. Each process scores its share (every n-th pair); the
    libraries batch by length within each chunk; the main process shows the progress."""
    import torch
    from tqdm.auto import tqdm

    state = processes()
    share = pairs[state.process_index::state.num_processes]
    scores: list[float] = []
    with tqdm(total=len(pairs), desc="teacher scores", unit="pair", disable=not state.is_main_process) as bar:
        for start in range(0, len(share), CHUNK):
            chunk = share[start:start + CHUNK]
            with torch.inference_mode():
                if kind == "rerank":  # raw scores (logits), as the Ettin rerankers distilled them
                    found = teacher.predict(chunk, batch_size=batch_size, activation_fn=torch.nn.Identity(),
                                            show_progress_bar=False, convert_to_tensor=True)
                else:
                    # multi-vector embeddings come as a list of tensors (one per text, of its length) anyway
                    tensors = {} if kind == "colbert" else {"convert_to_tensor": True}
                    queries = teacher.encode_query([q for q, _ in chunk], batch_size=batch_size,
                                                   show_progress_bar=False, **tensors)
                    documents = teacher.encode_document([d for _, d in chunk], batch_size=batch_size,
                                                        show_progress_bar=False, **tensors)
                    found = teacher.similarity_pairwise(queries, documents)
            scores.extend(float(s) for s in found.float().cpu().reshape(-1))
            bar.update(len(chunk) * state.num_processes)
    if state.num_processes == 1:
        return scores
    shares = [None] * state.num_processes
    torch.distributed.all_gather_object(shares, scores)
    merged = [0.0] * len(pairs)
    for rank, part in enumerate(shares):
        merged[rank::state.num_processes] = part
    return merged


def read_scores(path: str) -> dict[tuple[str, str], float]:
    """{(query, document): score} of a teacher_scores.jsonl file."""
    from .data.loading import _jsonl_rows

    scores = {}
    for number, row in _jsonl_rows(path):
        if not {"query", "document", "score"} <= set(row) or not isinstance(row["score"], (int, float)):
            raise EttinError(f"{path} line {number}: expected {{\"query\", \"document\", \"score\"}} with a number")
        scores[row["query"], row["document"]] = float(row["score"])
    return scores


def write_scores(path: str, scores: dict[tuple[str, str], float]) -> None:
    write_jsonl_whole(path, ({"query": query, "document": document, "score": score}
                             for (query, document), score in scores.items()))


def candidate_pairs(rows: datasets.Dataset) -> list[tuple[str, str]]:
    """Every distinct (query, candidate) pair of the rows, in order."""
    return list(dict.fromkeys((query, document) for query, positive, negatives in
                              zip(rows["query"], rows["positive"], rows["negatives"])
                              for document in [positive, *negatives]))


def with_scores(rows: datasets.Dataset, scores: dict[tuple[str, str], float], source: str) -> datasets.Dataset:
    def add(row):
        try:
            return {"scores": [scores[row["query"], d] for d in [row["positive"], *row["negatives"]]]}
        except KeyError as missing:
            raise EttinError(f"{source} has no score for the pair {missing.args[0]!r}; it was written for other "
                             "training rows") from None

    with datasets_progress_bars(False):
        return rows.map(add, remove_columns=[c for c in ("scores",) if c in rows.column_names])


def scored_rows(config, rows: datasets.Dataset, args, runtime) -> datasets.Dataset:
    """``rows`` with the teacher's ``scores``: from --teacher-scores, from the run folder's file when resuming,
    or scored by --teacher now (and written to the run folder); without either, the rows' own scores. ``args``:
    the trainer's (the output folder, the resume point, the batch size of scoring)."""
    output_dir, resuming, batch_size = args.output_dir, bool(args.resume_from_checkpoint), args.per_device_eval_batch_size
    if config.teacher_scores:
        return with_scores(rows, read_scores(config.teacher_scores), f"--teacher-scores {config.teacher_scores}")
    if not config.teacher:
        return rows
    path = os.path.join(output_dir, SCORES_FILE) if output_dir else None
    if resuming and path and os.path.isfile(path):
        return with_scores(rows, read_scores(path), path)
    teacher_scores = teacher_scores_of(config.teacher, candidate_pairs(rows), runtime, batch_size)
    if path:
        if is_main_process():
            write_scores(path, teacher_scores)
        wait_for_everyone()
    return with_scores(rows, teacher_scores, f"--teacher {config.teacher}")


def teacher_scores_of(teacher_name: str, pairs: list[tuple[str, str]], runtime, batch_size: int) -> dict:
    teacher, kind = load_teacher(teacher_name, runtime)
    scores = score_pairs(teacher, kind, pairs, batch_size)
    del teacher
    return dict(zip(pairs, scores))


def n_tuples(rows: datasets.Dataset) -> tuple[datasets.Dataset, int]:
    """(the rows, their number of negatives): the losses batch rows as n-tuples of one length, so rows keep the most
    common number of negatives; rows with fewer are left out (as mine_hard_negatives' n-tuples leave them out) and
    the count said once."""
    counts = collections.Counter(map(len, rows["negatives"]))
    if not counts:
        return rows, 0
    count = max(counts, key=lambda k: (counts[k], k))
    short = sum(n for k, n in counts.items() if k < count)
    if short:
        logger.warning("%d of %d training rows have fewer than %d negatives and are left out (the loss takes rows of one "
                       "length)", short, len(rows), count)
        rows = rows.select([i for i, n in enumerate(rows["negatives"]) if len(n) >= count])
    return rows, count


def loss_columns(rows: datasets.Dataset, with_scores: bool) -> datasets.Dataset:
    """(query, positive, negative_1..negative_n[, scores]): the n-tuples sentence-transformers' losses take, the
    scores (a list per row, cut to the candidates kept) as their label."""
    rows, count = n_tuples(rows)
    names = [f"negative_{i + 1}" for i in range(count)]
    kept = ["query", "positive"] + (["scores"] if with_scores else [])
    with datasets_progress_bars(False):
        tuples = rows.map(lambda row: {**dict(zip(names, row["negatives"])),
                                       **({"scores": row["scores"][:1 + count]} if with_scores else {})},
                          remove_columns=[c for c in rows.column_names if c not in kept])
    return tuples.select_columns(["query", "positive", *names] + (["scores"] if with_scores else []))
