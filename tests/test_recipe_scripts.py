"""recipes/: the plain library scripts and the workflow scripts on the public API, run at tiny scale."""

from __future__ import annotations

import json
import runpy
import sys

import pytest
from transformers import AutoConfig

from .conftest import REPO, run_cli_main

RECIPES = REPO / "recipes"


def run_script(name: str, monkeypatch, *argv: str) -> None:
    monkeypatch.syspath_prepend(str(RECIPES))
    monkeypatch.setattr(sys, "argv", [str(RECIPES / name), *argv])
    runpy.run_path(str(RECIPES / name), run_name="__main__")


def test_the_classify_script_saves_a_decoder_classifier_with_its_labels(tiny_decoder_dir, world100_dir, tmp_path,
                                                                       monkeypatch):
    """The one script whose model differs from its recipe's (a decoder's classifier starts from random weights, as in
    plain transformers): it trains from the command line and saves a classifier that reloads with its label names."""
    from transformers import AutoModelForSequenceClassification

    run_script("classify.py", monkeypatch, "--model", str(tiny_decoder_dir), "--data", str(world100_dir / "topics_train.jsonl"),
               "--output-dir", str(tmp_path / "run"), "--max-steps", "3", "--batch-size", "8", "--held-out", "20")
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "final")
    labels = sorted({json.loads(line)["label"] for line in (world100_dir / "topics_train.jsonl").read_text().splitlines()})
    assert list(classifier.config.id2label.values()) == labels
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    held_out = metrics["after"]["eval_accuracy"] * 20  # the share of the 20 held-out rows classified right
    assert held_out == pytest.approx(round(held_out)), metrics


@pytest.mark.slow
def test_workflow_scripts_on_the_public_api(world100_dir, tmp_path, monkeypatch):
    """Each workflow end to end on the synthetic world (their defaults read ../shared/data)."""
    text = str(world100_dir / "pretrain.txt")
    run_script("build_and_embed.py", monkeypatch, "--output-dir", str(tmp_path / "embed"), "--pretrain-steps", "3",
               "--dense-steps", "2", "--pretrain-data", text, "--pairs", str(world100_dir / "retrieval_train.jsonl"),
               "--eval-beir", str(world100_dir / "retrieval_eval"))
    assert (tmp_path / "embed" / "dense" / "metrics.json").exists()
    run_script("pretraining_phases.py", monkeypatch, "--output-dir", str(tmp_path / "phases"), "--steps", "3",
               "--seq-len", "64", "--data", text)
    config = AutoConfig.from_pretrained(tmp_path / "phases" / "phase3" / "final")
    assert config.max_position_embeddings == 8192  # phase 2 extended the context and phase 3 kept it
    run_script("pretrain_and_classify.py", monkeypatch, "--output-dir", str(tmp_path / "pair"), "--pretrain-steps", "3",
               "--classify-steps", "2", "--pretrain-data", text, "--data", str(world100_dir / "topics_train.jsonl"))
    assert all((tmp_path / "pair" / f"sst2-{arch}" / "final" / "config.json").exists() for arch in ("encoder", "decoder"))


def script_and_recipe_losses(name: str, model, data, tmp_path, capsys, script_args=(), recipe_args=(),
                             length=("--max-seq-length", "64"), seed: int = 0, script_name: str | None = None):
    """Train recipes/<script_name or name>.py and `python -m ettin_ft.<name>` alike (same model, data, held-out rows,
    steps, batch, learning rate and seed): the logged training losses and held-out metrics of each."""
    shared = ["--model", str(model), "--data", str(data), "--max-steps", "6", "--learning-rate", "5e-4", *length,
              "--held-out", "10", "--seed", str(seed)]
    script = runpy.run_path(str(RECIPES / f"{script_name or name}.py"))
    runs = tmp_path / f"seed{seed}"
    trainer = script["main"]([*shared, "--batch-size", "8", "--logging-steps", "1", "--output-dir",
                              str(runs / "script"), *script_args])
    status, err, _ = run_cli_main(name, capsys, *shared, "--per-device-train-batch-size", "8", "--logging-steps", "1",
                                  "--warmup-steps", "0", "--save-strategy", "no", "--output-dir", str(runs / "recipe"),
                                  *recipe_args)
    assert status == 0, err[-5:]
    recipe_log = [json.loads(line) for line in (runs / "recipe" / "log_history.jsonl").read_text().splitlines()]
    losses = ([r["loss"] for r in trainer.state.log_history if "loss" in r], [r["loss"] for r in recipe_log if "loss" in r])
    metrics = (json.loads((runs / "script" / "metrics.json").read_text()),
               json.loads((runs / "recipe" / "metrics.json").read_text()))
    return losses, metrics


def seeds_train_alike(name: str, model, data, tmp_path, capsys, metric: str, **options) -> None:
    """Seeds 0 and 1: at each, the script's losses and held-out ``metric`` equal its recipe's; and the seed changes
    the losses (the batch order, and any new layer's start) on both sides."""
    losses = []
    for seed in (0, 1):
        (script, recipe), (script_metrics, recipe_metrics) = script_and_recipe_losses(name, model, data, tmp_path, capsys,
                                                                                      seed=seed, **options)
        assert len(script) == len(recipe) == 6 and script == pytest.approx(recipe, rel=1e-4), (seed, script, recipe)
        for stage in ("before", "after"):
            assert script_metrics[stage][metric] == pytest.approx(recipe_metrics[stage]["held_out_ndcg@10"]), (seed, stage)
        losses.append(script)
    assert losses[0] != pytest.approx(losses[1], rel=1e-4), losses


