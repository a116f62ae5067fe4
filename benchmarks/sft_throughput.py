"""SFT throughput: ettin_ft.sft against the plain trl script with the same settings, side by side.

Same decoder shape (built in-package), tokenizer (ChatML added the same way), data (the chats in
../shared/data/sft), max length, batch and precision, for full fine-tuning and LoRA, with and without
packing. Each run is a fresh subprocess (clean peak-memory reading); tokens/s counts the real (non-padding)
tokens after warm-up steps. Then, for the quality line, a tiny decoder is pretrained in-package on
../shared/data/pretrain and fine-tuned (full and LoRA) with ettin_ft.sft: held-out loss before/after.

    python benchmarks/sft_throughput.py --size 17m --max-length 512 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker import SHARED, plain_recipe, report, run_worker

CHATS = SHARED / "sft" / "hh_rlhf_helpful_base_test.jsonl"


def sft_args(args, output_dir: str, packing: bool, lora: bool):
    from trl import SFTConfig

    return SFTConfig(output_dir=output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                     gradient_accumulation_steps=1, learning_rate=2e-4 if lora else 2e-5, max_length=args.max_length,
                     packing=packing, assistant_only_loss=True, eos_token="<|im_end|>", gradient_checkpointing=False,
                     use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=args.steps,
                     disable_tqdm=True, include_num_input_tokens_seen="non_padding", seed=0)


def step_timer(marks: list):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, _args, state, *_, **__):
            marks.append((time.perf_counter(), state.num_input_tokens_seen))

    return StepTimer()


def run_ettin(args, model_dir: str, packing: bool, lora: bool, marks: list) -> None:
    """The package's own path: the functions train_sft is made of, minus its before/after evaluation."""
    from ettin_ft.runtime import choose_runtime
    from ettin_ft.data.sft import with_bos
    from ettin_ft.lora import peft_config
    from ettin_ft.sft import SftRecipeConfig, build_chat_model, build_trainer, load_sft_data, locate_decoder

    config = SftRecipeConfig(model=model_dir, data=str(CHATS), max_samples=args.rows, held_out=0, lora=lora,
                             precision="fp32")
    located = locate_decoder(config)
    train, held_out, fmt = load_sft_data(config)
    model, tokenizer = build_chat_model(config, choose_runtime(precision="fp32"), located)
    train = with_bos(train, fmt, tokenizer.bos_token)
    trainer = build_trainer(config, sft_args(args, tempfile.mkdtemp(), packing, lora), model, tokenizer, train, None, fmt,
                            peft_config=peft_config(config, located, "CAUSAL_LM") if lora else None)
    trainer.add_callback(step_timer(marks))
    trainer.train()


def run_trl(args, model_dir: str, packing: bool, lora: bool, marks: list) -> None:
    """The plain trl script a user would write for an Ettin decoder (recipes/sft.py)."""
    plain_sft = plain_recipe("sft")
    script_args = plain_sft.parse_args(["--model", model_dir, "--data", str(CHATS), "--output-dir", tempfile.mkdtemp(),
                                        "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
                                        "--learning-rate", str(2e-4 if lora else 2e-5), "--max-seq-length",
                                        str(args.max_length), "--held-out", "0", *(["--lora"] if lora else []),
                                        *([] if packing else ["--no-packing"])])
    trainer = plain_sft.build_trainer(script_args, callbacks=[step_timer(marks)])
    # as sft_args: real tokens counted, no gradient checkpointing (the script turns it on to save memory)
    trainer.args.include_num_input_tokens_seen, trainer.args.gradient_checkpointing = "non_padding", False
    trainer.train()


def one(args) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    marks: list = []
    (run_ettin if args.impl == "ettin" else run_trl)(args, args.model_dir, args.packing == "yes", args.lora == "yes", marks)
    (start_time, start_tokens), (end_time, end_tokens) = marks[args.warmup - 1], marks[-1]
    report({"tokens_per_second": (end_tokens - start_tokens) / (end_time - start_time),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})


