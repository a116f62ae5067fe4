"""Zero-shot multiple-choice and cloze scores of an encoder or a decoder, the two scored on the same tokens.

Decoders: log-likelihood of each continuation given BOS + context (lm-evaluation-harness's hf model). Encoders:
the Ettin release's masked left-to-right rule (``--encoder-scoring l2r``, default) or pseudo-log-likelihood
(``pll``, Salazar et al. 2020, an ablation). Writes DIR/metrics.json (acc, acc_norm and chance per task, their
macro-average) and DIR/items.jsonl (each item's per-choice log-likelihoods and tokens).

    python -m ettin_ft.zeroshot --model decoder-150m --data ../shared/data/zeroshot --output-dir runs/zs-dec
    python -m ettin_ft.zeroshot --model runs/pretrain-enc/final --data ../shared/data/zeroshot \
        --tasks arc_easy,piqa --limit 200 --output-dir runs/zs-enc
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from accelerate.utils import gather_object

from .config import parse_config
from .data.zeroshot import Task, load_tasks
from .errors import EttinError, check_output_dir, cli_entry
from .models import load_model, load_tokenizer, locate_model
from .run_folder import RunFolder, processes, write_probe_results
from .runtime import choose_runtime
from .scoring import ENCODER_SCORING, Scorer, encode_request, trained_with_mntp


@dataclass
class ZeroShotConfig:
    model: str | None = field(default=None, metadata={"help": "encoder or decoder: short name (decoder-150m), hub id[@revision], local folder or a pretraining run's checkpoint"})
    data: str | None = field(default=None, metadata={"help": "a .jsonl task file or a folder of them (task = file stem), rows {query, choices, gold}, {context_options, continuation, gold} or {context, continuation}; e.g. ../shared/data/zeroshot"})
    tasks: str | None = field(default=None, metadata={"help": "comma-separated task names (file stems) to run (default: every file)"})
    limit: int | None = field(default=None, metadata={"help": "score only the first N items of each task"})
    output_dir: str = field(default="runs/zeroshot", metadata={"help": "folder for metrics.json and items.jsonl"})
    batch_size: int = field(default=32, metadata={"help": "rows per forward pass (an encoder scores one row per continuation token)"})
    encoder_scoring: str = field(default="l2r", metadata={"help": "encoders: l2r (the release's rule: token i read at the first of 1+K masks after the tokens before it) or pll (each token masked alone, an ablation)", "choices": ENCODER_SCORING})
    extra_masks: int = field(default=2, metadata={"help": "l2r: K, the masks after the first (the release used 2)"})
    score_sep: bool = field(default=False, metadata={"help": "encoders: also score [SEP] after the continuation, as the release's fork did (default off: both architectures score the same tokens)"})
    mntp: bool | None = field(default=None, metadata={"help": "encoders: read each token at the position before its mask (a model trained with MNTP); default: read from the pretraining run's config.yaml, off for other models"})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: CUDA when present)"})
    precision: str = field(default="fp32", metadata={"help": "fp32, bf16 or fp16 (default fp32: scores comparable across machines)"})


def task_metrics(task: Task, scores: list[list[tuple[float, bool]]]) -> tuple[dict, list[dict]]:
    """(the task's metrics, one record per item) from each item's (log-likelihood, greedy) per choice.

    acc: the choice with the highest log-likelihood is gold; acc_norm: the same with each log-likelihood divided
    by its choice's length in characters (lm-eval's definition). Cloze: acc when every continuation token is the
    greedy one (acc_norm the same), and lm-eval's perplexity, exp(−mean log-likelihood)."""
    records, right, right_norm = [], 0, 0
    for index, (item, choices) in enumerate(zip(task.items, scores)):
        loglik = [total for total, _ in choices]
        if task.shape == "cloze":
            prediction = 0 if choices[0][1] else -1
            prediction_norm = prediction
        else:
            prediction = max(range(len(loglik)), key=loglik.__getitem__)
            prediction_norm = max(range(len(loglik)), key=lambda i: loglik[i] / item.lengths[i])
        right += prediction == item.gold
        right_norm += prediction_norm == item.gold
        records.append({"task": task.name, "index": index, "gold": item.gold, "prediction": prediction,
                        "prediction_norm": prediction_norm, "loglik": loglik, "greedy": [g for _, g in choices]})
    metrics = {"acc": right / len(task.items), "acc_norm": right_norm / len(task.items), "random": task.random,
               "items": len(task.items), "shape": task.shape}
    if task.shape == "cloze":
        metrics["perplexity"] = math.exp(-statistics.fmean(r["loglik"][0] for r in records))
    return metrics, records


