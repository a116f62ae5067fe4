"""Distillation from a teacher's scores in the retrieval recipes, python -m ettin_ft.mine and the reranker's pooling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest

from .conftest import run_cli_main


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def candidate_data(world, count: int = 40, negatives: int = 3, scored: bool = True) -> list[dict]:
    """(query, positive, negatives[, scores]) rows from the world's retrieval pairs, the positive scored highest."""
    pairs = world.retrieval_pairs("train")[:count]
    rows = []
    for number, pair in enumerate(pairs):
        others = [pairs[(number + k) % len(pairs)]["positive"] for k in range(1, negatives + 1)]
        row = {"query": pair["query"], "positive": pair["positive"], "negatives": others}
        if scored:
            row["scores"] = [5.0] + [-1.0 - k for k in range(negatives)]
        rows.append(row)
    return rows


def teacher_predictions(tiny_teacher_dir: Path, pairs: list[tuple[str, str]]) -> list[float]:
    import torch
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_teacher_dir), device="cpu").predict(pairs, activation_fn=torch.nn.Identity()).tolist()


class Settings:
    """The four settings choose_loss reads."""

    def __init__(self, loss=None, teacher=None, teacher_scores=None):
        self.loss, self.teacher, self.teacher_scores = loss, teacher, teacher_scores


def test_the_loss_follows_the_scores_and_refuses_what_cannot_work():
    from ettin_ft.distillation import choose_loss
    from ettin_ft.errors import EttinError

    labels, scored = datasets.Dataset.from_dict({"query": ["q"]}), datasets.Dataset.from_dict({"scores": [[1.0]]})
    assert [choose_loss(r, Settings(), labels) for r in ("rerank", "dense", "sparse", "colbert")] == [
        "bce", "cmnrl", "mnrl", "contrastive"]
    assert [choose_loss(r, Settings(), scored) for r in ("rerank", "dense", "sparse", "colbert")] == [
        "mse", "margin-mse", "margin-mse", "distillation"]
    assert choose_loss("rerank", Settings(teacher="t"), labels) == "mse"
    assert choose_loss("dense", Settings(loss="kl", teacher_scores="f.jsonl"), labels) == "kl"
    for recipe, settings, rows, expected in [
        ("dense", Settings(loss="kl"), labels, "--loss kl learns from a teacher's scores"),
        ("rerank", Settings(loss="bce", teacher="t"), labels, "--loss bce does not learn from scores"),
        ("sparse", Settings(loss="cmnrl"), labels, "unknown --loss 'cmnrl' for sparse; expected auto or one of mnrl"),
    ]:
        with pytest.raises(EttinError, match=expected):
            choose_loss(recipe, settings, rows)


def test_candidate_rows_gather_negatives_and_check_the_scores():
    from ettin_ft.distillation import candidate_rows, loss_columns
    from ettin_ft.errors import EttinError

    triplets = datasets.Dataset.from_list([{"query": "q", "positive": "p", "negative": "n"}])
    assert candidate_rows(triplets, "x")[0] == {"query": "q", "positive": "p", "negatives": ["n"]}
    rows = candidate_rows(datasets.Dataset.from_list([{"query": "q", "positive": "p", "negatives": ["a", "b"],
                                                       "scores": [3, 1, 2]}]), "x")
    assert loss_columns(rows, True)[0] == {"query": "q", "positive": "p", "negative_1": "a", "negative_2": "b",
                                           "scores": [3, 1, 2]}
    assert loss_columns(rows, False).column_names == ["query", "positive", "negative_1", "negative_2"]
    with pytest.raises(EttinError, match=r"x row 1: 'scores' has 2 values for 3 candidates"):
        candidate_rows(datasets.Dataset.from_list([{"query": "q", "positive": "p", "negatives": ["a", "b"],
                                                    "scores": [3, 1]}]), "x")
    # n-tuples of one length: the most common number of negatives; rows with fewer are left out, rows with more cut
    uneven = candidate_rows(datasets.Dataset.from_list(
        [{"query": "q", "positive": "p", "negatives": ["a"], "scores": [1, 0]},
         {"query": "r", "positive": "s", "negatives": ["a", "b"], "scores": [2, 1, 0]},
         {"query": "t", "positive": "u", "negatives": ["a", "b"], "scores": [3, 2, 1]},
         {"query": "v", "positive": "w", "negatives": ["a", "b", "c"], "scores": [4, 3, 2, 1]}]), "x")
    assert loss_columns(uneven, True).to_list() == [
        {"query": q, "positive": p, "negative_1": "a", "negative_2": "b", "scores": scores}
        for q, p, scores in (("r", "s", [2, 1, 0]), ("t", "u", [3, 2, 1]), ("v", "w", [4, 3, 2]))]


