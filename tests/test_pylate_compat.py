"""ColBERT models move between PyLate 1.6 and ettin-ft (sentence-transformers' MultiVectorEncoder) with equal
embeddings: a folder PyLate saved (tests/fixtures/pylate) loads, evaluates and trains on in ettin-ft, and the folders
ettin-ft publishes are in PyLate's layout. (PyLate cannot share the venv: the other direction is checked in a side
venv, tests/fixtures/pylate/README.md.)"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import run_cli_main

FIXTURE = Path(__file__).parent / "fixtures" / "pylate"
TEXTS = json.loads((FIXTURE / "texts.json").read_text())


def colbert_embeddings(model) -> dict[str, torch.Tensor]:
    return {**{f"query_{i}": e for i, e in enumerate(model.encode_query(TEXTS["queries"]))},
            **{f"document_{i}": e for i, e in enumerate(model.encode_document(TEXTS["documents"]))}}


def test_a_pylate_folder_gives_pylates_embeddings_in_ettin_ft():
    from ettin_ft.colbert import ColbertConfig, build_colbert
    from ettin_ft.runtime import choose_runtime

    model = build_colbert(ColbertConfig(model=str(FIXTURE / "model"), query_length=32, document_length=64),
                          choose_runtime("cpu", "fp32"))
    expected = load_file(str(FIXTURE / "embeddings.safetensors"))
    found = colbert_embeddings(model)
    assert found.keys() == expected.keys()
    for name, embedding in expected.items():  # the long query and document are cut at PyLate's lengths too
        torch.testing.assert_close(found[name], embedding, atol=1e-4, rtol=0)


def test_a_pylate_folder_evaluates_and_trains_further_into_pylates_layout(world_dir, tmp_path, capsys):
    from sentence_transformers import MultiVectorEncoder

    out = tmp_path / "further"
    status, err, _ = run_cli_main("colbert", capsys, "--model", str(FIXTURE / "model"), "--data",
                                  str(world_dir / "retrieval_train.jsonl"), "--held-out", "20", "--document-length", "64",
                                  "--max-steps", "30", "--learning-rate", "1e-3", "--per-device-train-batch-size", "8",
                                  "--logging-steps", "5", "--save-strategy", "no", "--output-dir", str(out))
    assert status == 0, err[-5:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["held_out_mrr@10"] > metrics["before"]["held_out_mrr@10"], metrics
    losses = [row["loss"] for row in map(json.loads, (out / "log_history.jsonl").read_text().splitlines()) if "loss" in row]
    assert losses[-1] < losses[0], losses
    final = out / "final"
    modules = json.loads((final / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer", "pylate.models.Dense.Dense"]
    settings = json.loads((final / "config_sentence_transformers.json").read_text())
    assert (settings["model_type"], settings["query_prefix"], settings["document_prefix"], settings["query_length"],
            settings["document_length"], settings["do_query_expansion"]) == ("ColBERT", "[Q] ", "[D] ", 32, 64, True)
    # the folder keeps what PyLate had saved beside the weights that training changed
    pylate = json.loads((FIXTURE / "model" / "config_sentence_transformers.json").read_text())
    assert {k: v for k, v in settings.items() if k != "__version__"} == {k: v for k, v in pylate.items() if k != "__version__"}
    trained = colbert_embeddings(MultiVectorEncoder(str(final), device="cpu"))
    before = load_file(str(FIXTURE / "embeddings.safetensors"))
    assert not torch.allclose(trained["document_0"], before["document_0"])


def test_training_batches_carry_the_prefix_tokens_that_encoding_adds():
    """The trainer's collator adds prompts only by column name: without ettin-ft's training_prompts a ColBERT would
    train without its [Q]/[D] tokens and search with them."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoderDataCollator

    from ettin_ft.colbert_format import training_prompts

    model = MultiVectorEncoder(str(FIXTURE / "model"), device="cpu")
    prompts = training_prompts(model, ["query", "positive", "negative"])
    assert prompts == {"query": "[Q] ", "positive": "[D] ", "negative": "[D] "}
    assert training_prompts(model, ["query", "document_1", "document_2", "scores"]) == {
        "query": "[Q] ", "document_1": "[D] ", "document_2": "[D] "}  # distillation rows: scores are the labels
    collator = MultiVectorEncoderDataCollator(preprocess_fn=model.preprocess, prompts=prompts)
    row = {"query": TEXTS["queries"][0], "positive": TEXTS["documents"][0], "negative": TEXTS["documents"][1]}
    batch = collator([row])
    for column, task, text in (("query", "query", row["query"]), ("positive", "document", row["positive"])):
        expected = model.preprocess([text], prompt=model.prompts[task], task=task)["input_ids"]
        assert torch.equal(batch[f"{column}_input_ids"], expected)
    prefix_id = model.tokenizer.convert_tokens_to_ids("[Q] ")
    assert batch["query_input_ids"][0, 1] == prefix_id
