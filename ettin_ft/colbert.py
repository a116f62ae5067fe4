"""Multi-vector retrieval: an Ettin encoder → a pylate ColBERT model.

Knowledge distillation (losses.Distillation) on the release data, lightonai/ms-marco-en-bge (its train /
queries / documents subsets through KDProcessing); (query, positive, negative) rows without teacher scores
train with losses.Contrastive instead. Defaults, the Ettin release's settings: configs/colbert.yaml.

    python -m ettin_ft.colbert --model 150m --output-dir runs/colbert-150m
    python -m ettin_ft.colbert --model runs/pretrain/final --data triplets.jsonl --output-dir runs/colbert
    python -m ettin_ft.colbert --data kd/train.jsonl --queries kd/queries.jsonl --documents kd/documents.jsonl ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylate import losses, models, utils
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from transformers import set_seed

from .data.loading import load_data
from .errors import EttinError, cli_entry
from .evaluation import NANOBEIR_EN
from .models import load_through_library
from .recipe import (RetrievalConfig, evaluators_for, load_training_data, locate_model, model_kwargs, parse_recipe,
                     prepare_run, print_dry_run, release_recipe, release_settings, run_evaluators, split_held_out,
                     train_and_save)

DEFAULTS, (KD_DATA, _, _) = release_settings("colbert")


@dataclass
class ColbertConfig(RetrievalConfig):
    INTENDED_USE = "multi-vector (late-interaction) retrieval with pylate: index passages, search with MaxSim"
    PIPELINE_TAG = "sentence-similarity"

    objective: str = field(default="auto", metadata={"help": "auto (distillation on the default data or when --queries is given; contrastive otherwise), distillation or contrastive"})
    queries: str | None = field(default=None, metadata={"help": "distillation: queries (query_id, text); default: the hub dataset's 'queries' subset"})
    documents: str | None = field(default=None, metadata={"help": "distillation: documents (document_id, text); default: the 'documents' subset"})
    query_length: int = field(default=32, metadata={"help": "query tokens (ColBERT query augmentation pads to this)"})
    document_length: int = field(default=300, metadata={"help": "maximum document tokens"})

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length is not None:  # pylate sizes queries and documents apart
            raise EttinError(f"--max-seq-length {self.max_seq_length} does not apply to ColBERT; set --query-length "
                             f"({self.query_length}) and --document-length ({self.document_length}) instead")
        if self.nanobeir_dataset_id != NANOBEIR_EN:
            raise EttinError(f"--nanobeir-dataset-id {self.nanobeir_dataset_id} does not apply to ColBERT: pylate's "
                             "NanoBEIR evaluator always reads the zeta-alpha-ai/Nano* sets")


def build_colbert(config: ColbertConfig, runtime, located=None) -> models.ColBERT:
    ref = (located or locate_model(config, "colbert")).ref
    return load_through_library(ref, lambda: models.ColBERT(
        model_name_or_path=ref.path, revision=ref.revision, device=str(runtime.device), query_length=config.query_length,
        document_length=config.document_length, model_kwargs=model_kwargs(runtime)), lambda built: built[0].auto_model)


def distillation_data(config: ColbertConfig):
    """(train, held-out) KD rows (query_id, document_ids, scores) with KDProcessing to look up the texts."""
    default = config.data is None
    spec = KD_DATA if default else config.data
    train = load_data(spec, columns=["query_id", "document_ids", "scores"], config_name="train" if default else config.data_config,
                      split=config.data_split, limit=config.max_samples)
    if not default and not (config.queries and config.documents):
        raise EttinError("distillation data needs --queries and --documents files (ids → texts)")
    queries = load_data(config.queries or KD_DATA, columns=["query_id", "text"], config_name=None if config.queries else "queries")
    documents = load_data(config.documents or KD_DATA, columns=["document_id", "text"],
                          config_name=None if config.documents else "documents")
    processing = utils.KDProcessing(queries=queries, documents=documents)
    train, held_out = split_held_out(config, train)
    for split in (train, held_out):
        if split is not None:
            split.set_transform(processing.transform)
    return train, held_out


def train_colbert(config: ColbertConfig, args: SentenceTransformerTrainingArguments, runtime=None, dry_run=False):
    """Train a ColBERT model as ``config`` says; returns the trained pylate ColBERT."""
    args, runtime = prepare_run(config, args, runtime)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    located = locate_model(config, "colbert")
    objective = config.objective
    if objective == "auto":
        objective = "distillation" if config.data is None or config.queries else "contrastive"
    if objective == "distillation":
        train, held_out = distillation_data(config)
    elif objective == "contrastive":
        # In-batch negatives always; a hard negative too when the data has one.
        train, held_out = split_held_out(config, load_training_data(config, ["query", "positive"], optional=["negative"]))
    else:
        raise EttinError(f"unknown --objective {objective!r}; expected auto, distillation or contrastive")
    evaluators = evaluators_for("colbert", config, held_out)
    model = build_colbert(config, runtime, located)  # after every input check
    loss = losses.Distillation(model=model) if objective == "distillation" else losses.Contrastive(model=model)
    if dry_run:
        print_dry_run(config, args, model, train)
        return model
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                         data_collator=utils.ColBERTCollator(model.tokenize))
    train_and_save(trainer, config, args, lambda: run_evaluators(model, evaluators))
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/colbert.yaml) as (ColbertConfig, SentenceTransformerTrainingArguments), as the command
    line resolves them; ``overrides`` name fields of either: ``train_colbert(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(ColbertConfig, SentenceTransformerTrainingArguments, DEFAULTS, output_dir, overrides, "ettin_ft.colbert")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        ColbertConfig, SentenceTransformerTrainingArguments, DEFAULTS, argv, "python -m ettin_ft.colbert",
        "Fine-tune an Ettin encoder into a pylate ColBERT model (any TrainingArguments field is a flag).",
    )
    train_colbert(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
