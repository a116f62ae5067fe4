"""Retrieval evaluation on local BEIR folders, through the sentence-transformers and pylate evaluators.

Every recipe reports the same three numbers, before and after training: NDCG@10, MRR@10 and Recall@100.
Dense, sparse and ColBERT models retrieve over the whole corpus (ColBERT by exact MaxSim); the reranker
reranks the top 100 of a BM25 first stage, so its Recall@100 is that of BM25.
"""

from __future__ import annotations

import re
from rank_bm25 import BM25Okapi

from .data.loading import BeirSplit

TOKEN = re.compile(r"\w+")
SHARED_METRICS = ("ndcg@10", "mrr@10", "recall@100")
COLBERT_SCORE_BUDGET = 2**27  # float32 token scores per exact-MaxSim corpus chunk


def bm25_tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over a corpus (rank_bm25), for first-stage retrieval and offline negative mining."""

    def __init__(self, documents: dict[str, str]):
        self.ids = list(documents)
        self.index = BM25Okapi([bm25_tokenize(documents[i]) for i in self.ids])

    def scores(self, query: str):
        """BM25 score of every document, in corpus order."""
        return self.index.get_scores(bm25_tokenize(query))

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        scores = self.scores(query)
        top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [(self.ids[i], float(scores[i])) for i in top]


def retrieval_evaluator(kind: str, split: BeirSplit, name: str = "beir", batch_size: int = 32):
    """The library evaluator that retrieves over the whole corpus with a ``kind`` model."""
    arguments = dict(
        queries=split.queries, corpus=split.documents(),
        relevant_docs={q: set(docs) for q, docs in split.qrels.items()},
        ndcg_at_k=[10], mrr_at_k=[10], precision_recall_at_k=[100], accuracy_at_k=[1], map_at_k=[100],
        batch_size=batch_size, name=name, write_csv=False,
    )
    if kind == "dense":
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

        return InformationRetrievalEvaluator(**arguments)
    if kind == "sparse":
        from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

        return SparseInformationRetrievalEvaluator(**arguments)
    if kind == "colbert":
        from pylate.evaluation import PyLateInformationRetrievalEvaluator

        # Exact MaxSim scores every query token against every token of a whole corpus chunk at once (SciFact
        # in one chunk: 35 GB); chunks keep queries × documents × 32 × 256 token scores near 512 MiB.
        arguments["corpus_chunk_size"] = max(1, COLBERT_SCORE_BUDGET // (len(split.queries) * 32 * 256))
        return PyLateInformationRetrievalEvaluator(**arguments)
    raise ValueError(f"no retrieval evaluator for {kind!r}")


def bm25_candidates(split: BeirSplit, k: int = 100) -> dict[str, list[str]]:
    """Query id → the BM25 top-k document ids."""
    bm25 = BM25(split.documents())
    return {q: [doc for doc, _ in bm25.search(text, k)] for q, text in split.queries.items()}


def ranking_metrics(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """NDCG@10, MRR@10 and Recall@100 of ranked document ids (binary gains above 0, as in BEIR's defaults
    for these sets), averaged over the judged queries."""
    import math

    totals = dict.fromkeys(SHARED_METRICS, 0.0)
    for query, relevant in qrels.items():
        ranking = rankings.get(query, [])
        gains = [1.0 if relevant.get(doc, 0) > 0 else 0.0 for doc in ranking]
        ideal = sum(1 / math.log2(i + 2) for i in range(min(10, sum(1 for g in relevant.values() if g > 0))))
        totals["ndcg@10"] += sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10])) / ideal if ideal else 0
        totals["mrr@10"] += next((1 / (i + 1) for i, g in enumerate(gains[:10]) if g), 0.0)
        totals["recall@100"] += sum(gains[:100]) / max(1, sum(1 for g in relevant.values() if g > 0))
    return {name: value / max(1, len(qrels)) for name, value in totals.items()}


def rerank_evaluator(split: BeirSplit, name: str = "beir", first_stage: int = 100, batch_size: int = 32):
    """Rerank the BM25 top ``first_stage`` of every query (sentence-transformers' reranking evaluator)."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    documents = split.documents()
    candidates = bm25_candidates(split, first_stage)
    samples = [
        {"query": split.queries[q], "positive": [documents[d] for d in split.qrels[q] if d in documents],
         "documents": [documents[d] for d in candidates[q]]}
        for q in split.queries
    ]
    evaluator = CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name=name,
                                               batch_size=batch_size, write_csv=False)
    first_stage_recall = ranking_metrics(candidates, split.qrels)["recall@100"]
    return evaluator, first_stage_recall


def shared_metrics(raw: dict[str, float], primary_metric: str) -> dict[str, float]:
    """NDCG@10, MRR@10 and Recall@100 of the evaluator's main scoring function (and, for sparse models,
    the active dimensions) out of a library evaluator's results."""
    prefix = primary_metric[: primary_metric.rfind("_") + 1]  # e.g. "beir_cosine_"
    picked = {metric: float(raw[prefix + metric]) for metric in SHARED_METRICS if prefix + metric in raw}
    picked.update({dims: float(value) for key, value in raw.items()
                   for dims in ("query_active_dims", "corpus_active_dims") if key.endswith(dims)})
    return picked
