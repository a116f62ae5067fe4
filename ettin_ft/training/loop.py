"""The pretraining loop on accelerate: packed data, StableAdamW, WSD schedules, exact resume, MFU logging.

One global batch is the same rows in the same order whatever the number of processes or micro-batches:
rows are numbered globally, each process takes its contiguous share, masks are seeded by row number,
and the loss is normalised by the global number of target tokens. So one process and several give the
same losses (to float tolerance), and a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..config import save_config
from ..data.loading import check_texts, load_data
from ..errors import EttinError
from ..folders import publish, staging_folder
from ..hub import locate
from ..models import build_model, load_model, locate_model
from ..runtime import choose_runtime
from ..tokenizer import set_post_processing, train_tokenizer
from .packing import SpecialIds, make_example, pack_documents
from .objectives import PretrainingModule

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
# Known dense bf16 peaks (FLOP/s) for MFU; other devices are measured.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H20": 148e12, "A100": 312e12, "L40": 181e12, "A10": 125e12}


# ------------------------------------------------------------------------------------------------- data


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
                sample = train_documents.take(config.tokenizer_documents) if not hasattr(train_documents, "__len__") \
                    else train_documents.select(range(min(config.tokenizer_documents, len(train_documents))))
                texts = (row[config.text_column] for row in sample)
                trained = train_tokenizer(texts, vocab_size=config.vocab_size, arch=config.arch,
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
    located = locate_model(config.init, purpose="--init")
    if not located.ettin:
        raise EttinError(f"--init {config.init} is a {located.config.model_type} model; pretraining continues Ettin "
                         "(ModernBERT) encoders and decoders only")
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


def flops_per_token(model_config, seq_len: int, predicted_share: float) -> float:
    """Training FLOPs per token: 6 × (non-embedding parameters) + attention + the vocabulary projection
    for the share of tokens that are predicted."""
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    per_layer = 4 * hidden * hidden + 3 * hidden * model_config.intermediate_size
    window = 2 * model_config.sliding_window
    attention = sum(12 * hidden * (seq_len if kind == "full_attention" else min(window, seq_len))
                    for kind in model_config.layer_types)
    head = 6 * (hidden * hidden + hidden * model_config.vocab_size) * predicted_share
    return 6 * layers * per_layer + attention + head


def measured_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """A device's dense matmul peak: the known figure for common GPUs, measured otherwise."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
    size = 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        torch.matmul(a, b)
        runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * runs / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------- checkpoints


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint, oldest first; staging folders are never complete."""
    found = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            match = CHECKPOINT.match(name)
            path = os.path.join(output_dir, name)
            if match and os.path.isfile(os.path.join(path, STATE_FILE)):
                found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(accelerator, module, tokenizer, output_dir: str, name: str, state: dict | None) -> str:
    """Write to a staging folder, then rename: a kill never leaves a partial checkpoint behind, and a failed
    write (disk full, no permission) leaves the last complete checkpoint as it was."""
    final_path = os.path.join(output_dir, name)
    staging = staging_folder(final_path)
    # Every process takes part: under FSDP or DeepSpeed the full weights are gathered from all of them.
    weights = {key.removeprefix("model."): value for key, value in accelerator.get_state_dict(module).items()}
    try:
        if accelerator.is_main_process:
            os.makedirs(staging)
        accelerator.wait_for_everyone()
        if state is not None:
            accelerator.save_state(os.path.join(staging, "training_state"))
        if accelerator.is_main_process:
            accelerator.unwrap_model(module).model.save_pretrained(staging, state_dict=weights)
            tokenizer.save_pretrained(staging)
            if state is not None:
                with open(os.path.join(staging, STATE_FILE), "w") as handle:
                    json.dump(state, handle, indent=2)
            publish(staging, final_path)
    except OSError as error:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        kept = complete_checkpoints(output_dir)
        raise EttinError(
            f"cannot write {name} in {output_dir} ({error.strerror or error}); "
            + (f"{os.path.basename(kept[-1][1])} is intact: free space or fix the folder, then rerun with --resume"
               if kept else "no complete checkpoint yet: free space or fix the folder, then rerun")) from None
    accelerator.wait_for_everyone()
    return final_path


def prune_checkpoints(output_dir: str, keep: int) -> None:
    for _, path in complete_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- loop


@torch.no_grad()
def evaluate(module, accelerator, batches) -> dict[str, float]:
    module.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            loss_sum, targets, correct = accelerator.unwrap_model(module)(batch)
        totals += torch.tensor([loss_sum.item(), targets.item(), correct.item()], dtype=torch.float64)
    module.train()
    loss = totals[0].item() / max(totals[1].item(), 1)
    return {"eval_loss": loss, "eval_accuracy": totals[2].item() / max(totals[1].item(), 1),
            "eval_perplexity": math.exp(min(loss, 50))}


def check_output_dir(config) -> None:
    """Refuse to mix runs: a folder with checkpoints or a final model needs --resume (or a new folder)."""
    if config.resume:
        return
    if complete_checkpoints(config.output_dir) or os.path.isdir(os.path.join(config.output_dir, "final")):
        raise EttinError(
            f"output folder {config.output_dir} already holds a run; pass --resume to continue it "
            "or choose another --output-dir"
        )


def pretrain(config) -> str:
    """Train as ``config`` says; returns the path of the final model folder (DIR/final).

    A run that fails before its first checkpoint removes the output folder it created.
    """
    created = not os.path.exists(config.output_dir)
    try:
        return _pretrain(config)
    except BaseException:
        if created and not complete_checkpoints(config.output_dir):
            shutil.rmtree(config.output_dir, ignore_errors=True)
        raise


def _pretrain(config) -> str:
    from accelerate import Accelerator
    from optimi import StableAdamW
    from tqdm.auto import tqdm

    from transformers.utils import logging as transformers_logging

    check_output_dir(config)
    transformers_logging.disable_progress_bar()  # per-save shard bars would break our progress bar
    runtime = choose_runtime(precision=config.precision, attn_implementation=config.attn_implementation, cpu_bf16=True)
    trackers = [] if config.report_to == "none" else [config.report_to]
    if "tensorboard" in trackers:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
            trackers = []  # optional extra `.[tensorboard]`
    from accelerate.state import AcceleratorState

    # A second run in the same Python process may use another precision; the process-wide state (device,
    # process group) stays, only the per-run mixed-precision settings are reset.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(runtime.dtype, "no"),
        cpu=runtime.device.type == "cpu", log_with=trackers or None, project_dir=os.path.join(config.output_dir, "logs"),
    )
    train_documents, eval_documents = load_documents(config)
    if accelerator.is_main_process:
        os.makedirs(config.output_dir, exist_ok=True)
    tokenizer = prepare_tokenizer(config, accelerator, train_documents)
    torch.manual_seed(config.seed)
    model = prepare_model(config, tokenizer, runtime.attn_implementation)
    module = PretrainingModule(model)
    if config.compile:
        module = torch.compile(module)

    optimizer = StableAdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                            betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                            weight_decay=config.weight_decay, decouple_lr=True,
                            triton=runtime.device.type == "cuda")  # optimi's triton kernels are GPU-only
    scheduler = make_scheduler(optimizer, config)
    # The scheduler is stepped by hand (accelerate would step it once per process) but checkpointed.
    module, optimizer = accelerator.prepare(module, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    world, rank = accelerator.num_processes, accelerator.process_index
    rows_per_step = config.batch_size * config.gradient_accumulation_steps * world
    start_step, history, before = 0, [], None
    if config.resume:
        checkpoints = complete_checkpoints(config.output_dir)
        if checkpoints:
            start_step, path = checkpoints[-1]
            accelerator.load_state(os.path.join(path, "training_state"))
            with open(os.path.join(path, STATE_FILE)) as handle:
                saved = json.load(handle)
            history, before = saved["log_history"], saved["before"]
            accelerator.print(f"resuming from {path} (step {start_step})")
    if accelerator.is_main_process:
        save_config(os.path.join(config.output_dir, "config.yaml"), config)
        if trackers:
            accelerator.init_trackers("pretrain", config={k: v for k, v in vars(config).items() if isinstance(v, (int, float, str, bool))})

    train_rows = PackedRows(train_documents, tokenizer, config, rows_per_step, rank, world,
                            start_row=start_step * rows_per_step, batch_size=config.batch_size)
    loader = iter(DataLoader(train_rows, batch_size=config.batch_size, num_workers=config.num_workers,
                             persistent_workers=config.num_workers > 0))
    eval_rows = PackedRows(eval_documents, tokenizer, config, 1, 0, 1, repeat=False, seed_offset=10**9)
    eval_batches = list(DataLoader(list(itertools.islice(iter(eval_rows), config.eval_rows)), batch_size=config.batch_size))

    if before is None:
        before = evaluate(module, accelerator, eval_batches)
    unwrapped = accelerator.unwrap_model(module)
    predicted_share = config.mlm_probability if config.objective != "clm" else 1.0
    flops_token = flops_per_token(unwrapped.model.config, config.seq_len, predicted_share)
    peak = config.peak_flops or measured_peak_flops(accelerator.device, runtime.dtype)
    tokens_per_step = rows_per_step * config.seq_len
    progress = tqdm(total=config.max_steps, initial=start_step, disable=not accelerator.is_local_main_process,
                    desc=f"pretrain {config.arch} ({config.objective})", dynamic_ncols=True)
    module.train()
    window_start, window_tokens, real_tokens, total_tokens = time.perf_counter(), 0, 0, 0
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            micro_batches = [{k: v.to(accelerator.device) for k, v in next(loader).items()}
                             for _ in range(config.gradient_accumulation_steps)]
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
                real_tokens += int((batch["doc_ids"] >= 0).sum())
                total_tokens += batch["doc_ids"].numel()
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(module.parameters(), config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window_tokens += tokens_per_step
            loss = (accelerator.reduce(step_loss, reduction="sum") / global_targets).item()
            record = {"step": step, "loss": loss, "lr": lr}
            if step % config.log_every == 0 or step == config.max_steps:
                elapsed = time.perf_counter() - window_start
                record["tokens_per_second"] = window_tokens / elapsed
                record["mfu"] = window_tokens * flops_token / elapsed / (peak * world)
                window_start, window_tokens = time.perf_counter(), 0
            if (config.eval_every and step % config.eval_every == 0) or step == config.max_steps:
                record.update(evaluate(module, accelerator, eval_batches))
            history.append(record)
            if trackers:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            progress.set_postfix({k: (f"{v:.3g}" if k != "mfu" else f"{v:.1%}") for k, v in record.items()
                                  if k in ("loss", "lr", "tokens_per_second", "mfu", "eval_loss")}, refresh=False)
            progress.update(1)
            if config.save_every and step % config.save_every == 0 and step < config.max_steps:
                state = {"step": step, "rows_consumed": step * rows_per_step, "before": before, "log_history": history}
                save_checkpoint(accelerator, module, tokenizer, config.output_dir, f"checkpoint-{step}", state)
                if accelerator.is_main_process:
                    prune_checkpoints(config.output_dir, config.keep_checkpoints)
    finally:  # the bar ends its line before any error is printed
        progress.close()
    final = save_checkpoint(accelerator, module, tokenizer, config.output_dir, "final", None)
    if accelerator.is_main_process:
        padding = 1 - real_tokens / max(total_tokens, 1)
        with open(os.path.join(config.output_dir, "log_history.jsonl"), "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in history)
        last = history[-1]
        after = {k: v for k, v in last.items() if k.startswith("eval_")}
        train = {"steps": config.max_steps, "loss": last["loss"], "tokens_per_second": last["tokens_per_second"],
                 "mfu": last["mfu"], "padding_share": padding}
        with open(os.path.join(config.output_dir, "metrics.json"), "w") as handle:
            json.dump({"before": before, "after": after, "train": train}, handle, indent=2)
        accelerator.print(f"saved {final}: held-out loss {before['eval_loss']:.4f} -> {after['eval_loss']:.4f}")
    accelerator.end_training()
    return final
