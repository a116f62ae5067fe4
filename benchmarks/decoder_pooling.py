"""Which default lets a small decoder retrieve: its last token, mean pooling, a longer warm-up or a longer schedule?

A tiny decoder trained as a dense embedder with last-token pooling first sits on a loss plateau, so a short study
reads as "decoders cannot retrieve"; this benchmark made mean pooling the decoder default. It trains the pretrained
pair of benchmarks/quality_vs_plain.py (same --work-dir) on ../shared/data/retrieval_pairs (PubMedQA) with
`python -m ettin_ft.dense`, one `python -m ettin_ft.compare` study per variant (three seeds each), and prints
NDCG@10 on SciFact before and after: the encoder with its default (mean pooling), and the decoder with its last
token (its default before), mean pooling, and the last token with a 30% warm-up or 1000 steps instead of 300
(batch 32, lr 3e-4, 128 tokens, fp32).

    python benchmarks/decoder_pooling.py --work-dir runs/quality
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from classify_quality import pretrain
from ettin_ft.seeds import mean_std
from worker import compare_study, dense_scifact

VARIANTS = [  # (name, arch, steps, recipe arguments beyond the defaults)
    ("encoder, mean pooling (its default)", "encoder", 300, []),
    ("decoder, last token (its default before this benchmark)", "decoder", 300, ["--pooling", "lasttoken"]),
    ("decoder, mean pooling (its default now)", "decoder", 300, []),
    ("decoder, last token, 30% warm-up", "decoder", 300, ["--pooling", "lasttoken", "--warmup-steps", "0.3"]),
    ("decoder, last token, 1000 steps", "decoder", 1000, ["--pooling", "lasttoken"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True, help="the pretrained pair (made here if missing) and the studies")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    finals = pretrain(work, args)
    rows = []
    for name, arch, steps, extra in VARIANTS:
        folder = work / ("dense-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
        if compare_study(folder, "dense", [finals[arch]], args.seeds, [*dense_scifact(steps), *extra]) != 0:
            sys.exit(f"the {name} study failed: {folder / 'REPORT.md'}")
        runs = [run for run in json.loads((folder / "comparison.json").read_text()) if run["status"] == "ok"]
        after = [run["after_ndcg@10"] for run in runs]
        rows.append((name, steps, runs[0]["before_ndcg@10"], after))
        print(json.dumps({"variant": name, "steps": steps, "before": rows[-1][2], "after": after}), flush=True)
    print("\n| variant | steps | NDCG@10 before | after (mean ± std) | per seed |\n|---|---|---|---|---|")
    for name, steps, before, values in rows:
        mean, std = mean_std(values)
        print(f"| {name} | {steps} | {before:.3f} | {mean:.3f} ± {std:.3f} | {' / '.join(f'{v:.3f}' for v in values)} |")


if __name__ == "__main__":
    main()
