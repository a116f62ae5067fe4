"""No flag is silently ignored: every field of every ettin-ft command's config (not the libraries' own
TrainingArguments) changes what the command does, or is refused when set.

For each field, the command with the field changed is compared with the command without:
- fine-tuning recipes as far as the run's first evaluation (``prepared_run``): the trainer as built (its arguments,
  model and weights, training and evaluation data, collator, loss, evaluator, callbacks) and what the evaluation is
  given; nothing trains, so a comparison costs about a second;
- pretraining where its loop would start (model, tokenizer, optimiser, the whole schedule, the first batches) and,
  for what the loop itself reads, on what four steps leave (``short_pretraining``);
- the probes, ``mine`` and ``compare`` on what the command leaves: its files, what it prints and the batches it
  gives the model (``command_outputs``; a study by its plan).
A field that cannot act here (a GPU, the hub) or acts where another test looks says so beside it. The quickstart is
checked by the fields its run reads.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import run_cli_main, shared_data

NOT_USES = (str(Path(dataclasses.__file__)), str(Path(__file__).resolve().parents[1] / "ettin_ft" / "config.py"))
FINE_TUNING = ["--max-steps", "2", "--per-device-train-batch-size", "8", "--report-to", "none", "--save-strategy", "no"]


class Prepared(Exception):
    """Raised at a run's first evaluation, carrying the description of what the run has built by then."""