@pytest.mark.slow
def test_the_dense_script_trains_like_its_recipe(tiny_encoder_dir, world100_dir, tmp_path, capsys):
    seeds_train_alike("dense", tiny_encoder_dir, world100_dir / "retrieval_train.jsonl", tmp_path, capsys,
                      "eval_held_out_cosine_ndcg@10", recipe_args=["--mini-batch-size", "16"])


@pytest.mark.slow
def test_the_sparse_script_trains_like_its_recipe(tiny_encoder_dir, world100_dir, tmp_path, capsys):
    seeds_train_alike("sparse", tiny_encoder_dir, world100_dir / "retrieval_train.jsonl", tmp_path, capsys,
                      "eval_held_out_dot_ndcg@10")


@pytest.mark.slow
def test_the_colbert_script_trains_like_its_recipe(tiny_encoder_dir, world100_dir, tmp_path, capsys):
    seeds_train_alike("colbert", tiny_encoder_dir, world100_dir / "retrieval_train.jsonl", tmp_path, capsys,
                      "eval_held_out_maxsim_ndcg@10", length=("--document-length", "64"))


@pytest.mark.slow
def test_the_rerank_script_trains_like_its_recipe(tiny_encoder_dir, world100_dir, tmp_path, capsys):
    # the recipe reranks the BM25 top 100: all ten held-out passages
    seeds_train_alike("rerank", tiny_encoder_dir, world100_dir / "rerank_train.jsonl", tmp_path, capsys,
                      "eval_held_out_ndcg@10")


@pytest.mark.slow
def test_the_distill_reranker_script_trains_like_its_recipe(tiny_encoder_dir, world100_dir, tmp_path, capsys):
    """Rows with a teacher's scores: the recipe's default then is the released rerankers' pointwise MSE."""
    pairs = [json.loads(line) for line in (world100_dir / "retrieval_train.jsonl").read_text().splitlines()][:80]
    rows = [{"query": pair["query"], "positive": pair["positive"],
             "negatives": [pairs[(number + k) % len(pairs)]["positive"] for k in (1, 2)],
             "scores": [4.0 + number % 3, -1.0, -2.0 - number % 2]} for number, pair in enumerate(pairs)]
    data = tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # the recipe reranks the BM25 top 100: all thirty held-out passages
    seeds_train_alike("rerank", tiny_encoder_dir, data, tmp_path, capsys, "eval_held_out_ndcg@10",
                      script_name="distill_reranker")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_the_classify_script_trains_like_its_recipe(arch, tiny_encoder_dir, tiny_decoder_dir, world100_dir, tmp_path,
                                                    capsys):
    # both start a decoder's prediction head from random weights (transformers' default)
    model = tiny_encoder_dir if arch == "encoder" else tiny_decoder_dir
    (script, recipe), (script_metrics, recipe_metrics) = script_and_recipe_losses(
        "classify", model, world100_dir / "topics_train.jsonl", tmp_path, capsys, recipe_args=["--warmup-steps", "0.06"])
    assert len(script) == len(recipe) == 6 and script == pytest.approx(recipe, rel=1e-4), (script, recipe)
    for stage in ("before", "after"):
        assert script_metrics[stage]["eval_accuracy"] == pytest.approx(recipe_metrics[stage]["accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_sft_script_trains_like_its_recipe(lora, tiny_decoder_dir, world100_dir, tmp_path, capsys):
    flags = ["--lora"] if lora else []
    (script, recipe), (script_metrics, recipe_metrics) = script_and_recipe_losses(
        "sft", tiny_decoder_dir, world100_dir / "sft_train.jsonl", tmp_path, capsys, script_args=flags,
        recipe_args=[*flags, "--gradient-accumulation-steps", "1", "--eval-generations", "0"])
    assert len(script) == len(recipe) == 6 and script == pytest.approx(recipe, rel=1e-4), (script, recipe)
    for stage in ("before", "after"):
        assert script_metrics[stage]["eval_loss"] == pytest.approx(recipe_metrics[stage]["held_out_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_the_tag_script_trains_like_its_recipe(arch, tiny_encoder_dir, tiny_decoder_dir, world100_dir, tmp_path, capsys):
    model = tiny_encoder_dir if arch == "encoder" else tiny_decoder_dir
    (script, recipe), (script_metrics, recipe_metrics) = script_and_recipe_losses(
        "tag", model, world100_dir / "entities_train.jsonl", tmp_path, capsys, length=("--max-seq-length", "256"))
    assert len(script) == len(recipe) == 6 and script == pytest.approx(recipe, rel=1e-4), (script, recipe)
    for stage in ("before", "after"):
        for name in ("f1", "precision", "recall", "accuracy"):
            assert script_metrics[stage][f"eval_{name}"] == pytest.approx(recipe_metrics[stage][name]), (stage, name)