def quality(args) -> list[dict]:
    """Held-out loss before/after ettin_ft.sft (full and LoRA) from a tiny decoder pretrained on shared text."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-sft-quality-"))
    pretrain = [sys.executable, "-m", "ettin_ft.pretrain", "--arch", "decoder", "--size", "tiny", "--data",
                str(SHARED / "pretrain"), "--output-dir", str(workdir / "pretrain"), "--max-steps",
                str(args.pretrain_steps), "--seq-len", "256", "--batch-size", "8", "--vocab-size", "8192",
                "--report-to", "none", "--save-every", "0", "--eval-every", "0"]
    subprocess.run(pretrain, check=True, capture_output=True)
    results = []
    for lora in (False, True):
        out = workdir / ("lora" if lora else "full")
        command = [sys.executable, "-m", "ettin_ft.sft", "--model", str(workdir / "pretrain" / "final"), "--data",
                   str(CHATS), "--output-dir", str(out), "--max-steps", str(args.quality_steps), "--max-length",
                   str(args.max_length), "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "1",
                   "--learning-rate", "3e-3" if lora else "1e-3", "--warmup-steps", "0.1", "--gradient-checkpointing",
                   "false", "--held-out", "200", "--eval-generations", "0", "--eval-strategy", "no"]
        subprocess.run(command + (["--lora"] if lora else []), check=True, capture_output=True)
        metrics = json.loads((out / "metrics.json").read_text())
        results.append({"method": "LoRA" if lora else "full", "before": metrics["before"]["held_out_loss"],
                        "after": metrics["after"]["held_out_loss"]})
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="17m", help="decoder shape for the throughput runs")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2, help="per-device batch (the Ettin default)")
    parser.add_argument("--rows", type=int, default=600, help="chats used for the throughput runs")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per throughput run")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from timing")
    parser.add_argument("--methods", default="full,lora", help="full, lora or both")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, in alternating order (averaged)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="tiny decoder pretraining for the quality line")
    parser.add_argument("--quality-steps", type=int, default=150, help="SFT steps for the quality line (0: skip it)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    # Internal: run a single configuration.
    parser.add_argument("--impl", choices=["ettin", "trl"])
    parser.add_argument("--packing", choices=["yes", "no"])
    parser.add_argument("--lora", choices=["yes", "no"])
    parser.add_argument("--model-dir")
    args = parser.parse_args()
    if args.impl:
        return one(args)

    import torch

    from ettin_ft.models import build_model
    from ettin_ft.tokenizer import train_tokenizer

    model_dir = tempfile.mkdtemp(prefix="bench-sft-model-")
    texts = [m["content"] for line in CHATS.read_text(encoding="utf-8").splitlines() for m in json.loads(line)["messages"]]
    tokenizer = train_tokenizer(texts, vocab_size=50368, arch="decoder", min_frequency=1)
    torch.manual_seed(0)
    build_model(args.size, "decoder", tokenizer=tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = []
    for lora in [{"full": "no", "lora": "yes"}[m] for m in args.methods.split(",")]:
        for packing in ("yes", "no"):
            runs: dict[str, list[dict]] = {"trl": [], "ettin": []}
            # Alternate the order (trl, ettin, ettin, trl, ...) so drifts in machine speed cancel out.
            order = [impl for repeat in range(args.repeats) for impl in (("trl", "ettin"), ("ettin", "trl"))[repeat % 2]]
            for impl in order:
                command = [sys.executable, __file__, "--impl", impl, "--packing", packing, "--lora", lora, "--model-dir",
                           model_dir, "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
                           "--rows", str(args.rows), "--steps", str(args.steps), "--warmup", str(args.warmup)]
                runs[impl].append(run_worker(command))
            pair = {impl: {key: sum(r[key] for r in results) / len(results) for key in results[0]}
                    for impl, results in runs.items()}
            rows.append({"method": "LoRA" if lora == "yes" else "full", "packing": packing, **pair,
                         "ratio": pair["ettin"]["tokens_per_second"] / pair["trl"]["tokens_per_second"]})
            print(json.dumps(rows[-1]), flush=True)
    losses = quality(args) if args.quality_steps else []
    print(f"\n{args.size} decoder, max length {args.max_length}, batch {args.batch_size}, fp32, {args.steps} steps "
          f"({args.warmup} warm-up), mean of {args.repeats} runs per side\n")
    print("| method | packing | plain trl tok/s | ettin-ft tok/s | ratio | peak RSS GiB (trl / ettin) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['packing']} | {r['trl']['tokens_per_second']:.0f} | "
              f"{r['ettin']['tokens_per_second']:.0f} | {r['ratio']:.2f}x | "
              f"{r['trl']['peak_rss_gib']:.2f} / {r['ettin']['peak_rss_gib']:.2f} |")
    if losses:
        print(f"\nheld-out loss (tiny decoder pretrained {args.pretrain_steps} steps, {args.quality_steps} SFT steps):")
    for r in losses:
        print(f"  {r['method']}: {r['before']:.3f} -> {r['after']:.3f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"throughput": rows, "quality": losses}, indent=2))


if __name__ == "__main__":
    main()
