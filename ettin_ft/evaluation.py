"""Retrieval evaluation on local BEIR folders and NanoBEIR, through the sentence-transformers evaluators.

Every recipe reports the same three numbers, before and after training: NDCG@10, MRR@10 and Recall@100.
Dense, sparse and ColBERT models retrieve over the whole corpus (ColBERT by exact MaxSim); the reranker
reranks the top 100 of a BM25 first stage, so its Recall@100 is that of BM25. (ColBERT's exact MaxSim scores the
corpus in chunks that sentence-transformers sizes to a memory budget.)
"""

from __future__ import annotations

import os

from .data.loading import BeirSplit, reach_hub_dataset
from .errors import EttinError
from .hub import unreachable_because

SHARED_METRICS = ("ndcg@10", "mrr@10", "recall@100")
BM25_TOKEN = r"(?u)\b\w+\b"  # lower-cased words, one letter included, no stemming or stop words


def bm25_tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, token_pattern=BM25_TOKEN, stopwords=None, return_ids=False, show_progress=False)


class BM25:
    """Okapi BM25 (Lucene's variant) over a corpus with bm25s, which scores through a sparse document-term matrix
    and takes each query's top k without sorting the corpus: first-stage retrieval and offline negative mining."""

    def __init__(self, documents: dict[str, str]):
        import bm25s

        self.ids = list(documents)
        self.index = bm25s.BM25()
        self.index.index(bm25_tokenize([documents[i] for i in self.ids]), show_progress=False)

    def scores(self, query: str):
        """BM25 score of every document, in corpus order."""
        return self.index.get_scores(bm25_tokenize([query])[0])

    def top_k(self, queries: list[str], k: int):
        """(document positions, scores) of each query's k best documents, best first: two (queries, k) arrays."""
        return self.index.retrieve(bm25_tokenize(queries), k=min(k, len(self.ids)), show_progress=False)

    def pair_scores(self, queries: list[str], documents: list[int]):
        """The score of each query for one document of its own (by position), from that document's row alone."""
        import numpy as np
        from scipy.sparse import csc_matrix

        matrix = self.index.scores
        rows = csc_matrix((matrix["data"], matrix["indices"], matrix["indptr"]),
                          shape=(matrix["num_docs"], len(matrix["indptr"]) - 1)).tocsr()
        rows.sort_indices()
        scores = np.zeros(len(documents))
        for number, (tokens, document) in enumerate(zip(bm25_tokenize(queries), documents)):
            terms = rows.indices[rows.indptr[document]:rows.indptr[document + 1]]
            wanted = np.asarray(self.index.get_tokens_ids(tokens), dtype=terms.dtype)
            found = np.minimum(np.searchsorted(terms, wanted), max(len(terms) - 1, 0))
            hits = found[terms[found] == wanted] if len(terms) else found[:0]
            scores[number] = rows.data[rows.indptr[document] + hits].sum()
        return scores

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        positions, scores = self.top_k([query], k)
        return [(self.ids[i], float(score)) for i, score in zip(positions[0], scores[0])]


def retrieval_evaluator(kind: str, split: BeirSplit, name: str = "beir", batch_size: int = 32):
    """The library evaluator that retrieves over the whole corpus with a ``kind`` model (a reranker: over BM25's
    top 100)."""
    if kind == "rerank":
        return rerank_evaluator(split, name, batch_size=batch_size)
    arguments = dict(
        queries=split.queries, corpus=split.documents(),
        relevant_docs={q: set(docs) for q, docs in split.qrels.items()},
        ndcg_at_k=[10], mrr_at_k=[10], precision_recall_at_k=[100], accuracy_at_k=[1], map_at_k=[100],
        batch_size=batch_size, name=name, write_csv=False,
    )
    if kind == "dense":
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

        return InformationRetrievalEvaluator(**arguments)
    if kind == "sparse":
        from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

        return SparseInformationRetrievalEvaluator(**arguments)
    if kind == "colbert":
        from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorInformationRetrievalEvaluator

        return MultiVectorInformationRetrievalEvaluator(**arguments)
    raise ValueError(f"no retrieval evaluator for {kind!r}")


