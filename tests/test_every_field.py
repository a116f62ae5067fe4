"""No flag is silently ignored: every field of every ettin-ft command's config (not the libraries' own
TrainingArguments) is read by the runs it configures, or is refused when set.

Each command runs for real, on tiny models and data, in the few configurations that between them give every field
something to do (LoRA on and off, contrastive and distillation ColBERT, ...), while every read of a config field
is recorded. Reads by whole-config copies, dumps and the parser itself (config.yaml, the model card) are not uses
and are not counted.
"""

import contextlib
import dataclasses
import importlib
import json
import sys
from pathlib import Path

import pytest

from .conftest import run_cli_main, shared_data

NOT_USES = (str(Path(dataclasses.__file__)), str(Path(__file__).resolve().parents[1] / "ettin_ft" / "config.py"))


@contextlib.contextmanager
def recording_reads(config_class):
    """Record the names of ``config_class``'s fields that code reads while the block runs."""
    names = {f.name for f in dataclasses.fields(config_class)}
    reads: set[str] = set()

    def getattribute(self, name):
        if name in names and sys._getframe(1).f_code.co_filename not in NOT_USES:
            reads.add(name)
        return object.__getattribute__(self, name)

    config_class.__getattribute__ = getattribute
    try:
        yield reads
    finally:
        del config_class.__getattribute__


def fields_read(module: str, config_class, runs: list[list[str]], capsys) -> set[str]:
    reads = set()
    with recording_reads(config_class) as recorded:
        for argv in runs:
            status, err, _ = run_cli_main(module, capsys, *argv)
            assert status == 0, (module, argv, err[-5:])
            reads |= recorded
    return reads


def assert_every_field_read(config_class, reads: set[str], refused: dict[str, list[str]] = None):
    unread = {f.name for f in dataclasses.fields(config_class)} - reads - set(refused or {})
    assert not unread, f"{config_class.__name__} fields no run reads: {sorted(unread)}"


def assert_refused(module: str, argv: list[str], expected: str, capsys):
    status, err, _ = run_cli_main(module, capsys, *argv)
    assert status == 2 and len(err) == 1 and expected in err[0], err


FINE_TUNING = ["--max-steps", "2", "--per-device-train-batch-size", "8", "--report-to", "none", "--save-strategy", "no"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, config_name", [("dense", "DenseConfig"), ("sparse", "SparseConfig"),
                                                 ("rerank", "RerankConfig"), ("colbert", "ColbertConfig")])
def test_every_retrieval_field_is_read(recipe, config_name, tiny_encoder_dir, tiny_decoder_dir, world_dir, world10_dir,
                                       small_nanobeir_copy, tmp_path, capsys):
    config_class = getattr(importlib.import_module(f"ettin_ft.{recipe}"), config_name)
    common = ["--data", str(world_dir / "retrieval_train.jsonl"), "--held-out", "5", "--eval-beir",
              str(world10_dir / "retrieval_eval"), "--eval-beir-split", "test", *FINE_TUNING]
    nanobeir = ["--eval-nanobeir", "scifact", "--nanobeir-dataset-id", small_nanobeir_copy]
    runs = [["--model", str(tiny_encoder_dir), "--output-dir", str(tmp_path / "a"), *common]]
    refused = {}
    if recipe == "dense":
        runs.append(["--model", str(tiny_decoder_dir), "--output-dir", str(tmp_path / "b"), "--matryoshka-dims", "64,32",
                     *common, *nanobeir])
    if recipe == "sparse":
        runs[0] += nanobeir
    if recipe == "rerank":
        # 64 tokens: the cross-encoder scores every query with every candidate, in all three evaluations
        runs[0] += ["--mining-model", "bm25", "--pooling", "mean", "--max-seq-length", "64", *nanobeir]
    if recipe == "colbert":
        runs[0] += ["--document-length", "64", *nanobeir]
        runs.append(["--model", str(tiny_encoder_dir), "--output-dir", str(tmp_path / "b"),
                     *distillation_files(world_dir, tmp_path), "--held-out", "2", *FINE_TUNING])
        refused = {"max_seq_length": ["--max-seq-length", "64"]}
    reads = fields_read(recipe, config_class, runs, capsys)
    for name, flags in refused.items():
        assert_refused(recipe, [*runs[0], *flags, "--output-dir", str(tmp_path / "refused")],
                       f"--{name.replace('_', '-')}", capsys)
        assert not (tmp_path / "refused").exists()
    assert_every_field_read(config_class, reads, refused)