def score_tasks(scorer: Scorer, tokenizer, tasks: list[Task]) -> tuple[dict, list[dict]]:
    """metrics.json's content and items.jsonl's records for ``tasks``."""
    state = processes()  # under torchrun / accelerate launch each process scores a contiguous share
    per_task, records = {}, []
    for task in tasks:
        requests = [[encode_request(tokenizer, *request) for request in item.requests] for item in task.items]
        with state.split_between_processes([request for item in requests for request in item]) as share:
            flat = gather_object(scorer.score(share, desc=task.name))  # every share, in order
        scores, start = [], 0
        for item in requests:
            scores.append(flat[start:start + len(item)])
            start += len(item)
        per_task[task.name], task_records = task_metrics(task, scores)
        for record, item in zip(task_records, requests):
            record["tokens"] = [list(request.continuation) for request in item]
        records += task_records
        state.print(f"  {task.name}: acc {per_task[task.name]['acc']:.3f}, acc_norm {per_task[task.name]['acc_norm']:.3f} "
              f"(chance {task.random:.3f}, {len(task.items)} items)", flush=True)
    average = {metric: statistics.fmean(m[metric] for m in per_task.values()) for metric in ("acc", "acc_norm")}
    return {"tasks": per_task, "average": average}, records


def run_zeroshot(config: ZeroShotConfig) -> dict:
    """Score ``config.model`` on the tasks; writes DIR/metrics.json and DIR/items.jsonl; returns the metrics."""
    if not config.model:
        raise EttinError("--model is required: an encoder or decoder (short name, hub id or folder)")
    check_output_dir(config.output_dir)
    RunFolder(config.output_dir).refuse_finished("zero-shot results")
    tasks = load_tasks(config.data, config.tasks, config.limit)
    located = locate_model(config.model, purpose="zero-shot scoring")
    tokenizer = load_tokenizer(located)
    runtime = choose_runtime(config.device, config.precision)
    processes(cpu=runtime.device.type == "cpu")  # set up before any scoring: gloo for a run on CPUs
    model = load_model(located, dtype=runtime.dtype).to(runtime.device)
    mntp = config.mntp if config.mntp is not None else located.ref.local and trained_with_mntp(located.ref.path)
    scorer = Scorer(model, tokenizer, located.arch, config.batch_size, config.encoder_scoring, config.extra_masks,
                    config.score_sep, mntp)
    scoring = ("log-likelihood given BOS + context" if located.arch == "decoder" else
               f"{config.encoder_scoring}" + (f", {config.extra_masks} extra masks" if config.encoder_scoring == "l2r" else "")
               + (", [SEP] scored" if config.score_sep else "") + (", MNTP read-out" if mntp else ""))
    processes().print(f"{located.ref.describe()} ({located.arch}; {scoring}) on {len(tasks)} task(s):")
    metrics, records = score_tasks(scorer, tokenizer, tasks)
    metrics = {"model": config.model, "arch": located.arch, "scoring": scoring, **metrics}
    write_probe_results(config.output_dir, records, metrics)  # everything is scored before the folder is made
    return metrics


@cli_entry
def main(argv: list[str] | None = None) -> None:
    config, dry_run = parse_config(ZeroShotConfig, argv=argv, prog="python -m ettin_ft.zeroshot",
                                   description="Zero-shot multiple-choice and cloze scores of an encoder (masked "
                                               "scoring) or a decoder (log-likelihood), on the same continuation tokens.")
    if dry_run:  # the inputs checked, nothing scored
        located = locate_model(config.model, purpose="zero-shot scoring") if config.model else None
        for task in load_tasks(config.data, config.tasks, config.limit):
            print(f"{task.name}: {len(task.items)} {task.shape.replace('_', ' ')} items, chance {task.random:.3f}")
        print(f"model: {located.ref.describe()} ({located.arch})" if located else "model: none given (--model)")
        return
    metrics = run_zeroshot(config)
    average = metrics["average"]
    processes().print(f"{config.model} ({metrics['arch']}): average acc {average['acc']:.3f}, acc_norm {average['acc_norm']:.3f} "
          f"over {len(metrics['tasks'])} task(s); {config.output_dir}/metrics.json, items.jsonl")


if __name__ == "__main__":
    main()
