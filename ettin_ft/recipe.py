"""What every fine-tuning recipe shares about its settings: the config dataclasses, the Ettin-release defaults
(configs/<recipe>.yaml, their one home) and ``release()``, parsing, the run's device and precision, the model's
location and the dry run. Data and evaluators live in ``recipe_data``; run folders and publishing in ``run_folder``.

A recipe module reads like an upstream example script: config, data, model, loss, trainer, then
train → evaluate → publish, into DIR/final/ (the model, with its card), DIR/config.yaml and DIR/metrics.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .config import dump_yaml, parse_config, refuse_inapplicable, shipped_config, to_dict
from .evaluation import NANOBEIR_EN
from .errors import EttinError, check_output_dir
from .hub import check_push_to_hub
from .models import LocatedModel, locate_model
from .run_folder import RunFolder
from .runtime import choose_runtime, refuse_sharded_fine_tuning


@dataclass
class RecipeConfig:
    # What the model card says the result is for, and its hub pipeline tag (each recipe names its own).
    INTENDED_USE: ClassVar[str] = ""
    PIPELINE_TAG: ClassVar[str | None] = None
    # Fields that do something only when another one is on: set alone, they are refused (refuse_inapplicable).
    REQUIRES: ClassVar[dict[str, str]] = {}
    # configs/<RELEASE>.yaml: the one home of the recipe's Ettin-release values. Fields it sets default to None
    # (unset) here and take its value when left unset, from the command line and from Python alike.
    RELEASE: ClassVar[str] = ""

    model: str | None = field(default=None, metadata={"help": "Ettin short name (150m), hub id[@revision] or local folder (e.g. a pretrain run's final/)"})
    data: str | None = field(default=None, metadata={"help": "training data: local .jsonl/.csv/.parquet file or folder, or a hub dataset (default: the recipe's Ettin-release dataset)"})
    data_config: str | None = field(default=None, metadata={"help": "hub dataset configuration"})
    data_split: str = field(default="train", metadata={"help": "hub dataset split"})
    column_mapping: str | None = field(default=None, metadata={"help": "rename data columns, e.g. 'question:query,answer:positive'"})
    max_samples: int | None = field(default=None, metadata={"help": "use at most this many training rows"})
    held_out: int | None = field(default=None, metadata={"help": "training rows split off (at most a tenth) and evaluated before and after, reported as held_out_* in metrics.json (retrieval: each query against the held-out passages; classify: when no evaluation data is given; sft: loss); 0: none"})
    max_seq_length: int | None = field(default=None, metadata={"help": "maximum tokens per text (default: the model's)"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 on capable GPUs, fp32 on CPU), bf16, fp16 or fp32"})
    attn_implementation: str = field(default="auto", metadata={"help": "auto (flash_attention_2 when installed on CUDA, else sdpa), sdpa or eager"})

    def __post_init__(self):
        refuse_inapplicable(self)
        for name, value in self.release_values().items():
            if name in self.__dataclass_fields__ and getattr(self, name) is None:
                setattr(self, name, value)

    def release_values(self) -> dict[str, Any]:
        """The release's values of this recipe's settings (its release data excepted: see ``release_settings``)."""
        return release_settings(self.RELEASE)[0]


@dataclass
class RetrievalConfig(RecipeConfig):
    """What the encoder recipes add: retrieval evaluation before and after training."""

    REQUIRES = {"eval_beir_split": "eval_beir", "nanobeir_dataset_id": "eval_nanobeir"}

    eval_beir: str | None = field(default=None, metadata={"help": "local BEIR folder to evaluate before and after training (e.g. ../shared/data/retrieval_eval/scifact)"})
    eval_beir_split: str = field(default="test", metadata={"help": "qrels split of the BEIR folder"})
    eval_nanobeir: str | None = field(default=None, metadata={"help": "evaluate on NanoBEIR (hub) before and after training: 'all' or names, e.g. 'scifact,nfcorpus'"})
    nanobeir_dataset_id: str = field(default=NANOBEIR_EN, metadata={"help": "the NanoBEIR collection: another language (e.g. lightonai/NanoBEIR-de) or a local copy"})
    loss: str | None = field(default=None, metadata={"help": "from labels | from a teacher's scores: rerank bce | mse, margin-mse; dense cmnrl | margin-mse, kl; sparse mnrl | margin-mse, kl; colbert contrastive | distillation, margin-mse. Default: the first score loss when the rows have scores or --teacher / --teacher-scores gives them, else the label loss"})
    teacher: str | None = field(default=None, metadata={"help": "a cross-encoder, dense, sparse or ColBERT model (folder or hub name) that scores every (query, candidate) pair of the training rows once, before training, into DIR/teacher_scores.jsonl (a resumed run reads it back); batches of --per-device-eval-batch-size"})
    teacher_scores: str | None = field(default=None, metadata={"help": "a teacher_scores.jsonl file ({query, document, score} rows) to train from, without loading the teacher"})

    def __post_init__(self):
        super().__post_init__()
        if self.teacher and self.teacher_scores:
            raise EttinError("--teacher and --teacher-scores both give the scores; pass one of them")
        if self.teacher:  # before any data or model is loaded
            from .distillation import locate_teacher

            locate_teacher(self.teacher)
        if self.eval_nanobeir:  # before any model is loaded
            from .evaluation import nanobeir_names

            nanobeir_names(self.eval_nanobeir)


def release_settings(recipe: str) -> tuple[dict[str, Any], tuple[str, str | None, int | None]]:
    """configs/<recipe>.yaml: (the defaults of every run, the release data as (name, config, row limit), if any). The
    data's config and row limit apply only when --data is not given (``load_training_data``), never to a user's data."""
    values = shipped_config(recipe)
    data = (values.pop("data", None), values.pop("data_config", None), values.pop("max_samples", None))
    return values, data


def parse_recipe(config_class, arguments_class, defaults: dict[str, Any], argv, prog: str, description: str):
    """(config, training_args, dry_run) from flags and YAML, ``defaults`` (the release values) below --config and
    flags; ``prepare_run`` then settles device and precision."""
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


def prepare_run(config: RecipeConfig, args, runtime=None, start_if_new: bool = False):
    """Settle device, precision and the run folder in one place for the command line and for Python:
    (args, runtime).

    The model (``runtime``) and the trainer (the returned copy of ``args``) share one device and precision:
    --precision, or the trainer's own --bf16/--fp16 (they must agree), on the trainer's device (--use-cpu)
    unless ``runtime`` is given. ``args.resume_from_checkpoint`` becomes the checkpoint to resume, if any (with
    ``start_if_new``, 'latest' in a folder without checkpoints starts the run).
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
    resume = RunFolder(args.output_dir).resume_point(args.resume_from_checkpoint, start_if_new)
    args = dataclasses.replace(args, bf16=runtime.bf16, fp16=runtime.fp16, use_cpu=runtime.device.type == "cpu",
                               resume_from_checkpoint=resume)
    return args, runtime


def locate_base_model(config: RecipeConfig, recipe: str, allowed: tuple[str, ...] = ("encoder",)) -> LocatedModel:
    """Find --model, read its configuration and check that the recipe takes its architecture."""
    return locate_model(config.model, allowed, purpose=f"the {recipe} recipe")


def print_dry_run(config, training_args, model, train_dataset) -> None:
    print(dump_yaml({**to_dict(config), "training_arguments": {
        k: getattr(training_args, k) for k in ("output_dir", "learning_rate", "per_device_train_batch_size",
                                               "num_train_epochs", "max_steps", "warmup_steps", "bf16")}}), end="")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__}, {parameters / 1e6:.1f}M parameters\n{model}")
    print(f"data: {len(train_dataset)} rows, columns {train_dataset.column_names}")
    print(f"sample: {json.dumps(train_dataset[0], ensure_ascii=False)[:500]}")
