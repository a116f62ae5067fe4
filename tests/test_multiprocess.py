"""Runs that outgrow one process: recipes under torchrun (two CPU processes over gloo, the same rank and saving
code as GPUs), and fine-tuning that resumes after a failure."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


def torchrun(module: str, *args: str):
    # --standalone: a free port of its own, so runs at the same time (another checkout's suite) never collide
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", f"ettin_ft.{module}", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def log_steps(folder: Path) -> list[dict]:
    return [r for r in map(json.loads, (folder / "log_history.jsonl").read_text().splitlines()) if "loss" in r]


def only_one_run(folder: Path) -> None:
    """One final/ and one metrics.json, nothing half-written beside them."""
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.yaml", "final", "log_history.jsonl", "metrics.json"], names
    assert json.loads((folder / "metrics.json").read_text()).keys() >= {"before", "after"}


@pytest.mark.slow
def test_two_processes_classify(tiny_encoder_dir, world_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "classify"
    # 480 training rows, 16 per process: one epoch is 480 / (2 × 16) = 15 steps only if both processes train.
    result = torchrun("classify", "--model", str(tiny_encoder_dir), "--data", str(world_dir / "topics_train.jsonl"),
                      "--eval-data", str(world_dir / "topics_test.jsonl"), "--per-device-train-batch-size", "16",
                      "--num-train-epochs", "1", "--logging-steps", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    only_one_run(out)
    assert log_steps(out)[-1]["step"] == 15
    model = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert len(model.config.id2label) == 5



@pytest.mark.slow
def test_two_processes_tag_with_a_decoder(tiny_decoder_dir, world_dir, tmp_path):
    from transformers import AutoModelForTokenClassification

    from ettin_ft.evaluation import tagging_metrics

    out = tmp_path / "tag"
    # 96 training sentences, 8 per process: one epoch is 96 / (2 × 8) = 6 steps only if both processes train.
    result = torchrun("tag", "--model", str(tiny_decoder_dir), "--data", str(world_dir / "entities_train.jsonl"),
                      "--eval-data", str(world_dir / "entities_test.jsonl"), "--per-device-train-batch-size", "8",
                      "--num-train-epochs", "1", "--logging-steps", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "final", "log_history.jsonl", "metrics.json",
                                                       "predictions.jsonl"]
    assert log_steps(out)[-1]["step"] == 6
    # every evaluation sentence once, predicted by the two processes together and scored as metrics.json says
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (world_dir / "entities_test.jsonl").read_text().splitlines()]
    assert [(row["tokens"], row["tags"]) for row in rows] == [(row["tokens"], row["tags"]) for row in expected]
    metrics = json.loads((out / "metrics.json").read_text())
    assert tagging_metrics([r["tags"] for r in rows], [r["predicted"] for r in rows])[0] == metrics["after"]
    assert type(AutoModelForTokenClassification.from_pretrained(out / "final")).__name__ == \
        "ModernBertDecoderForTokenClassification"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["dense", "sparse"])
def test_two_processes_dense_and_sparse(recipe, tiny_encoder_dir, world_dir, tmp_path):
    from sentence_transformers import SentenceTransformer, SparseEncoder

    out = tmp_path / recipe
    # 160 rows less 10 held out, 8 per process: one epoch is 150 // (2 × 8) = 9 steps only if both processes train
    # (sentence-transformers' sparse trainer would set the processes up again as one each).
    result = torchrun(recipe, "--model", str(tiny_encoder_dir), "--data", str(world_dir / "retrieval_train.jsonl"),
                      "--held-out", "10", "--per-device-train-batch-size", "8", "--num-train-epochs", "1",
                      "--logging-steps", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    only_one_run(out)
    assert log_steps(out)[-1]["step"] == 9
    model = (SentenceTransformer if recipe == "dense" else SparseEncoder)(str(out / "final"))
    width = 64 if recipe == "dense" else model.get_sentence_embedding_dimension()  # hidden size; vocabulary
    assert tuple(model.encode(["a question"]).shape) == (1, width)


@pytest.mark.slow
def test_two_processes_colbert(tiny_encoder_dir, world_dir, tmp_path):
    """sentence-transformers 6.3 cannot score a ColBERT loss through the DDP wrapper by itself
    (compat.expose_similarity_to_wrapped_losses)."""
    from sentence_transformers import MultiVectorEncoder

    out = tmp_path / "colbert"
    # 150 training rows, 8 per process: one epoch is 150 // (2 × 8) = 9 steps only if both processes train
    result = torchrun("colbert", "--model", str(tiny_encoder_dir), "--data", str(world_dir / "retrieval_train.jsonl"),
                      "--held-out", "10", "--document-length", "64", "--per-device-train-batch-size", "8",
                      "--num-train-epochs", "1", "--logging-steps", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    only_one_run(out)
    assert log_steps(out)[-1]["step"] == 9
    assert json.loads((out / "final" / "modules.json").read_text())[1]["type"] == "pylate.models.Dense.Dense"
    assert tuple(MultiVectorEncoder(str(out / "final")).encode_query(["a question"])[0].shape) == (32, 128)


@pytest.mark.slow
def test_two_processes_rerank_distilled_from_a_teacher(tiny_encoder_dir, tiny_teacher_dir, world_dir, tmp_path):
    """Each process scores its share of the pairs; the main process writes every pair's score, as one process
    scores them; then both train."""
    import torch
    from sentence_transformers import CrossEncoder

    out = tmp_path / "rerank"
    # the training pairs with 2 BM25 negatives each, 16 pointwise rows per process: one epoch is (pairs scored) //
    # (2 × 16) steps only if both processes train
    result = torchrun("rerank", "--model", str(tiny_encoder_dir), "--data", str(world_dir / "retrieval_train.jsonl"),
                      "--teacher", str(tiny_teacher_dir), "--mining-model", "bm25", "--num-negatives", "2",
                      "--held-out", "20", "--per-device-train-batch-size", "16", "--num-train-epochs", "1",
                      "--logging-steps", "1", "--max-seq-length", "64", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "final", "log_history.jsonl", "metrics.json", "teacher_scores.jsonl"], names
    written = [json.loads(line) for line in (out / "teacher_scores.jsonl").read_text().splitlines()]
    pairs = [(row["query"], row["document"]) for row in written]
    training = len((world_dir / "retrieval_train.jsonl").read_text().splitlines()) * 9 // 10
    assert len(pairs) == len(set(pairs)) >= training * 2
    alone = CrossEncoder(str(tiny_teacher_dir), device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    assert [row["score"] for row in written] == pytest.approx(alone.tolist(), abs=1e-5)
    assert log_steps(out)[-1]["step"] == len(pairs) // 32
    assert len(CrossEncoder(str(out / "final")).predict([("a question", "a passage")])) == 1


@pytest.mark.slow
def test_two_processes_sft_with_lora(tiny_decoder_dir, world_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "lora"
    # 320 conversations less 20 held out, unpacked, 10 per process: one epoch is 300 / (2 × 10) = 15 steps.
    result = torchrun("sft", "--model", str(tiny_decoder_dir), "--data", str(world_dir / "sft_train.jsonl"), "--lora",
                      "--packing", "false", "--held-out", "20", "--per-device-train-batch-size", "10",
                      "--gradient-accumulation-steps", "1",
                      "--num-train-epochs", "1", "--eval-generations", "2", "--max-new-tokens", "4",
                      "--logging-steps", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    only_one_run(out)
    assert log_steps(out)[-1]["step"] == 15
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["held_out_loss"] < metrics["before"]["held_out_loss"]
    assert AutoPeftModelForCausalLM.from_pretrained(out / "final").peft_config["default"].r == 32
    assert not (out / "merged").exists()  # without --merge (tests/test_sft.py: with it)


def test_a_failed_fine_tuning_run_keeps_its_checkpoint_and_resumes_to_the_uninterrupted_losses(
        tiny_encoder_dir, world_dir, tmp_path, monkeypatch, capsys):
    from transformers import Trainer

    from ettin_ft import dense

    def run(output_dir: Path, *extra: str) -> None:
        dense.main(["--model", str(tiny_encoder_dir), "--data", str(world_dir / "retrieval_train.jsonl"),
                    "--held-out", "10", "--per-device-train-batch-size", "16", "--max-steps", "8", "--save-steps", "3",
                    "--save-total-limit", "3",
                    "--logging-steps", "1", "--learning-rate", "1e-3", "--output-dir", str(output_dir), *extra])

    run(tmp_path / "full")
    save_checkpoint = Trainer._save_checkpoint

    def save_then_fail(trainer, *args, **kwargs):
        save_checkpoint(trainer, *args, **kwargs)
        if trainer.state.global_step == 6:
            raise RuntimeError("the machine went away")

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_fail)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="went away"):
        run(cut)
    assert sorted(p.name for p in cut.iterdir()) == ["checkpoint-3", "checkpoint-6"]
    monkeypatch.setattr(Trainer, "_save_checkpoint", save_checkpoint)
    with pytest.raises(SystemExit):  # a rerun without the flag would start over over another run's checkpoints
        run(cut)
    capsys.readouterr()
    run(cut, "--resume-from-checkpoint", "latest")
    assert capsys.readouterr().out.count("{'loss'") == 2  # steps 7 and 8 trained; 1-6 come from checkpoint-6
    full, resumed = log_steps(tmp_path / "full"), log_steps(cut)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-5)
    assert (cut / "final").is_dir() and (cut / "metrics.json").is_file()


@pytest.mark.slow
def test_two_processes_zeroshot_score_a_share_each_and_match_one(tiny_encoder_dir, world_dir, tmp_path, capsys):
    from .conftest import run_cli_main

    args = ["--model", str(tiny_encoder_dir), "--data", str(world_dir / "zeroshot"), "--limit", "10"]
    assert run_cli_main("zeroshot", capsys, *args, "--output-dir", str(tmp_path / "one"))[0] == 0
    result = torchrun("zeroshot", *args, "--output-dir", str(tmp_path / "two"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("average acc") == 1  # the main process reports and writes
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["items.jsonl", "metrics.json"]
    one, two = ([json.loads(line) for line in (tmp_path / name / "items.jsonl").read_text().splitlines()]
                for name in ("one", "two"))
    assert [(a["task"], a["index"], a["tokens"]) for a in one] == [(b["task"], b["index"], b["tokens"]) for b in two]
    assert all(a["loglik"] == pytest.approx(b["loglik"], abs=1e-4) for a, b in zip(one, two))
