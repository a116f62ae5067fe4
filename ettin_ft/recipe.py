"""What every fine-tuning recipe shares: configuration, data, model checks, evaluation and output layout.

A recipe module stays one screen long: it declares its config dataclass and defaults, builds its model
and loss, and hands the rest to these helpers. Output layout (the contract other tools rely on):

    DIR/final/          the trained model, loadable by its library class, with its model card
    DIR/config.yaml     the resolved configuration (recipe fields and training arguments)
    DIR/metrics.json    {"before": {metric: value}, "after": {metric: value}}
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .cards import write_model_cards
from .config import dump_yaml, parse_config, plain, refuse_inapplicable, shipped_config, to_dict
from .data.loading import check_texts, load_beir, load_data
from .evaluation import NANOBEIR_EN
from .errors import EttinError, check_output_dir
from .hub import check_push_to_hub
from .folders import (STATE_FILE, atomic_folder, complete_checkpoints, publish, remove_unfinished, staging_folder,
                      staging_path)
from .models import LocatedModel
from .models import locate_model as locate_checked
from .runtime import choose_runtime, refuse_sharded_fine_tuning


# Training columns that hold no text (every other column a recipe reads must be non-empty text).
NON_TEXT_COLUMNS = ("label",)


@dataclass
class RecipeConfig:
    # What the model card says the result is for, and its hub pipeline tag (each recipe names its own).
    INTENDED_USE: ClassVar[str] = ""
    PIPELINE_TAG: ClassVar[str | None] = None
    # Fields that do something only when another one is on: set alone, they are refused (refuse_inapplicable).
    REQUIRES: ClassVar[dict[str, str]] = {}

    model: str = field(default="150m", metadata={"help": "Ettin short name (150m), hub id[@revision] or local folder (e.g. a pretrain run's final/)"})
    data: str | None = field(default=None, metadata={"help": "training data: local .jsonl/.csv/.parquet file or folder, or a hub dataset (default: the recipe's Ettin-release dataset)"})
    data_config: str | None = field(default=None, metadata={"help": "hub dataset configuration"})
    data_split: str = field(default="train", metadata={"help": "hub dataset split"})
    column_mapping: str | None = field(default=None, metadata={"help": "rename data columns, e.g. 'question:query,answer:positive'"})
    max_samples: int | None = field(default=None, metadata={"help": "use at most this many training rows"})
    held_out: int = field(default=1000, metadata={"help": "training rows split off (at most a tenth) and evaluated before and after, reported as held_out_* in metrics.json (retrieval: each query against the held-out passages; classify: when no evaluation data is given; sft: loss); 0: none"})
    max_seq_length: int | None = field(default=None, metadata={"help": "maximum tokens per text (default: the model's)"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 on capable GPUs, fp32 on CPU), bf16, fp16 or fp32"})
    attn_implementation: str = field(default="auto", metadata={"help": "auto (flash_attention_2 when installed on CUDA, else sdpa), sdpa or eager"})

    def __post_init__(self):
        refuse_inapplicable(self)


@dataclass
class RetrievalConfig(RecipeConfig):
    """What the encoder recipes add: retrieval evaluation before and after training."""

    REQUIRES = {"eval_beir_split": "eval_beir", "nanobeir_dataset_id": "eval_nanobeir"}

    eval_beir: str | None = field(default=None, metadata={"help": "local BEIR folder to evaluate before and after training (e.g. ../shared/data/retrieval_eval/scifact)"})
    eval_beir_split: str = field(default="test", metadata={"help": "qrels split of the BEIR folder"})
    eval_nanobeir: str | None = field(default=None, metadata={"help": "evaluate on NanoBEIR (hub) before and after training: 'all' or names, e.g. 'scifact,nfcorpus'"})
    nanobeir_dataset_id: str = field(default=NANOBEIR_EN, metadata={"help": "the NanoBEIR collection: another language (e.g. lightonai/NanoBEIR-de) or a local copy"})

    def __post_init__(self):
        super().__post_init__()
        if self.eval_nanobeir:  # before any model is loaded
            from .evaluation import nanobeir_names

            nanobeir_names(self.eval_nanobeir)


def release_settings(recipe: str) -> tuple[dict[str, Any], tuple[str, str | None, int | None]]:
    """configs/<recipe>.yaml, the one home of a recipe's Ettin-release settings: (the defaults of every run,
    the release data as (name, config, row limit)). The data's config and row limit belong to that dataset,
    so they apply only when --data is not given (``load_training_data``), never to a user's own data."""
    values = shipped_config(recipe)
    data = (values.pop("data"), values.pop("data_config", None), values.pop("max_samples", None))
    return values, data


