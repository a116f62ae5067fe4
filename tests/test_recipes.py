"""The four encoder recipes: run from Python and from the command line on the synthetic world."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import run_cli_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world_dir(world100_dir) -> Path:
    return world100_dir


@pytest.fixture(scope="module")
def pretrained_encoder(pretrained_tiny) -> Path:
    return pretrained_tiny("encoder")


def assert_nanobeir_matches_beir(metrics, metric_names=("ndcg@10", "mrr@10")):
    for stage in ("before", "after"):
        for name in metric_names:
            assert metrics[stage][f"nanobeir_{name}"] == pytest.approx(metrics[stage][name]), (stage, name, metrics)


def common(output_dir, steps, batch=16, lr=5e-4):
    return dict(output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0)


def logged_losses(output_dir):
    rows = [json.loads(l) for l in (Path(output_dir) / "log_history.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def check_run(output_dir, metric="ndcg@10"):
    metrics = json.loads((Path(output_dir) / "metrics.json").read_text())
    assert metrics["after"][metric] > metrics["before"][metric], metrics
    losses = logged_losses(output_dir)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    assert (Path(output_dir) / "config.yaml").exists()
    return metrics


@pytest.mark.slow
def test_dense_from_python(pretrained_encoder, world_dir, nanobeir_copy, tmp_path):
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments

    from ettin_ft.dense import DenseConfig, train_dense

    config = DenseConfig(model=str(pretrained_encoder), data=str(world_dir / "retrieval_train.jsonl"), held_out=20,
                         eval_beir=str(world_dir / "retrieval_eval"), eval_nanobeir="scifact",
                         nanobeir_dataset_id=nanobeir_copy)
    args = SentenceTransformerTrainingArguments(**common(tmp_path / "dense", steps=30, lr=3e-4), batch_sampler="no_duplicates")
    model = train_dense(config, args)
    metrics = check_run(tmp_path / "dense")
    assert set(metrics["after"]) >= {"ndcg@10", "mrr@10", "recall@100", "held_out_ndcg@10", "held_out_mrr@10"}
    assert_nanobeir_matches_beir(metrics, ("ndcg@10", "mrr@10", "recall@100"))
    reloaded = SentenceTransformer(str(tmp_path / "dense" / "final"), device="cpu")
    texts = ["Where was Alice born?", "Alice Rae Ingram was born in Lisbon."]
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True), reloaded.encode(texts, convert_to_tensor=True))
    assert (tmp_path / "dense" / "final" / "README.md").exists()  # the library's model card


@pytest.mark.slow
def test_a_decoder_embedder_is_mean_pooled_unless_asked_for_its_last_token(tiny_decoder_dir):
    """Mean pooling for decoders too (a tiny decoder's last token barely learns: BENCHMARKS.md, decoder_pooling.py)."""
    from ettin_ft.dense import DenseConfig, build_embedder
    from ettin_ft.runtime import choose_runtime

    for pooling, mode in (("auto", "mean"), ("lasttoken", "lasttoken")):
        model = build_embedder(DenseConfig(model=str(tiny_decoder_dir), pooling=pooling), choose_runtime("cpu", "fp32"))
        assert model[1].get_config_dict()["pooling_mode"] == mode, (pooling, model[1].get_config_dict())


@pytest.mark.slow  # 150 SPLADE steps and two evaluations
def test_sparse_from_python(pretrained_encoder, world_dir, nanobeir_copy, tmp_path):
    from sentence_transformers.sparse_encoder import SparseEncoder, SparseEncoderTrainingArguments

    from ettin_ft.sparse import SparseConfig, train_sparse

    config = SparseConfig(model=str(pretrained_encoder), data=str(world_dir / "retrieval_train.jsonl"),
                          eval_beir=str(world_dir / "retrieval_eval"), eval_nanobeir="scifact",
                          nanobeir_dataset_id=nanobeir_copy)
    args = SparseEncoderTrainingArguments(**common(tmp_path / "sparse", steps=150, batch=32, lr=5e-4),
                                          batch_sampler="no_duplicates")
    model = train_sparse(config, args)
    metrics = check_run(tmp_path / "sparse")
    assert metrics["after"]["query_active_dims"] > 0 and metrics["after"]["corpus_active_dims"] > 0
    assert_nanobeir_matches_beir(metrics)
    reloaded = SparseEncoder(str(tmp_path / "sparse" / "final"), device="cpu")
    texts = ["Where was Alice born?"]
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True).to_dense(),
                               reloaded.encode(texts, convert_to_tensor=True).to_dense())