def held_out_as_beir(rows) -> BeirSplit:
    """A retrieval task made of held-out training rows: every query against every passage the rows hold, its own
    positive judged relevant ((query, passage, label) rows: the passages labelled above 0; distillation rows
    (query, documents, scores): the teacher's best document). Hard negatives stay in the corpus."""
    passage_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row in rows:
        if "documents" in row:
            best = max(range(len(row["scores"])), key=row["scores"].__getitem__)
            judged = [(text, number == best) for number, text in enumerate(row["documents"])]
        elif "label" in row:
            judged = [(row["passage"], row["label"] > 0)]
        else:
            negatives = row.get("negatives") or ([row["negative"]] if row.get("negative") else [])
            judged = [(row["positive"], True)] + [(negative, False) for negative in negatives]
        query = query_ids.setdefault(row["query"], f"q{len(query_ids)}")
        for text, relevant in judged:
            passage = passage_ids.setdefault(text, f"d{len(passage_ids)}")
            if relevant:
                qrels.setdefault(query, {})[passage] = 1
    return BeirSplit(corpus={i: {"title": "", "text": text} for text, i in passage_ids.items()},
                     queries={i: text for text, i in query_ids.items() if i in qrels},
                     qrels=qrels)


NANOBEIR_EN = "sentence-transformers/NanoBEIR-en"


def nanobeir_names(sets: str) -> list[str] | None:
    """The NanoBEIR sets ``sets`` names ("all": None, the libraries' default), or one clear error."""
    from sentence_transformers.sentence_transformer.evaluation.nano_beir import DATASET_NAME_TO_HUMAN_READABLE

    names = None if sets == "all" else [name.strip().lower() for name in sets.split(",") if name.strip()]
    unknown = [name for name in names or [] if name not in DATASET_NAME_TO_HUMAN_READABLE]
    if names == [] or unknown:
        raise EttinError(f"--eval-nanobeir {sets!r}: expected 'all' or NanoBEIR names from "
                         f"{', '.join(DATASET_NAME_TO_HUMAN_READABLE)}")
    return names


def nanobeir_evaluator(kind: str, sets: str = "all", dataset_id: str = NANOBEIR_EN, batch_size: int = 32):
    """The library's NanoBEIR evaluator for a ``kind`` model over ``sets`` ("all" or names such as
    "scifact,nfcorpus"), the mean of the sets as its main score; the reranker reranks each set's BM25 top 100.

    ``dataset_id`` is the NanoBEIR collection (another language, or a local copy). Fails fast, in one line, when
    the sets cannot be loaded.
    """
    names = nanobeir_names(sets)
    if not os.path.isdir(dataset_id):
        try:
            reach_hub_dataset(dataset_id)
        except Exception as error:  # network failures surface as several httpx/OSError types
            raise EttinError(f"cannot reach {dataset_id} on the Hugging Face hub for the NanoBEIR evaluation "
                             f"({unreachable_because(error)}); evaluate on a local BEIR folder with --eval-beir instead") from None
    arguments = dict(dataset_names=names, batch_size=batch_size, write_csv=False)
    retrieval = dict(mrr_at_k=[10], ndcg_at_k=[10], precision_recall_at_k=[100], accuracy_at_k=[1], map_at_k=[100])
    try:
        if kind == "dense":
            from sentence_transformers.sentence_transformer.evaluation import NanoBEIREvaluator

            return NanoBEIREvaluator(dataset_id=dataset_id, **arguments, **retrieval)
        if kind == "sparse":
            from sentence_transformers.sparse_encoder.evaluation import SparseNanoBEIREvaluator

            return SparseNanoBEIREvaluator(dataset_id=dataset_id, **arguments, **retrieval)
        if kind == "colbert":
            from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorNanoBEIREvaluator

            return MultiVectorNanoBEIREvaluator(dataset_id=dataset_id, **arguments, **retrieval)
        if kind == "rerank":
            from sentence_transformers.cross_encoder.evaluation import CrossEncoderNanoBEIREvaluator

            return CrossEncoderNanoBEIREvaluator(dataset_id=dataset_id, rerank_k=100, always_rerank_positives=False,
                                                 **arguments)
    except ValueError as error:  # the evaluators report sets that fail to load as ValueError
        raise EttinError(f"cannot load NanoBEIR from {dataset_id}: {error}") from None
    raise ValueError(f"no NanoBEIR evaluator for {kind!r}")


