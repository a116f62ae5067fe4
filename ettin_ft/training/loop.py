"""The pretraining loop on accelerate: StableAdamW, WSD schedules, exact resume, MFU logging.

One global batch is the same rows in the same order whatever the number of processes or micro-batches:
rows are numbered globally, each process takes its contiguous share, masks are seeded by row number,
and the loss is normalised by the global number of target tokens. So one process and several give the
same losses (to float tolerance), and a resumed run repeats the uninterrupted one exactly. Data, checkpoints
and throughput live beside this file (data.py, checkpoints.py, throughput.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader

from ..cards import write_model_cards
from ..config import save_config, to_dict
from ..errors import EttinError
from ..hub import locate
from ..compat import accelerator_state_of_its_own
from ..models import build_model, load_model, locate_model
from ..process_state import transformers_progress_bars
from ..pretrain import TOKENIZER_DOCUMENTS
from ..registry import VOCAB_SIZE
from ..run_folder import RunFolder
from ..runtime import choose_runtime
from ..tokenizer import set_post_processing, train_tokenizer
from .checkpoints import prune_checkpoints, resume, save_checkpoint
from .data import PackedRows, StreamedRows, held_out_examples, load_documents, tokenize_documents
from .objectives import PretrainingModule
from .packing import SpecialIds
from .throughput import ThroughputMeter, flops_per_token, measured_peak_flops


# ------------------------------------------------------------------------------------------ model set-up


def prepare_tokenizer(config, accelerator, train_documents):
    """The run's tokenizer: --tokenizer, else --init's, else one trained on the data (main process first)."""
    from transformers import AutoTokenizer

    source = config.tokenizer or config.init
    if source and os.path.isdir(source):  # a model folder or a tokenizer-only folder
        tokenizer = AutoTokenizer.from_pretrained(source)
    elif source:
        ref = locate(source)
        tokenizer = AutoTokenizer.from_pretrained(ref.path, revision=ref.revision)
    else:
        tokenizer_dir = os.path.join(config.output_dir, "tokenizer")
        with accelerator.main_process_first():
            if not os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
                documents = config.tokenizer_documents or TOKENIZER_DOCUMENTS
                sample = train_documents.take(documents) if not hasattr(train_documents, "__len__") \
                    else train_documents.select(range(min(documents, len(train_documents))))
                texts = (row[config.text_column] for row in sample)
                trained = train_tokenizer(texts, vocab_size=config.vocab_size or VOCAB_SIZE, arch=config.arch,
                                          model_max_length=config.context)
                if accelerator.is_main_process:
                    trained.save_pretrained(tokenizer_dir)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is None:
            raise EttinError(f"tokenizer {source} has no {name[:-9]} token; expected the Ettin special tokens")
    if config.objective in ("mlm", "mntp") and tokenizer.mask_token_id is None:
        raise EttinError(f"tokenizer {source} has no [MASK] token, which {config.objective} needs")
    set_post_processing(tokenizer, config.arch)
    return tokenizer


def prepare_model(config, tokenizer, attn_implementation: str):
    """A fresh model of the official shape, or --init's weights (converted across architectures)."""
    from ..convert import convert_model
    from ..registry import rope_parameters

    if config.init is None:
        return build_model(config.size, config.arch, tokenizer=tokenizer, context=config.context,
                           global_rope_theta=config.global_rope_theta, local_rope_theta=config.local_rope_theta,
                           attn_implementation=attn_implementation)
    located = locate_model(config.init, purpose="--init")  # an Ettin model (PretrainConfig checked it)
    model_config = located.config
    # Context extension: a longer context and its RoPE thetas apply to continued weights too.
    model_config.max_position_embeddings = max(config.context, model_config.max_position_embeddings)
    for kind, values in rope_parameters(config.context, config.global_rope_theta, config.local_rope_theta).items():
        model_config.rope_parameters[kind]["rope_theta"] = values["rope_theta"]
    model = load_model(located, config=model_config, attn_implementation=attn_implementation)
    model = convert_model(model, config.arch)
    if len(tokenizer) > model.config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return model