@pytest.mark.slow
def test_colbert_from_python(pretrained_encoder, world_dir, tmp_path):
    """Trains, evaluates, and publishes a folder that sentence-transformers reloads to the same embeddings (PyLate
    too: tests/test_pylate_compat.py)."""
    from sentence_transformers import MultiVectorEncoder, MultiVectorEncoderTrainingArguments

    from ettin_ft.colbert import ColbertConfig, train_colbert

    config = ColbertConfig(model=str(pretrained_encoder), data=str(world_dir / "retrieval_train.jsonl"),
                           eval_beir=str(world_dir / "retrieval_eval"), document_length=96)
    model = train_colbert(config, MultiVectorEncoderTrainingArguments(**common(tmp_path / "colbert", steps=25, lr=1e-3)))
    check_run(tmp_path / "colbert")
    assert all(math.isfinite(loss) for loss in logged_losses(tmp_path / "colbert"))
    reloaded = MultiVectorEncoder(str(tmp_path / "colbert" / "final"), device="cpu")
    texts = ["Where was Alice Rae Ingram born?", "Alice Rae Ingram was born in Lisbon."]
    for encode in ("encode_query", "encode_document"):
        for a, b in zip(getattr(model, encode)(texts), getattr(reloaded, encode)(texts)):
            torch.testing.assert_close(a, b)


@pytest.mark.release  # BM25 mining and two reranking evaluations
def test_rerank_from_python_with_bm25_mining(pretrained_encoder, world_dir, nanobeir_copy, tmp_path):
    """Runs, evaluates before/after and reloads identically. (A tiny cross-encoder needs hundreds of steps
    on many different names before it matches them; tests/test_quickstart.py checks that it then improves.)"""
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainingArguments

    from ettin_ft.rerank import RerankConfig, train_rerank

    config = RerankConfig(model=str(pretrained_encoder), data=str(world_dir / "retrieval_train.jsonl"),
                          mining_model="bm25", num_negatives=3, eval_beir=str(world_dir / "retrieval_eval"),
                          eval_nanobeir="scifact", nanobeir_dataset_id=nanobeir_copy)
    model = train_rerank(config, CrossEncoderTrainingArguments(**common(tmp_path / "rerank", steps=20, lr=2e-4)))
    metrics = json.loads((tmp_path / "rerank" / "metrics.json").read_text())
    assert set(metrics["before"]) == set(metrics["after"]) == {
        "ndcg@10", "mrr@10", "recall@100", "nanobeir_ndcg@10", "nanobeir_mrr@10", "held_out_ndcg@10", "held_out_mrr@10",
        "held_out_recall@100"}
    assert_nanobeir_matches_beir(metrics)  # the same BM25 top 100, reranked by the same model
    # recall@100 is the BM25 first stage's, which reranking keeps: the share of relevant documents in BM25's top 100
    from ettin_ft.data.loading import load_beir
    from ettin_ft.evaluation import BM25

    split = load_beir(str(world_dir / "retrieval_eval"), "test")
    bm25 = BM25(split.documents())
    recalls = [len({doc for doc, _ in bm25.search(split.queries[q], 100)} & set(relevant)) / len(relevant)
               for q, relevant in split.qrels.items()]
    assert metrics["before"]["recall@100"] == metrics["after"]["recall@100"] == pytest.approx(sum(recalls) / len(recalls))
    assert all(math.isfinite(loss) for loss in logged_losses(tmp_path / "rerank"))
    reloaded = CrossEncoder(str(tmp_path / "rerank" / "final"), device="cpu")
    pairs = [("Where was Alice born?", "Alice was born in Lisbon."), ("Where was Alice born?", "Bruno works here.")]
    assert model.predict(pairs) == pytest.approx(reloaded.predict(pairs), abs=1e-5)


def test_new_layers_start_from_the_seed(pretrained_encoder, world_dir, tmp_path, capsys):
    """ColBERT's projection is new: with the same --seed two runs start (and so evaluate "before") alike."""
    from sentence_transformers import MultiVectorEncoderTrainingArguments, SentenceTransformerTrainingArguments

    from ettin_ft.colbert import ColbertConfig, train_colbert

    config = ColbertConfig(model=str(pretrained_encoder), data=str(world_dir / "retrieval_train.jsonl"))
    # the second takes the arguments class that ettin-ft's ColBERT took before sentence-transformers 6
    built = [train_colbert(config, arguments(output_dir=str(tmp_path), seed=seed, use_cpu=True), dry_run=True)[1].linear.weight
             for arguments, seed in ((MultiVectorEncoderTrainingArguments, 3), (SentenceTransformerTrainingArguments, 3),
                                     (MultiVectorEncoderTrainingArguments, 4))]
    assert torch.equal(built[0], built[1]) and not torch.equal(built[0], built[2])


