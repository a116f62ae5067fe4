"""Pretraining throughput: ettin_ft.pretrain against the standard Hugging Face way, side by side.

Same model shape, tokenizer, data (../shared/data/pretrain), sequence length, batch and precision:
  (a) ettin_ft.pretrain (packed documents, no cross-document attention, MLM loss on masked positions only);
  (b) transformers Trainer + DataCollatorForLanguageModeling over run_mlm/run_clm-style grouped texts.
Each run is a fresh subprocess (clean peak-memory reading); tokens/s is measured after warm-up steps. Both sides
run on CUDA when a GPU is present (MFU against its bf16 peak), else on the CPU.

    python benchmarks/pretrain_throughput.py --size 17m --seq-len 512 --batch-size 8 --steps 12
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from worker import report, run_worker

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"


def documents() -> list[str]:
    return [line for path in sorted(DATA.rglob("*.txt")) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def matmul_peak(dtype_name: str) -> float:
    import torch

    from ettin_ft.training.throughput import measured_peak_flops

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the device both sides train on
    return measured_peak_flops(device, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name])


def run_ettin(args, tokenizer_dir: str) -> dict:
    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.training.loop import run_pretraining

    output = tempfile.mkdtemp(prefix="bench-ettin-")
    config = PretrainConfig(
        arch=args.arch, size=args.size, data=str(DATA), output_dir=output, max_steps=args.steps,
        tokenizer=tokenizer_dir, seq_len=args.seq_len, batch_size=args.batch_size, precision=args.precision,
        warmup_steps=1, eval_every=0, eval_rows=1, eval_documents=10, save_every=0, log_every=args.warmup,
        report_to="none", num_workers=1, compile=args.compile,
    )
    run_pretraining(config)
    history = [json.loads(line) for line in open(os.path.join(output, "log_history.jsonl"))]
    windows = [r["tokens_per_second"] for r in history if "tokens_per_second" in r][1:]  # skip warm-up window
    metrics = json.load(open(os.path.join(output, "metrics.json")))
    return {"tokens_per_second": sum(windows) / len(windows), "padding_share": metrics["train"]["padding_share"],
            "loss": history[-1]["loss"]}


def run_baseline(args, tokenizer_dir: str) -> dict:
    import datasets
    import torch
    from transformers import (AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    from ettin_ft.models import build_model

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = datasets.Dataset.from_dict({"text": documents()})
    tokenized = raw.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    block = args.seq_len

    def group_texts(examples):  # run_mlm.py / run_clm.py
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // block) * block
        return {k: [t[i: i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

    grouped = tokenized.map(group_texts, batched=True, batch_size=1000).shuffle(seed=0)
    torch.manual_seed(42)
    model = build_model(args.size, args.arch, tokenizer=tokenizer, attn_implementation="sdpa")
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=args.arch == "encoder", mlm_probability=0.3)
    times = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_, **__):
            times.append(time.perf_counter())

    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-hf-"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=3e-3, warmup_steps=1, bf16=args.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        report_to=[], logging_steps=args.steps, save_strategy="no", dataloader_num_workers=1,
        torch_compile=args.compile, disable_tqdm=True,
    )
    Trainer(model=model, args=training_args, train_dataset=grouped, data_collator=collator,
            callbacks=[StepTimer()]).train()
    measured = times[args.warmup - 1:]
    tokens = (len(measured) - 1) * args.batch_size * args.seq_len
    return {"tokens_per_second": tokens / (measured[-1] - measured[0]), "padding_share": 0.0}


def one(args) -> None:
    """Run one configuration in this process and print its result as JSON."""
    import torch

    from ettin_ft.models import build_model
    from ettin_ft.training.throughput import flops_per_token

    torch.set_num_threads(os.cpu_count() or 1)
    result = (run_ettin if args.impl == "ettin" else run_baseline)(args, args.tokenizer_dir)
    with torch.device("meta"):
        shape = build_model(args.size, args.arch).config
    # FLOPs each side really executes: the baseline projects every position onto the vocabulary.
    predicted = 0.3 if (args.arch == "encoder" and args.impl == "ettin") else 1.0
    result["flops_per_second"] = result["tokens_per_second"] * flops_per_token(shape, args.seq_len, predicted)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="17m")
    parser.add_argument("--archs", default="encoder,decoder")
    parser.add_argument("--precisions", default="auto",
                        help="comma list of fp32,bf16; auto: fp32, plus bf16 where the CPU has native bf16 "
                        "(without it bf16 matmuls fall back to slow kernels and the comparison says nothing)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from timing")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    # Internal: run a single configuration.
    parser.add_argument("--impl", choices=["ettin", "baseline"])
    parser.add_argument("--arch")
    parser.add_argument("--precision")
    parser.add_argument("--tokenizer-dir")
    args = parser.parse_args()
    if args.impl:
        return one(args)

    from ettin_ft.runtime import cpu_has_native_bf16
    from ettin_ft.tokenizer import train_tokenizer

    import torch

    if args.precisions == "auto":  # on a GPU, MFU is read against its bf16 peak (the known H100/A100 figures)
        args.precisions = "fp32,bf16" if torch.cuda.is_available() or cpu_has_native_bf16() else "fp32"

    tokenizer_dir = tempfile.mkdtemp(prefix="bench-tokenizer-")
    train_tokenizer(documents(), vocab_size=50368, min_frequency=1).save_pretrained(tokenizer_dir)
    peaks = {p: matmul_peak(p) for p in args.precisions.split(",")}
    rows = []
    for arch in args.archs.split(","):
        for precision in args.precisions.split(","):
            pair = {}
            for impl in ("baseline", "ettin"):
                command = [sys.executable, __file__, "--impl", impl, "--arch", arch, "--precision", precision,
                           "--tokenizer-dir", tokenizer_dir, "--size", args.size, "--seq-len", str(args.seq_len),
                           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
                command += ["--compile"] if args.compile else []
                pair[impl] = run_worker(command)
                pair[impl]["matmul_share"] = pair[impl]["flops_per_second"] / peaks[precision]
            rows.append({"arch": arch, "precision": precision, **pair,
                         "speedup": pair["ettin"]["tokens_per_second"] / pair["baseline"]["tokens_per_second"]})
            print(json.dumps(rows[-1]), flush=True)
    print("\nmatmul peak (2048^2, this machine): " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))
    print(f"{args.size}, seq {args.seq_len}, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up)\n")
    print("| arch | precision | HF Trainer tok/s | ettin-ft tok/s | speedup | padding (ettin) | peak RSS GiB (HF / ettin) | FLOP/s share of matmul peak (HF / ettin) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, e = r["baseline"], r["ettin"]
        print(f"| {r['arch']} | {r['precision']} | {b['tokens_per_second']:.0f} | {e['tokens_per_second']:.0f} | "
              f"{r['speedup']:.2f}x | {e['padding_share']:.2%} | {b['peak_rss_gib']:.1f} / {e['peak_rss_gib']:.1f} | "
              f"{b['matmul_share']:.0%} / {e['matmul_share']:.0%} |")
    if args.output:
        Path(args.output).write_text(json.dumps({"peaks": peaks, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
