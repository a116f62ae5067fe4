"""ettin-ft's defaults against the plain library scripts in recipes/: quality over seeds, every recipe.

For each row, ``python -m ettin_ft.<recipe>`` (its defaults) and ``python recipes/<recipe>.py`` (the page of
transformers / sentence-transformers / trl code a user would write) fine-tune the same pretrained model on
the same data, held-out rows, steps, batch, learning rate and seed. Reported: mean ± std over the seeds
of each side, and ettin-ft minus plain with its standard error; a row where ettin-ft is worse by more than two
standard errors is marked LOSES.

- classify, encoder and decoder: SST-2, RTE, an MNLI slice (../shared/data/classification; accuracy on held-out
  training rows) and birth city from a synthetic biography (30 classes, one biography per person; also at 50, 100
  and 150 steps, before it saturates). Decoder rows again with --head-init lm (an ablation: the LM head as the
  prediction head's start).
- dense (encoder and decoder, mean-pooled on both sides), SPLADE, ColBERT, reranker: trained on
  ../shared/data/retrieval_pairs (PubMedQA); NDCG@10 of the saved models on SciFact and Cranfield (the reranker
  reranks BM25's top 100; both sides train on the same BM25-mined labelled rows, since the plain script mines with
  a hub model).
- SFT and LoRA: held-out loss on ../shared/data/sft (the decoder; one optimizer step per batch on both sides,
  where configs/sft.yaml would accumulate 8).

The encoder/decoder pair is pretrained first (``--pretrain-steps``, shared tokenizer, as benchmarks/classify_quality.py).
Finished runs are kept in --work-dir and skipped on a rerun; --groups picks classify, retrieval and/or sft,
--rows the rows by name.

    python benchmarks/quality_vs_plain.py --work-dir runs/quality --groups classify
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from classify_quality import pretrain
from ettin_ft.seeds import mean_std, parse_seeds
from worker import RECIPES_DIR, SHARED, report, run, run_worker

EVAL_SETS = ("scifact", "cranfield")


@dataclass
class Row:
    name: str
    recipe: str
    arch: str
    data: str
    steps: int
    batch: int
    learning_rate: float
    held_out: int
    metric: str  # the metric compared; retrieval rows: NDCG@10 on each of EVAL_SETS
    higher_is_better: bool = True
    length: list[str] = field(default_factory=lambda: ["--max-seq-length", "128"])
    ettin_flags: list[str] = field(default_factory=list)
    plain_flags: list[str] = field(default_factory=list)
    plain_row: str | None = None  # an ablation of ettin-ft's flags shares this row's plain-script runs

    def folder(self, work: Path, side: str, seed: int) -> Path:
        name = self.plain_row if side == "plain" and self.plain_row else self.name
        return work / name.replace(" ", "_") / f"seed{seed}" / side


def rows(work: Path) -> dict[str, list[Row]]:
    """Held-out rows are at most a tenth of the data, as ettin-ft caps them, so both sides evaluate the same rows."""
    classification = SHARED / "classification"
    pairs = str(SHARED / "retrieval_pairs" / "pubmedqa_pqal.jsonl")
    birth_city = str(work / "birth_city.jsonl")
    tasks = [("SST-2", str(classification / "sst2" / "train.jsonl"), 872, 300),
             ("RTE", str(classification / "rte" / "train.jsonl"), 249, 300),
             ("birth city, 30 classes", birth_city, 300, 300),
             ("MNLI slice", str(classification / "mnli" / "validation_matched.jsonl"), 981, 300)]
    # the many-class task before it saturates (300 steps reach 0.99-1.0 on both sides)
    tasks += [(f"birth city, 30 classes, {steps} steps", birth_city, 300, steps) for steps in (50, 100, 150)]
    # the decoder's prediction head: transformers' random start (the default, as the plain script) and, as an
    # ablation, the LM head (ettin-ft's default before this benchmark measured it)
    variants = [("encoder", "", []), ("decoder", "", []), ("decoder", ", --head-init lm", ["--head-init", "lm"])]
    classify = [Row(f"classify {task} ({arch}{variant})", "classify", arch, data, steps, 32, 1e-3, held_out, "accuracy",
                    ettin_flags=flags, plain_row=f"classify {task} ({arch})" if variant else None)
                for task, data, held_out, steps in tasks for arch, variant, flags in variants]
    retrieval = [
        Row(f"dense ({arch})", "dense", arch, pairs, 300, 32, 3e-4, 100, "ndcg@10") for arch in ("encoder", "decoder")
    ] + [
        Row("SPLADE (encoder)", "sparse", "encoder", pairs, 60, 32, 5e-4, 100, "ndcg@10"),
        Row("ColBERT (encoder)", "colbert", "encoder", pairs, 300, 16, 1e-3, 100, "ndcg@10",
            length=["--document-length", "180"]),
        Row("reranker (encoder)", "rerank", "encoder", str(work / "rerank_rows.jsonl"), 1000, 32, 1e-3, 100, "ndcg@10",
            ettin_flags=["--num-negatives", "3"], plain_flags=["--num-negatives", "3"]),
    ]
    chats = str(SHARED / "sft" / "hh_rlhf_helpful_base_test.jsonl")
    # one optimizer step per batch of 4 on both sides (configs/sft.yaml accumulates 8, the release's batch of 16)
    one_step_per_batch = ["--gradient-accumulation-steps", "1"]
    sft = [
        Row("SFT", "sft", "decoder", chats, 200, 4, 2e-4, 100, "loss", higher_is_better=False,
            length=["--max-seq-length", "256"], ettin_flags=[*one_step_per_batch, "--eval-generations", "0"]),
        Row("LoRA SFT", "sft", "decoder", chats, 200, 4, 2e-3, 100, "loss", higher_is_better=False,
            length=["--max-seq-length", "256"], ettin_flags=["--lora", *one_step_per_batch, "--eval-generations", "0"],
            plain_flags=["--lora"]),
    ]
    return {"classify": classify, "retrieval": retrieval, "sft": sft}


def write_inputs(work: Path) -> None:
    """The many-class task and the reranker's labelled rows, written once."""
    if not (work / "birth_city.jsonl").exists():
        from ettin_ft.data.synthetic import SyntheticWorld, write_jsonl

        world = SyntheticWorld(people=3000, seed=0, biographies_per_person=1)
        write_jsonl(str(work / "birth_city.jsonl"),
                    [{"text": world.biography(person), "label": person.value("birth_city")} for person in world.people])
    if not (work / "rerank_rows.jsonl").exists():
        import datasets

        from ettin_ft.mining import as_labelled_pairs, bm25_negatives

        pairs = datasets.load_dataset("json", data_files=str(SHARED / "retrieval_pairs" / "pubmedqa_pqal.jsonl"),
                                      split="train")
        as_labelled_pairs(bm25_negatives(pairs, 3)).to_json(str(work / "rerank_rows.jsonl"))


