"""Sequence classification: an Ettin encoder or decoder → AutoModelForSequenceClassification (GLUE, any labels).

Encoders classify from their mean-pooled tokens (``--pooling cls`` for [CLS]), decoders from the last real
token; a pair is ``[CLS] A [SEP] B [SEP]`` for encoders and ``[CLS] A [SEP] B`` for decoders. Float labels
train a regression head (STS-B). Defaults per task are ModernBERT's GLUE settings (configs/classify/), which
the Ettin encoders were evaluated with. ``--seeds 0,1,2`` repeats the run per seed in DIR/seed-N/ and
reports the mean and standard deviation.

    python -m ettin_ft.classify --model 150m --task mnli --output-dir runs/mnli-150m
    python -m ettin_ft.classify --model runs/pretrain/final --data ../shared/data/classification/sst2 \
        --seeds 0,1,2 --output-dir runs/sst2
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments, set_seed)

from .hub import locate
from .lora import LoraArguments, peft_config
from .models import checkpoint_tensors, describe_arch, load_checked
from .config import early_value, shipped_config
from .data.classification import (GLUE_TASKS, ClassificationData, glue_task, load_classification_data,
                                  tokenize_texts)
from .errors import EttinError, cli_entry
from .evaluation import classification_metrics, classifier_predictions
from .seeds import train_each_seed
from .recipe import RecipeConfig, locate_base_model, parse_recipe, prepare_run, print_dry_run, release_recipe
from .recipe_data import column_mapping
from .run_folder import RunFolder, SkipLastCheckpoint, publish_with_head, write_results
from .runtime import model_kwargs
from .tokenizer import set_post_processing


@dataclass
class ClassifyConfig(LoraArguments, RecipeConfig):
    INTENDED_USE = "sequence classification (or regression) of single texts or text pairs with AutoModelForSequenceClassification"
    PIPELINE_TAG = "text-classification"
    RELEASE = "classify/default"
    REQUIRES = {name: "lora" for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}

    task: str | None = field(default=None, metadata={"help": f"GLUE task from the hub ({', '.join(GLUE_TASKS)}) with its ModernBERT settings"})
    max_seq_length: int | None = field(default=None, metadata={"help": "maximum tokens per text (pair)"})
    eval_data: str | None = field(default=None, metadata={"help": "evaluation file (default: the folder's validation file, else held-out --data rows)"})
    text_columns: str | None = field(default=None, metadata={"help": "one or two text columns, e.g. 'premise,hypothesis' (default: text, sentence1,sentence2 or premise,hypothesis)"})
    label_column: str = field(default="label", metadata={"help": "label column: integers, strings, or floats (regression)"})
    pooling: str = field(default="auto", metadata={"help": "encoders: mean (auto) or cls; decoders always read the last real token"})
    head_init: str = field(default="auto", metadata={"help": "prediction head's start: auto (as transformers loads each class: an encoder's MLM head, a new random head for a decoder), lm (Ettin models: the pretrained MLM or LM head, so both architectures start alike) or random (Ettin decoders)"})
    init_from: str | None = field(default=None, metadata={"help": "start from this fine-tuned classifier (e.g. an MNLI run's final/ for RTE, MRPC, STS-B); a new head if the labels differ"})
    seeds: str | None = field(default=None, metadata={"help": "e.g. '0,1,2': one run per seed in DIR/seed-N/, mean and std in DIR/metrics.json"})

    def release_values(self) -> dict:
        return task_release(self.task)


def task_release(task: str | None) -> dict:
    """configs/classify/default.yaml, then the YAML of the GLUE task, if any."""
    defaults = shipped_config("classify/default")
    if task:
        glue_task(task)
        defaults.update(shipped_config(f"classify/{task}"))
    return defaults


def release_defaults(argv: list[str] | None) -> dict:
    """The release values for the --task of the flags or the --config file."""
    return task_release(early_value(argv, "task"))


def classification_data(config: ClassifyConfig) -> ClassificationData:
    return load_classification_data(task=config.task, data=config.data, eval_data=config.eval_data,
                                    text_columns=config.text_columns, label_column=config.label_column,
                                    column_mapping=column_mapping(config), max_samples=config.max_samples,
                                    held_out=config.held_out, data_config=config.data_config,
                                    data_split=config.data_split)


def build_classifier(config: ClassifyConfig, data: ClassificationData, runtime):
    """(classifier, tokenizer, arch): the pretrained model with a new head sized to the labels (or --init-from's)."""
    located = locate_base_model(config, "classify", allowed=("encoder", "decoder"))
    ref, arch = located.ref, located.arch
    tokenizer = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)
    if located.ettin:
        set_post_processing(tokenizer, arch)
    if arch == "decoder" and tokenizer.pad_token_id in (None, tokenizer.eos_token_id):
        raise EttinError(f"{ref.describe()}: a decoder classifier reads the last token before padding, so the "
                         "tokenizer needs a pad token of its own ([PAD]), not none or EOS")
    if arch == "decoder" and config.pooling != "auto":
        raise EttinError(f"--pooling {config.pooling}: a decoder classifies from its last real token; leave --pooling at auto")
    labels = {} if data.regression else {"id2label": dict(enumerate(data.label_names)),
                                         "label2id": {name: i for i, name in enumerate(data.label_names)}}
    if arch == "encoder" and config.pooling not in ("auto", "mean", "cls"):
        raise EttinError(f"--pooling {config.pooling!r}: expected auto, mean or cls")
    if arch == "encoder" and located.ettin:
        labels["classifier_pooling"] = "mean" if config.pooling == "auto" else config.pooling
    elif config.pooling != "auto":
        raise EttinError(f"--pooling {config.pooling}: {ref.describe()} is {describe_arch(located.config)}, which "
                         "pools as its own classifier does; leave --pooling at auto")
    source = locate(config.init_from) if config.init_from else ref
    # A decoder's prediction head (dense, GELU, LayerNorm) starts random by default, as transformers builds it: starting
    # it from the LM head (--head-init lm) fell far behind on a 30-class task (BENCHMARKS.md, quality_vs_plain).
    if config.head_init not in ("auto", "lm", "random"):
        raise EttinError(f"--head-init {config.head_init!r}: expected auto, lm or random")
    if config.head_init != "auto" and not located.ettin:
        raise EttinError(f"--head-init {config.head_init} applies to Ettin models; {ref.describe()} is "
                         f"{describe_arch(located.config)}, whose classifier starts as its own class does (--head-init auto)")
    if config.head_init == "random" and arch == "encoder":
        raise EttinError(f"--head-init random applies to Ettin decoders; {ref.describe()} is an encoder, whose "
                         "prediction head starts as its MLM head's (--head-init auto or lm)")
    head_from_lm = config.head_init == "lm" and arch == "decoder" and not config.init_from  # lm was refused above unless Ettin
    model = load_checked(
        AutoModelForSequenceClassification, source, new=("head.",) if arch == "decoder" else (), num_labels=data.num_labels,
        pad_token_id=tokenizer.pad_token_id, problem_type="regression" if data.regression else "single_label_classification",
        ignore_mismatched_sizes=config.init_from is not None, **labels, **model_kwargs(runtime))
    if head_from_lm:
        model.head.load_state_dict(checkpoint_tensors(ref, "lm_head."))
    if config.lora:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(config, located, "SEQ_CLS",
                                                  modules_to_save=["head", "classifier"] if located.ettin else None))
    return model, tokenizer, arch


