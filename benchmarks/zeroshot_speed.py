"""Zero-shot scoring speed and agreement at the 17m shape, and a small zero-shot run of a tiny pair pretrained here.

1. Encoder: ettin_ft's batched l2r scorer against the rule as the release's fork runs it (one row, one forward
   pass, at a time), on the same ARC-Easy items: items per second and the largest score difference.
2. Decoder: ettin_ft's scorer against lm-evaluation-harness's hf model (add_bos_token=True, the same batch size)
   on the same requests: items per second and the largest log-likelihood difference.
   Both use a 17m-shape model (official shape, 50,368-token vocabulary) freshly initialised, fp32: speed does
   not depend on the weights.
3. A tiny encoder/decoder pair pretrained with ettin_ft.pretrain on ../shared/data/pretrain (--pretrain-steps
   each), scored with ettin_ft.zeroshot on the shipped tasks (--items per task), l2r and pll for the encoder.

    python benchmarks/zeroshot_speed.py --work-dir runs/zeroshot-speed
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def tokenizer_for(work: Path):
    from transformers import AutoTokenizer

    from ettin_ft.tokenizer import train_tokenizer

    folder = work / "tokenizer"
    if not (folder / "tokenizer.json").exists():
        lines = [line for p in sorted((SHARED / "pretrain").rglob("*.txt")) for line in p.read_text().splitlines() if line.strip()]
        train_tokenizer(lines, vocab_size=16384, arch="encoder", model_max_length=1024).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def model_17m(arch: str, tokenizer):
    from ettin_ft.models import build_model
    from ettin_ft.tokenizer import set_post_processing

    set_post_processing(tokenizer, arch)
    torch.manual_seed(0)
    return build_model("17m", arch, tokenizer=tokenizer, vocab_size=50368).eval()


def arc_requests(tokenizer, items: int):
    from ettin_ft.data.zeroshot import load_task
    from ettin_ft.scoring import encode_request

    task = load_task(str(SHARED / "zeroshot" / "arc_easy.jsonl"), items)
    pairs = [pair for item in task.items for pair in item.requests]
    return pairs, [encode_request(tokenizer, *pair) for pair in pairs]


@torch.inference_mode()
def one_row_at_a_time(model, tokenizer, requests, extra_masks: int = 2) -> list[float]:
    """The fork's procedure: for every continuation token, one forward pass of one row."""
    scores = []
    for request in requests:
        total = 0.0
        for i, target in enumerate(request.continuation):
            ids = [tokenizer.cls_token_id, *request.context, *request.continuation[:i],
                   *[tokenizer.mask_token_id] * (1 + extra_masks), tokenizer.sep_token_id]
            logits = model(torch.tensor([ids])).logits[0]
            total += logits[1 + len(request.context) + i].log_softmax(-1)[target].item()
        scores.append(total)
    return scores


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def speed(args, work: Path) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from ettin_ft.scoring import Scorer

    tokenizer = tokenizer_for(work)
    results = {}
    encoder = model_17m("encoder", tokenizer)
    pairs, requests = arc_requests(tokenizer, args.encoder_items)
    ours, ours_s = timed(lambda: Scorer(encoder, tokenizer, "encoder", args.batch_size).score(requests))
    fork, fork_s = timed(lambda: one_row_at_a_time(encoder, tokenizer, requests))
    results["encoder"] = {"items": args.encoder_items, "rows": sum(len(r.continuation) for r in requests),
                          "ettin_ft_items_per_s": args.encoder_items / ours_s, "one_row_items_per_s": args.encoder_items / fork_s,
                          "speedup": fork_s / ours_s, "max_abs_difference": max(abs(a - b) for (a, _), b in zip(ours, fork))}
    print(json.dumps({"encoder": results["encoder"]}), flush=True)
    decoder = model_17m("decoder", tokenizer)
    pairs, requests = arc_requests(tokenizer, args.decoder_items)
    ours, ours_s = timed(lambda: Scorer(decoder, tokenizer, "decoder", args.batch_size).score(requests))
    reference = HFLM(pretrained=decoder, tokenizer=tokenizer, add_bos_token=True, batch_size=args.batch_size, device="cpu")
    instances = [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(pairs)]
    theirs, theirs_s = timed(lambda: reference.loglikelihood(instances, disable_tqdm=True))
    results["decoder"] = {"items": args.decoder_items, "ettin_ft_items_per_s": args.decoder_items / ours_s,
                          "lm_eval_hf_items_per_s": args.decoder_items / theirs_s, "speedup": theirs_s / ours_s,
                          "max_abs_difference": max(abs(a - b) for (a, _), (b, _) in zip(ours, theirs))}
    print(json.dumps({"decoder": results["decoder"]}), flush=True)
    return results


def pretrained_pair(args, work: Path) -> dict:
    """Pretrain the tiny pair (kept between invocations) and score it on the shipped tasks."""
    scores = {}
    for arch in ("encoder", "decoder"):
        run = work / f"pretrain-{arch}"
        if not (run / "final" / "config.json").exists():
            subprocess.run([sys.executable, "-m", "ettin_ft.pretrain", "--arch", arch, "--size", "tiny",
                            "--data", str(SHARED / "pretrain"), "--output-dir", str(run), "--max-steps", str(args.pretrain_steps),
                            "--seq-len", "128", "--batch-size", "16", "--vocab-size", "8192", "--report-to", "none",
                            "--save-every", "0", "--eval-every", "0", "--num-workers", "0", "--precision", "fp32"],
                           check=True, cwd=REPO)
        for scoring in ("l2r", "pll") if arch == "encoder" else ("l2r",):
            out = work / f"zeroshot-{arch}-{scoring}"
            if not (out / "metrics.json").exists():
                subprocess.run([sys.executable, "-m", "ettin_ft.zeroshot", "--model", str(run / "final"), "--data",
                                str(SHARED / "zeroshot"), "--limit", str(args.items), "--encoder-scoring", scoring,
                                "--output-dir", str(out)], check=True, cwd=REPO)
            metrics = json.loads((out / "metrics.json").read_text())
            label = f"encoder ({scoring})" if arch == "encoder" else "decoder"
            scores[label] = {task: {k: values[k] for k in ("acc", "acc_norm", "random", "items")}
                             for task, values in metrics["tasks"].items()} | {"average": metrics["average"]}
            print(json.dumps({label: scores[label]["average"]}), flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/zeroshot-speed")
    parser.add_argument("--encoder-items", type=int, default=20)
    parser.add_argument("--decoder-items", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--items", type=int, default=200, help="items per task for the pretrained pair")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "speed": speed(args, work), "pretrained_pair": pretrained_pair(args, work),
               "pretrain_steps": args.pretrain_steps}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{work / 'results.json'}")


if __name__ == "__main__":
    main()