def test_the_seed_chooses_the_batches(pretrained_encoder, world_dir, tmp_path, capsys):
    """Dense has no new layers: only the batch order can differ between seeds, and it must (sentence-transformers
    5.3 gave every seed the same batches; 6.2 and later seed the sampler with --seed)."""
    losses = []
    for run, seed in enumerate((1, 1, 2)):
        out = tmp_path / f"run{run}"
        status, err, _ = run_cli_main("dense", capsys, "--model", str(pretrained_encoder), "--data",
                                      str(world_dir / "retrieval_train.jsonl"), "--output-dir", str(out), "--seed",
                                      str(seed), "--max-steps", "4", "--per-device-train-batch-size", "8",
                                      "--logging-steps", "1", "--report-to", "none", "--batch-sampler", "no_duplicates")
        assert status == 0, err[-3:]
        losses.append(logged_losses(out))
    assert losses[0] == losses[1] and losses[0] != losses[2], losses


def test_bm25_miner_labels_and_margin(world):
    """Negatives score below 95% of the positive; near-duplicates of the positive are left out; as labelled pairs
    each query has its positive (1), then its negatives (0)."""
    import datasets

    from ettin_ft.evaluation import BM25
    from ettin_ft.mining import as_labelled_pairs, bm25_negatives

    rows = world.retrieval_pairs("train")[:40]
    mined = bm25_negatives(datasets.Dataset.from_list(rows), 3)
    assert mined.column_names == ["query", "positive", "negatives"]
    passages = list(dict.fromkeys(r["positive"] for r in rows))
    bm25 = BM25({str(i): p for i, p in enumerate(passages)})
    for row, found in zip(rows, mined):
        assert (found["query"], found["positive"]) == (row["query"], row["positive"]) and 1 <= len(found["negatives"]) <= 3
        scores = bm25.scores(row["query"])
        positive_score = scores[passages.index(row["positive"])]
        for passage in found["negatives"]:
            assert passage != row["positive"] and scores[passages.index(passage)] < 0.95 * positive_score
    labelled = as_labelled_pairs(mined)
    assert labelled.column_names == ["query", "passage", "label"]
    assert len(labelled) == sum(1 + len(n) for n in mined["negatives"]) and sum(labelled["label"]) == len(rows)
    assert labelled[0] == {"query": rows[0]["query"], "passage": rows[0]["positive"], "label": 1}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["dense", "sparse", "colbert", "rerank"])
def test_command_line(recipe, pretrained_encoder, world_dir, tmp_path):
    extra = {"rerank": ["--mining-model", "bm25"], "colbert": ["--document-length", "64"]}.get(recipe, [])
    result = subprocess.run(
        [sys.executable, "-m", f"ettin_ft.{recipe}", "--model", str(pretrained_encoder), "--data",
         str(world_dir / "retrieval_train.jsonl"), "--output-dir", str(tmp_path / recipe), "--max-steps", "3",
         "--per-device-train-batch-size", "8", "--held-out", "10", *extra],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / recipe / "final").is_dir()
    metrics = json.loads((tmp_path / recipe / "metrics.json").read_text())
    assert metrics.keys() == {"before", "after"}
    # --held-out means one thing in every recipe: rows split off, evaluated before and after as a retrieval task
    for side in ("before", "after"):
        held_out = {k: v for k, v in metrics[side].items() if not k.endswith("active_dims")}
        assert held_out.keys() == {"held_out_ndcg@10", "held_out_mrr@10", "held_out_recall@100"}, metrics
        assert 0 < held_out["held_out_mrr@10"] <= held_out["held_out_ndcg@10"] <= 1, metrics


def test_labelled_rows_are_held_out_by_whole_queries():
    """A query leaves training with all its labelled passages (so it can be ranked), until --held-out rows are out;
    the same rows in every run."""
    import datasets

    from ettin_ft.recipe_data import split_held_out
    from ettin_ft.rerank import RerankConfig

    rows = datasets.Dataset.from_list([{"query": f"q{q}", "passage": f"p{q}-{i}", "label": int(i == 0)}
                                       for q in range(30) for i in range(4)])
    train, held_out = split_held_out(RerankConfig(held_out=10), rows, group="query")
    queries = set(held_out["query"])
    assert len(held_out) == 12 and len(queries) == 3 and not queries & set(train["query"])
    assert len(train) + len(held_out) == len(rows) and sum(held_out["label"]) == 3
    assert split_held_out(RerankConfig(held_out=10), rows, group="query")[1]["query"] == held_out["query"]


