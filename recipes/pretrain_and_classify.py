"""Workflow on the public API: pretrain an Ettin encoder and its paired decoder, then fine-tune both as SST-2
classifiers and print their accuracy side by side (the encoder-vs-decoder comparison in one script).

    python recipes/pretrain_and_classify.py --output-dir runs/pair-sst2
"""

import argparse
import json
import os

import ettin_ft
import ettin_ft.classify

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--output-dir", default="runs/pair-sst2")
parser.add_argument("--pretrain-steps", type=int, default=300)
parser.add_argument("--classify-steps", type=int, default=200)
parser.add_argument("--max-samples", type=int, default=None, help="SST-2 training rows (default: all)")
parser.add_argument("--pretrain-data", default=os.path.join(SHARED, "pretrain"))
parser.add_argument("--data", default=os.path.join(SHARED, "classification", "sst2"), help="classification data")
args = parser.parse_args()

tokenizer = None
for arch in ("encoder", "decoder"):
    final = ettin_ft.run_pretraining(ettin_ft.PretrainConfig(
        arch=arch, data=args.pretrain_data, max_steps=args.pretrain_steps, seq_len=256,
        vocab_size=None if tokenizer else 8192,  # the encoder's run trains the tokenizer the decoder reuses
        tokenizer=tokenizer, output_dir=os.path.join(args.output_dir, f"pretrain-{arch}"), save_every=0, eval_every=0,
        report_to="none"))
    tokenizer = tokenizer or final  # the pair shares one tokenizer
    # The release settings (configs/classify/default.yaml) with this run's changes
    ettin_ft.train_classify(*ettin_ft.classify.release(
        os.path.join(args.output_dir, f"sst2-{arch}"), model=final, data=args.data, max_samples=args.max_samples,
        max_steps=args.classify_steps, learning_rate=1e-3, save_strategy="no"))
for arch in ("encoder", "decoder"):
    metrics = json.load(open(os.path.join(args.output_dir, f"sst2-{arch}", "metrics.json")))
    print(f"{arch}: accuracy {metrics['before']['accuracy']:.3f} -> {metrics['after']['accuracy']:.3f} "
          f"(majority class {metrics['majority']['accuracy']:.3f})")
