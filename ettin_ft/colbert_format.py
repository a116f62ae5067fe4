"""PyLate's ColBERT on sentence-transformers' MultiVectorEncoder: the modules PyLate builds on a bare encoder, its
distillation scores, and its saved layout, so a model moves between ettin-ft and PyLate with equal embeddings.

sentence-transformers 6 loads PyLate folders itself (a ``pylate.models.Dense.Dense`` module and PyLate's keys in
config_sentence_transformers.json) and builds from them the modules ``new_colbert`` builds; it saves its own
layout, which PyLate 1.6 cannot read. ``as_pylate_layout`` rewrites a saved folder into PyLate's, which both load.
"""

from __future__ import annotations

import json
import os
import shutil
import string

import torch

PREFIXES = {"query": "[Q] ", "document": "[D] "}  # PyLate's prefix tokens, inserted after [CLS]
KD_WAYS = 32  # candidates per query in distillation: PyLate's KDProcessing default
PROJECTION = 128


def is_multi_vector_model(ref) -> bool:
    """Whether ``ref`` is a saved sentence-transformers model (PyLate's ColBERTs included), not a bare encoder."""
    from sentence_transformers.util import load_file_path

    return load_file_path(ref.path, "modules.json", revision=ref.revision) is not None


def new_colbert(ref, device: str, transformer_kwargs: dict):
    """A ColBERT on the encoder ``ref`` as PyLate 1.6 builds one: [Q]/[D] added to the vocabulary, queries padded to
    their length (``set_lengths``; PyLate's 32 until then) with mask tokens the encoder does not attend to, a new
    bias-free projection to 128 dimensions, punctuation left out of documents, L2-normalised token vectors."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    transformer = Transformer(ref.path, **transformer_kwargs, query_expansion={"strategy": "fixed", "length": 32})
    tokenizer, backbone = transformer.tokenizer, transformer.auto_model
    # PyLate's order: the embeddings fitted to the tokenizer first, then grown by the two prefix tokens
    backbone.resize_token_embeddings(len(tokenizer))
    tokenizer.add_tokens(list(PREFIXES.values()))
    backbone.resize_token_embeddings(len(tokenizer))
    projection = Dense(transformer.get_embedding_dimension(), PROJECTION, bias=False,
                       activation_function=torch.nn.Identity(), module_input_name="token_embeddings")
    modules = [transformer, projection, MultiVectorMask(skiplist_words=list(string.punctuation)),
               Normalize(module_input_name="token_embeddings")]
    return MultiVectorEncoder(modules=modules, prompts=dict(PREFIXES), device=device)


def training_prompts(model, columns: list[str]) -> dict[str, str]:
    """The prompt of each training column's task, as the trainer's ``prompts`` wants them: the collator adds the
    columns' prompts (here the [Q]/[D] prefixes) only when they are given by column name, and the losses take the
    first column as the queries and the others as documents."""
    from sentence_transformers.util.dataset import DEFAULT_LABEL_COLUMNS

    texts = [column for column in columns if column not in DEFAULT_LABEL_COLUMNS]  # the collator takes these as labels
    tasks = {column: "query" if number == 0 else "document" for number, column in enumerate(texts)}
    return {column: model.prompts[task] for column, task in tasks.items() if model.prompts.get(task)}


def set_lengths(model, query_length: int, document_length: int) -> None:
    """Queries of ``query_length`` tokens (padded to it where the model expands queries) and documents of at most
    ``document_length``, prefix tokens included, as PyLate's ``ColBERT(query_length=..., document_length=...)``."""
    transformer = model[0]
    transformer.document_length = document_length
    if transformer.query_expansion is not None:
        transformer.query_expansion = {**transformer.query_expansion, "length": query_length}
    else:
        transformer.query_length = query_length