def bm25_candidates(split: BeirSplit, k: int = 100) -> dict[str, list[str]]:
    """Query id → the BM25 top-k document ids."""
    bm25 = BM25(split.documents())
    positions, _ = bm25.top_k(list(split.queries.values()), k)
    return {q: [bm25.ids[i] for i in found] for q, found in zip(split.queries, positions)}


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
    """Rerank each query's BM25 top ``first_stage`` (sentence-transformers' reranking evaluator); its results also
    hold ``<name>_recall@100``, the first stage's recall, which reranking cannot exceed."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    class BM25RerankingEvaluator(CrossEncoderRerankingEvaluator):
        def __call__(self, model, *args, **kwargs) -> dict[str, float]:
            return {**super().__call__(model, *args, **kwargs), f"{self.name}_recall@100": first_stage_recall}

    documents = split.documents()
    candidates = bm25_candidates(split, first_stage)
    samples = [
        {"query": split.queries[q], "positive": [documents[d] for d in split.qrels[q] if d in documents],
         "documents": [documents[d] for d in candidates[q]]}
        for q in split.queries
    ]
    first_stage_recall = ranking_metrics(candidates, split.qrels)["recall@100"]
    return BM25RerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name=name, batch_size=batch_size,
                                  write_csv=False)


def shared_metrics(raw: dict[str, float], primary_metric: str) -> dict[str, float]:
    """NDCG@10, MRR@10 and Recall@100 of the evaluator's main scoring function (and, for sparse models,
    the active dimensions) out of a library evaluator's results."""
    prefix = primary_metric[: primary_metric.rfind("_") + 1]  # e.g. "beir_cosine_"
    picked = {metric: float(raw[prefix + metric]) for metric in SHARED_METRICS if prefix + metric in raw}
    picked.update({dims: float(value) for key, value in raw.items()
                   for dims in ("query_active_dims", "corpus_active_dims") if key.endswith(dims)})
    return picked


# ------------------------------------------------------------------------------------------ classification


def _correlation(function, predictions, labels) -> float:
    """A correlation, taken as 0 for constant predictions (undefined there: the majority baseline)."""
    if len(set(predictions)) < 2 or len(set(labels)) < 2:
        return 0.0
    return float(function(predictions, labels)[0])


def classifier_predictions(trainer, dataset, regression: bool):
    """The trainer's predicted class per row (the value itself for regression), gathered from every process."""
    logits = trainer.predict(dataset).predictions
    return logits[:, 0] if regression else logits.argmax(-1)


