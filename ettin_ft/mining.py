"""Hard negatives for (query, positive) pairs, in one place for the reranker recipe and ``python -m ettin_ft.mine``:
BM25 offline, or an embedding model through sentence-transformers' ``mine_hard_negatives``. Both give candidate rows
(query, positive, negatives), the shape the retrieval recipes train from (``distillation.candidate_rows``)."""

from __future__ import annotations

import datasets

from .errors import EttinError
from .evaluation import BM25


def bm25_negatives(pairs: datasets.Dataset, num_negatives: int, relative_margin: float = 0.05,
                   range_max: int = 50) -> datasets.Dataset:
    """Each query with its positive and its best BM25 passages that are not it: (query, positive, negatives).

    As in mine_hard_negatives, negatives come from each query's ``range_max`` best passages (plus
    ``num_negatives``), and a candidate must score below (1 - ``relative_margin``) × the positive's score:
    passages that match the query as well as its positive are likely unlabelled positives.
    """
    passages = list(dict.fromkeys(pairs["positive"]))
    index_of = {p: i for i, p in enumerate(passages)}
    bm25 = BM25({str(i): p for i, p in enumerate(passages)})
    queries, positives = list(pairs["query"]), [index_of[p] for p in pairs["positive"]]
    found, scores = bm25.top_k(queries, num_negatives + range_max)
    ceilings = (1 - relative_margin) * bm25.pair_scores(queries, positives)
    negatives = [[passages[i] for i, score in zip(candidates, candidate_scores) if score < ceiling][:num_negatives]
                 for candidates, candidate_scores, ceiling in zip(found, scores, ceilings)]
    return datasets.Dataset.from_dict({"query": queries, "positive": [passages[p] for p in positives],
                                       "negatives": negatives})


def model_negatives(pairs: datasets.Dataset, mining_model: str, num_negatives: int) -> datasets.Dataset:
    """(query, positive, negatives) mined by an embedding model (a hub name or a local folder)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from .hub import locate_for

    ref = locate_for("--mining-model", mining_model, "pass --mining-model bm25 to mine hard negatives offline, or a "
                     "local embedding model folder")
    embedder = SentenceTransformer(ref.path, revision=ref.revision)
    mined = mine_hard_negatives(pairs, embedder, anchor_column_name="query", positive_column_name="positive",
                                num_negatives=num_negatives, output_format="labeled-list", verbose=False)
    # labeled-list rows: (query, [positive, negatives...], [1, 0, ...])
    query, documents, labels = mined.column_names
    return datasets.Dataset.from_dict({
        "query": mined[query],
        "positive": [texts[row_labels.index(1)] for texts, row_labels in zip(mined[documents], mined[labels])],
        "negatives": [[t for t, label in zip(texts, row_labels) if label == 0]
                      for texts, row_labels in zip(mined[documents], mined[labels])],
    })


def mine_negatives(pairs: datasets.Dataset, mining_model: str, num_negatives: int) -> datasets.Dataset:
    """(query, positive, negatives) for ``pairs``: ``mining_model`` 'bm25' or an embedding model."""
    if num_negatives < 1:
        raise EttinError(f"--num-negatives must be at least 1, got {num_negatives}")
    if mining_model == "bm25":
        return bm25_negatives(pairs, num_negatives)
    return model_negatives(pairs, mining_model, num_negatives)


def as_labelled_pairs(rows: datasets.Dataset) -> datasets.Dataset:
    """(query, passage, label) rows: each query's positive (1), then its negatives (0)."""
    labelled = {"query": [], "passage": [], "label": []}
    for query, positive, negatives in zip(rows["query"], rows["positive"], rows["negatives"]):
        for passage, label in [(positive, 1)] + [(n, 0) for n in negatives]:
            labelled["query"].append(query), labelled["passage"].append(passage), labelled["label"].append(label)
    return datasets.Dataset.from_dict(labelled)