def min_max_kd_scores(queries_embeddings, documents_embeddings, queries_mask=None, documents_mask=None):
    """MaxSim scores of each query's candidates, min-max normalised per query as PyLate's Distillation loss does
    before its KL divergence (the Ettin ColBERTs were distilled so)."""
    from sentence_transformers.multi_vector_encoder.scoring import colbert_kd_scores

    scores = colbert_kd_scores(queries_embeddings, documents_embeddings, queries_mask, documents_mask)
    low, high = scores.min(dim=1, keepdim=True).values, scores.max(dim=1, keepdim=True).values
    return (scores - low) / (high - low + 1e-8)


def pylate_settings(model) -> dict | None:
    """PyLate's top-level config keys for ``model``, or None when PyLate cannot express it (other modules, a
    prompt that is no single prefix token, an expansion other than PyLate's fixed length)."""
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    modules = list(model)
    kinds = (Transformer, Dense, MultiVectorMask, Normalize)
    if len(modules) != len(kinds) or not all(isinstance(m, kind) for m, kind in zip(modules, kinds)):
        return None
    transformer, projection, mask, _ = modules
    tokenizer = transformer.tokenizer
    prefixes = {task: model.prompts.get(task) or "" for task in PREFIXES}
    added = set(tokenizer.get_added_vocab())
    expansion = transformer.query_expansion
    if (projection.use_residual or not isinstance(projection.activation_function, torch.nn.Identity)
            or mask.skiplist_tasks != ["document"] or mask.keep_only_token_ids is not None
            or any(prefix and prefix not in added for prefix in prefixes.values())
            or (expansion is not None and (expansion["strategy"] != "fixed" or expansion["token"] is not None))
            or (expansion is None and transformer.query_length is None) or transformer.document_length is None):
        return None
    return {"query_prefix": prefixes["query"], "document_prefix": prefixes["document"],
            "query_length": expansion["length"] if expansion else transformer.query_length,
            "document_length": transformer.document_length,
            "attend_to_expansion_tokens": bool(expansion and expansion["attend"]),
            "skiplist_words": list(mask.skiplist_words), "do_query_expansion": expansion is not None}


def as_pylate_layout(model, folder: str) -> None:
    """Rewrite ``folder``, where ``model`` was saved by sentence-transformers, into PyLate's layout: the encoder
    and a ``pylate.models.Dense.Dense`` projection, with PyLate's keys in config_sentence_transformers.json.
    A model PyLate cannot express keeps sentence-transformers' layout (one notice line)."""
    settings = pylate_settings(model)
    if settings is None:
        print(f"note: {folder} keeps sentence-transformers' MultiVectorEncoder layout: PyLate cannot express this "
              "model's modules", flush=True)
        return

    def rewrite(name: str, content) -> None:
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2, ensure_ascii=False)

    with open(os.path.join(folder, "modules.json"), encoding="utf-8") as handle:
        entries = json.load(handle)
    for entry in entries[2:]:  # the mask and the normalisation, which PyLate applies itself
        shutil.rmtree(os.path.join(folder, entry["path"]), ignore_errors=True)
    dense_folder = entries[1]["path"]
    rewrite("modules.json", [{**entries[0], "type": "sentence_transformers.models.Transformer"},
                             {**entries[1], "type": "pylate.models.Dense.Dense"}])
    projection = model[1]
    rewrite(os.path.join(dense_folder, "config.json"), {
        "in_features": projection.in_features, "out_features": projection.out_features, "bias": projection.bias,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False})
    # PyLate truncates documents one token short and then inserts its prefix token
    rewrite("sentence_bert_config.json", {"max_seq_length": settings["document_length"] - 1, "do_lower_case": False})
    with open(os.path.join(folder, "config_sentence_transformers.json"), encoding="utf-8") as handle:
        saved = json.load(handle)
    rewrite("config_sentence_transformers.json", {
        "model_type": "ColBERT", "__version__": saved.get("__version__", {}), "prompts": {"query": "", "document": ""},
        "default_prompt_name": None, "similarity_fn_name": "MaxSim", **settings})