def classification_metrics(predictions, labels, extra: tuple[str, ...] = (), regression: bool = False) -> dict[str, float]:
    """Accuracy and macro-F1 (plus ``extra``: "matthews" for CoLA, "f1" of class 1 for MRPC/QQP), or for
    regression Pearson and Spearman correlation and the mean squared error; computed locally."""
    predictions = [p.item() if hasattr(p, "item") else p for p in predictions]  # numpy scalars → JSON-safe
    labels = list(labels)
    if regression:
        from scipy.stats import pearsonr, spearmanr

        return {"pearson": _correlation(pearsonr, predictions, labels),
                "spearman": _correlation(spearmanr, predictions, labels),
                "mse": sum((p - l) ** 2 for p, l in zip(predictions, labels)) / len(labels)}
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    results = {"accuracy": float(accuracy_score(labels, predictions)),
               "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0))}
    if "matthews" in extra:
        results["matthews"] = float(matthews_corrcoef(labels, predictions))
    if "f1" in extra:
        results["f1"] = float(f1_score(labels, predictions, pos_label=1, zero_division=0))
    return results


# ------------------------------------------------------------------------------------------ tagging


def word_predictions(trainer, dataset, label_names) -> list[list[str]]:
    """The trainer's tag for every word of every sentence (its first sub-token's), gathered from every process; a
    word that truncation cut off gets "O"."""
    predicted = trainer.predict(dataset).predictions.argmax(-1)
    sentences = []
    for ids, word_ids, words in zip(predicted, dataset["word_ids"], dataset["word_count"]):
        tags = ["O"] * words
        previous = -1
        for position, word in enumerate(word_ids):
            if word >= 0 and word != previous:
                tags[word] = label_names[ids[position]]
            previous = word
        sentences.append(tags)
    return sentences


def tagging_metrics(gold: list[list[str]], predicted: list[list[str]]) -> tuple[dict[str, float], dict[str, dict]]:
    """Entity-level micro precision, recall and F1 (seqeval's default, conlleval mode) and token accuracy; and
    per entity type precision, recall, F1 and support."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    overall = {"f1": f1_score(gold, predicted, zero_division=0),
               "precision": precision_score(gold, predicted, zero_division=0),
               "recall": recall_score(gold, predicted, zero_division=0),
               "accuracy": accuracy_score(gold, predicted)}
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {name: {"precision": float(scores["precision"]), "recall": float(scores["recall"]),
                       "f1": float(scores["f1-score"]), "support": int(scores["support"])}
                for name, scores in report.items() if not name.endswith(" avg")}
    return {name: float(value) for name, value in overall.items()}, per_type


# ------------------------------------------------------------------------------------------ language models


def answer_samples(model, tokenizer, conversations, max_new_tokens: int) -> list[dict]:
    """Greedy answers to each conversation's last user turn, beside the reference answer."""
    from .generate import generate

    model.eval()
    samples = []
    for messages in conversations:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        answer = generate(model, tokenizer, messages[:last], max_new_tokens=max_new_tokens)
        samples.append({"prompt": messages[last - 1]["content"], "reference": messages[last]["content"], "answer": answer})
    return samples


def language_model_metrics(trainer, held_out, generations: int, max_new_tokens: int) -> tuple[dict, list[dict]]:
    """The held-out loss, perplexity and token accuracy (trl's, gathered from every process), and the exact-match
    share of greedy answers to the first ``generations`` held-out conversations (the main process answers); plus
    those answers."""
    import math

    from .run_folder import is_main_process, wait_for_everyone

    if held_out is None:
        return {}, []
    metrics = trainer.evaluate()
    results = {"held_out_loss": metrics["eval_loss"], "held_out_perplexity": math.exp(min(metrics["eval_loss"], 50))}
    if "eval_mean_token_accuracy" in metrics:
        results["held_out_token_accuracy"] = metrics["eval_mean_token_accuracy"]
    samples = []
    if generations > 0 and is_main_process():  # generation is not sharded: others would copy it
        model = trainer.accelerator.unwrap_model(trainer.model)
        conversations = held_out.select(range(min(generations, len(held_out))))["messages"]
        samples = answer_samples(model, trainer.processing_class, conversations, max_new_tokens)
    if samples:
        results["held_out_exact_match"] = sum(s["answer"].strip() == s["reference"].strip() for s in samples) / len(samples)
    wait_for_everyone()  # the generations are the main process's alone: the others wait for them here
    return results, samples