def make_accelerator(config, runtime):
    """(Accelerator for the run's precision and device, the trackers it logs to)."""
    import importlib.util

    from accelerate import Accelerator

    trackers = [] if config.report_to == "none" else [config.report_to]
    if "tensorboard" in trackers and not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
        trackers = []  # optional extra `.[tensorboard]`
    accelerator = Accelerator(
        mixed_precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(runtime.dtype, "no"),
        cpu=runtime.device.type == "cpu", log_with=trackers or None, project_dir=os.path.join(config.output_dir, "logs"),
    )
    return accelerator, trackers


def make_optimizer(model, config, runtime):
    """torch-optimi's StableAdamW with decoupled weight decay, none on norms and biases."""
    from optimi import StableAdamW

    return StableAdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                       betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                       weight_decay=config.weight_decay, decouple_lr=True,
                       triton=runtime.device.type == "cuda")  # optimi's triton kernels are GPU-only


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on norms and biases (every 1-D parameter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_scheduler(optimizer, config):
    """transformers' warmup-stable-decay schedule; every Ettin phase is one setting of it."""
    from transformers import get_wsd_schedule

    warmup, decay = config.schedule_steps()
    return get_wsd_schedule(optimizer, num_warmup_steps=warmup, num_decay_steps=decay,
                            num_stable_steps=config.max_steps - warmup - decay,
                            decay_type=config.decay_type, min_lr_ratio=config.min_lr_ratio)


# ------------------------------------------------------------------------------------------------- loop


@torch.no_grad()
def held_out_metrics(module, accelerator, batches) -> dict[str, float]:
    module.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            loss_sum, targets, correct = module(batch)  # the prepared module: FSDP gathers its weights
        totals += torch.tensor([loss_sum.item(), targets.item(), correct.item()], dtype=torch.float64)
    module.train()
    loss = totals[0].item() / max(totals[1].item(), 1)
    return {"eval_loss": loss, "eval_accuracy": totals[2].item() / max(totals[1].item(), 1),
            "eval_perplexity": math.exp(min(loss, 50))}


def train_step(module, accelerator, optimizer, micro_batches: list[dict], max_grad_norm: float = 0.0) -> float:
    """One optimizer step over ``micro_batches`` (gradient accumulation); returns the step's mean loss per target.

    Each micro-batch's summed loss is divided by the global number of targets in the whole step, so any split
    into micro-batches (or processes) gives the same gradient as one batch of all the rows.
    """
    world = accelerator.num_processes
    local_targets = sum((b["labels"] != -100).sum() for b in micro_batches)
    global_targets = accelerator.reduce(local_targets.clone(), reduction="sum").clamp(min=1)
    step_loss = torch.zeros((), device=accelerator.device)
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with accelerator.no_sync(module) if not last else contextlib.nullcontext():
            loss_sum, _, _ = module(batch)
            # DDP averages gradients over processes; scale back to a global per-target mean.
            accelerator.backward(loss_sum * world / global_targets)
        step_loss += loss_sum.detach()
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(module.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return (accelerator.reduce(step_loss, reduction="sum") / global_targets).item()


def run_pretraining(config) -> str:
    """Train as ``config`` says; returns the path of the final model folder (DIR/final).

    A run that fails before its first checkpoint removes the output folder it created (``RunFolder``).
    """
    folder = RunFolder(config.output_dir, resume_flag="--resume")
    if folder.finished and not config.resume:
        raise EttinError(f"output folder {config.output_dir} already holds a finished run; pass --resume (with a larger "
                         "--max-steps) to go on from its last checkpoint, or choose another --output-dir")
    if not folder.finished:  # --resume goes on from the last checkpoint, also past a finished run's last step
        folder.resume_point("latest" if config.resume else None, start_if_new=True)  # refuses mixing runs
    # per-save shard bars would break the run's own progress bar
    with folder.tidy_on_failure(), accelerator_state_of_its_own(), transformers_progress_bars(shown=False):
        return _pretrain(config)


@dataclass
class PretrainingRun:
    """What the loop works with, built by ``set_up``: the prepared model and optimiser, the data, and where the
    run starts (a resumed run: its step, log and "before" metrics)."""

    accelerator: Any
    trackers: bool
    runtime: Any
    model: Any  # the transformers model (its config sizes the FLOPs)
    module: Any  # the prepared objective module that trains it
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    loader: Any  # an iterator of micro-batches, from the run's next row on
    eval_batches: list
    documents: int | None  # training documents, when known (local data)
    rows_per_step: int
    start_step: int
    history: list
    before: dict | None


def set_up(config) -> PretrainingRun:
    """Runtime, accelerator, documents, tokenizer, model, optimiser and schedule, then this process's rows from the
    run's next step (tokenised once, or streamed) and the held-out batches."""
    runtime = choose_runtime(precision=config.precision, attn_implementation=config.attn_implementation, cpu_bf16=True)
    accelerator, trackers = make_accelerator(config, runtime)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # accelerate's DeepSpeed engine steps after every backward pass, which this loop's accumulation does not
        # expect; FSDP and DDP are the paths pretraining supports.
        raise EttinError("pretraining under DeepSpeed is not supported; launch it with the multi-GPU or FSDP "
                         "accelerate config (configs/accelerate/)")
    train_documents, eval_documents = load_documents(config)
    if accelerator.is_main_process:
        os.makedirs(config.output_dir, exist_ok=True)
    tokenizer = prepare_tokenizer(config, accelerator, train_documents)
    torch.manual_seed(config.seed)
    model = prepare_model(config, tokenizer, runtime.attn_implementation)
    module = PretrainingModule(model)
    if config.compile:
        module = torch.compile(module)

    optimizer = make_optimizer(model, config, runtime)
    scheduler = make_scheduler(optimizer, config)
    # The scheduler is stepped by hand (accelerate would step it once per process) but checkpointed.
    module, optimizer = accelerator.prepare(module, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    world, rank = accelerator.num_processes, accelerator.process_index
    rows_per_step = config.batch_size * config.gradient_accumulation_steps * world
    start_step, history, before = resume(accelerator, config.output_dir) if config.resume else (0, [], None)
    if accelerator.is_main_process:
        save_config(os.path.join(config.output_dir, "config.yaml"), config)
        if trackers:
            accelerator.init_trackers("pretrain", config={k: v for k, v in vars(config).items() if isinstance(v, (int, float, str, bool))})

    ids = SpecialIds.of(tokenizer)
    if isinstance(train_documents, datasets.Dataset):
        tokens = tokenize_documents(train_documents, tokenizer, config.text_column, accelerator,
                                    os.path.join(config.output_dir, "tokenized"))
        train_rows = PackedRows(tokens, config, ids, rows_per_step, rank, world, start_row=start_step * rows_per_step,
                                batch_size=config.batch_size)
        workers = config.num_workers
    else:
        train_rows = StreamedRows(split_dataset_by_node(train_documents, rank, world), tokenizer, config, ids, rank,
                                  world, start_batch=start_step * config.gradient_accumulation_steps,
                                  batch_size=config.batch_size)
        workers = 0  # see StreamedRows
    loader = iter(DataLoader(train_rows, batch_size=config.batch_size, num_workers=workers,
                             persistent_workers=workers > 0))
    eval_batches = list(DataLoader(held_out_examples(eval_documents, tokenizer, config, ids), batch_size=config.batch_size))
    return PretrainingRun(accelerator, trackers, runtime, model, module, tokenizer, optimizer, scheduler, loader,
                          eval_batches, len(train_documents) if hasattr(train_documents, "__len__") else None,
                          rows_per_step, start_step, history, before)


def train(config, run: PretrainingRun) -> float:
    """Steps from the run's start to --max-steps: log, evaluate and checkpoint as configured; returns the padding
    share of the rows trained on."""
    from tqdm.auto import tqdm

    accelerator = run.accelerator
    if run.before is None:
        run.before = held_out_metrics(run.module, accelerator, run.eval_batches)
    predicted_share = config.mlm_probability if config.objective != "clm" else 1.0
    meter = ThroughputMeter(flops_per_token(run.model.config, config.seq_len, predicted_share),
                            config.peak_flops or measured_peak_flops(accelerator.device, run.runtime.dtype),
                            accelerator.num_processes)
    progress = tqdm(total=config.max_steps, initial=run.start_step, disable=not accelerator.is_local_main_process,
                    desc=f"pretrain {config.arch} ({config.objective})", dynamic_ncols=True)
    run.module.train()
    real_tokens, total_tokens = 0, 0
    try:
        for step in range(run.start_step + 1, config.max_steps + 1):
            micro_batches = [{k: v.to(accelerator.device) for k, v in next(run.loader).items()}
                             for _ in range(config.gradient_accumulation_steps)]
            real_tokens += sum(int((b["doc_ids"] >= 0).sum()) for b in micro_batches)
            total_tokens += sum(b["doc_ids"].numel() for b in micro_batches)
            lr = run.scheduler.get_last_lr()[0]
            loss = train_step(run.module, accelerator, run.optimizer, micro_batches, config.max_grad_norm)
            run.scheduler.step()
            meter.add(run.rows_per_step * config.seq_len)
            record = {"step": step, "loss": loss, "lr": lr}
            if step % config.log_every == 0 or step == config.max_steps:
                record.update(meter.read())
            if (config.eval_every and step % config.eval_every == 0) or step == config.max_steps:
                record.update(held_out_metrics(run.module, accelerator, run.eval_batches))
            run.history.append(record)
            if run.trackers:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            progress.set_postfix({k: (f"{v:.3g}" if k != "mfu" else f"{v:.1%}") for k, v in record.items()
                                  if k in ("loss", "lr", "tokens_per_second", "mfu", "eval_loss")}, refresh=False)
            progress.update(1)
            if config.save_every and step % config.save_every == 0 and step < config.max_steps:
                state = {"step": step, "rows_consumed": step * run.rows_per_step, "before": run.before,
                         "log_history": run.history}
                save_checkpoint(accelerator, run.module, run.tokenizer, config.output_dir, f"checkpoint-{step}", state)
                if accelerator.is_main_process:
                    prune_checkpoints(config.output_dir, config.keep_checkpoints)
    finally:  # the bar ends its line before any error is printed
        progress.close()
    return 1 - real_tokens / max(total_tokens, 1)


def publish_final(config, run: PretrainingRun, padding: float) -> str:
    """DIR/final (every process takes part), then from the main process the log, metrics.json and the model card."""
    accelerator = run.accelerator
    final = save_checkpoint(accelerator, run.module, run.tokenizer, config.output_dir, "final", None)
    if accelerator.is_main_process:
        with open(os.path.join(config.output_dir, "log_history.jsonl"), "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in run.history)
        last = run.history[-1]
        after = {k: v for k, v in last.items() if k.startswith("eval_")}
        train_summary = {"steps": config.max_steps, "loss": last["loss"], "tokens_per_second": last["tokens_per_second"],
                         "mfu": last["mfu"], "padding_share": padding}
        use = {"encoder": "a base encoder (masked-language model: fill-mask) to fine-tune into embedders, rerankers "
                          "and classifiers", "decoder": "a base decoder (causal language model) to fine-tune into chat "
                          "models and classifiers, or to score text"}[config.arch]
        write_model_cards(config.output_dir, intended_use=use, base_model=config.init, data=config.data,
                          rows=run.documents, settings=to_dict(config), before=run.before, after=after,
                          pipeline_tag="fill-mask" if config.arch == "encoder" else "text-generation")
        shutil.rmtree(os.path.join(config.output_dir, "tokenized"), ignore_errors=True)  # kept for --resume only
        RunFolder(config.output_dir).mark_finished({"before": run.before, "after": after, "train": train_summary})
        accelerator.print(f"saved {final}: held-out loss {run.before['eval_loss']:.4f} -> {after['eval_loss']:.4f}")
    accelerator.end_training()
    return final


def _pretrain(config) -> str:
    run = set_up(config)
    return publish_final(config, run, train(config, run))