def commands(row: Row, model: str, seed: int, work: Path) -> dict[str, list[str]]:
    shared = ["--model", model, "--data", row.data, "--max-steps", str(row.steps), "--learning-rate",
              str(row.learning_rate), "--held-out", str(row.held_out), "--seed", str(seed), *row.length]
    return {
        "ettin-ft": [sys.executable, "-m", f"ettin_ft.{row.recipe}", *shared, "--per-device-train-batch-size",
                     str(row.batch), "--output-dir", str(row.folder(work, "ettin-ft", seed)), "--save-strategy", "no", "--report-to",
                     "none", "--disable-tqdm", "true", "--precision", "fp32", *row.ettin_flags],
        "plain": [sys.executable, str(Path(RECIPES_DIR) / f"{row.recipe}.py"), *shared, "--batch-size", str(row.batch),
                  "--output-dir", str(row.folder(work, "plain", seed)), *row.plain_flags],
    }


def held_out_value(metrics: dict, metric: str) -> float:
    """The held-out metric of a run's metrics.json, as either side names it."""
    after = metrics["after"]
    for key in (metric, f"held_out_{metric}", f"eval_{metric}"):
        if key in after:
            return float(after[key])
    raise KeyError(f"{metric} not in {sorted(after)}")


def evaluate(recipe: str, model_dir: str, eval_set: str) -> float:
    """NDCG@10 of a saved retrieval model on a BEIR set, through the evaluator ettin-ft uses (worker side)."""
    from ettin_ft.data.loading import load_beir
    from ettin_ft.evaluation import retrieval_evaluator, shared_metrics

    from sentence_transformers import CrossEncoder, MultiVectorEncoder, SentenceTransformer, SparseEncoder

    model = {"dense": SentenceTransformer, "sparse": SparseEncoder, "rerank": CrossEncoder,
             "colbert": MultiVectorEncoder}[recipe](model_dir, device="cpu")
    evaluator = retrieval_evaluator(recipe, load_beir(str(SHARED / "retrieval_eval" / eval_set)))
    return shared_metrics(evaluator(model), evaluator.primary_metric)["ndcg@10"]