def parse_recipe(config_class, arguments_class, defaults: dict[str, Any], argv, prog: str, description: str):
    """Parse a recipe's config and its library's TrainingArguments (any field as a flag or YAML key).

    ``defaults`` are the recipe's Ettin-release values, applied below --config and flags. Returns
    (config, training_args, dry_run); ``prepare_run`` then settles device and precision.
    """
    import torch

    # bf16/fp16 stay off unless asked for (trl would switch bf16 on by itself); --precision decides the rest.
    # Without a GPU the trainers need use_cpu for --bf16 to work at all. Every recipe's model uses all its
    # trainable weights, so DDP need not search for unused ones after every backward pass.
    return parse_config(config_class, arguments_class, argv=argv, prog=prog, description=description,
                        defaults={"bf16": False, "fp16": False, "use_cpu": not torch.cuda.is_available(),
                                  "ddp_find_unused_parameters": False, **defaults})


def release_recipe(config_class, arguments_class, defaults: dict[str, Any], output_dir: str, overrides: dict[str, Any],
                   prog: str):
    """A recipe's ``release()``: the (config, training arguments) the command line resolves from its YAML for
    ``--output-dir output_dir``, with ``overrides`` naming fields of either object as a --config file would."""
    fields = {f.name for cls in (config_class, arguments_class) for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise EttinError(f"{prog}.release(): unknown setting(s) {', '.join(unknown)}; expected fields of "
                         f"{config_class.__name__} or {arguments_class.__name__}")
    config, args, _ = parse_recipe(config_class, arguments_class, {**defaults, **overrides}, ["--output-dir", output_dir],
                                   prog, "")
    return config, args


def prepare_run(config: RecipeConfig, args, runtime=None):
    """Settle device, precision and the run folder in one place for the command line and for Python:
    (args, runtime).

    The model (``runtime``) and the trainer (the returned copy of ``args``) share one device and precision:
    --precision, or the trainer's own --bf16/--fp16 (they must agree), on the trainer's device (--use-cpu)
    unless ``runtime`` is given. ``args.resume_from_checkpoint`` becomes the checkpoint to resume, if any.
    """
    check_output_dir(args.output_dir)  # as the command line does, for callers that build the arguments themselves
    refuse_sharded_fine_tuning(args)
    if args.push_to_hub:
        check_push_to_hub()
    if runtime is None:
        asked = "bf16" if args.bf16 else "fp16" if args.fp16 else None
        if asked and config.precision not in ("auto", asked):
            raise EttinError(f"--precision {config.precision} and --{asked} disagree; give one of them")
        runtime = choose_runtime("cpu" if args.use_cpu else None, asked or config.precision, config.attn_implementation)
    args = dataclasses.replace(args, bf16=runtime.bf16, fp16=runtime.fp16, use_cpu=runtime.device.type == "cpu",
                               resume_from_checkpoint=check_run_folder(args))
    return args, runtime


def column_mapping(config: RecipeConfig) -> dict[str, str] | None:
    if not config.column_mapping:
        return None
    pairs = [item.split(":") for item in config.column_mapping.split(",") if item.strip()]
    if any(len(pair) != 2 or not all(p.strip() for p in pair) for pair in pairs):
        raise EttinError(f"--column-mapping {config.column_mapping!r}: expected 'old:new,old2:new2'")
    return {old.strip(): new.strip() for old, new in pairs}


def load_training_data(config: RecipeConfig, columns: list[str], optional: list[str] = (), default=None):
    """The training rows with ``columns`` (plus those of ``optional`` present), in that order.

    ``optional=None`` keeps every column; ``default`` is (hub name, config, row limit) of the recipe's
    Ettin-release data (``release_settings``).
    """
    spec, data_config, limit = config.data, config.data_config, config.max_samples
    if spec is None:
        if default is None:
            raise EttinError(f"--data is required: a file or dataset with columns {', '.join(columns)}")
        spec, default_config, default_limit = default
        data_config = data_config or default_config
        limit = limit or default_limit
    dataset = load_data(spec, columns=columns, split=config.data_split, config_name=data_config,
                        column_mapping=column_mapping(config), limit=limit)
    if optional is not None:
        dataset = dataset.select_columns(list(columns) + [c for c in optional if c in dataset.column_names])
        check_texts(dataset, [c for c in dataset.column_names if c not in NON_TEXT_COLUMNS], config.data or spec)
    return dataset


def split_held_out(config: RecipeConfig, dataset, group: str | None = None):
    """(train, held-out rows): --held-out rows, at most a tenth, split off the same way in every run. With ``group``
    (a column) whole groups go, until that many rows are held out: a query with all its labelled passages."""
    held_out = min(config.held_out, len(dataset) // 10)
    if held_out < 1:
        return dataset, None
    if group is None:
        split = dataset.train_test_split(test_size=held_out, seed=0)
        return split["train"], split["test"]
    keys = dataset[group]
    sizes = collections.Counter(keys)
    chosen, rows = set(), 0
    for key in random.Random(0).sample(sorted(sizes), len(sizes)):
        if rows >= held_out:
            break
        chosen.add(key)
        rows += sizes[key]
    return (dataset.select([i for i, key in enumerate(keys) if key not in chosen]),
            dataset.select([i for i, key in enumerate(keys) if key in chosen]))


def locate_model(config: RecipeConfig, recipe: str, allowed: tuple[str, ...] = ("encoder",)) -> LocatedModel:
    """Find --model, read its configuration and check that the recipe takes its architecture."""
    return locate_checked(config.model, allowed, purpose=f"the {recipe} recipe")


def model_kwargs(runtime) -> dict[str, Any]:
    return {"attn_implementation": runtime.attn_implementation}


def transformer_kwargs(ref, runtime) -> dict[str, Any]:
    """A sentence-transformers Transformer module's arguments for ``ref``: one revision for its model, tokenizer and
    config, and the run's attention kernel."""
    revision = {"revision": ref.revision}
    return {"model_kwargs": {**model_kwargs(runtime), **revision}, "processor_kwargs": revision, "config_kwargs": revision}


def evaluators_for(kind: str, config: RetrievalConfig, held_out=None) -> dict:
    """The retrieval evaluators of a run, by the prefix their metrics are reported under: the held-out rows as a
    retrieval task ("held_out_"), --eval-beir (no prefix) and --eval-nanobeir ("nanobeir_")."""
    from .evaluation import held_out_split, nanobeir_evaluator, retrieval_evaluator

    evaluators = {}
    if held_out is not None:
        evaluators["held_out_"] = retrieval_evaluator(kind, held_out_split(held_out), name="held_out")
    if config.eval_beir:
        evaluators[""] = retrieval_evaluator(kind, beir_split(config))
    if config.eval_nanobeir:
        evaluators["nanobeir_"] = nanobeir_evaluator(kind, config.eval_nanobeir, config.nanobeir_dataset_id)
    return evaluators


def run_evaluators(model, evaluators: dict) -> dict[str, float]:
    """Run the retrieval evaluators on the main process (the others get {}): NDCG@10, MRR@10 and Recall@100
    (and sparse models' active dimensions) of each, under its prefix."""
    from .evaluation import shared_metrics

    results = {}
    if not is_main_process():
        return results
    for prefix, evaluator in evaluators.items():
        metrics = shared_metrics(evaluator(model), evaluator.primary_metric)
        results.update({prefix + metric: value for metric, value in metrics.items()})
    return results


def beir_split(config: RetrievalConfig):
    return load_beir(config.eval_beir, config.eval_beir_split) if config.eval_beir else None


def is_main_process() -> bool:
    """True in the one process that writes (the only one without torchrun/accelerate launch)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def check_run_folder(args) -> str | None:
    """Refuse a folder that holds a finished run, or an unfinished one without --resume-from-checkpoint; return
    the checkpoint to resume (``latest``: the newest complete checkpoint-N in the folder), or None."""
    output_dir, wanted = args.output_dir, args.resume_from_checkpoint
    if os.path.isdir(os.path.join(output_dir, "final")):
        raise EttinError(f"output folder {output_dir} already holds a finished run; choose another --output-dir")
    found = complete_checkpoints(output_dir)
    if not wanted:
        if found:
            raise EttinError(f"output folder {output_dir} holds an unfinished run ({os.path.basename(found[-1][1])}); "
                             "pass --resume-from-checkpoint latest to continue it, or choose another --output-dir")
        return None
    if wanted == "latest":
        if not found:
            raise EttinError(f"--resume-from-checkpoint latest: {output_dir} holds no complete checkpoint-N folder; "
                             "start without the flag")
        return found[-1][1]
    if not os.path.isfile(os.path.join(wanted, STATE_FILE)):
        raise EttinError(f"--resume-from-checkpoint {wanted}: not a complete checkpoint (no {STATE_FILE}); "
                         "expected a DIR/checkpoint-N folder or 'latest'")
    return wanted


@contextlib.contextmanager
def output_folder(output_dir: str):
    """Tidy the run folder when the run fails or is interrupted (Ctrl-C included).

    The main process removes staging folders and incomplete checkpoints, keeps every complete checkpoint-N for
    --resume-from-checkpoint, and removes the folder itself only if this run created it and nothing complete
    is in it. (A process killed outright cannot tidy up; the next run into the folder does.)
    """
    # The trainers create the (empty) folder when they are built, before this runs.
    created = not os.path.exists(output_dir) or not os.listdir(output_dir)
    if is_main_process():
        remove_unfinished(output_dir)
    try:
        yield
    except BaseException:
        if is_main_process():
            remove_unfinished(output_dir)
            if created and not complete_checkpoints(output_dir) and not os.path.isdir(os.path.join(output_dir, "final")):
                shutil.rmtree(output_dir, ignore_errors=True)
        raise


def publish_trained(trainer, name: str = "final", finish=None) -> str:
    """DIR/<name> through a staging folder with the trainer's own saving, which gathers sharded weights
    (FSDP, DeepSpeed) from every process and writes from the main process; every process calls it.
    ``finish(folder)`` then completes the saved folder on the main process, before it is published."""
    path = os.path.join(trainer.args.output_dir, name)
    staging = staging_folder(path) if is_main_process() else None
    wait_for_everyone()
    trainer.save_model(staging_path(path))
    wait_for_everyone()
    if staging is not None:
        if finish is not None:
            finish(staging)
        publish(staging, path)
    wait_for_everyone()
    return path


def publish_from_main(model, tokenizer, output_dir: str, name: str) -> str:
    """DIR/<name> holding ``model`` and ``tokenizer``, written by the main process alone through a staging folder
    (for what the trainer does not save, e.g. a LoRA model merged after training)."""
    path = os.path.join(output_dir, name)
    if is_main_process():
        with atomic_folder(path) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    wait_for_everyone()
    return path


def run_settings(config, training_args) -> dict:
    """config.yaml's content: the recipe's fields and the training arguments that differ from the library's."""
    defaults = {f.name: f.default for f in dataclasses.fields(training_args) if f.default is not dataclasses.MISSING}
    changed = {k: v for k, v in to_dict(training_args).items() if k not in defaults or plain(defaults[k]) != v}
    return {**to_dict(config), "training_arguments": changed}


def write_results(output_dir: str, config, training_args, before: dict, after: dict, trainer=None,
                  extra: dict | None = None) -> None:
    """config.yaml, metrics.json (plus ``extra`` entries), (with ``trainer``) the log as log_history.jsonl, and
    the model cards of the published model folders, written by the main process."""
    if not is_main_process():
        return
    os.makedirs(output_dir, exist_ok=True)
    if trainer is not None:
        with open(os.path.join(output_dir, "log_history.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in trainer.state.log_history)
    settings = run_settings(config, training_args)
    with open(os.path.join(output_dir, "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(dump_yaml(settings))
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump({"before": before, "after": after, **(extra or {})}, handle, indent=2, ensure_ascii=False)
    dataset = getattr(trainer, "train_dataset", None)
    write_model_cards(output_dir, intended_use=config.INTENDED_USE, base_model=config.model, data=config.data,
                      rows=len(dataset) if hasattr(dataset, "__len__") else None, settings=settings, before=before,
                      after=after, pipeline_tag=config.PIPELINE_TAG)


def skip_last_checkpoint(trainer) -> None:
    """Save no checkpoint at the last step (the trainers do when checkpoints are on): DIR/final is saved then."""
    from transformers import TrainerCallback

    class SkipLastCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

    trainer.add_callback(SkipLastCheckpoint())


def train_and_save(trainer, config, args, measure, save=None, extra=None) -> None:
    """Evaluate, train (from --resume-from-checkpoint), evaluate again, then write DIR/final, config.yaml,
    metrics.json and the log. Right under several processes: every process trains, ``measure`` (the run's evaluation) runs where
    it must (gathered, or on the main process alone), and only the main process writes.

    ``save()`` publishes the model (default: the trainer's model as DIR/final); ``extra()`` adds entries to
    metrics.json.
    """
    skip_last_checkpoint(trainer)
    with output_folder(args.output_dir):
        before = measure()
        wait_for_everyone()
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        after = measure()
        (save or (lambda: publish_trained(trainer)))()
        write_results(args.output_dir, config, args, before, after, trainer, extra=extra() if extra else None)
        wait_for_everyone()


def print_dry_run(config, training_args, model, train_dataset) -> None:
    print(dump_yaml({**to_dict(config), "training_arguments": {
        k: getattr(training_args, k) for k in ("output_dir", "learning_rate", "per_device_train_batch_size",
                                               "num_train_epochs", "max_steps", "warmup_steps", "bf16")}}), end="")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__}, {parameters / 1e6:.1f}M parameters\n{model}")
    print(f"data: {len(train_dataset)} rows, columns {train_dataset.column_names}")
    print(f"sample: {json.dumps(train_dataset[0], ensure_ascii=False)[:500]}")
