"""Workflow on the public API: the three Ettin pretraining phases, each continuing the last (at a small scale).

1. Pretraining: 1024-token context, RoPE theta 10k, constant learning rate after warmup.
2. Context extension: the same weights at an 8k context (RoPE theta 160k global), decaying to half the rate.
3. Decay: masking rate 0.15, the learning rate from half down to 2%.
The settings of each phase are those of configs/pretrain/<size>-<arch>-phase<N>.yaml, scaled down by
--steps and --seq-len so that it runs on a CPU.

    python recipes/pretraining_phases.py --arch encoder --output-dir runs/phases
"""

import argparse
import dataclasses
import os

import ettin_ft
from ettin_ft.config import parse_config

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.path.join(REPO, "..", "shared", "data")

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--arch", default="encoder", choices=["encoder", "decoder"])
parser.add_argument("--size", default="tiny", help="model shape (the phase settings are the 17m configs')")
parser.add_argument("--data", default=os.path.join(SHARED, "pretrain"))
parser.add_argument("--steps", type=int, default=100, help="steps per phase")
parser.add_argument("--seq-len", type=int, default=256)
parser.add_argument("--output-dir", default="runs/phases")
args = parser.parse_args()

model = None
for phase in (1, 2, 3):
    config, _ = parse_config(ettin_ft.PretrainConfig, argv=["--config", os.path.join(REPO, "configs", "pretrain",
                                                                                   f"17m-{args.arch}-phase{phase}.yaml")])
    config = dataclasses.replace(
        config, size=args.size, data=args.data, init=model, max_steps=args.steps, seq_len=args.seq_len,
        batch_size=8, gradient_accumulation_steps=1, output_dir=os.path.join(args.output_dir, f"phase{phase}"),
        save_every=0, eval_every=0, report_to="none",
        # phase 1 trains a tokenizer; the later phases continue its model and tokenizer
        **({"tokenizer": model} if model else {"vocab_size": 8192}))
    model = ettin_ft.run_pretraining(config)
    print(f"phase {phase}: {model}")