def chance_levels() -> dict[str, dict[str, float]]:
    """Reference NDCG@10 (binary gains) on each eval set, from its qrels: a random ranking of the whole corpus (a
    retriever that learned nothing), a random order of BM25's top 100 (a reranker that learned nothing) and BM25's
    own order."""
    from ettin_ft.data.loading import load_beir
    from ettin_ft.evaluation import bm25_candidates

    discount = [1 / math.log2(rank + 2) for rank in range(10)]
    levels = {}
    for name in EVAL_SETS:
        split = load_beir(str(SHARED / "retrieval_eval" / name))
        candidates = bm25_candidates(split, 100)
        sums = {"random ranking": 0.0, "random order of BM25's top 100": 0.0, "BM25": 0.0}
        for query, judged in split.qrels.items():
            relevant = {doc for doc, grade in judged.items() if grade > 0}
            ideal = sum(discount[:min(len(relevant), 10)])
            found = candidates[query]
            sums["random ranking"] += len(relevant) / len(split.corpus) * sum(discount) / ideal
            sums["random order of BM25's top 100"] += (sum(doc in relevant for doc in found) / len(found)
                                                       * sum(discount) / ideal)
            sums["BM25"] += sum(discount[i] for i, doc in enumerate(found[:10]) if doc in relevant) / ideal
        levels[name] = {what: total / len(split.qrels) for what, total in sums.items()}
    return levels


def scores(row: Row, model: str, seed: int, work: Path) -> dict[str, dict[str, float]]:
    """side → {metric name: value} for one seed; runs what is not in ``work`` yet."""
    results = {}
    for side, command in commands(row, model, seed, work).items():
        folder = row.folder(work, side, seed)
        done = folder / "scores.json"
        if not done.exists():
            run(command)
            if row.recipe in ("dense", "sparse", "colbert", "rerank"):
                value = {f"{name} ndcg@10": run_worker([sys.executable, __file__, "--evaluate", row.recipe,
                                                        "--model-dir", str(folder / "final"), "--eval-set", name])
                         for name in EVAL_SETS}
            else:
                value = {row.metric: held_out_value(json.loads((folder / "metrics.json").read_text()), row.metric)}
            done.write_text(json.dumps(value))
        results[side] = json.loads(done.read_text())
    return results


def summary(values: dict[str, list[float]], higher_is_better: bool) -> dict:
    """Mean ± std of each side, the difference with its standard error (LOSES beyond two), and the difference
    paired by seed (each seed is one data order and held-out split on both sides)."""
    spread = {side: mean_std(v) for side, v in values.items()}
    mean = {side: m for side, (m, _) in spread.items()}
    std = {side: s for side, (_, s) in spread.items()}
    error = math.sqrt(sum(s ** 2 / len(values[side]) for side, s in std.items()))
    difference = mean["ettin-ft"] - mean["plain"]
    worse = -difference if higher_is_better else difference
    paired, paired_std = mean_std([a - b for a, b in zip(values["ettin-ft"], values["plain"])])
    return {"mean": mean, "std": std, "difference": difference, "standard_error": error,
            "paired_standard_error": paired_std / math.sqrt(len(values["plain"])), "loses": worse > 2 * error}


