"""Students trained from a teacher's scores against the same students trained from labels, at equal steps.

1. world: the quickstart's synthetic world (its training people's retrieval pairs, three BM25 negatives each,
   ``python -m ettin_ft.mine``), scored by a stronger teacher (the quickstart's ColBERT). A reranker (BCE vs
   pointwise MSE), a dense embedder (CachedMNRL vs MarginMSE) and SPLADE (MNRL vs MarginMSE) each train from the
   quickstart's pretrained encoder on the same rows, steps, batch, learning rate and seed; NDCG@10 on the world's
   held-out people (its retrieval_eval).
   Then the reranker again on the examples the quickstart trains it on (``others``: a second, larger population's
   queries, each with its positive, a name-sharing negative and two others): on the world's own training people a
   cross-encoder memorises names.
2. pooling: the reranker distilled on ``others`` with a [CLS] head (the released Ettin rerankers') against a
   mean-pooled one.
3. real: PubMedQA pairs (../shared/data/retrieval_pairs) → SciFact, the reranker from labels against the reranker
   distilled from a ColBERT trained on the same pairs (benchmarks/quality_vs_plain.py's); NDCG@10 reranking BM25's
   top 100.

Three seeds per side; mean ± std and the difference with its standard error. Finished runs are kept in --work-dir.

    python benchmarks/distillation_quality.py --quickstart runs/quickstart --real-student runs/quality/pretrain-encoder/final \
        --real-teacher "runs/quality/ColBERT_(encoder)/seed1/ettin-ft/final" --work-dir runs/distillation
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from worker import QUIET_FP32, SHARED, run

from ettin_ft.seeds import mean_std, parse_seeds

# (recipe, steps, batch, learning rate, extra flags): the quickstart's settings for dense and SPLADE
WORLD_STUDENTS = {
    "rerank": (300, 32, 1e-3, ["--max-seq-length", "128"]),
    "dense": (60, 16, 1e-3, ["--batch-sampler", "no_duplicates", "--max-seq-length", "128"]),
    "sparse": (150, 32, 5e-4, ["--batch-sampler", "no_duplicates", "--max-seq-length", "128"]),
}


def mined_rows(work: Path, pairs: Path, teacher: str, name: str) -> tuple[Path, Path]:
    """(rows with the teacher's scores, the same rows without them), mined once."""
    scored, unscored = work / f"{name}-scored.jsonl", work / f"{name}-labels.jsonl"
    if not scored.exists():
        run([sys.executable, "-m", "ettin_ft.mine", "--data", str(pairs), "--mining-model", "bm25", "--num-negatives",
             "3", "--teacher", teacher, "--output", str(scored)])
    if not unscored.exists():
        rows = [json.loads(line) for line in scored.read_text().splitlines()]
        unscored.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "scores"}) + "\n" for row in rows))
    return scored, unscored


def others_rows(work: Path, quickstart: Path, teacher: str) -> tuple[Path, Path]:
    """The quickstart's reranker examples (query, passage, label) as candidate rows, scored by ``teacher``."""
    scored, unscored = work / "others-scored.jsonl", work / "others-labels.jsonl"
    if not scored.exists():
        from ettin_ft.distillation import candidate_pairs, teacher_scores_of, with_scores
        from ettin_ft.runtime import choose_runtime

        import datasets

        grouped: dict[str, dict] = {}
        for line in (quickstart / "world" / "rerank_train_others.jsonl").read_text().splitlines():
            example = json.loads(line)
            row = grouped.setdefault(example["query"], {"query": example["query"], "positive": None, "negatives": []})
            if example["label"] == 1:
                row["positive"] = example["passage"]
            else:
                row["negatives"].append(example["passage"])
        rows = datasets.Dataset.from_list([row for row in grouped.values() if row["positive"]])
        scores = teacher_scores_of(teacher, candidate_pairs(rows), choose_runtime("cpu", "fp32", "sdpa"), 64)
        rows = with_scores(rows, scores, teacher)
        scored.write_text("".join(json.dumps(row) + "\n" for row in rows))
        unscored.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "scores"}) + "\n" for row in rows))
    return scored, unscored


def ndcg(recipe: str, student: str, data: Path, out: Path, seed: int, steps: int, batch: int, lr: float,
         extra: list[str], eval_beir: str) -> float:
    """NDCG@10 on ``eval_beir`` after training (the run is kept and reused)."""
    if not (out / "metrics.json").exists():
        run([sys.executable, "-m", f"ettin_ft.{recipe}", "--model", student, "--data", str(data), "--eval-beir",
             eval_beir, "--held-out", "0", "--max-steps", str(steps), "--per-device-train-batch-size", str(batch),
             "--learning-rate", str(lr), "--warmup-steps", "0", "--seed", str(seed), "--save-strategy", "no",
             "--output-dir", str(out), *extra, *QUIET_FP32])
    return json.loads((out / "metrics.json").read_text())["after"]["ndcg@10"]


