"""Arguments every plain recipe script shares (kept apart so each script stays a page of library calls)."""

import argparse


def parser(description: str, **defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="model folder (e.g. a pretraining run's final/) or hub id")
    parser.add_argument("--data", required=True, help="training file (.jsonl/.csv/.parquet)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=defaults.get("max_steps", 300))
    parser.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 32))
    parser.add_argument("--learning-rate", type=float, default=defaults.get("learning_rate", 3e-4))
    parser.add_argument("--max-seq-length", type=int, default=defaults.get("max_seq_length", 128))
    return parser


def common_arguments(args) -> dict:
    """TrainingArguments fields shared by the scripts (CPU unless a GPU is there, no checkpoints, no trackers)."""
    import torch

    return dict(output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate, warmup_steps=0, save_strategy="no", report_to="none",
                use_cpu=not torch.cuda.is_available(), seed=0, disable_tqdm=True)
