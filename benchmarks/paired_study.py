"""A paired encoder-vs-decoder study across pretraining checkpoints, made with `python -m ettin_ft.compare`.

1. Pretrain a tiny encoder (MLM) and its paired decoder (CLM) in-package on ../shared/data/pretrain (same shape,
   data, steps and tokenizer), keeping a checkpoint every ``--save-every`` steps.
2. `compare --revisions all` over both run folders, 3 seeds each:
   - classify on SST-2 (../shared/data/classification/sst2, accuracy on its validation file);
   - dense retrieval trained on PubMedQA pairs, NDCG@10 on SciFact (../shared/data/retrieval_eval/scifact), both
     mean-pooled (each default), and again for the decoder with its last token (an ablation);
   - the WinoGender bias probe (zero-shot, ../shared/data/bias/winogender).
Each study writes comparison.csv/.json, REPORT.md and plots under --work-dir; BENCHMARKS.md quotes them.

    python benchmarks/paired_study.py --work-dir runs/paired-study
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker import QUIET_FP32, SHARED, compare_study, dense_scifact, run


def pretrain(work: Path, args) -> list[str]:
    """The encoder and decoder run folders (final/ plus checkpoint-STEP/), sharing the encoder's tokenizer."""
    folders = []
    for arch in ("encoder", "decoder"):
        folder = work / f"pretrain-{arch}"
        if not (folder / "final").is_dir():
            tokenizer = ["--tokenizer", str(work / "pretrain-encoder" / "final")] if folders else ["--vocab-size", "8192"]
            run([sys.executable, "-m", "ettin_ft.pretrain", "--arch", arch, "--size", "tiny", "--data",
                 str(SHARED / "pretrain"), "--output-dir", str(folder), "--max-steps", str(args.pretrain_steps),
                 "--seq-len", "256", "--batch-size", "16", "--save-every", str(args.save_every),
                 "--keep-checkpoints", "100", "--eval-every", "0", "--report-to", "none", "--precision", "fp32", *tokenizer])
        print(f"pretrained {arch}: {json.load(open(folder / 'metrics.json'))['after']}", flush=True)
        folders.append(str(folder))
    return folders


def study(work: Path, name: str, recipe: str, models: list[str], seeds: str, recipe_args: list[str]) -> None:
    """One study over every checkpoint; a failed run is reported, not fatal (its row says why)."""
    status = compare_study(work / name, recipe, models, seeds, recipe_args, "--revisions", "all")
    print(f"{name}: exit {status}; {work / name / 'REPORT.md'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--classify-steps", type=int, default=200)
    parser.add_argument("--dense-steps", type=int, default=100)
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models = pretrain(work, args)
    study(work, "classify-sst2", "classify", models, args.seeds, [
        "--data", str(SHARED / "classification" / "sst2"), "--max-steps", str(args.classify_steps),
        "--per-device-train-batch-size", "32", "--learning-rate", "1e-3", "--max-seq-length", "128", *QUIET_FP32])
    study(work, "dense-scifact", "dense", models, args.seeds, dense_scifact(args.dense_steps))
    # ablation: the decoder's last token (its default before benchmarks/decoder_pooling.py), to separate pooling
    # from architecture
    study(work, "dense-scifact-decoder-lasttoken", "dense", models[1:], args.seeds,
          [*dense_scifact(args.dense_steps), "--pooling", "lasttoken"])
    study(work, "bias", "bias", models, "0", ["--data", str(SHARED / "bias" / "winogender")])


if __name__ == "__main__":
    main()