def test_held_out_rows_become_a_retrieval_task():
    """Each query's own positive is judged relevant (labelled rows: label 1; distillation: the teacher's best),
    every held-out passage (hard negatives included) is in the corpus, and nothing else is judged."""
    from ettin_ft.evaluation import held_out_as_beir

    def judged(split):
        return {split.queries[q]: {split.corpus[d]["text"] for d in docs} for q, docs in split.qrels.items()}

    pairs = held_out_as_beir([{"query": "q1", "positive": "p1", "negative": "n1"}, {"query": "q2", "positive": "p2", "negative": "p1"}])
    assert judged(pairs) == {"q1": {"p1"}, "q2": {"p2"}}
    assert sorted(d["text"] for d in pairs.corpus.values()) == ["n1", "p1", "p2"]
    labelled = held_out_as_beir([{"query": "q1", "passage": "a", "label": 1}, {"query": "q1", "passage": "b", "label": 0},
                               {"query": "q2", "passage": "b", "label": 0}])
    assert judged(labelled) == {"q1": {"a"}} and len(labelled.corpus) == 2  # q2 has no positive: not a query
    distillation = held_out_as_beir([{"query": "q1", "documents": ["a", "b", "c"], "scores": [0.1, 0.9, 0.5]}])
    assert judged(distillation) == {"q1": {"b"}} and len(distillation.corpus) == 3