def describe(value, seen: set | None = None, depth: int = 0):
    """A JSON-able description of ``value`` that changes when anything a run would use changes: tensors by a digest
    of their values, datasets by their rows, modules by their layout, weights and settings, other objects by their
    attributes (model cards excepted: what a card says is not what a run does)."""
    import datasets
    import torch

    seen = set() if seen is None else seen
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        values = value.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
        return f"tensor{tuple(value.shape)} {value.dtype} {hashlib.sha256(values).hexdigest()[:16]}"
    if isinstance(value, datasets.Dataset):
        return json.dumps(value.to_list(), sort_keys=True, default=str)
    if isinstance(value, (list, tuple)):
        return [describe(item, seen, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json.dumps(describe(item, seen, depth + 1), sort_keys=True, default=str) for item in value)
    if isinstance(value, dict):
        return {str(key): describe(item, seen, depth + 1) for key, item in value.items()}
    if id(value) in seen or depth > 6:
        return type(value).__qualname__
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        return {"layout": repr(value), "weights": {name: describe(w) for name, w in value.state_dict().items()},
                "settings": {name: {key: describe(item, seen, depth + 1) for key, item in vars(module).items()
                                    if not key.startswith("_") and key != "model_card_data"}
                             for name, module in value.named_modules()}}
    attributes = getattr(value, "__dict__", None)
    if attributes is None:  # a dtype, a device, a function: its repr, without memory addresses
        return re.sub(r" at 0x[0-9a-f]+", "", repr(value))
    return {"class": type(value).__qualname__,
            **{key: describe(item, seen, depth + 1) for key, item in attributes.items() if key != "model_card_data"}}


# where each recipe first evaluates (before training): the run is described there and stopped
FIRST_EVALUATION = {"dense": "run_evaluators", "sparse": "run_evaluators", "rerank": "run_evaluators",
                    "colbert": "run_evaluators", "classify": "classifier_predictions", "tag": "word_predictions",
                    "sft": "language_model_metrics"}


def prepared_run(recipe: str, argv: list[str], output_dir: Path, monkeypatch, capsys) -> str:
    """A digest of everything ``python -m ettin_ft.<recipe> argv`` has built when it first evaluates."""
    import torch
    import transformers

    module = importlib.import_module(f"ettin_ft.{recipe}")
    trainers = []
    build_trainer = transformers.Trainer.__init__

    def recording_build(self, *args, **kwargs):
        build_trainer(self, *args, **kwargs)
        trainers.append(self)

    def first_evaluation(*args, **kwargs):
        trainer = trainers[-1]
        built = {"arguments": {key: value for key, value in trainer.args.to_dict().items()
                               if key not in ("output_dir", "logging_dir", "run_name")},
                 **{name: describe(getattr(trainer, name, None)) for name in
                    ("model", "train_dataset", "eval_dataset", "data_collator", "loss", "compute_loss_func", "evaluator")},
                 "callbacks": sorted(type(callback).__name__ for callback in trainer.callback_handler.callbacks),
                 "evaluation": describe([a for a in (*args, *kwargs.values())
                                         if a is not trainer and not isinstance(a, torch.nn.Module)])}
        raise Prepared(hashlib.sha256(json.dumps(built, sort_keys=True, default=str).encode()).hexdigest())

    shutil.rmtree(output_dir, ignore_errors=True)
    with monkeypatch.context() as patch:
        patch.setattr(transformers.Trainer, "__init__", recording_build)
        patch.setattr(module, FIRST_EVALUATION[recipe], first_evaluation)
        try:
            module.main([*argv, "--output-dir", str(output_dir)])
        except Prepared as prepared:
            return prepared.args[0]
        except SystemExit as exit_:
            pytest.fail(f"{recipe} {argv} exited {exit_.code}: {capsys.readouterr().err[-500:]}")
        finally:
            capsys.readouterr()  # each run's progress bars, not the next command's
    pytest.fail(f"{recipe} {argv} never evaluated")


def assert_every_field_covered(config_class, *groups):
    """The groups of field names (changed, refused, checked apart) together name every field of ``config_class``."""
    covered = set().union(*groups)
    fields = {f.name for f in dataclasses.fields(config_class)}
    assert covered == fields, sorted(fields ^ covered)


def fields_without_effect(describe, changes: dict[str, tuple[list, list]]) -> list[str]:
    """The fields in ``changes`` (field → (a command, the flags that change the field in it)) whose change leaves
    ``describe(command)`` as it was. Each command is described once; the first twice, to check that a description
    repeats (else every change would look like an effect)."""
    digest = functools.cache(lambda command: describe(list(command)))
    first = next(iter(changes.values()))[0]
    assert describe(first) == digest(tuple(first))
    return [name for name, (command, change) in changes.items() if digest(tuple(command)) == digest((*command, *change))]


def assert_refused(module: str, argv: list[str], expected: str, capsys):
    status, err, _ = run_cli_main(module, capsys, *argv)
    assert status == 2 and len(err) == 1 and expected in err[0], err


def assert_refused_writing_nothing(module: str, command: list[str], refused: dict[str, list[str]], output_dir: Path,
                                   capsys):
    """Each of ``refused`` (field → flags) added to ``command`` is refused in one line naming the flag, and nothing
    is written to ``output_dir``."""
    for name, flags in refused.items():
        assert_refused(module, [*command, *flags, "--output-dir", str(output_dir)], f"--{name.replace('_', '-')}", capsys)
        assert not output_dir.exists()


def assert_every_field_acts(recipe: str, config_class, base: list[str], changes: dict[str, tuple[list, list]],
                            refused: dict[str, list[str]], tmp_path, monkeypatch, capsys, checked_apart=frozenset()):
    """Every field of ``config_class`` is in ``changes`` (field → (flags it needs, flags that change it)), in
    ``refused`` (field → flags refused in one line, nothing written) or ``checked_apart`` (the caller compares
    trained runs or resolved settings); each change changes the prepared run."""
    assert_every_field_covered(config_class, changes, refused, checked_apart)
    out = tmp_path / "run"
    silent = fields_without_effect(lambda argv: prepared_run(recipe, argv, out, monkeypatch, capsys),
                                   {name: ([*base, *needs], change) for name, (needs, change) in changes.items()})
    assert not silent, f"{recipe}: these fields change nothing the run builds: {silent}"
    assert_refused_writing_nothing(recipe, base, refused, tmp_path / "refused", capsys)


# for local data, a hub dataset's configuration and split are refused
HUB_ONLY = {"data_config": ["--data-config", "x"], "data_split": ["--data-split", "test"]}
LORA = {"lora": ([], ["--lora"]), "lora_r": (["--lora"], ["--lora-r", "4"]), "lora_alpha": (["--lora"], ["--lora-alpha", "8"]),
        "lora_dropout": (["--lora"], ["--lora-dropout", "0.3"]),
        "lora_target_modules": (["--lora"], ["--lora-target-modules", "Wo,Wi"])}


def common_changes(other_model: Path, other_data: Path, mapping: str) -> dict[str, tuple[list, list]]:
    """What every fine-tuning recipe's shared fields are changed to (``mapping``: a column mapping that swaps or
    substitutes columns the recipe uses)."""
    return {"model": ([], ["--model", str(other_model)]), "data": ([], ["--data", str(other_data)]),
            "column_mapping": ([], ["--column-mapping", mapping]), "max_samples": ([], ["--max-samples", "60"]),
            "held_out": ([], ["--held-out", "6"]), "max_seq_length": ([], ["--max-seq-length", "40"]),
            "precision": ([], ["--precision", "bf16"]), "attn_implementation": ([], ["--attn-implementation", "eager"])}


@pytest.fixture(scope="module")
def other_tiny_dirs(encoder_tokenizer, decoder_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """Tiny models other than tiny_encoder_dir's and tiny_decoder_dir's (another seed), for --model."""
    import torch

    from ettin_ft.models import build_model

    folders = {}
    for arch, tokenizer in (("encoder", encoder_tokenizer), ("decoder", decoder_tokenizer)):
        torch.manual_seed(1)
        folders[arch] = tmp_path_factory.mktemp(f"other-{arch}")
        build_model("tiny", arch, tokenizer=tokenizer).save_pretrained(folders[arch])
        tokenizer.save_pretrained(folders[arch])
    return folders


@pytest.fixture(scope="module")
def retrieval_files(world_dir, world10_dir, tmp_path_factory) -> dict[str, Path]:
    """The world's retrieval rows as pairs (for mining), with teacher scores in the rows, and as a
    teacher_scores.jsonl; and its BEIR split with a second qrels split."""
    folder = tmp_path_factory.mktemp("retrieval-files")
    rows = [json.loads(line) for line in (world_dir / "retrieval_train.jsonl").read_text().splitlines()]
    write = lambda name, items: (folder / name).write_text("".join(json.dumps(item) + "\n" for item in items))
    write("pairs.jsonl", [{"query": r["query"], "positive": r["positive"]} for r in rows])
    write("scored.jsonl", [{"query": r["query"], "positive": r["positive"], "negatives": [r["negative"]],
                            "scores": [1.0, 0.0]} for r in rows])
    write("teacher_scores.jsonl", [{"query": r["query"], "document": d, "score": s}
                                   for r in rows for d, s in ((r["positive"], 0.9), (r["negative"], 0.2))])
    beir = folder / "beir"
    shutil.copytree(world10_dir / "retrieval_eval", beir)
    lines = (beir / "qrels" / "test.tsv").read_text().splitlines()
    (beir / "qrels" / "dev.tsv").write_text("\n".join(lines[:1] + lines[1::2]) + "\n")
    return {name: folder / name for name in ("pairs.jsonl", "scored.jsonl", "teacher_scores.jsonl")} | {"beir": beir}


def retrieval_changes(recipe: str, files, world10_dir, small_nanobeir_copy, nanobeir_copy, teacher: Path) -> dict:
    distilled_loss = {"dense": "kl", "sparse": "kl", "rerank": "margin-mse", "colbert": "margin-mse"}[recipe]
    return {"eval_beir": ([], ["--eval-beir", str(world10_dir / "retrieval_eval")]),
            "eval_beir_split": (["--eval-beir", str(files["beir"])], ["--eval-beir-split", "dev"]),
            # --nanobeir-dataset-id alone is refused: the collection comes with it (the hub's is offline here)
            "eval_nanobeir": ([], ["--eval-nanobeir", "scifact", "--nanobeir-dataset-id", small_nanobeir_copy]),
            "nanobeir_dataset_id": (["--eval-nanobeir", "scifact", "--nanobeir-dataset-id", small_nanobeir_copy],
                                    ["--nanobeir-dataset-id", nanobeir_copy]),
            "loss": (["--teacher-scores", str(files["teacher_scores.jsonl"])], ["--loss", distilled_loss]),
            "teacher": ([], ["--teacher", str(teacher)]),
            "teacher_scores": ([], ["--teacher-scores", str(files["teacher_scores.jsonl"])])}


@pytest.mark.slow
@pytest.mark.parametrize("recipe, config_name", [("dense", "DenseConfig"), ("sparse", "SparseConfig"),
                                                 ("rerank", "RerankConfig"), ("colbert", "ColbertConfig")])
def test_every_retrieval_field_acts(recipe, config_name, tiny_encoder_dir, tiny_teacher_dir, other_tiny_dirs,
                                    retrieval_files, world_dir, world10_dir, world100_dir, small_nanobeir_copy,
                                    nanobeir_copy, tmp_path, monkeypatch, capsys):
    config_class = getattr(importlib.import_module(f"ettin_ft.{recipe}"), config_name)
    base = ["--model", str(tiny_encoder_dir), "--data", str(world_dir / "retrieval_train.jsonl"), "--held-out", "5",
            *FINE_TUNING]
    changes = {**common_changes(other_tiny_dirs["encoder"], world100_dir / "retrieval_train.jsonl",
                                "positive:negative,negative:positive"),
               **retrieval_changes(recipe, retrieval_files, world10_dir, small_nanobeir_copy, nanobeir_copy,
                                   tiny_teacher_dir)}
    refused = dict(HUB_ONLY)
    if recipe == "dense":
        changes |= {"pooling": ([], ["--pooling", "cls"]), "mini_batch_size": ([], ["--mini-batch-size", "4"]),
                    "matryoshka_dims": ([], ["--matryoshka-dims", "64,32"])}
    if recipe == "sparse":
        changes |= {"query_regularizer_weight": ([], ["--query-regularizer-weight", "0.1"]),
                    "document_regularizer_weight": ([], ["--document-regularizer-weight", "0.1"])}
    if recipe == "rerank":
        mined = ["--data", str(retrieval_files["pairs.jsonl"]), "--mining-model", "bm25"]
        changes |= {"num_negatives": (mined, ["--num-negatives", "2"]),
                    "mining_model": (mined, ["--mining-model", str(tiny_encoder_dir)]),
                    "pooling": ([], ["--pooling", "mean"])}
    if recipe == "colbert":
        knowledge_distillation = distillation_files(world_dir, tmp_path)
        changes |= {"objective": (["--teacher-scores", str(retrieval_files["teacher_scores.jsonl"])],
                                  ["--objective", "margin-mse"]),
                    "queries": (knowledge_distillation, ["--queries", str(tmp_path / "kd-queries-upper.jsonl")]),
                    "documents": (knowledge_distillation, ["--documents", str(tmp_path / "kd-documents-upper.jsonl")]),
                    "query_length": ([], ["--query-length", "16"]), "document_length": ([], ["--document-length", "40"])}
        del changes["max_seq_length"]
        refused["max_seq_length"] = ["--max-seq-length", "64"]  # query and document lengths are ColBERT's
    assert_every_field_acts(recipe, config_class, base, changes, refused, tmp_path, monkeypatch, capsys)


def distillation_files(world_dir: Path, tmp_path: Path) -> list[str]:
    """The world's retrieval pairs as knowledge-distillation files: each query with its positive (score 1) and two
    other passages (score 0); the queries and documents also upper-cased, as other files to give."""
    rows = [json.loads(line) for line in (world_dir / "retrieval_train.jsonl").read_text().splitlines()][:40]
    passages = list(dict.fromkeys(r["positive"] for r in rows))
    files = {"train": [{"query_id": f"q{i}", "document_ids": [f"d{passages.index(r['positive'])}",
                                                              f"d{(passages.index(r['positive']) + 1) % len(passages)}",
                                                              f"d{(passages.index(r['positive']) + 2) % len(passages)}"],
                        "scores": [1.0, 0.0, 0.0]} for i, r in enumerate(rows)],
             "queries": [{"query_id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)],
             "documents": [{"document_id": f"d{i}", "text": p} for i, p in enumerate(passages)]}
    files["queries-upper"] = [{**row, "text": row["text"].upper()} for row in files["queries"]]
    files["documents-upper"] = [{**row, "text": row["text"].upper()} for row in files["documents"]]
    for name, content in files.items():
        (tmp_path / f"kd-{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in content))
    return ["--data", str(tmp_path / "kd-train.jsonl"), "--queries", str(tmp_path / "kd-queries.jsonl"),
            "--documents", str(tmp_path / "kd-documents.jsonl"), "--objective", "distillation"]


@pytest.mark.slow
def test_every_classify_field_acts(tiny_encoder_dir, tiny_decoder_dir, other_tiny_dirs, world_dir, world100_dir,
                                   tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForSequenceClassification, set_seed

    from ettin_ft.classify import ClassifyConfig, release

    set_seed(3)
    classifier = tmp_path / "classifier"  # a classifier to start from (--init-from)
    AutoModelForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=2).save_pretrained(classifier)
    claims = tmp_path / "claims.jsonl"  # the world's claims with the opposite label beside, for --label-column
    claims.write_text("".join(json.dumps({**row, "opposite": 1 - row["label"]}) + "\n" for row in
                              map(json.loads, (world_dir / "claims_train.jsonl").read_text().splitlines())))
    base = ["--model", str(tiny_encoder_dir), "--data", str(claims), "--text-columns",
            "text", "--held-out", "12", "--max-seq-length", "32", *FINE_TUNING]
    changes = {**common_changes(other_tiny_dirs["encoder"], world100_dir / "claims_train.jsonl", "text:evidence,evidence:text"),
               **LORA,
               "eval_data": ([], ["--eval-data", str(world_dir / "claims_test.jsonl")]),
               "text_columns": ([], ["--text-columns", "evidence,text"]),
               "label_column": ([], ["--label-column", "opposite"]),
               "pooling": ([], ["--pooling", "cls"]),
               "head_init": (["--model", str(tiny_decoder_dir)], ["--head-init", "lm"]),
               "init_from": ([], ["--init-from", str(classifier)]),
               "seeds": ([], ["--seeds", "0,1"])}
    # --task reads GLUE from the hub (offline here: tests/test_classify.py tests the refusal); it also brings the
    # task's ModernBERT settings (configs/classify/<task>.yaml), compared here as the command line resolves them
    assert_every_field_acts("classify", ClassifyConfig, base, changes, HUB_ONLY, tmp_path, monkeypatch, capsys,
                            checked_apart={"task"})
    assert release(str(tmp_path), task="rte")[1] != release(str(tmp_path))[1]


@pytest.mark.slow
def test_every_tag_field_acts(tiny_encoder_dir, tiny_decoder_dir, other_tiny_dirs, world_dir, world100_dir, tmp_path,
                              monkeypatch, capsys):
    from ettin_ft.tag import TagConfig

    upper = tmp_path / "entities.jsonl"  # the world's entities with an upper-cased copy of the words, for --column-mapping
    upper.write_text("".join(json.dumps({**row, "upper": [word.upper() for word in row["tokens"]]}) + "\n" for row in
                             map(json.loads, (world_dir / "entities_train.jsonl").read_text().splitlines())))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["O", "B-person", "I-person", "B-city", "I-city", "B-university", "I-university",
                                  "B-employer", "I-employer"]))
    base = ["--model", str(tiny_encoder_dir), "--data", str(upper), "--held-out", "4", "--max-seq-length", "48",
            *FINE_TUNING]
    changes = {**common_changes(other_tiny_dirs["encoder"], world100_dir / "entities_train.jsonl", "tokens:words,upper:tokens"),
               **LORA,
               "eval_data": ([], ["--eval-data", str(world_dir / "entities_test.jsonl")]),
               "labels": ([], ["--labels", str(labels)]),
               "label_all_tokens": ([], ["--label-all-tokens"]),
               "bidirectional": (["--model", str(tiny_decoder_dir)], ["--bidirectional"]),
               "seeds": ([], ["--seeds", "0,1"])}
    assert_every_field_acts("tag", TagConfig, base, changes, HUB_ONLY, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_every_sft_field_acts(tiny_decoder_dir, other_tiny_dirs, world_dir, world100_dir, tmp_path, monkeypatch, capsys):
    from ettin_ft.sft import SftRecipeConfig

    chats = tmp_path / "chats.jsonl"  # the world's chats with their answers upper-cased beside, for --column-mapping
    chats.write_text("".join(json.dumps({**row, "upper": [{**m, "content": m["content"].upper()} for m in row["messages"]]})
                             + "\n" for row in map(json.loads, (world_dir / "sft_train.jsonl").read_text().splitlines())))
    base = ["--model", str(tiny_decoder_dir), "--data", str(chats), "--held-out", "10", "--eval-generations", "2",
            "--max-new-tokens", "4", "--max-seq-length", "64", *FINE_TUNING]
    changes = {**common_changes(other_tiny_dirs["decoder"], world100_dir / "sft_train.jsonl", "messages:original,upper:messages"),
               **LORA,
               "all_tokens": ([], ["--all-tokens"]),
               "eval_generations": ([], ["--eval-generations", "3"]),
               "max_new_tokens": ([], ["--max-new-tokens", "5"])}
    # QLoRA needs CUDA and bitsandbytes: here it is refused in one line. --merge acts after training, publishing
    # DIR/merged/: tests/test_sft.py compares its logits with the adapter's, tests/test_multiprocess.py finds no
    # DIR/merged/ without it.
    refused = {**HUB_ONLY, "load_in_4bit": ["--lora", "--load-in-4bit"]}
    assert_every_field_acts("sft", SftRecipeConfig, base, changes, refused, tmp_path, monkeypatch, capsys,
                            checked_apart={"merge"})


@pytest.mark.parametrize("recipe, config_name, command", [
    ("dense", "DenseConfig", ["--model", "no-such-model", "--data", "no-such-file", "--output-dir", "{out}"]),
    ("classify", "ClassifyConfig", ["--model", "no-such-model", "--data", "no-such-file", "--output-dir", "{out}"]),
    ("sft", "SftRecipeConfig", ["--model", "no-such-model", "--data", "no-such-file", "--output-dir", "{out}"]),
    ("generate", "GenerateConfig", ["--model", "no-such-model"]),
    ("mine", "MineConfig", ["--data", "no-such-file", "--output", "{out}/mined.jsonl"])])
def test_a_field_set_without_the_one_it_applies_with_is_refused(recipe, config_name, command, tmp_path, capsys):
    config_class = getattr(importlib.import_module(f"ettin_ft.{recipe}"), config_name)
    types = {f.name: str(f.type) for f in dataclasses.fields(config_class)}
    assert config_class.REQUIRES
    command = [part.format(out=tmp_path / "out") for part in command]
    for name, needed in config_class.REQUIRES.items():
        value = next((v for t, v in (("bool", "true"), ("int", "3"), ("float", "0.5")) if t in types[name]), "bf16")
        assert_refused(recipe, [*command, f"--{name.replace('_', '-')}", value],
                       f"applies only with --{needed.replace('_', '-')}", capsys)
    assert not (tmp_path / "out").exists()


def test_a_system_message_without_chat_is_refused(capsys):
    assert_refused("generate", ["--model", "no-such-model", "--system", "Be brief.", "--chat", "no"],
                   "--system is a chat message", capsys)


def prepared_pretraining(argv: list[str], output_dir: Path, monkeypatch, capsys) -> str:
    """A digest of what ``python -m ettin_ft.pretrain argv`` has set up when its loop would start: the model and its
    weights, the objective, tokenizer, optimiser settings, the whole learning-rate schedule, the loader and its first
    two micro-batches, the held-out batches and the run's bookkeeping (the config itself left out)."""
    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.training import loop

    def loop_start(config, run):
        lambdas = run.scheduler.lr_lambdas
        built = {"model": describe(run.model), "module": type(run.module).__name__, "runtime": describe(run.runtime),
                 "tokenizer": sorted(run.tokenizer.get_vocab().items()), "trackers": describe(run.trackers),
                 "optimizer": [{k: v for k, v in group.items() if k != "params"} for group in run.optimizer.param_groups],
                 "schedule": [[rate(step) for rate in lambdas] for step in range(config.max_steps + 1)],
                 "loader": type(run.loader).__name__, "batches": describe([next(run.loader) for _ in range(2)]),
                 "held_out": describe(run.eval_batches), "documents": run.documents,
                 "rows_per_step": run.rows_per_step, "start": run.start_step}
        assert not any(isinstance(value, PretrainConfig) for value in vars(run).values())
        raise Prepared(hashlib.sha256(json.dumps(built, sort_keys=True, default=str).encode()).hexdigest())

    shutil.rmtree(output_dir, ignore_errors=True)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "train", loop_start)
        try:
            run_cli_main("pretrain", capsys, *argv, "--output-dir", str(output_dir))
        except Prepared as prepared:
            return prepared.args[0]
        finally:
            capsys.readouterr()
    pytest.fail(f"pretrain {argv} never reached its loop")


def short_pretraining(argv: list[str], output_dir: Path, capsys) -> tuple:
    """What a short pretraining run leaves: its log (losses, learning rates, held-out metrics, where throughput was
    measured, and MFU per token/s, which holds the FLOPs per token over the peak, without the timing) and its
    checkpoints."""
    shutil.rmtree(output_dir, ignore_errors=True)
    status, err, _ = run_cli_main("pretrain", capsys, *argv, "--output-dir", str(output_dir))
    assert status == 0, err[-5:]
    log = [{**{k: v for k, v in record.items() if k not in ("tokens_per_second", "mfu")},
            **({"mfu_per_token_per_second": round(record["mfu"] / record["tokens_per_second"], 15)}
               if "mfu" in record else {})}
           for record in map(json.loads, (output_dir / "log_history.jsonl").read_text().splitlines())]
    return log, sorted(p.name for p in output_dir.glob("checkpoint-*"))


@pytest.mark.slow
def test_every_pretrain_field_acts(tiny_encoder_dir, other_tiny_dirs, world, world_dir, world100_dir, tmp_path,
                                   monkeypatch, capsys):
    from ettin_ft.pretrain import PretrainConfig
    from ettin_ft.tokenizer import train_tokenizer

    tokenizer = tmp_path / "tokenizer"  # another vocabulary than the tiny encoder's, for --tokenizer
    train_tokenizer(world.pretraining_texts(), vocab_size=400, arch="encoder").save_pretrained(tokenizer)

    common = ["--data", str(world_dir / "pretrain.txt"), "--seq-len", "64", "--batch-size", "4", "--eval-documents",
              "10", "--eval-rows", "4", "--num-workers", "0", "--report-to", "none", "--max-steps", "4"]
    continued = [*common, "--init", str(tiny_encoder_dir)]
    scratch = [*common, "--size", "tiny", "--vocab-size", "600", "--tokenizer-documents", "100"]
    decaying = ["--decay-ratio", "0.5"]
    documents = tmp_path / "documents.jsonl"  # two text columns, for --text-column
    documents.write_text("".join(json.dumps({"text": line, "body": line.upper()}) + "\n"
                                 for line in (world_dir / "pretrain.txt").read_text().splitlines()))
    # field → (base, flags it needs, flags that change it), compared where the loop would start
    at_loop_start = {
        "arch": (continued, [], ["--arch", "decoder"]), "size": (scratch, [], ["--size", "17m"]),
        "data": (continued, [], ["--data", str(world100_dir / "pretrain.txt")]),
        "max_steps": (continued, [], ["--max-steps", "8"]), "init": (continued, [], ["--init", str(other_tiny_dirs["encoder"])]),
        "tokenizer": (continued, [], ["--tokenizer", str(tokenizer)]),
        "objective": (continued, [], ["--objective", "mntp"]), "mlm_probability": (continued, [], ["--mlm-probability", "0.5"]),
        "mask_replace_prob": (continued, [], ["--mask-replace-prob", "0.5"]),
        "random_replace_prob": (continued, [], ["--random-replace-prob", "0.4"]), "seq_len": (continued, [], ["--seq-len", "32"]),
        "context": (scratch, [], ["--context", "8192"]), "global_rope_theta": (scratch, [], ["--global-rope-theta", "20000"]),
        "local_rope_theta": (scratch, [], ["--local-rope-theta", "5000"]), "vocab_size": (scratch, [], ["--vocab-size", "700"]),
        "tokenizer_documents": (scratch, [], ["--tokenizer-documents", "20"]), "batch_size": (continued, [], ["--batch-size", "2"]),
        "gradient_accumulation_steps": (continued, [], ["--gradient-accumulation-steps", "2"]),
        "lr": (continued, [], ["--lr", "1e-3"]), "weight_decay": (continued, [], ["--weight-decay", "0.01"]),
        "adam_beta1": (continued, [], ["--adam-beta1", "0.8"]), "adam_beta2": (continued, [], ["--adam-beta2", "0.95"]),
        "adam_epsilon": (continued, [], ["--adam-epsilon", "1e-8"]), "warmup_steps": (continued, [], ["--warmup-steps", "2"]),
        "warmup_ratio": (continued, [], ["--warmup-ratio", "0.5"]), "decay_ratio": (continued, [], decaying),
        "decay_type": (continued, decaying, ["--decay-type", "linear"]),
        "min_lr_ratio": (continued, decaying, ["--min-lr-ratio", "0.1"]),
        # fp32 set in the base: on a CPU with native bf16, auto already chooses bf16 for pretraining
        "precision": (continued, ["--precision", "fp32"], ["--precision", "bf16"]),
        "attn_implementation": (continued, [], ["--attn-implementation", "eager"]),
        "compile": (continued, [], ["--compile"]), "num_workers": (continued, [], ["--num-workers", "1"]),
        "text_column": (continued, ["--data", str(documents)], ["--text-column", "body"]),
        "eval_documents": (continued, [], ["--eval-documents", "5"]), "eval_rows": (continued, [], ["--eval-rows", "2"]),
        "report_to": (continued, [], ["--report-to", "wandb"]), "seed": (continued, [], ["--seed", "1"])}
    # fields the loop itself reads, compared on what a short run leaves
    in_the_loop = {"max_grad_norm": ([], ["--max-grad-norm", "0.01"]), "eval_every": ([], ["--eval-every", "2"]),
                   "save_every": ([], ["--save-every", "2"]),
                   "keep_checkpoints": (["--save-every", "1"], ["--keep-checkpoints", "1"]),
                   "log_every": ([], ["--log-every", "2"]), "peak_flops": ([], ["--peak-flops", "1e12"])}
    refused = {"data_config": ["--data-config", "x"], "data_split": ["--data-split", "test"]}
    # --output-dir is where every run writes; --resume: tests/test_pretrain.py resumes killed runs to the
    # uninterrupted losses
    checked_apart = {"output_dir", "resume"}
    assert_every_field_covered(PretrainConfig, at_loop_start, in_the_loop, refused, checked_apart)

    out = tmp_path / "run"
    silent = fields_without_effect(lambda argv: prepared_pretraining(argv, out, monkeypatch, capsys),
                                   {name: ([*base, *needs], change) for name, (base, needs, change) in at_loop_start.items()})
    fixed_peak = [*continued, "--peak-flops", "1e13"]  # unset, the peak is measured: MFU would differ run to run
    silent += fields_without_effect(lambda argv: short_pretraining(argv, out, capsys),
                                    {name: ([*fixed_peak, *needs], change) for name, (needs, change) in in_the_loop.items()})
    assert not silent, f"pretrain: these fields change nothing the run does: {silent}"
    assert_refused_writing_nothing("pretrain", continued, refused, tmp_path / "refused", capsys)


def command_outputs(module: str, argv: list[str], output_dir: Path, monkeypatch, capsys) -> str:
    """A digest of what ``python -m ettin_ft.<module> argv`` leaves: the files under ``output_dir`` (timings left out),
    what it prints, and the shapes of what it gives a transformers model, call by call (its batches)."""
    import torch
    import transformers

    calls = []
    call = torch.nn.Module.__call__

    def counting_call(self, *args, **kwargs):
        if isinstance(self, transformers.PreTrainedModel):
            calls.append([type(self).__name__, *(list(v.shape) for v in (*args, *kwargs.values()) if torch.is_tensor(v))])
        return call(self, *args, **kwargs)

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if not any(t in k for t in ("second", "wall", "time"))}
        return [untimed(v) for v in value] if isinstance(value, list) else value

    shutil.rmtree(output_dir, ignore_errors=True)
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.Module, "__call__", counting_call)
        status, err, printed = run_cli_main(module, capsys, *argv)
    assert status == 0, (module, argv, err[-5:])
    files = {str(path.relative_to(output_dir)): [untimed(json.loads(line)) for line in path.read_text().splitlines()]
             if path.suffix == ".jsonl" else untimed(json.loads(path.read_text())) if path.suffix == ".json"
             else path.read_bytes().hex()
             for path in sorted(output_dir.rglob("*")) if path.is_file()} if output_dir.exists() else {}
    left = {"files": files, "printed": printed, "model_calls": calls}
    return hashlib.sha256(json.dumps(left, sort_keys=True, default=str).encode()).hexdigest()


def assert_every_output_changes(module: str, config_class, changes: dict[str, tuple[list, list]], output_dir: Path,
                                monkeypatch, capsys, checked_apart=frozenset()):
    """As ``assert_every_field_acts``, on what a whole (short) command leaves: ``changes`` maps each field to (a
    command, the flags that change the field in it)."""
    assert_every_field_covered(config_class, changes, checked_apart)
    silent = fields_without_effect(lambda argv: command_outputs(module, argv, output_dir, monkeypatch, capsys), changes)
    assert not silent, f"{module}: these fields change nothing the command does: {silent}"


# --output-dir and --output: where everything goes; --device: this machine has one
@pytest.mark.slow
def test_every_probe_field_acts(tiny_encoder_dir, tiny_decoder_dir, other_tiny_dirs, world_dir, world100_dir, tmp_path,
                                monkeypatch, capsys):
    from ettin_ft.bias import BiasConfig
    from ettin_ft.generate import GenerateConfig
    from ettin_ft.zeroshot import ZeroShotConfig

    out = tmp_path / "out"
    zeroshot = ["--model", str(tiny_encoder_dir), "--data", str(world_dir / "zeroshot"), "--tasks", "employer,major",
                "--limit", "4", "--batch-size", "8", "--device", "cpu", "--precision", "fp32", "--output-dir", str(out)]
    assert_every_output_changes("zeroshot", ZeroShotConfig, {
        "model": (zeroshot, ["--model", str(other_tiny_dirs["encoder"])]),
        "data": (zeroshot, ["--data", str(world100_dir / "zeroshot")]), "tasks": (zeroshot, ["--tasks", "employer"]),
        "limit": (zeroshot, ["--limit", "3"]), "batch_size": (zeroshot, ["--batch-size", "2"]),
        "encoder_scoring": (zeroshot, ["--encoder-scoring", "pll"]), "extra_masks": (zeroshot, ["--extra-masks", "1"]),
        "score_sep": (zeroshot, ["--score-sep"]), "mntp": (zeroshot, ["--mntp", "true"]),
        "precision": (zeroshot, ["--precision", "bf16"])}, out, monkeypatch, capsys, checked_apart={"output_dir", "device"})

    winogender = {rows: tmp_path / f"winogender-{rows}" for rows in (24, 12)}  # the first rows of each file
    for rows, folder in winogender.items():
        shutil.copytree(shared_data("bias", "winogender"), folder)
        for path in folder.rglob("*.tsv"):
            lines = path.read_text().splitlines()
            path.write_text("\n".join(lines[:1 + rows]) + "\n")
    bias = ["--model", str(tiny_encoder_dir), "--data", str(winogender[24]), "--batch-size", "16", "--device", "cpu",
            "--output-dir", str(out)]
    assert_every_output_changes("bias", BiasConfig, {
        "model": (bias, ["--model", str(other_tiny_dirs["encoder"])]), "data": (bias, ["--data", str(winogender[12])]),
        "batch_size": (bias, ["--batch-size", "8"])}, out, monkeypatch, capsys, checked_apart={"output_dir", "device"})

    generate = ["--model", str(tiny_decoder_dir), "--prompt", "Alice was", "--chat", "no", "--max-new-tokens", "3"]
    sampling = [*generate, "--do-sample", "--seed", "3"]
    chat = [*generate, "--model", chat_model(tiny_decoder_dir, tmp_path / "chat"), "--chat", "auto"]
    assert_every_output_changes("generate", GenerateConfig, {
        "model": (generate, ["--model", str(other_tiny_dirs["decoder"])]), "prompt": (generate, ["--prompt", "Bob is"]),
        "system": (chat, ["--system", "Be brief."]), "chat": (chat, ["--chat", "no"]),
        "max_new_tokens": (generate, ["--max-new-tokens", "4"]), "do_sample": (generate, ["--do-sample"]),
        "temperature": (sampling, ["--temperature", "0.01"]), "top_p": (sampling, ["--top-p", "0.01"]),
        "seed": (sampling, ["--seed", "4"])}, out, monkeypatch, capsys)


@pytest.mark.slow
def test_every_mine_field_acts(tiny_encoder_dir, tiny_teacher_dir, world100_dir, retrieval_files, tmp_path, monkeypatch,
                               capsys):
    from ettin_ft.mine import MineConfig

    out = tmp_path / "mined"
    base = ["--data", str(retrieval_files["pairs.jsonl"]), "--max-samples", "40", "--mining-model", "bm25",
            "--num-negatives", "2", "--output", str(out / "mined.jsonl")]
    scored = [*base, "--teacher", str(tiny_teacher_dir)]
    assert_every_output_changes("mine", MineConfig, {
        "data": (base, ["--data", str(world100_dir / "retrieval_train.jsonl")]),
        "mining_model": (base, ["--mining-model", str(tiny_encoder_dir)]), "num_negatives": (base, ["--num-negatives", "1"]),
        "teacher": (base, ["--teacher", str(tiny_teacher_dir)]), "batch_size": (scored, ["--batch-size", "4"]),
        "column_mapping": (base, ["--column-mapping", "query:positive,positive:query"]),
        "max_samples": (base, ["--max-samples", "20"]), "precision": (scored, ["--precision", "bf16"])},
        out, monkeypatch, capsys, checked_apart={"output"} | set(HUB_ONLY))
    for name, flags in HUB_ONLY.items():
        assert_refused("mine", [*base, *flags], f"--{name.replace('_', '-')}", capsys)


@pytest.mark.slow
def test_every_compare_field_acts(tiny_encoder_dir, tiny_decoder_dir, pretrained_tiny, world_dir, tmp_path, monkeypatch,
                                  capsys):
    """A study's plan (its --dry-run: the command of every run) changes with each field; --metric, which picks the
    report's headline from finished runs, changes the report of a study run for real (its runs reused)."""
    from ettin_ft.study.plan import StudyConfig

    zeroshot = ["--data", str(world_dir / "zeroshot"), "--tasks", "employer,major", "--limit", "4", "--device", "cpu"]
    plan = ["--output-dir", str(tmp_path / "study"), "--launcher", sys.executable, "--dry-run"]
    models = ["--recipe", "zeroshot", "--models", f"{tiny_encoder_dir},{tiny_decoder_dir}", *plan]
    checkpoints = ["--recipe", "zeroshot", "--models", str(pretrained_tiny("encoder").parent), "--revisions",
                   "checkpoint-100,final", *plan]
    sizes = ["--recipe", "classify", "--sizes", "17m", *plan]
    assert_every_output_changes("compare", StudyConfig, {
        "recipe": (models, ["--recipe", "bias"]), "models": (models, ["--models", str(tiny_encoder_dir)]),
        "sizes": (sizes, ["--sizes", "32m"]), "archs": (sizes, ["--archs", "encoder"]),
        "revisions": (checkpoints, ["--revisions", "final"]), "seeds": (sizes, ["--seeds", "0,1"]),
        "output_dir": (models, ["--output-dir", str(tmp_path / "elsewhere")]),
        "launcher": (models, ["--launcher", "torchrun"]), "recipe_args": (sizes, ["--recipe-args", "--max-steps 2"])},
        tmp_path / "nothing", monkeypatch, capsys, checked_apart={"metric"})

    study = ["--recipe", "zeroshot", "--models", f"{tiny_encoder_dir},{tiny_decoder_dir}", "--output-dir",
             str(tmp_path / "study"), "--launcher", sys.executable]
    reports = []
    for metric in ("acc", "employer_acc"):
        status, err, _ = run_cli_main("compare", capsys, *study, "--metric", metric, "--", *zeroshot)
        assert status == 0, err[-5:]
        reports.append((tmp_path / "study" / "REPORT.md").read_text())
    assert reports[0] != reports[1]


# The quickstart: a run per field would pretrain a pair each time (its stages are the recipes above); each field is
# read by a short run, reads by whole-config copies, dumps and the parser not counted.
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
