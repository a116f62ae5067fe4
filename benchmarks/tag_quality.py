"""Token classification on WNUT-17: encoder vs decoder (and the decoder without its causal mask), and ettin-ft
against the plain transformers script, in F1 over seeds and in training throughput.

1. The tiny encoder/decoder pair of benchmarks/classify_quality.py (pretrained in-package on ../shared/data/pretrain
   with one shared tokenizer; reused from --work-dir when it is there).
2. ``python -m ettin_ft.tag --seeds 0,1,2`` on WNUT-17 train → test (../shared/data/token_classification/wnut17):
   the encoder, the decoder (left context only) and the decoder with ``--bidirectional``: entity-level F1
   (seqeval), mean ± std over seeds.
3. recipes/tag.py (transformers' run_ner.py way) with the same model, data, steps, batch, learning rate and seeds:
   ettin-ft must not lose beyond two standard errors of the difference.
4. Training alone: ettin-ft against the plain script, each run its own process, alternating ``--timing-repeats``
   times per side; training samples/s.

    python benchmarks/tag_quality.py --work-dir runs/classify-quality
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

from classify_quality import pretrain
from worker import QUIET_FP32, SHARED, plain_recipe, report, run, run_worker

WNUT = SHARED / "token_classification" / "wnut17"
SIDES = {"encoder": ("encoder", []), "decoder": ("decoder", []), "decoder --bidirectional": ("decoder", ["--bidirectional"])}


def shared_flags(args, steps: int) -> list[str]:
    return ["--max-steps", str(steps), "--learning-rate", str(args.learning_rate), "--max-seq-length", str(args.max_seq_length)]


def tag_command(model: str, output_dir: str, steps: int, args, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ettin_ft.tag", "--model", model, "--data", str(WNUT / "train.jsonl"), "--eval-data",
            str(WNUT / "test.jsonl"), "--output-dir", output_dir, "--per-device-train-batch-size", str(args.batch_size),
            "--save-strategy", "no", *shared_flags(args, steps), *QUIET_FP32, *extra]


def plain_run(model_dir: str, seed: int, steps: int, args) -> dict:
    """recipes/tag.py for one seed; its test metrics after training and its training samples/s."""
    script = plain_recipe("tag")
    trainer = script.build_trainer(script.parse_args([
        "--model", model_dir, "--data", str(WNUT / "train.jsonl"), "--eval-data", str(WNUT / "test.jsonl"),
        "--output-dir", tempfile.mkdtemp(prefix="bench-plain-tag-"), "--batch-size", str(args.batch_size),
        "--seed", str(seed), "--logging-steps", "50", *shared_flags(args, steps)]))
    speed = trainer.train().metrics["train_samples_per_second"]
    return {"f1": trainer.evaluate()["eval_f1"], "samples_per_second": speed}


def ettin_samples_per_second(model_dir: str, args) -> float:
    output = os.path.join(tempfile.mkdtemp(prefix="bench-tag-"), "run")
    run(tag_command(model_dir, output, args.timing_steps, args))
    history = [json.loads(line) for line in open(os.path.join(output, "log_history.jsonl"))]
    return next(r["train_samples_per_second"] for r in history if "train_samples_per_second" in r)


def plain_side(model_dir: str, steps: int, args) -> dict:
    return run_worker([sys.executable, __file__, "--plain", model_dir, "--plain-steps", str(steps), "--seed-of-plain",
                       str(args.seed_of_plain), "--batch-size", str(args.batch_size), "--learning-rate",
                       str(args.learning_rate), "--max-seq-length", str(args.max_seq_length)])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600, help="fine-tuning steps (WNUT-17 train is 212 batches of 16)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="tiny models need far more than run_ner's 5e-5")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--timing-steps", type=int, default=150)
    parser.add_argument("--timing-repeats", type=int, default=2)
    parser.add_argument("--parts", default="quality,plain,timing", help="which of quality (ettin-ft over seeds), plain "
                        "(recipes/tag.py over seeds) and timing to run")
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--plain", help=argparse.SUPPRESS)  # internal: one plain-script run (model folder)
    parser.add_argument("--plain-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed-of-plain", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        report(plain_run(args.plain, args.seed_of_plain, args.plain_steps, args))
        return

    from ettin_ft.runtime import cpu_has_native_bf16

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tag-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    finals = pretrain(work, args)
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = set(args.parts.split(","))
    quality = {}
    for label, (arch, flags) in SIDES.items() if parts & {"quality", "plain"} else ():
        folder = work / f"wnut17-{label.replace(' --', '-')}"
        run(tag_command(finals[arch], str(folder), args.steps, args, "--seeds", args.seeds, *flags))
        metrics = json.load(open(folder / "metrics.json"))
        quality[label] = {"f1": [metrics["seeds"][str(s)]["after"]["f1"] for s in seeds], "before": metrics["before"]["f1"],
                          "per_type": {t: v["f1"] for t, v in metrics["seeds"][str(seeds[0])]["per_type"].items()}}
        print(label, json.dumps(quality[label]), flush=True)
    plain = {}
    for arch in ("encoder", "decoder") if "plain" in parts else ():
        runs = []
        for seed in seeds:
            args.seed_of_plain = seed
            runs.append(plain_side(finals[arch], args.steps, args))
        plain[arch] = [r["f1"] for r in runs]
        print("plain", arch, plain[arch], flush=True)
    timing = []
    for arch in ("encoder", "decoder") if "timing" in parts else ():
        sides = {"ettin": [], "plain": []}
        args.seed_of_plain = 0
        for _ in range(args.timing_repeats):
            sides["ettin"].append(ettin_samples_per_second(finals[arch], args))
            sides["plain"].append(plain_side(finals[arch], args.timing_steps, args)["samples_per_second"])
        timing.append({"arch": arch, **sides, "ratio": statistics.mean(sides["ettin"]) / statistics.mean(sides["plain"])})
        print(json.dumps(timing[-1]), flush=True)

    print(f"\n{args.size} pair, {args.pretrain_steps} pretraining steps; WNUT-17 train → test, {args.steps} steps of "
          f"batch {args.batch_size}, lr {args.learning_rate}, {args.max_seq_length} tokens, fp32, seeds {args.seeds}; "
          f"native bf16: {cpu_has_native_bf16()}\n")
    if quality:
        print("| model | test F1 (mean ± std) | before training | F1 per type (seed " + str(seeds[0]) + ") |\n|---|---|---|---|")
    for label, q in quality.items():
        mean, std = mean_std(q["f1"])
        types = ", ".join(f"{t} {v:.2f}" for t, v in sorted(q["per_type"].items()))
        print(f"| {label} | {mean:.3f} ± {std:.3f} | {q['before']:.3f} | {types} |")
    if plain:
        print("\n| model | ettin-ft F1 | recipes/tag.py F1 | difference | 2 standard errors |\n|---|---|---|---|---|")
    for arch in plain:
        (ours, our_std), (theirs, their_std) = mean_std(quality[arch]["f1"]), mean_std(plain[arch])
        two_se = 2 * math.sqrt((our_std ** 2 + their_std ** 2) / len(seeds))
        print(f"| {arch} | {ours:.3f} ± {our_std:.3f} | {theirs:.3f} ± {their_std:.3f} | {ours - theirs:+.3f} | {two_se:.3f} |")
    if timing:
        print("\n| model | ettin-ft samples/s | plain Trainer samples/s | ratio |\n|---|---|---|---|")
    for t in timing:
        print(f"| {t['arch']} | {' / '.join(f'{v:.1f}' for v in t['ettin'])} | "
              f"{' / '.join(f'{v:.1f}' for v in t['plain'])} | {t['ratio']:.2f}x |")
    if args.output:
        Path(args.output).write_text(json.dumps({"quality": quality, "plain": plain, "timing": timing}, indent=2))


if __name__ == "__main__":
    main()