def rows_ending_with(count: int, last_negatives: list, last_scores: list) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"query": ["q"] * count, "positive": ["p"] * count,
                                       "negatives": [["a", "b"]] * (count - 1) + [last_negatives],
                                       "scores": [[3.0, 2.0, 1.0]] * (count - 1) + [last_scores]})


@pytest.mark.parametrize("negatives, scores, expected", [
    (["a", " "], [3, 2, 1], "'negatives' must be a list of non-empty texts"),
    (["a", None], [3, 2, 1], "'negatives' must be a list of non-empty texts"),
    (["a", "b"], [3, None, 1], "'scores' must be a list of numbers"),
    (["a"], [3, 2, 1], "'scores' has 3 values for 2 candidates"),
])
def test_candidate_rows_name_the_bad_row(negatives, scores, expected):
    from ettin_ft.distillation import candidate_rows
    from ettin_ft.errors import EttinError

    with pytest.raises(EttinError, match=rf"x row 3: {re.escape(expected)}"):
        candidate_rows(rows_ending_with(3, negatives, scores), "x")


def test_candidate_rows_past_the_first_checked_batch():
    """Rows are checked in Arrow batches of 100,000: a bad row after the first batch is still found and named by its
    number, and good rows pass."""
    from ettin_ft.distillation import candidate_rows
    from ettin_ft.errors import EttinError

    count = 100_003
    assert candidate_rows(rows_ending_with(count, ["a", "b"], [3, 2, 1]), "x")[-1]["scores"] == [3, 2, 1]
    with pytest.raises(EttinError, match=rf"x row {count}: 'scores' has 2 values for 3 candidates"):
        candidate_rows(rows_ending_with(count, ["a", "b"], [3, 2]), "x")


def test_a_resumed_run_reads_its_scores_back_and_never_loads_the_teacher(tmp_path):
    from types import SimpleNamespace

    from ettin_ft.distillation import SCORES_FILE, candidate_rows, scored_rows, write_scores

    rows = candidate_rows(datasets.Dataset.from_list([{"query": "q", "positive": "p", "negatives": ["a"]}]), "x")
    write_scores(str(tmp_path / SCORES_FILE), {("q", "p"): 2.5, ("q", "a"): -1.0})
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "checkpoint-2"),
                           per_device_eval_batch_size=8)
    # a teacher that cannot be loaded: reading the folder's file is the only way this returns
    config = Settings(teacher=str(tmp_path / "no-such-teacher"))
    assert scored_rows(config, rows, args, runtime=None)["scores"] == [[2.5, -1.0]]
    from_file = Settings(teacher_scores=str(tmp_path / SCORES_FILE))
    assert scored_rows(from_file, rows, SimpleNamespace(output_dir=None, resume_from_checkpoint=None,
                                                        per_device_eval_batch_size=8), None)["scores"] == [[2.5, -1.0]]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["rerank", "dense", "sparse", "colbert"])