def train_classify(config: ClassifyConfig, args: TrainingArguments, runtime=None, dry_run=False, start_if_new=False):
    """Fine-tune a classifier as ``config`` says; returns it (with --seeds: the last seed's). With ``start_if_new``,
    --resume-from-checkpoint latest in a folder without checkpoints starts the run (one seed of several)."""
    if config.seeds and not dry_run:
        return train_each_seed(train_classify, config, args, runtime)
    args, runtime = prepare_run(config, args, runtime, start_if_new)
    set_seed(args.seed)  # before any model is built, so its new layers (and the "before" metrics) repeat
    data = classification_data(config)  # every input check before the model loads
    model, tokenizer, _ = build_classifier(config, data, runtime)
    if dry_run:
        print_dry_run(config, args, model, data.train)
        return model
    train, evaluation = (tokenize_texts(split, tokenizer, data.text_columns, config.max_seq_length)
                         for split in (data.train, data.eval))
    extra = glue_task(config.task).extra_metrics if config.task else ()
    labels = data.eval["label"]
    majority = classification_metrics([data.majority_prediction()] * len(labels), labels, extra, data.regression)
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[SkipLastCheckpoint()])
    with RunFolder(args.output_dir).tidy_on_failure():
        before = classification_metrics(classifier_predictions(trainer, evaluation, data.regression), labels, extra,
                                        data.regression)
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after = classification_metrics(classifier_predictions(trainer, evaluation, data.regression), labels, extra,
                                       data.regression)
        model = publish_with_head(trainer, tokenizer, config.lora)
        write_results(args.output_dir, config, args, before, after, trainer, extra={"majority": majority})
    return model


def release(output_dir: str, **overrides):
    """The release settings (configs/classify.yaml) as (ClassifyConfig, TrainingArguments), as the command
    line resolves them; ``overrides`` name fields of either: ``train_classify(*release("runs/x", learning_rate=1e-4))``."""
    return release_recipe(ClassifyConfig, TrainingArguments, task_release(overrides.get("task")), output_dir, overrides, "ettin_ft.classify")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, args, dry_run = parse_recipe(
        ClassifyConfig, TrainingArguments, release_defaults(argv), argv, "python -m ettin_ft.classify",
        "Fine-tune an Ettin encoder or decoder into a sequence classifier (any TrainingArguments field is a flag).",
    )
    train_classify(config, args, dry_run=dry_run)


if __name__ == "__main__":
    main()
