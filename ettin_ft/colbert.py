"""Multi-vector retrieval: an Ettin encoder → a ColBERT model (sentence-transformers' MultiVectorEncoder).

Knowledge distillation (``--loss distillation``: KL, as PyLate and ColBERTv2) on the release data,
lightonai/ms-marco-en-bge (its train / queries / documents subsets, joined by ``resolve_ids``), on candidate rows
with ``scores``, or on scores from ``--teacher`` / ``--teacher-scores``; ``margin-mse`` distils by MarginMSE instead.
(query, positive[, negatives]) rows without scores train contrastively (``contrastive``).
The model and the losses are PyLate's, as the Ettin ColBERTs were trained (now in sentence-transformers):
[Q]/[D] prefix tokens, queries expanded to --query-length with mask tokens, punctuation skipped in documents,
a 128-dimensional projection. ``final/`` is saved in PyLate's layout, which both sentence-transformers'
``MultiVectorEncoder`` and PyLate's ``models.ColBERT`` load (colbert_format.py). Defaults: configs/colbert.yaml.

    python -m ettin_ft.colbert --model 150m --output-dir runs/colbert-150m
    python -m ettin_ft.colbert --model runs/pretrain/final --data triplets.jsonl --output-dir runs/colbert
    python -m ettin_ft.colbert --data kd/train.jsonl --queries kd/queries.jsonl --documents kd/documents.jsonl ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sentence_transformers import MultiVectorEncoder, MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments
from sentence_transformers.multi_vector_encoder import losses
from sentence_transformers.util.dataset import resolve_ids
from transformers import set_seed

from .colbert_format import (KD_WAYS, as_pylate_layout, is_multi_vector_model, min_max_kd_scores, new_colbert, set_lengths,
                             training_prompts)
from .compat import expose_similarity_to_wrapped_losses, save_from_the_writing_process_only
from .distillation import choose_loss, learns_from_scores, load_candidate_rows, loss_columns, scored_rows
from .data.loading import load_data
from .errors import EttinError, cli_entry
from .models import load_through_library
from .recipe import (RetrievalConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe,
                     release_settings)
from .recipe_data import evaluators_for, run_evaluators, split_held_out
from .run_folder import RunFolder, SkipLastCheckpoint, publish_trained, write_results
from .runtime import model_kwargs, transformer_kwargs

DEFAULTS, (KD_DATA, _, _) = release_settings("colbert")


@dataclass
class ColbertConfig(RetrievalConfig):
    INTENDED_USE = "multi-vector (late-interaction) retrieval: index passages, search with MaxSim (sentence-transformers' MultiVectorEncoder or PyLate)"
    PIPELINE_TAG = "sentence-similarity"
    RELEASE = "colbert"

    objective: str | None = field(default=None, metadata={"help": "the earlier name of --loss (auto, distillation or contrastive)"})
    queries: str | None = field(default=None, metadata={"help": "distillation: queries (query_id, text); default: the hub dataset's 'queries' subset"})
    documents: str | None = field(default=None, metadata={"help": "distillation: documents (document_id, text); default: the 'documents' subset"})
    query_length: int = field(default=32, metadata={"help": "query tokens (ColBERT query augmentation pads to this)"})
    document_length: int = field(default=300, metadata={"help": "maximum document tokens"})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in (None, "auto"):
            if self.loss not in (None, "auto", self.objective):
                raise EttinError(f"--objective {self.objective} and --loss {self.loss} disagree; give --loss alone")
            self.loss = self.objective
        if self.max_seq_length is not None:  # queries and documents are sized apart
            raise EttinError(f"--max-seq-length {self.max_seq_length} does not apply to ColBERT; set --query-length "
                             f"({self.query_length}) and --document-length ({self.document_length}) instead")


def build_colbert(config: ColbertConfig, runtime, located=None) -> MultiVectorEncoder:
    """A ColBERT folder (PyLate's or sentence-transformers' layout), or a new ColBERT on an encoder; either way with
    --query-length and --document-length."""
    ref = (located or locate_base_model(config, "colbert")).ref
    if runtime.attn_implementation == "flash_attention_2":
        # flash attention drops masked positions, and ColBERT's query expansion tokens are masked from attention
        # (sentence-transformers refuses the pair): sdpa keeps the model's semantics
        if config.attn_implementation != "auto":
            raise EttinError("--attn-implementation flash_attention_2 does not apply to ColBERT: its query expansion "
                             "tokens are masked from attention, which flash attention drops; use sdpa")
        runtime = dataclasses.replace(runtime, attn_implementation="sdpa")
    if is_multi_vector_model(ref):
        build = lambda: MultiVectorEncoder(ref.path, revision=ref.revision, device=str(runtime.device),  # noqa: E731
                                           model_kwargs=model_kwargs(runtime))
    else:  # a bare encoder: PyLate's ColBERT modules on it
        build = lambda: new_colbert(ref, str(runtime.device), transformer_kwargs(ref, runtime))  # noqa: E731
    model = load_through_library(ref, build, lambda built: built[0].auto_model)
    set_lengths(model, config.query_length, config.document_length)
    return model


def distillation_data(config: ColbertConfig):
    """(train, held-out) KD rows with texts: training rows as (query, document_1..N, scores), held-out rows as
    (query, documents, scores) for the retrieval evaluation."""
    default = config.data is None
    spec = KD_DATA if default else config.data
    train = load_data(spec, columns=["query_id", "document_ids", "scores"], config_name="train" if default else config.data_config,
                      split=config.data_split, limit=config.max_samples)
    if not default and not (config.queries and config.documents):
        raise EttinError("distillation data needs --queries and --documents files (ids → texts)")
    queries = load_data(config.queries or KD_DATA, columns=["query_id", "text"], config_name=None if config.queries else "queries")
    documents = load_data(config.documents or KD_DATA, columns=["document_id", "text"],
                          config_name=None if config.documents else "documents")
    lookups = {"query_id": (queries, "query_id", "text"), "document_ids": (documents, "document_id", "text")}
    train, held_out = split_held_out(config, train)
    train.set_transform(resolve_ids(lookups, max_list_length=KD_WAYS))
    if held_out is not None:
        held_out.set_transform(resolve_ids(lookups, max_list_length=KD_WAYS, output_format="lists"))
    return train, held_out


def train_colbert(config: ColbertConfig, args: MultiVectorEncoderTrainingArguments, runtime=None, dry_run=False):
    """Train a ColBERT model as ``config`` says; returns the trained MultiVectorEncoder. ``args`` may also be the
    SentenceTransformerTrainingArguments that ettin-ft took before sentence-transformers 6 trained ColBERTs."""
    if not isinstance(args, MultiVectorEncoderTrainingArguments):
        args = MultiVectorEncoderTrainingArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args)
                                                      if f.init})
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    located = locate_base_model(config, "colbert")
    where = config.data or KD_DATA
    kd_by_ids = (config.data is None or config.queries) and config.loss in (None, "auto", "distillation", "margin-mse")
    if kd_by_ids:  # PyLate's KD data: ids and scores, the texts looked up in --queries / --documents
        if config.teacher or config.teacher_scores:
            raise EttinError(f"{where}: these distillation rows carry their teacher's scores already; a teacher scores "
                             "(query, positive[, negatives]) rows")
        train, held_out = distillation_data(config)
        config = dataclasses.replace(config, loss="distillation" if config.loss in (None, "auto") else config.loss)
    else:  # in-batch negatives always, the rows' hard negatives too; their scores, if any, to distil from
        train, held_out = split_held_out(config, load_candidate_rows(config))
        config = dataclasses.replace(config, loss=choose_loss("colbert", config, train))
    evaluators = evaluators_for("colbert", config, held_out)
    model = build_colbert(config, runtime, located)  # after every input check
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    with RunFolder(args.output_dir).tidy_on_failure():
        if not kd_by_ids:
            distilled = learns_from_scores("colbert", config.loss)
            train = loss_columns(scored_rows(config, train, args, runtime) if distilled else train, distilled)
        if config.loss == "distillation":  # PyLate's Distillation: KL on min-max normalised student scores
            loss = losses.MultiVectorDistillKLDivLoss(model, similarity_fct=min_max_kd_scores)
        elif config.loss == "margin-mse":
            loss = losses.MultiVectorMarginMSELoss(model)
        else:
            loss = losses.MultiVectorMultipleNegativesRankingLoss(model)
        args = dataclasses.replace(args, prompts=training_prompts(model, list(train[0])))
        trainer = MultiVectorEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                            callbacks=[SkipLastCheckpoint()])
        save_from_the_writing_process_only(trainer)
        expose_similarity_to_wrapped_losses(trainer)
        before = run_evaluators(model, evaluators)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after = run_evaluators(model, evaluators)
        publish_trained(trainer, finish=lambda folder: as_pylate_layout(model, folder))
        write_results(args.output_dir, config, args, before, after, trainer)
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/colbert.yaml) as (ColbertConfig, MultiVectorEncoderTrainingArguments), as the command
    line resolves them; ``overrides`` name fields of either: ``train_colbert(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(ColbertConfig, MultiVectorEncoderTrainingArguments, DEFAULTS, output_dir, overrides, "ettin_ft.colbert")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        ColbertConfig, MultiVectorEncoderTrainingArguments, DEFAULTS, argv, "python -m ettin_ft.colbert",
        "Fine-tune an Ettin encoder into a ColBERT model, saved for sentence-transformers and PyLate (any TrainingArguments field is a flag).",
    )
    train_colbert(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