def test_scores_that_do_not_match_their_candidates_are_one_line(recipe, tiny_encoder_dir, world, tmp_path, capsys):
    rows = candidate_data(world, count=20)
    rows[7]["scores"] = rows[7]["scores"][:2]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    # held-out rows are split off (shuffled) after the check: the row is named by its place in the file
    status, err, _ = run_cli_main(recipe, capsys, "--model", str(tiny_encoder_dir), "--data", str(data),
                                  "--output-dir", str(tmp_path / "out"), "--held-out", "2")
    assert status == 2 and err == [f"error: {data} row 8: 'scores' has 2 values for 4 candidates; expected one per "
                                   "candidate, the positive's first, then each negative's"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_prints_the_loss_it_chose(tiny_encoder_dir, world, tmp_path, capsys, tiny_teacher_dir):
    scored = write_jsonl(tmp_path / "scored.jsonl", candidate_data(world, count=20))
    unscored = write_jsonl(tmp_path / "unscored.jsonl", candidate_data(world, count=20, scored=False))
    for recipe, data, extra, loss in [("dense", scored, [], "margin-mse"), ("dense", unscored, [], "cmnrl"),
                                      ("rerank", unscored, ["--teacher", str(tiny_teacher_dir)], "mse"),
                                      ("rerank", unscored, [], "bce")]:
        status, err, out = run_cli_main(recipe, capsys, "--model", str(tiny_encoder_dir), "--data", str(data),
                                        "--output-dir", str(tmp_path / "out"), "--dry-run", *extra)
        assert status == 0, err[-3:]
        assert f"\nloss: {loss}\n" in out, (recipe, extra)
    assert not (tmp_path / "out").exists()  # a dry run scores nothing and writes nothing


@pytest.mark.slow
def test_mine_writes_negatives_and_the_teachers_scores(world, tmp_path, capsys, tiny_teacher_dir):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", world.retrieval_pairs("train")[:30])
    status, err, out = run_cli_main("mine", capsys, "--data", str(pairs), "--mining-model", "bm25", "--num-negatives",
                                    "2", "--teacher", str(tiny_teacher_dir), "--output", str(tmp_path / "scored.jsonl"))
    assert status == 0, err[-3:]
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(set(row) == {"query", "positive", "negatives", "scores"} for row in rows)
    assert all(1 <= len(row["negatives"]) <= 2 and len(row["scores"]) == 1 + len(row["negatives"]) for row in rows)
    pairs_of = [(row["query"], d) for row in rows for d in [row["positive"], *row["negatives"]]]
    assert [s for row in rows for s in row["scores"]] == pytest.approx(teacher_predictions(tiny_teacher_dir, pairs_of),
                                                                      abs=1e-5)
    assert f"wrote 30 rows to {tmp_path / 'scored.jsonl'}" in out


@pytest.mark.slow
def test_a_reranker_distils_from_a_teacher_and_from_its_file_alike(tiny_encoder_dir, world, tmp_path, capsys,
                                                                    tiny_teacher_dir):
    """--teacher scores every pair once into teacher_scores.jsonl; --teacher-scores on that file trains the same
    model; the MSE to the teacher falls; the saved head pools [CLS] and outputs raw scores."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig

    data = write_jsonl(tmp_path / "rows.jsonl", candidate_data(world, count=60, scored=False))
    common = ["--model", str(tiny_encoder_dir), "--data", str(data), "--held-out", "0", "--max-steps", "25",
              "--per-device-train-batch-size", "16", "--learning-rate", "1e-3", "--logging-steps", "1",
              "--save-strategy", "no", "--max-seq-length", "64"]
    status, err, _ = run_cli_main("rerank", capsys, *common, "--teacher", str(tiny_teacher_dir), "--output-dir",
                                  str(tmp_path / "a"))
    assert status == 0, err[-3:]
    written = [json.loads(line) for line in (tmp_path / "a" / "teacher_scores.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    pairs = list(dict.fromkeys((r["query"], d) for r in rows for d in [r["positive"], *r["negatives"]]))
    assert [(w["query"], w["document"]) for w in written] == pairs
    assert [w["score"] for w in written] == pytest.approx(teacher_predictions(tiny_teacher_dir, pairs), abs=1e-5)
    status, err, _ = run_cli_main("rerank", capsys, *common, "--teacher-scores",
                                  str(tmp_path / "a" / "teacher_scores.jsonl"), "--output-dir", str(tmp_path / "b"))
    assert status == 0, err[-3:]
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "log_history.jsonl").read_text().splitlines())
               if "loss" in r] for run in ("a", "b")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert sum(losses[0][-5:]) < sum(losses[0][:5]) / 2, losses[0]
    assert not (tmp_path / "b" / "teacher_scores.jsonl").exists()
    assert AutoConfig.from_pretrained(tmp_path / "a" / "final").classifier_pooling == "cls"
    student = CrossEncoder(str(tmp_path / "a" / "final"), device="cpu")
    assert type(student.activation_fn).__name__ == "Identity"


@pytest.mark.slow
def test_the_release_datas_rows_train_as_scored_candidates_do(tiny_encoder_dir, world, tmp_path, capsys):
    """(query, document, label) rows whose labels are a teacher's scores (cross-encoder/ettin-reranker-v1-data's
    shape) train with --loss mse exactly as the same scores given as candidate rows; bce refuses such labels."""
    from sentence_transformers import CrossEncoder

    scored = candidate_data(world, count=30)
    candidates = write_jsonl(tmp_path / "candidates.jsonl", scored)
    release = write_jsonl(tmp_path / "release.jsonl", [
        {"query": row["query"], "document": document, "label": score}
        for row in scored for document, score in zip([row["positive"], *row["negatives"]], row["scores"])])
    common = ["--model", str(tiny_encoder_dir), "--held-out", "0", "--max-steps", "8", "--per-device-train-batch-size",
              "16", "--learning-rate", "1e-3", "--logging-steps", "1", "--save-strategy", "no", "--max-seq-length", "64"]
    status, err, _ = run_cli_main("rerank", capsys, *common, "--data", str(release), "--output-dir", str(tmp_path / "bce"))
    assert status == 2 and err == [f"error: {release}: labels from -3 to 5, but bce takes labels from 0 to 1; for "
                                   "labels that are a teacher's scores give --loss mse"]
    assert not (tmp_path / "bce").exists()
    status, err, _ = run_cli_main("rerank", capsys, *common, "--data", str(release), "--loss", "margin-mse",
                                  "--output-dir", str(tmp_path / "bce"))
    assert status == 2 and err[-1].startswith("error: --loss margin-mse: (query, passage, label) rows train with bce")
    assert not (tmp_path / "bce").exists()
    for name, data, loss in (("release", release, ["--loss", "mse"]), ("candidates", candidates, [])):
        status, err, _ = run_cli_main("rerank", capsys, *common, "--data", str(data), *loss, "--output-dir",
                                      str(tmp_path / name))
        assert status == 0, err[-3:]
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "log_history.jsonl").read_text().splitlines())
               if "loss" in r] for run in ("release", "candidates")]
    assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert type(CrossEncoder(str(tmp_path / "release" / "final"), device="cpu").activation_fn).__name__ == "Identity"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["dense", "sparse", "colbert"])
def test_bi_encoders_distil_from_scored_rows(recipe, tiny_encoder_dir, world, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", candidate_data(world, count=40))
    length = ["--document-length", "64"] if recipe == "colbert" else ["--max-seq-length", "64"]
    status, err, _ = run_cli_main(recipe, capsys, "--model", str(tiny_encoder_dir), "--data", str(data), "--held-out",
                                  "0", "--max-steps", "3", "--per-device-train-batch-size", "8", "--logging-steps", "1",
                                  "--save-strategy", "no", "--output-dir", str(tmp_path / "out"), *length)
    assert status == 0, err[-3:]
    import yaml

    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["loss"] == {
        "dense": "margin-mse", "sparse": "margin-mse", "colbert": "distillation"}[recipe]
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "out" / "log_history.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(losses) == 3 and all(loss == loss and abs(loss) < 1e6 for loss in losses)


def test_the_ettin_reranker_preset_is_found_by_its_path_and_its_name(tmp_path, monkeypatch):
    from ettin_ft.rerank import RerankConfig, release

    from ettin_ft.config import config_file, read_yaml

    monkeypatch.chdir(tmp_path)  # outside a checkout: the shipped file answers
    preset = read_yaml(config_file("configs/rerank/ettin-reranker.yaml"))
    assert preset == read_yaml(config_file("rerank/ettin-reranker"))
    assert preset["loss"] == "mse" and preset["pooling"] == "cls" and preset["learning_rate"] == 1.5e-5
    config, args = release(str(tmp_path / "run"), **preset)
    assert isinstance(config, RerankConfig) and (config.loss, config.pooling, args.per_device_train_batch_size,
                                                 args.learning_rate, args.seed) == ("mse", "cls", 192, 1.5e-5, 12)


@pytest.mark.slow
def test_bi_encoder_teachers_score_as_their_own_similarity(tiny_encoder_dir, tmp_path):
    """A dense and a ColBERT teacher score each pair as the model's own similarity of its query and document."""
    from sentence_transformers import MultiVectorEncoder, SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from ettin_ft.colbert_format import new_colbert
    from ettin_ft.hub import locate
    from ettin_ft.distillation import teacher_scores_of
    from ettin_ft.runtime import choose_runtime

    transformer = Transformer(str(tiny_encoder_dir))
    SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                        device="cpu").save_pretrained(str(tmp_path / "dense"))
    new_colbert(locate(str(tiny_encoder_dir)), "cpu", {}).save_pretrained(str(tmp_path / "colbert"))
    pairs = [("where was Ann born?", "Ann was born in Oslo."), ("where was Ann born?", "Bo works in Rome."),
             ("what does Bo do?", "Bo works in Rome.")]
    runtime = choose_runtime("cpu", "fp32", "sdpa")
    for kind, model_class in (("dense", SentenceTransformer), ("colbert", MultiVectorEncoder)):
        model = model_class(str(tmp_path / kind), device="cpu")
        expected = model.similarity_pairwise(model.encode_query([q for q, _ in pairs]),
                                             model.encode_document([d for _, d in pairs]))
        scores = teacher_scores_of(str(tmp_path / kind), pairs, runtime, batch_size=2)
        assert list(scores) == pairs and list(scores.values()) == pytest.approx(expected.tolist(), abs=1e-5), kind


def test_a_teacher_that_cannot_be_found_is_one_line_before_anything_runs(world, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", world.retrieval_pairs("train")[:10])
    for module, output in (("mine", ["--output", str(tmp_path / "out.jsonl")]),
                           ("dense", ["--model", "no-such-model", "--output-dir", str(tmp_path / "out")])):
        status, err, _ = run_cli_main(module, capsys, "--data", str(pairs), "--teacher", str(tmp_path / "no-teacher"),
                                      *output)
        assert status == 2 and len(err) == 1 and err[0].startswith(f"error: --teacher {tmp_path / 'no-teacher'}: ")
        assert "local cross-encoder, dense, sparse or ColBERT folder" in err[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.jsonl").exists()