def row(name: str, values: dict[str, list[float]], baseline: str, other: str) -> dict:
    means = {side: mean_std(v) for side, v in values.items()}
    n = len(values[baseline])
    se = math.sqrt(means[baseline][1] ** 2 / n + means[other][1] ** 2 / n)
    result = {"row": name, "values": values, "mean_std": means,
              "difference": means[other][0] - means[baseline][0], "standard_error": se}
    print(f"| {name} | {means[baseline][0]:.3f} ± {means[baseline][1]:.3f} | {means[other][0]:.3f} ± "
          f"{means[other][1]:.3f} | {result['difference']:+.3f} ± {se:.3f} |", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstart", default="runs/quickstart", help="a finished quickstart run folder")
    parser.add_argument("--real-student", help="the encoder of the real-data rows (e.g. quality_vs_plain's pretrained one)")
    parser.add_argument("--real-teacher", help="a model trained on PubMedQA pairs that scores them (e.g. its ColBERT)")
    parser.add_argument("--work-dir", default="runs/distillation")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--parts", default="world,others,pooling,real")
    parser.add_argument("--real-steps", type=int, default=300)
    args = parser.parse_args()
    work, seeds, parts = Path(args.work_dir), parse_seeds(args.seeds), args.parts.split(",")
    work.mkdir(parents=True, exist_ok=True)
    quickstart = Path(args.quickstart)
    world_eval = str(quickstart / "world" / "retrieval_eval")
    student = str(quickstart / "pretrain-encoder" / "final")
    results = []
    if {"world", "others", "pooling"} & set(parts):
        scored, labels = mined_rows(work, quickstart / "world" / "retrieval_train.jsonl",
                                    str(quickstart / "colbert" / "final"), "world")
        print("| student | from labels | from the teacher's scores | difference ± SE |\n|---|---|---|---|")
    if "world" in parts:
        for recipe, (steps, batch, lr, extra) in WORLD_STUDENTS.items():
            values = {side: [ndcg(recipe, student, data, work / "world" / recipe / side / f"seed{seed}", seed, steps,
                                  batch, lr, extra, world_eval) for seed in seeds]
                      for side, data in (("labels", labels), ("teacher", scored))}
            results.append(row(f"{recipe} ({steps} steps)", values, "labels", "teacher"))
    if "others" in parts:
        steps, batch, lr, extra = WORLD_STUDENTS["rerank"]
        scored_others, labels_others = others_rows(work, quickstart, str(quickstart / "colbert" / "final"))
        values = {side: [ndcg("rerank", student, data, work / "others" / side / f"seed{seed}", seed, steps, batch, lr,
                              extra, world_eval) for seed in seeds]
                  for side, data in (("labels", labels_others), ("teacher", scored_others))}
        print("\n| reranker on the quickstart's examples | from labels | from the teacher's scores | difference ± SE |"
              "\n|---|---|---|---|")
        results.append(row(f"rerank, others ({steps} steps)", values, "labels", "teacher"))
    if "pooling" in parts:  # on the examples a reranker learns from (others), distilled
        steps, batch, lr, extra = WORLD_STUDENTS["rerank"]
        scored_others, _ = others_rows(work, quickstart, str(quickstart / "colbert" / "final"))
        values = {pooling: [ndcg("rerank", student, scored_others, work / "others" /
                                 ("teacher" if pooling == "cls" else "teacher-mean") / f"seed{seed}", seed, steps,
                                 batch, lr, [*extra, "--pooling", pooling], world_eval) for seed in seeds]
                  for pooling in ("cls", "mean")}
        print("\n| reranker (distilled) | cls | mean | mean − cls ± SE |\n|---|---|---|---|")
        results.append(row("pooling", values, "cls", "mean"))
    if "real" in parts:
        scored, labels = mined_rows(work, SHARED / "retrieval_pairs" / "pubmedqa_pqal.jsonl", args.real_teacher, "pubmedqa")
        scifact = str(SHARED / "retrieval_eval" / "scifact")
        values = {side: [ndcg("rerank", args.real_student, data, work / "real" / side / f"seed{seed}", seed,
                              args.real_steps, 32, 1e-3, ["--max-seq-length", "128"], scifact) for seed in seeds]
                  for side, data in (("labels", labels), ("teacher", scored))}
        print("\n| reranker, PubMedQA → SciFact | from labels | from the teacher's scores | difference ± SE |\n|---|---|---|---|")
        results.append(row(f"rerank ({args.real_steps} steps)", values, "labels", "teacher"))
    (work / f"results-{'-'.join(parts)}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