def compare_stacks(old_results: str, new_results: str) -> None:
    """Print ettin-ft's rows on two stacks side by side from two --output files: each side's mean ± std, new − old
    with its standard error (LOSES when the new stack is worse by more than two), the seeds equal on both stacks,
    and the plain script on each stack."""
    higher_is_better = {row.name: row.higher_is_better for group in rows(Path()).values() for row in group}
    old = {(t["row"], t["metric"]): t for t in json.loads(Path(old_results).read_text())}
    print("| row | metric | ettin-ft, old stack | ettin-ft, new stack | new − old (± SE) | seeds equal | "
          "plain script, old stack | plain script, new stack |")
    print("|---|---|---|---|---|---|---|---|")
    for new in json.loads(Path(new_results).read_text()):
        if (new["row"], new["metric"]) not in old:
            continue
        before = old[new["row"], new["metric"]]
        values = {"ettin-ft": new["values"]["ettin-ft"], "plain": before["values"]["ettin-ft"]}
        change = summary(values, higher_is_better[new["row"]])  # "plain" here is the old stack
        equal = sum(a == b for a, b in zip(*values.values()))
        cell = {name: {side: f"{t['mean'][side]:.4f} ± {t['std'][side]:.4f}" for side in ("ettin-ft", "plain")}
                for name, t in (("old", before), ("new", new))}
        print(f"| {new['row']} | {new['metric']} | {cell['old']['ettin-ft']} | {cell['new']['ettin-ft']} | "
              f"{change['difference']:+.4f} ± {change['standard_error']:.4f}{' LOSES' if change['loses'] else ''} | "
              f"{equal} of {len(values['plain'])} | {cell['old']['plain']} | {cell['new']['plain']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", help="runs and the pretrained pair are kept here (required)")
    parser.add_argument("--groups", default="classify,retrieval,sft")
    parser.add_argument("--rows", default=None, help="only the rows whose names contain one of these, e.g. 'SST-2,RTE'")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--chance", action="store_true",
                        help="print the eval sets' reference NDCG@10 (random ranking, random order of BM25's top 100, BM25) and stop")
    parser.add_argument("--compare-stacks", nargs=2, metavar=("OLD", "NEW"),
                        help="print the rows of two --output files (one per library stack) side by side and stop")
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)  # internal: one retrieval evaluation
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--eval-set", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate:
        report(evaluate(args.evaluate, args.model_dir, args.eval_set))
        return
    if args.chance:
        for name, levels in chance_levels().items():
            print(f"{name}: " + ", ".join(f"{what} {value:.4f}" for what, value in levels.items()))
        return
    if args.compare_stacks:
        compare_stacks(*args.compare_stacks)
        return
    if not args.work_dir:
        parser.error("the following arguments are required: --work-dir")

    from ettin_ft.runtime import cpu_has_native_bf16

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    finals = pretrain(work, args)
    write_inputs(work)
    seeds = parse_seeds(args.seeds)
    table = []
    for group in args.groups.split(","):
        for row in rows(work)[group]:
            if args.rows and not any(part in row.name for part in args.rows.split(",")):
                continue
            per_seed = [scores(row, finals[row.arch], seed, work) for seed in seeds]
            for metric in per_seed[0]["ettin-ft"]:
                values = {side: [s[side][metric] for s in per_seed] for side in ("ettin-ft", "plain")}
                table.append({"row": row.name, "metric": metric, "steps": row.steps, "batch": row.batch,
                              "learning_rate": row.learning_rate, "values": values,
                              **summary(values, row.higher_is_better)})
                print(json.dumps(table[-1]), flush=True)

    print(f"\n{args.size} pair pretrained {args.pretrain_steps} steps on ../shared/data/pretrain; fp32; seeds {args.seeds}; "
          f"native bf16: {cpu_has_native_bf16()}\n")
    print("| row | metric | steps, batch, lr | ettin-ft | plain script | ettin-ft − plain (± SE) | paired by seed (± SE) |")
    print("|---|---|---|---|---|---|---|")
    for t in table:
        sides = " | ".join(f"{t['mean'][side]:.3f} ± {t['std'][side]:.3f}" for side in ("ettin-ft", "plain"))
        print(f"| {t['row']} | {t['metric']} | {t['steps']}, {t['batch']}, {t['learning_rate']:g} | {sides} | "
              f"{t['difference']:+.3f} ± {t['standard_error']:.3f}{' LOSES' if t['loses'] else ''} | "
              f"{t['difference']:+.3f} ± {t['paired_standard_error']:.3f} |")
    if args.output:
        Path(args.output).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
