"""Baselines in place of an Ettin model: a tiny BERT encoder and a tiny Llama decoder, built from a config here,
go through the recipes with one notice line; architecture-specific features pick their modules or say why not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ettin_ft.errors import EttinError

from .conftest import run_cli_main, save_untrained, shared_data

NOTICE = "not an Ettin model"


@pytest.fixture(scope="module")
def bert_dir(encoder_tokenizer, tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=len(encoder_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=96, max_position_embeddings=256, pad_token_id=encoder_tokenizer.pad_token_id)
    return save_untrained(lambda: BertForMaskedLM(config), encoder_tokenizer, tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def llama_dir(decoder_tokenizer, tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(decoder_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
                         pad_token_id=decoder_tokenizer.pad_token_id, bos_token_id=decoder_tokenizer.bos_token_id,
                         eos_token_id=decoder_tokenizer.eos_token_id)
    return save_untrained(lambda: LlamaForCausalLM(config), decoder_tokenizer, tmp_path_factory.mktemp("llama"))


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


TRAINING = ["--max-steps", "60", "--learning-rate", "3e-3", "--per-device-train-batch-size", "32", "--report-to", "none",
            "--disable-tqdm", "true"]


@pytest.mark.parametrize("baseline, expected_class", [("bert", "BertForSequenceClassification"),
                                                      ("llama", "LlamaForSequenceClassification")])
def test_a_baseline_classifier_learns_and_reloads(baseline, expected_class, bert_dir, llama_dir, world100_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    model = bert_dir if baseline == "bert" else llama_dir
    out = tmp_path / "classify"
    status, err, _ = run_cli_main("classify", capsys, "--model", str(model), "--data", str(world100_dir / "topics_train.jsonl"),
                                  "--eval-data", str(world100_dir / "topics_test.jsonl"), "--output-dir", str(out), *TRAINING)
    assert status == 0, err[-5:]
    assert sum(NOTICE in line for line in err) == 1 and f"a {baseline}" in next(l for l in err if NOTICE in l)
    metrics = metrics_of(out)
    assert metrics["after"]["accuracy"] > max(metrics["before"]["accuracy"], metrics["majority"]["accuracy"]), metrics
    reloaded = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert type(reloaded).__name__ == expected_class and len(reloaded.config.id2label) == 5


@pytest.mark.release  # four recipes on a BERT
def test_bert_through_the_retrieval_recipes(bert_dir, world100_dir, tmp_path, capsys):
    """Dense (mean pooling) and SPLADE (through BERT's own MLM head) train and reload."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sparse_encoder import SparseEncoder

    data = ["--data", str(world100_dir / "retrieval_train.jsonl"), "--eval-beir", str(world100_dir / "retrieval_eval"),
            "--held-out", "20", "--batch-sampler", "no_duplicates"]
    for recipe, loader in (("dense", SentenceTransformer), ("sparse", SparseEncoder)):
        out = tmp_path / recipe
        status, err, _ = run_cli_main(recipe, capsys, "--model", str(bert_dir), "--output-dir", str(out), *data, *TRAINING)
        assert status == 0 and sum(NOTICE in line for line in err) == 1, err[-5:]
        metrics = metrics_of(out)
        assert metrics["after"]["ndcg@10"] > metrics["before"]["ndcg@10"], (recipe, metrics)
        loader(str(out / "final"), device="cpu")


def test_llama_lora_sft_uses_peft_targets_and_chatml(llama_dir, world100_dir, tmp_path, capsys):
    from peft import PeftConfig

    out = tmp_path / "lora"
    status, err, _ = run_cli_main("sft", capsys, "--model", str(llama_dir), "--data", str(world100_dir / "sft_train.jsonl"),
                                  "--output-dir", str(out), "--lora", "--held-out", "40", "--eval-generations", "0",
                                  "--max-steps", "40", "--learning-rate", "3e-3", "--per-device-train-batch-size", "4",
                                  "--gradient-accumulation-steps", "1", "--gradient-checkpointing", "false",
                                  "--max-length", "256", "--report-to", "none", "--disable-tqdm", "true")
    assert status == 0 and sum(NOTICE in line for line in err) == 1, err[-5:]
    metrics = metrics_of(out)
    assert metrics["after"]["held_out_loss"] < metrics["before"]["held_out_loss"], metrics
    assert sorted(PeftConfig.from_pretrained(out / "final").target_modules) == ["q_proj", "v_proj"]  # peft's Llama choice
    assert "<|im_start|>" in (out / "final" / "chat_template.jinja").read_text()


def test_bias_probe_on_baselines(bert_dir, llama_dir, tmp_path):
    from ettin_ft.bias import BiasConfig, run_probe

    data = shared_data("bias", "winogender")
    for name, model in (("bert", bert_dir), ("llama", llama_dir)):
        metrics = run_probe(BiasConfig(model=str(model), data=str(data), output_dir=str(tmp_path / name)))
        records = [json.loads(line) for line in (tmp_path / name / "items.jsonl").read_text().splitlines()]
        chosen = [r["preferred"] for r in records]
        assert metrics["items"] == len(records) == 240
        assert metrics["preference"] == pytest.approx({g: chosen.count(g) / 240 for g in ("male", "female", "neutral")})


def test_lora_without_known_targets_names_the_flag():
    from transformers import FunnelConfig

    from ettin_ft.models import LocatedModel, lora_target_modules
    from ettin_ft.registry import resolve

    located = LocatedModel(resolve("org/funnel"), FunnelConfig(), "encoder")
    with pytest.raises(EttinError, match="no default LoRA target modules for model type 'funnel'; name them with"):
        lora_target_modules(located)


def test_pretraining_refuses_to_continue_a_baseline(bert_dir, world_dir, tmp_path, capsys):
    status, err, _ = run_cli_main("pretrain", capsys, "--init", str(bert_dir), "--data", str(world_dir / "pretrain.txt"),
                                  "--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--eval-documents", "10")
    assert status == 2 and "pretraining continues Ettin" in err[-1], err
