"""Offline hard-negative mining at the release's scale: ettin-ft's BM25 miner (bm25s) on 100k (query, positive)
pairs, against the earlier pure-Python one (rank_bm25 scores every passage, then sorts them all) timed on a
subset of the same queries over the same corpus and extrapolated per pair. Each side runs in a fresh process,
for its wall time and peak memory.

The pairs are built from ../shared/data/pretrain: 30-word windows of its text, 10 words apart, are the passages,
and each passage's query is eight consecutive words of it (seeded): real vocabulary, distinct passages.

    python benchmarks/mining_scale.py                      # 100k pairs, old miner on 300 of them
    python benchmarks/mining_scale.py --pairs 20000 --old-queries 200

The old miner needs `pip install rank-bm25==0.2.2` (no longer a dependency).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import time
from pathlib import Path

from worker import report, run_worker

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"


def make_pairs(count: int, seed: int = 0) -> list[dict]:
    """``count`` distinct passages of 30 words, windows 10 words apart over the shared text (neighbours overlap,
    as near-duplicate passages do in mined corpora), each with a query of eight consecutive words of it."""
    words = [word for path in sorted(SHARED.rglob("*.txt")) for word in path.read_text().split()]
    starts = range(0, len(words) - 30, 10)
    if len(starts) < count:
        sys.exit(f"the shared text makes {len(starts)} passages; ask for at most that many --pairs")
    generator = random.Random(seed)
    pairs = []
    for start in starts[:count]:
        passage = words[start:start + 30]
        first = generator.randrange(30 - 8)
        pairs.append({"query": " ".join(passage[first:first + 8]), "positive": " ".join(passage)})
    return pairs


def old_miner(pairs: list[dict], queries: int, num_negatives: int, relative_margin: float = 0.05) -> int:
    """The pure-Python miner ettin-ft had: BM25Okapi scores of every passage, a full sort, a margin filter."""
    import re

    from rank_bm25 import BM25Okapi

    token = re.compile(r"\w+")
    passages = list(dict.fromkeys(p["positive"] for p in pairs))
    index_of = {p: i for i, p in enumerate(passages)}
    bm25 = BM25Okapi([token.findall(p.lower()) for p in passages])
    mined = 0
    for pair in pairs[:queries]:
        scores = bm25.get_scores(token.findall(pair["query"].lower()))
        ceiling = (1 - relative_margin) * scores[index_of[pair["positive"]]]
        ranked = sorted(range(len(passages)), key=lambda i: -scores[i])
        mined += len([passages[i] for i in ranked if scores[i] < ceiling][:num_negatives])
    return mined


def worker(side: str, pairs_count: int, queries: int, num_negatives: int) -> None:
    import datasets

    pairs = make_pairs(pairs_count)
    if side == "ettin-ft":
        from ettin_ft.mining import bm25_negatives  # (torch and the training stack come with it)
    start = time.perf_counter()
    if side == "ettin-ft":
        mined = bm25_negatives(datasets.Dataset.from_list(pairs), num_negatives)
        negatives, queries = sum(len(found) for found in mined["negatives"]), len(pairs)
    else:
        negatives = old_miner(pairs, queries, num_negatives)
    seconds = time.perf_counter() - start
    report({"seconds": seconds, "queries": queries, "negatives": negatives,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "passages": len({p["positive"] for p in pairs})})


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--old-queries", type=int, default=300, help="queries the old miner is timed on")
    parser.add_argument("--num-negatives", type=int, default=5)
    parser.add_argument("--worker", choices=["ettin-ft", "old"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.pairs, args.old_queries, args.num_negatives)
    results = {}
    for side in ("ettin-ft", "old"):
        results[side] = run_worker([sys.executable, __file__, "--worker", side, "--pairs", str(args.pairs),
                                    "--old-queries", str(args.old_queries), "--num-negatives", str(args.num_negatives)])
    new, old = results["ettin-ft"], results["old"]
    old_total = old["seconds"] / old["queries"] * args.pairs
    print(f"CPU: {cpu_name()}; {args.pairs} pairs over {new['passages']} passages, {args.num_negatives} negatives each")
    print(f"ettin-ft (bm25s): {new['seconds']:.1f} s for all {new['queries']} queries "
          f"({new['seconds'] / new['queries'] * 1e3:.2f} ms a pair), peak RSS {new['peak_rss_mb']:.0f} MB, "
          f"{new['negatives']} negatives")
    print(f"old (rank_bm25 + full sort): {old['seconds']:.1f} s for {old['queries']} queries "
          f"({old['seconds'] / old['queries'] * 1e3:.0f} ms a pair), peak RSS {old['peak_rss_mb']:.0f} MB; "
          f"{old_total / 3600:.1f} h extrapolated to {args.pairs} pairs, {old_total / new['seconds']:.0f}x ettin-ft")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