def test_bad_inputs(pretrained_encoder, tiny_decoder_dir, world_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    status, err, _ = run_cli_main("dense", capsys, "--model", str(pretrained_encoder), "--data",
                           str(world_dir / "rerank_train.jsonl"), "--output-dir", out, "--column-mapping", "passage:answer")
    assert status == 2 and "missing column(s) positive" in err[-1]
    (tmp_path / "empty.jsonl").write_text("")
    status, err, _ = run_cli_main("sparse", capsys, "--model", str(pretrained_encoder), "--data", str(tmp_path / "empty.jsonl"),
                           "--output-dir", out)
    assert status == 2 and err[-1].endswith("empty.jsonl: no rows; expected a non-empty dataset")
    status, err, _ = run_cli_main("colbert", capsys, "--model", "no-such-size", "--data",
                                  str(world_dir / "retrieval_train.jsonl"), "--output-dir", out)
    assert status == 2 and "model 'no-such-size' is neither" in err[-1]
    status, err, _ = run_cli_main("sparse", capsys, "--model", str(tiny_decoder_dir), "--output-dir", out)
    assert status == 2 and "is an Ettin decoder; the sparse recipe needs an encoder" in err[-1]
    training = ("--model", str(pretrained_encoder), "--data", str(world_dir / "retrieval_train.jsonl"), "--output-dir", out)
    status, err, _ = run_cli_main("dense", capsys, *training, "--eval-nanobeir", "scifact,nosuchset")
    assert status == 2 and len(err) == 1 and "expected 'all' or NanoBEIR names" in err[0], err  # before loading
    assert not Path(out).exists()


@pytest.mark.parametrize("offline", ["0", "1"], ids=["unreachable network", "HF_HUB_OFFLINE=1"])
def test_the_hub_out_of_reach_is_one_line(offline, pretrained_encoder, world_dir, tmp_path, capsys, monkeypatch):
    """No network here: an unreachable hub and HF_HUB_OFFLINE=1 (what air-gapped clusters set) fail alike."""
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    out = str(tmp_path / "out")
    training = ("--model", str(pretrained_encoder), "--data", str(world_dir / "retrieval_train.jsonl"), "--output-dir", out)
    cases = [
        (("rerank", "--model", "150m", "--output-dir", out), "jhu-clsp/ettin-encoder-150m"),
        (("colbert", *training, "--eval-nanobeir", "scifact"), "cannot reach sentence-transformers/NanoBEIR-en"),
        (("dense", *training, "--eval-nanobeir", "scifact"), "cannot reach sentence-transformers/NanoBEIR-en"),
        (("dense", "--model", str(pretrained_encoder), "--data", "sentence-transformers/all-nli", "--output-dir", out),
         "cannot load dataset 'sentence-transformers/all-nli'"),
        (("sparse", *training, "--push-to-hub", "--hub-model-id", "me/splade"), "--push-to-hub: "),
    ]
    for (command, *arguments), expected in cases:
        status, err, _ = run_cli_main(command, capsys, *arguments)
        assert status == 2 and len(err) == 1 and expected in err[0], (command, err)
        assert ("HF_HUB_OFFLINE is set" in err[0]) == (offline == "1"), err
        assert not Path(out).exists()


def test_dry_run_prints_config_model_and_sample(pretrained_encoder, world_dir, tmp_path, capsys):
    status, _, out = run_cli_main("dense", capsys, "--model", str(pretrained_encoder), "--data",
                         str(world_dir / "retrieval_train.jsonl"), "--output-dir", str(tmp_path / "d"), "--dry-run")
    assert status == 0
    assert "learning_rate: 8.0e-05" in out or "learning_rate: 8e-05" in out
    assert "SentenceTransformer" in out and "sample:" in out and not (tmp_path / "d").exists()


@pytest.mark.parametrize("name, module, config_class, arguments_class, learning_rate, flags", [
    ("dense", "dense", "DenseConfig", "SentenceTransformerTrainingArguments", 8e-5, []),
    ("colbert", "colbert", "ColbertConfig", "MultiVectorEncoderTrainingArguments", 8e-5, []),
    ("sparse", "sparse", "SparseConfig", "SparseEncoderTrainingArguments", 2e-5, []),
    ("rerank", "rerank", "RerankConfig", "CrossEncoderTrainingArguments", 2e-5, []),
    ("sft", "sft", "SftRecipeConfig", "SFTConfig", 2e-5, []),
    ("lora", "sft", "SftRecipeConfig", "SFTConfig", 2e-4, ["--lora"]),
])
def test_a_recipes_yaml_is_its_defaults(name, module, config_class, arguments_class, learning_rate, flags):
    import importlib

    from ettin_ft.config import to_dict
    from ettin_ft.recipe import parse_recipe

    recipe = importlib.import_module(f"ettin_ft.{module}")

    def parsed(argv):
        defaults = recipe.release_defaults(argv) if module == "sft" else recipe.DEFAULTS
        config, args, _ = parse_recipe(getattr(recipe, config_class), getattr(recipe, arguments_class), defaults,
                                       argv, name, "")
        return config, args

    config, args = parsed(flags)
    assert config.model == "150m" and args.learning_rate == learning_rate and args.output_dir == f"runs/{name}"
    # the release data is resolved when the rows load, so its data_config or row limit never reach --data
    assert (config.data, config.data_config, config.max_samples) == (None, None, None)
    from_file = to_dict(*parsed(["--config", str(REPO / "configs" / f"{name}.yaml")]))
    release_data = ("data", "data_config", "max_samples")
    assert {k: v for k, v in from_file.items() if k not in release_data} == {
        k: v for k, v in to_dict(config, args).items() if k not in release_data}


@pytest.mark.parametrize("recipe, model, dataset", [
    ("dense", "encoder", "sentence-transformers/msmarco-co-condenser-margin-mse-sym-mnrl-mean-v1"),
    ("sparse", "encoder", "sentence-transformers/natural-questions"),
    ("colbert", "encoder", "lightonai/ms-marco-en-bge"),
    ("rerank", "encoder", "sentence-transformers/gooaq"),
    ("sft", "decoder", "trl-lib/Capybara"),
])
def test_without_data_a_recipe_reaches_for_the_release_data(recipe, model, dataset, tiny_encoder_dir, tiny_decoder_dir,
                                                           tmp_path, capsys):
    folder = tiny_encoder_dir if model == "encoder" else tiny_decoder_dir
    status, err, _ = run_cli_main(recipe, capsys, "--model", str(folder), "--output-dir", str(tmp_path / "run"))
    assert status == 2 and len(err) == 1 and f"'{dataset}'" in err[0], err  # the hub is unreachable here
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_recipe_killed_mid_training_leaves_no_finished_run_and_reruns_in_place(pretrained_encoder, world_dir, tmp_path):
    import os
    import signal

    out = tmp_path / "dense"
    command = [sys.executable, "-m", "ettin_ft.dense", "--model", str(pretrained_encoder), "--data",
               str(world_dir / "retrieval_train.jsonl"), "--output-dir", str(out), "--per-device-train-batch-size", "8",
               "--held-out", "10", "--logging-steps", "1"]
    process = subprocess.Popen(command + ["--max-steps", "100000"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    shown = ""
    while "| 5/100000" not in shown:  # the progress bar shows training is under way
        chunk = os.read(process.stderr.fileno(), 4096).decode(errors="replace")
        assert chunk, shown[-3000:]
        shown += chunk
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert out.is_dir() and not (out / "final").exists() and not (out / "metrics.json").exists()
    rerun = subprocess.run(command + ["--max-steps", "3"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / "final").is_dir() and json.loads((out / "metrics.json").read_text()).keys() == {"before", "after"}