@pytest.mark.parametrize("recipe, config_name", [("dense", "DenseConfig"), ("classify", "ClassifyConfig"),
                                                 ("sft", "SftRecipeConfig")])
def test_a_field_set_without_the_one_it_applies_with_is_refused(recipe, config_name, tmp_path, capsys):
    config_class = getattr(importlib.import_module(f"ettin_ft.{recipe}"), config_name)
    types = {f.name: str(f.type) for f in dataclasses.fields(config_class)}
    assert config_class.REQUIRES
    for name, needed in config_class.REQUIRES.items():
        value = next((v for t, v in (("bool", "true"), ("int", "3"), ("float", "0.5")) if t in types[name]), "x")
        assert_refused(recipe, ["--model", "no-such-model", "--data", "no-such-file", f"--{name.replace('_', '-')}",
                                value, "--output-dir", str(tmp_path / "out")],
                       f"applies only with --{needed.replace('_', '-')}", capsys)
    assert not (tmp_path / "out").exists()


def distillation_files(world_dir: Path, tmp_path: Path) -> list[str]:
    """The world's retrieval pairs as knowledge-distillation files: each query with its positive (score 1) and two
    other passages (score 0)."""
    rows = [json.loads(line) for line in (world_dir / "retrieval_train.jsonl").read_text().splitlines()][:40]
    passages = list(dict.fromkeys(r["positive"] for r in rows))
    files = {"train": [{"query_id": f"q{i}", "document_ids": [f"d{passages.index(r['positive'])}",
                                                              f"d{(passages.index(r['positive']) + 1) % len(passages)}",
                                                              f"d{(passages.index(r['positive']) + 2) % len(passages)}"],
                        "scores": [1.0, 0.0, 0.0]} for i, r in enumerate(rows)],
             "queries": [{"query_id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)],
             "documents": [{"document_id": f"d{i}", "text": p} for i, p in enumerate(passages)]}
    for name, content in files.items():
        (tmp_path / f"kd-{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in content))
    return ["--data", str(tmp_path / "kd-train.jsonl"), "--queries", str(tmp_path / "kd-queries.jsonl"),
            "--documents", str(tmp_path / "kd-documents.jsonl"), "--objective", "distillation"]


@pytest.mark.slow
def test_every_classify_field_is_read(tiny_encoder_dir, tiny_decoder_dir, world_dir, tmp_path, capsys):
    from ettin_ft.classify import ClassifyConfig

    data = ["--data", str(world_dir / "topics_train.jsonl"), "--max-samples", "120", "--text-columns", "text",
            "--label-column", "label", "--max-seq-length", "32", *FINE_TUNING]
    runs = [["--model", str(tiny_encoder_dir), "--eval-data", str(world_dir / "topics_test.jsonl"), "--pooling", "cls",
             "--seeds", "0,1", "--output-dir", str(tmp_path / "seeds"), *data],
            ["--model", str(tiny_encoder_dir), "--init-from", str(tmp_path / "seeds" / "seed-0" / "final"),
             "--held-out", "12", "--output-dir", str(tmp_path / "init"), *data],
            ["--model", str(tiny_decoder_dir), "--lora", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.0",
             "--output-dir", str(tmp_path / "lora"), *data]]
    # --task reads the GLUE data from the hub; the offline refusal is tested in tests/test_classify.py
    assert_every_field_read(ClassifyConfig, fields_read("classify", ClassifyConfig, runs, capsys))


@pytest.mark.slow
def test_every_tag_field_is_read(tiny_encoder_dir, tiny_decoder_dir, world_dir, tmp_path, capsys):
    from ettin_ft.tag import TagConfig

    renamed = tmp_path / "renamed.jsonl"  # the world's entities under other field names, for --column-mapping
    renamed.write_text("".join(json.dumps({"words": row["tokens"], "labels": row["tags"]}) + "\n" for row in
                               map(json.loads, (world_dir / "entities_train.jsonl").read_text().splitlines())))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["O", "B-person", "I-person", "B-city", "I-city", "B-university", "I-university",
                                  "B-employer", "I-employer"]))
    data = ["--max-samples", "60", "--max-seq-length", "48", *FINE_TUNING]
    runs = [["--model", str(tiny_encoder_dir), "--data", str(renamed), "--column-mapping", "words:tokens,labels:tags",
             "--held-out", "6", "--label-all-tokens", "--seeds", "0,1", "--output-dir", str(tmp_path / "seeds"), *data],
            ["--model", str(tiny_decoder_dir), "--data", str(world_dir / "entities_train.jsonl"), "--eval-data",
             str(world_dir / "entities_test.jsonl"), "--labels", str(labels), "--bidirectional", "--lora", "--lora-r",
             "4", "--lora-alpha", "8", "--lora-dropout", "0.0", "--lora-target-modules", "Wo,Wi", "--precision", "fp32",
             "--attn-implementation", "sdpa", "--output-dir", str(tmp_path / "lora"), *data]]
    reads = fields_read("tag", TagConfig, runs, capsys)
    # data_config and data_split choose within a hub dataset: refused for local data
    refused = {"data_config": ["--data-config", "x"], "data_split": ["--data-split", "test"]}
    for name, flags in refused.items():
        assert_refused("tag", [*runs[1][:4], *flags, "--output-dir", str(tmp_path / "refused")],
                       f"--{name.replace('_', '-')}", capsys)
        assert not (tmp_path / "refused").exists()
    assert_every_field_read(TagConfig, reads, refused)


@pytest.mark.slow
def test_every_sft_field_is_read(tiny_decoder_dir, world_dir, tmp_path, capsys):
    from ettin_ft.sft import SftRecipeConfig

    data = ["--model", str(tiny_decoder_dir), "--data", str(world_dir / "sft_train.jsonl"), "--held-out", "10",
            "--eval-generations", "2", "--max-new-tokens", "4", "--max-seq-length", "64", *FINE_TUNING]
    runs = [[*data, "--all-tokens", "--output-dir", str(tmp_path / "full")],
            [*data, "--lora", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.0", "--lora-target-modules",
             "Wo,Wi", "--merge", "--output-dir", str(tmp_path / "lora")]]
    reads = fields_read("sft", SftRecipeConfig, runs, capsys)
    # QLoRA needs CUDA and bitsandbytes: here it is refused in one line
    refused = {"load_in_4bit": ["--lora", "--load-in-4bit"]}
    assert_refused("sft", [*data, *refused["load_in_4bit"], "--output-dir", str(tmp_path / "q")], "--load-in-4bit", capsys)
    assert_every_field_read(SftRecipeConfig, reads, refused)


@pytest.mark.slow
def test_every_pretrain_field_is_read(tiny_encoder_dir, world_dir, tmp_path, capsys):
    from ettin_ft.pretrain import PretrainConfig

    small = ["--size", "tiny", "--data", str(world_dir / "pretrain.txt"), "--seq-len", "64", "--batch-size", "4",
             "--eval-documents", "10", "--eval-rows", "4", "--eval-every", "2", "--log-every", "1", "--num-workers", "0",
             "--report-to", "none", "--max-steps", "4", "--save-every", "2", "--keep-checkpoints", "1"]
    schedule = ["--lr", "1e-3", "--weight-decay", "0.01", "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--adam-epsilon",
                "1e-8", "--max-grad-norm", "1.0", "--warmup-steps", "1", "--warmup-ratio", "0.1", "--decay-ratio", "0.5",
                "--decay-type", "linear", "--min-lr-ratio", "0.1", "--gradient-accumulation-steps", "2", "--seed", "1",
                "--precision", "fp32", "--attn-implementation", "sdpa", "--peak-flops", "1e12"]
    runs = [[*small, *schedule, "--arch", "encoder", "--objective", "mntp", "--mlm-probability", "0.2",
             "--mask-replace-prob", "0.7", "--random-replace-prob", "0.2", "--vocab-size", "600",
             "--tokenizer-documents", "100", "--context", "8192", "--global-rope-theta", "20000", "--local-rope-theta",
             "5000", "--output-dir", str(tmp_path / "scratch")],
            [*small, "--init", str(tiny_encoder_dir), "--tokenizer", str(tiny_encoder_dir), "--arch", "decoder",
             "--output-dir", str(tmp_path / "continued")],
            [*small, "--arch", "decoder", "--init", str(tiny_encoder_dir), "--output-dir", str(tmp_path / "continued"),
             "--max-steps", "6", "--resume"]]
    jsonl = tmp_path / "documents.jsonl"
    jsonl.write_text("".join(json.dumps({"body": line}) + "\n" for line in (world_dir / "pretrain.txt").read_text().splitlines()))
    runs.append([*small, "--data", str(jsonl), "--text-column", "body", "--init", str(tiny_encoder_dir),
                 "--output-dir", str(tmp_path / "jsonl")])
    reads = fields_read("pretrain", PretrainConfig, runs, capsys)
    # data_config and data_split choose within a hub dataset: refused for local data
    refused = {"data_config": ["--data-config", "x"], "data_split": ["--data-split", "test"]}
    for name, flags in refused.items():
        assert_refused("pretrain", [*small, *flags, "--output-dir", str(tmp_path / "refused")],
                       f"--{name.replace('_', '-')}", capsys)
    assert_every_field_read(PretrainConfig, reads, refused)


@pytest.mark.slow
def test_every_probe_and_helper_field_is_read(tiny_encoder_dir, tiny_decoder_dir, pretrained_tiny, world_dir, tmp_path,
                                              capsys):
    from ettin_ft.bias import BiasConfig
    from ettin_ft.study.plan import StudyConfig
    from ettin_ft.generate import GenerateConfig
    from ettin_ft.zeroshot import ZeroShotConfig

    winogender = str(shared_data("bias", "winogender"))
    zeroshot = ["--data", str(world_dir / "zeroshot"), "--tasks", "employer,major", "--limit", "4", "--batch-size", "8",
                "--device", "cpu", "--precision", "fp32"]
    reads = fields_read("zeroshot", ZeroShotConfig, [
        ["--model", str(tiny_encoder_dir), *zeroshot, "--encoder-scoring", "l2r", "--extra-masks", "1", "--score-sep",
         "--mntp", "true", "--output-dir", str(tmp_path / "zeroshot-encoder")]], capsys)
    assert_every_field_read(ZeroShotConfig, reads)

    reads = fields_read("bias", BiasConfig, [["--model", str(tiny_encoder_dir), "--data", winogender, "--batch-size", "16",
                                              "--device", "cpu", "--output-dir", str(tmp_path / "bias")]], capsys)
    assert_every_field_read(BiasConfig, reads)

    reads = fields_read("generate", GenerateConfig, [
        ["--model", str(tiny_decoder_dir), "--prompt", "Alice was", "--chat", "no", "--max-new-tokens", "3"],
        ["--model", chat_model(tiny_decoder_dir, tmp_path / "chat"), "--prompt", "Hi", "--system", "Be brief.", "--chat", "auto", "--max-new-tokens",
         "3", "--do-sample", "--temperature", "0.9", "--top-p", "0.8", "--seed", "3"]], capsys)
    assert_every_field_read(GenerateConfig, reads)

    run_folder = pretrained_tiny("encoder").parent
    study = ["--recipe", "zeroshot", "--metric", "acc", "--launcher", sys.executable]
    reads = fields_read("compare", StudyConfig, [
        [*study, "--models", f"{tiny_encoder_dir},{tiny_decoder_dir}", "--output-dir", str(tmp_path / "study"), "--",
         *zeroshot],
        [*study, "--models", str(run_folder), "--revisions", "checkpoint-100,final", "--output-dir",
         str(tmp_path / "steps"), "--dry-run"],
        ["--recipe", "classify", "--sizes", "17m", "--archs", "encoder,decoder", "--seeds", "0,1", "--output-dir",
         str(tmp_path / "sizes"), "--dry-run"]],
        capsys)
    assert_every_field_read(StudyConfig, reads)
    assert_refused("compare", [*study, "--models", str(tiny_encoder_dir), "--seeds", "0,1", "--output-dir",
                               str(tmp_path / "seeds")], "--seeds 0,1: zeroshot scores each model as it is", capsys)


@pytest.mark.slow
def test_every_quickstart_field_is_read(tmp_path, capsys):
    from ettin_ft.quickstart import QuickstartConfig

    reads = fields_read("quickstart", QuickstartConfig, [
        ["--output-dir", str(tmp_path / "q"), "--size", "tiny", "--people", "20", "--steps", "8", "--finetune-scale",
         "0.01", "--stages", "rerank", "--rerank-people", "30", "--vocab-size", "400", "--bias-data",
         str(shared_data("bias", "winogender")), "--seed", "1"]], capsys)
    assert_every_field_read(QuickstartConfig, reads)


def chat_model(decoder: Path, folder: Path) -> str:
    """``decoder`` with the ChatML template and its tokens, as ettin_ft.sft gives it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ettin_ft.tokenizer import add_chat_template

    model, tokenizer = AutoModelForCausalLM.from_pretrained(decoder), AutoTokenizer.from_pretrained(decoder)
    add_chat_template(tokenizer)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
