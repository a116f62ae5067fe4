"""Encoder recipes on real data: quality before/after beside BM25, and throughput against the plain scripts.

1. Pretrain a small encoder in-package on ../shared/data/pretrain.
2. Train each recipe (dense, SPLADE, ColBERT, reranker) from it on real pairs from
   ../shared/data/retrieval_pairs (PubMedQA by default), evaluating on SciFact before and after (the
   recipe's --eval-beir), then the same untrained and trained models on Cranfield; NDCG@10 beside BM25
   (the reranker reranks the BM25 top 100).
3. Time training alone: ``python -m ettin_ft.<recipe>`` (no evaluation) and the plain sentence-transformers
   script a user would write, with the same model, loss, data and arguments, each in its own
   subprocess, alternating, ``--timing-repeats`` times; compare mean training samples/s.

    python benchmarks/recipes_quality.py --work-dir runs/recipes-quality --max-seq-length 128
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from worker import SHARED, plain_recipe, report, run, run_worker

EVAL_SETS = ("scifact", "cranfield")
RECIPES = {  # recipe → (batch, learning rate, training steps, extra flags)
    "dense": (32, 3e-4, 300, ["--batch-sampler", "no_duplicates"]),
    # 16k-vocabulary logits make SPLADE steps ~10x slower; 150 steps did no better than 60 here.
    "sparse": (32, 5e-4, 60, ["--batch-sampler", "no_duplicates"]),
    "colbert": (16, 1e-3, 300, ["--document-length", "180"]),
    # A tiny cross-encoder sits on its loss plateau for hundreds of steps before it learns (see the quickstart).
    "rerank": (32, 1e-3, 1000, ["--mining-model", "bm25", "--num-negatives", "3"]),
}


def plain_script(recipe: str, model_dir: str, data: str, args) -> float:
    """The library script a sentence-transformers user would write (recipes/<recipe>.py); returns train
    samples/s."""
    batch, lr, _, _ = RECIPES[recipe]
    script = plain_recipe(recipe)
    if recipe == "rerank":  # the script mines with an embedding model from the hub; offline it gets BM25-labelled rows
        import datasets

        from ettin_ft.mining import as_labelled_pairs, bm25_negatives

        labelled = Path(tempfile.mkdtemp()) / "labelled.jsonl"
        as_labelled_pairs(bm25_negatives(datasets.load_dataset("json", data_files=data, split="train"), 3)).to_json(
            str(labelled))
        data = str(labelled)
    length = ["--document-length", "180"] if recipe == "colbert" else ["--max-seq-length", str(args.max_seq_length)]
    trainer = script.build_trainer(script.parse_args([
        "--model", model_dir, "--data", data, "--output-dir", tempfile.mkdtemp(), "--max-steps", str(args.steps),
        "--batch-size", str(batch), "--learning-rate", str(lr), "--held-out", "0", *length]))
    return trainer.train().metrics["train_samples_per_second"]


def evaluate(recipe: str, model_dir: str, eval_set: str, max_seq_length: int, trained: bool) -> float:
    """NDCG@10 of a recipe's model on a BEIR set: the trained final/ folder, or (given the encoder) the
    untrained starting point the recipe builds from it."""
    from ettin_ft.runtime import choose_runtime
    from ettin_ft.data.loading import load_beir
    from ettin_ft.evaluation import retrieval_evaluator, shared_metrics

    split = load_beir(str(SHARED / "retrieval_eval" / eval_set))
    runtime = choose_runtime(precision="fp32")
    if recipe == "rerank":
        from sentence_transformers.cross_encoder import CrossEncoder

        model = CrossEncoder(model_dir, num_labels=1, max_length=max_seq_length)
    else:
        module = importlib.import_module(f"ettin_ft.{recipe}")
        config_class = {"dense": "DenseConfig", "sparse": "SparseConfig", "colbert": "ColbertConfig"}[recipe]
        build = {"dense": "build_embedder", "sparse": "build_splade", "colbert": "build_colbert"}[recipe]
        if trained:
            from sentence_transformers import MultiVectorEncoder, SentenceTransformer, SparseEncoder

            model = {"dense": SentenceTransformer, "sparse": SparseEncoder, "colbert": MultiVectorEncoder}[recipe](model_dir)
        else:
            lengths = {"document_length": 180} if recipe == "colbert" else {"max_seq_length": max_seq_length}
            model = getattr(module, build)(getattr(module, config_class)(model=model_dir, **lengths), runtime)
    evaluator = retrieval_evaluator(recipe, split)
    return shared_metrics(evaluator(model), evaluator.primary_metric)["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=None, help="training steps for every recipe (default: each recipe's own)")
    parser.add_argument("--timing-steps", type=int, default=30, help="training steps of each timing run")
    parser.add_argument("--timing-repeats", type=int, default=2, help="timing runs per side, alternating")
    parser.add_argument("--data", default=str(SHARED / "retrieval_pairs" / "pubmedqa_pqal.jsonl"))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--max-seq-length", type=int, default=128, help="tokens per text, both sides")
    parser.add_argument("--plain", choices=list(RECIPES), help=argparse.SUPPRESS)  # internal: one plain-script run
    parser.add_argument("--evaluate", choices=list(RECIPES), help=argparse.SUPPRESS)  # internal: one evaluation
    parser.add_argument("--eval-set", help=argparse.SUPPRESS)
    parser.add_argument("--trained", choices=["yes", "no"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate:
        report(evaluate(args.evaluate, args.model_dir, args.eval_set, args.max_seq_length, args.trained == "yes"))
        return
    if args.plain:
        report(plain_script(args.plain, args.model_dir, args.data, args))
        return

    from ettin_ft.data.loading import load_beir
    from ettin_ft.evaluation import bm25_candidates, ranking_metrics

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-recipes-"))
    encoder = work / "encoder" / "final"
    if not encoder.exists():
        run([sys.executable, "-m", "ettin_ft.pretrain", "--arch", "encoder", "--size", args.size, "--data",
             str(SHARED / "pretrain"), "--output-dir", str(work / "encoder"), "--max-steps", str(args.pretrain_steps),
             "--seq-len", "256", "--batch-size", "16", "--vocab-size", "16384", "--report-to", "none",
             "--save-every", "0", "--eval-every", "0"])
    bm25 = {}
    for name in EVAL_SETS:
        split = load_beir(str(SHARED / "retrieval_eval" / name))
        bm25[name] = ranking_metrics(bm25_candidates(split, 100), split.qrels)["ndcg@10"]
    rows = []
    for recipe in args.recipes.split(","):
        batch, lr, steps, extra = RECIPES[recipe]
        steps = args.steps or steps

        def ettin_command(output_dir: Path, steps: int, evaluate: bool) -> list[str]:
            return [sys.executable, "-m", f"ettin_ft.{recipe}", "--model", str(encoder), "--data", args.data,
                    *(["--eval-beir", str(SHARED / "retrieval_eval" / EVAL_SETS[0])] if evaluate else []),
                    "--output-dir", str(output_dir), "--max-steps", str(steps), "--per-device-train-batch-size",
                    str(batch), "--learning-rate", str(lr), "--warmup-steps", "0", "--max-seq-length",
                    str(args.max_seq_length), "--save-strategy", "no", "--report-to", "none", "--seed", "0",
                    "--disable-tqdm", "true", *extra]

        out = work / recipe
        if not (out / "metrics.json").exists():
            run(ettin_command(out, steps, evaluate=True))
        metrics = json.loads((out / "metrics.json").read_text())
        row = {"recipe": recipe, "steps": steps, EVAL_SETS[0]: (metrics["before"]["ndcg@10"], metrics["after"]["ndcg@10"])}
        for name in EVAL_SETS[1:]:  # the same two models (untrained, trained) on the other sets
            row[name] = tuple(run_worker([sys.executable, __file__, "--evaluate", recipe, "--model-dir", model,
                                          "--eval-set", name, "--max-seq-length", str(args.max_seq_length),
                                          "--trained", trained])
                              for model, trained in ((str(encoder), "no"), (str(out / "final"), "yes")))
        ettin, plain = [], []
        for _ in range(args.timing_repeats):  # alternating, so drifts in machine speed hit both sides alike
            with tempfile.TemporaryDirectory(prefix=f"timing-{recipe}-") as scratch:
                run(ettin_command(Path(scratch) / "run", args.timing_steps, evaluate=False))
                log = (Path(scratch) / "run" / "log_history.jsonl").read_text()
            history = [json.loads(line) for line in log.splitlines()]
            ettin.append(next(r["train_samples_per_second"] for r in history if "train_samples_per_second" in r))
            plain.append(run_worker([sys.executable, __file__, "--plain", recipe, "--model-dir", str(encoder), "--data",
                                     args.data, "--steps", str(args.timing_steps), "--max-seq-length",
                                     str(args.max_seq_length)]))
        row.update(ettin_samples_per_second=ettin, plain_samples_per_second=plain,
                   ratio=statistics.mean(ettin) / statistics.mean(plain))
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{args.size} encoder pretrained {args.pretrain_steps} steps on ../shared/data/pretrain; recipes trained on "
          f"{os.path.basename(args.data)}, {args.max_seq_length} tokens per text; NDCG@10 before -> after; training "
          f"samples/s: mean of {args.timing_repeats} alternating runs of {args.timing_steps} steps per side\n")
    print("| recipe | steps | SciFact | Cranfield | ettin-ft samples/s | plain script samples/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| BM25 (baseline) | | {bm25['scifact']:.3f} | {bm25['cranfield']:.3f} | | | |")
    for r in rows:
        print(f"| {r['recipe']} | {r['steps']} | {r['scifact'][0]:.3f} → {r['scifact'][1]:.3f} | {r['cranfield'][0]:.3f} → "
              f"{r['cranfield'][1]:.3f} | {' / '.join(f'{v:.1f}' for v in r['ettin_samples_per_second'])} | "
              f"{' / '.join(f'{v:.1f}' for v in r['plain_samples_per_second'])} | {r['ratio']:.2f}× |")
    if args.output:
        Path(args.output).write_text(json.dumps({"bm25": bm25, "rows": rows}, indent=2))

if __name__ == "__main__":
    main()
