"""Classification, encoder vs decoder: accuracy over seeds beside the majority class, and throughput.

1. Pretrain a tiny encoder (MLM) and its paired decoder (CLM) in-package on ../shared/data/pretrain with
   identical settings and one shared tokenizer.
2. Fine-tune each on SST-2 and RTE from ../shared/data/classification (train.jsonl → validation.jsonl) with
   ``python -m ettin_ft.classify --seeds 0,1,2``: accuracy and macro-F1, mean ± std, beside the majority class.
3. Time training alone: ``python -m ettin_ft.classify`` against the plain ``Trainer`` +
   ``AutoModelForSequenceClassification`` script with the same model, data and arguments, each run its own
   process, alternating, ``--timing-repeats`` times per side; compare training samples/s.

    python benchmarks/classify_quality.py --work-dir runs/classify-quality
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from worker import QUIET_FP32, SHARED, plain_recipe, report, run, run_worker

TASKS = {"sst2": 300, "rte": 300}  # task → fine-tuning steps per seed


def classify_command(model: str, task: str, output_dir: str, steps: int, args, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ettin_ft.classify", "--model", model, "--data", str(SHARED / "classification" / task),
            "--output-dir", output_dir, "--max-steps", str(steps), "--per-device-train-batch-size", str(args.batch_size),
            "--learning-rate", str(args.learning_rate), "--max-seq-length", str(args.max_seq_length),
            *QUIET_FP32, *extra]


def plain_script(model_dir: str, task: str, args) -> float:
    """The Trainer script a transformers user would write (recipes/classify.py); returns training samples/s."""
    script = plain_recipe("classify")
    trainer = script.build_trainer(script.parse_args([
        "--model", model_dir, "--data", str(SHARED / "classification" / task / "train.jsonl"), "--output-dir",
        tempfile.mkdtemp(), "--max-steps", str(args.timing_steps), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate), "--max-seq-length", str(args.max_seq_length)]))
    return trainer.train().metrics["train_samples_per_second"]


def ettin_samples_per_second(model_dir: str, task: str, args) -> float:
    output = tempfile.mkdtemp(prefix="bench-classify-")
    run(classify_command(model_dir, task, os.path.join(output, "run"), args.timing_steps, args))
    history = [json.loads(line) for line in open(os.path.join(output, "run", "log_history.jsonl"))]
    return next(r["train_samples_per_second"] for r in history if "train_samples_per_second" in r)


def pretrain(work: Path, args) -> dict[str, str]:
    """The encoder and its decoder, same shape, data, steps and tokenizer; returns arch → final/."""
    finals = {}
    for arch in ("encoder", "decoder"):
        folder = work / f"pretrain-{arch}"
        if not (folder / "final").is_dir():
            tokenizer = ["--tokenizer", finals["encoder"]] if finals else ["--vocab-size", "8192"]
            run([sys.executable, "-m", "ettin_ft.pretrain", "--arch", arch, "--size", args.size,
                 "--data", str(SHARED / "pretrain"), "--output-dir", str(folder), "--max-steps", str(args.pretrain_steps),
                 "--seq-len", "256", "--batch-size", "16", "--save-every", "0", "--eval-every", "0",
                 "--report-to", "none", "--precision", "fp32", *tokenizer])
        finals[arch] = str(folder / "final")
        print(f"pretrained {arch}: {json.load(open(folder / 'metrics.json'))['after']}", flush=True)
    return finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="tiny models need far more than GLUE's 1e-5 to 5e-5")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--timing-steps", type=int, default=60)
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--plain", help=argparse.SUPPRESS)  # internal: one plain-script timing run (model folder)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        report(plain_script(args.plain, args.task, args))
        return

    from ettin_ft.runtime import cpu_has_native_bf16

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="classify-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    finals = pretrain(work, args)
    quality, timing = [], []
    for task, steps in TASKS.items():
        for arch, model in finals.items():
            folder = work / f"{task}-{arch}"
            run(classify_command(model, task, str(folder), steps, args, "--seeds", args.seeds))
            metrics = json.load(open(folder / "metrics.json"))
            quality.append({"task": task, "arch": arch, "steps": steps, **metrics})
            print(json.dumps(quality[-1]["after"]), flush=True)
    for arch, model in finals.items():
        sides = {"ettin": [], "plain": []}
        for _ in range(args.timing_repeats):
            sides["ettin"].append(ettin_samples_per_second(model, "sst2", args))
            sides["plain"].append(run_worker([sys.executable, __file__, "--plain", model, "--task", "sst2",
                                              "--timing-steps", str(args.timing_steps), "--batch-size", str(args.batch_size),
                                              "--max-seq-length", str(args.max_seq_length)]))
        timing.append({"arch": arch, **sides, "ratio": statistics.mean(sides["ettin"]) / statistics.mean(sides["plain"])})
        print(json.dumps(timing[-1]), flush=True)

    print(f"\n{args.size} pair, {args.pretrain_steps} pretraining steps; fine-tuning batch {args.batch_size}, lr "
          f"{args.learning_rate}, {args.max_seq_length} tokens, fp32, seeds {args.seeds}; native bf16: {cpu_has_native_bf16()}\n")
    print("| task | model | steps | accuracy (mean ± std) | macro-F1 (mean ± std) | before (untrained head) | majority class |")
    print("|---|---|---|---|---|---|---|")
    for q in quality:
        after, std = q["after"], q["std"]["after"]
        print(f"| {q['task']} | {q['arch']} | {q['steps']} | {after['accuracy']:.3f} ± {std['accuracy']:.3f} | "
              f"{after['macro_f1']:.3f} ± {std['macro_f1']:.3f} | {q['before']['accuracy']:.3f} | {q['majority']['accuracy']:.3f} |")
    print("\n| model | ettin-ft samples/s | plain Trainer samples/s | ratio |\n|---|---|---|---|")
    for t in timing:
        print(f"| {t['arch']} | {' / '.join(f'{v:.1f}' for v in t['ettin'])} | "
              f"{' / '.join(f'{v:.1f}' for v in t['plain'])} | {t['ratio']:.2f}x |")
    if args.output:
        Path(args.output).write_text(json.dumps({"quality": quality, "timing": timing}, indent=2))


if __name__ == "__main__":
    main()
