"""Sequence classification for both architectures: learning, pairs, regression, LoRA, seeds, reloading, errors."""

import json
from pathlib import Path

import pytest
import yaml
import torch

from .conftest import NATIVE_BF16, run_cli_main, shared_data

FAST = ["--per-device-train-batch-size", "32", "--learning-rate", "1e-3", "--warmup-steps", "0", "--logging-steps", "5",
        "--precision", "fp32"]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path, limit: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[:limit]]


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory) -> Path:
    """A folder like ../shared/data/classification/sst2: train.jsonl (2,000 rows) and validation.jsonl."""
    folder = tmp_path_factory.mktemp("sst2")
    write_jsonl(folder / "train.jsonl", read_jsonl(shared_data("classification", "sst2", "train.jsonl"), 2000))
    write_jsonl(folder / "validation.jsonl", read_jsonl(shared_data("classification", "sst2", "validation.jsonl"), 300))
    return folder


def metrics_of(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def logged_losses(folder) -> list[float]:
    rows = [json.loads(line) for line in (Path(folder) / "log_history.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def assert_learned(metrics: dict) -> None:
    for name in ("accuracy", "macro_f1"):
        assert metrics["after"][name] > metrics["before"][name], metrics
        assert metrics["after"][name] > metrics["majority"][name], metrics


@pytest.mark.release  # hundreds of steps on real sentiment data
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_learns_sentiment_beyond_its_untrained_head_and_the_majority_class(arch, pretrained_tiny, sst2_slice, tmp_path, capsys):
    out = tmp_path / "sst2"
    # a decoder's new random head (pretrained on biographies only) still predicts the majority class after 120 steps
    steps = "120" if arch == "encoder" else "300"
    status, err, _ = run_cli_main("classify", capsys, "--model", str(pretrained_tiny(arch)), "--data", str(sst2_slice),
                                  "--output-dir", str(out), "--max-steps", steps, *FAST)
    assert status == 0, err[-5:]
    metrics = metrics_of(out)
    assert_learned(metrics)
    assert set(metrics) == {"before", "after", "majority"}
    losses = logged_losses(out)
    assert sum(losses[-3:]) < sum(losses[:3]), losses


@pytest.mark.slow  # an end-to-end training run (25 s each), like the other recipes' learning tests
@pytest.mark.parametrize("arch, bf16", [("encoder", NATIVE_BF16), ("decoder", False)])
def test_learns_the_synthetic_question_topics(arch, bf16, pretrained_tiny, world100_dir, tmp_path):
    """Five classes named by strings, questions about held-out people; from Python, the trainer's --bf16
    deciding the model's precision too (the encoder in bf16 on CPUs with native bf16, which choose it by default)."""
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from ettin_ft.classify import ClassifyConfig, train_classify

    config = ClassifyConfig(model=str(pretrained_tiny(arch)), data=str(world100_dir / "topics_train.jsonl"),
                            eval_data=str(world100_dir / "topics_test.jsonl"))
    args = TrainingArguments(output_dir=str(tmp_path / "topics"), max_steps=30, per_device_train_batch_size=32,
                             learning_rate=1e-3, logging_steps=5, save_strategy="no", report_to="none", use_cpu=True,
                             bf16=bf16)
    model = train_classify(config, args)
    metrics = metrics_of(tmp_path / "topics")
    assert_learned(metrics)
    assert metrics["after"]["accuracy"] > 0.6, metrics
    assert sorted(model.config.label2id) == ["birth_city", "birth_date", "employer", "major", "university"]
    assert ("bf16: true" in (tmp_path / "topics" / "config.yaml").read_text()) == bf16
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "topics" / "final")
    assert reloaded.config.id2label == model.config.id2label
    assert_model_card(tmp_path / "topics", "final", "accuracy")


def assert_model_card(run, folder: str, metric: str) -> None:
    """The folder's README.md is a hub model card naming the base model and data, with the run's metric before
    and after exactly as metrics.json holds them."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(run / folder / "README.md")
    metrics = json.loads((run / "metrics.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert "ettin-ft" in card.data.tags and card.data.pipeline_tag == "text-classification"
    assert f"| {metric} | {json.dumps(metrics['before'][metric])} | {json.dumps(metrics['after'][metric])} |" in card.text
    assert config["model"] in card.text and config["data"] in card.text


def test_device_and_precision_are_settled_in_one_place(tmp_path):
    from transformers import TrainingArguments

    from ettin_ft.classify import ClassifyConfig
    from ettin_ft.errors import EttinError
    from ettin_ft.recipe import prepare_run

    asked = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True)
    args, runtime = prepare_run(ClassifyConfig(), asked)
    assert runtime.device.type == "cpu" and runtime.bf16 and args.bf16 and args.use_cpu
    plain = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    args, runtime = prepare_run(ClassifyConfig(precision="bf16"), plain)
    assert runtime.bf16 and args.bf16 and not plain.bf16  # the caller's arguments stay as they were
    with pytest.raises(EttinError, match="--precision fp32 and --bf16 disagree"):
        prepare_run(ClassifyConfig(precision="fp32"), asked)


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_pairs_reload_and_pipeline(arch, pretrained_tiny, tmp_path):
    """A pair task (an RTE slice): the special tokens of each architecture, identical logits after reloading,
    and the pipeline's label names."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments, pipeline

    from ettin_ft.classify import ClassifyConfig, train_classify

    rte = shared_data("classification", "rte")
    train = write_jsonl(tmp_path / "train.jsonl", read_jsonl(rte / "train.jsonl", 200))
    config = ClassifyConfig(model=str(pretrained_tiny(arch)), data=str(train), eval_data=str(rte / "validation.jsonl"),
                            max_samples=200, precision="fp32")
    args = TrainingArguments(output_dir=str(tmp_path / "rte"), max_steps=4, per_device_train_batch_size=8,
                             save_strategy="no", report_to="none", use_cpu=True)
    model = train_classify(config, args).eval()
    final = tmp_path / "rte" / "final"
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = tokenizer("A man sleeps.", "Someone rests.")["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert ids[0] == cls and ids.count(sep) == (2 if arch == "encoder" else 1)
    assert (ids[-1] == sep) == (arch == "encoder")  # a decoder reads its prediction at the last real token
    reloaded = AutoModelForSequenceClassification.from_pretrained(final).eval()
    assert reloaded.config.id2label == {0: "entailment", 1: "not_entailment"}
    batch = tokenizer(["A man sleeps.", "Two dogs run in a field."], ["Someone rests.", "Animals play."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
    classify = pipeline("text-classification", model=str(final), device="cpu")
    assert classify({"text": "A man sleeps.", "text_pair": "Someone rests."})["label"] in ("entailment", "not_entailment")
    metrics = metrics_of(tmp_path / "rte")
    assert set(metrics["after"]) == {"accuracy", "macro_f1"}


def test_float_labels_train_a_regression_head(pretrained_tiny, sst2_slice, tmp_path, capsys):
    rows = [{"text": row["text"], "score": 0.5 + 4 * row["label"]} for row in read_jsonl(sst2_slice / "train.jsonl", 2000)]
    data = write_jsonl(tmp_path / "scores.jsonl", rows)
    out = tmp_path / "regression"
    status, err, _ = run_cli_main("classify", capsys, "--model", str(pretrained_tiny("encoder")), "--data", str(data),
                                  "--label-column", "score", "--held-out", "200", "--output-dir", str(out),
                                  "--max-steps", "60", *FAST)
    assert status == 0, err[-5:]
    metrics = metrics_of(out)
    assert set(metrics["after"]) == {"pearson", "spearman", "mse"}
    assert metrics["after"]["pearson"] > metrics["before"]["pearson"] and metrics["after"]["mse"] < metrics["majority"]["mse"] * 1.5
    assert logged_losses(out)[-1] < logged_losses(out)[0]
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(out / "final")
    assert saved.num_labels == 1 and saved.problem_type == "regression"


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_lora_lowers_the_loss_and_merges_exactly(arch, pretrained_tiny, world100_dir, tmp_path, capsys):
    """DIR/final/ is the merged classifier (with its labels); it equals the base model plus DIR/adapter/."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "lora"
    status, err, _ = run_cli_main("classify", capsys, "--model", str(pretrained_tiny(arch)), "--data",
                                  str(world100_dir / "topics_train.jsonl"), "--lora", "--output-dir", str(out),
                                  "--max-steps", "30", *FAST)
    assert status == 0, err[-5:]
    losses = logged_losses(out)
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    merged = AutoModelForSequenceClassification.from_pretrained(out / "final").eval()
    assert len(merged.config.id2label) == 5
    base = AutoModelForSequenceClassification.from_pretrained(pretrained_tiny(arch), config=merged.config)
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    batch = AutoTokenizer.from_pretrained(out / "final")(["Where was Alice born?", "Who employs Bruno?"], padding=True,
                                                         return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted(**batch).logits, rtol=1e-4, atol=1e-4)
    for folder in ("final", "adapter"):
        assert_model_card(out, folder, "accuracy")


def test_seeds_run_apart_and_are_summarised(pretrained_tiny, world100_dir, tmp_path, capsys):
    out = tmp_path / "seeds"
    args = ["--model", str(pretrained_tiny("encoder")), "--data", str(world100_dir / "topics_train.jsonl"),
            "--seeds", "0,1", "--output-dir", str(out), "--max-steps", "3", *FAST]
    status, err, printed = run_cli_main("classify", capsys, *args)
    assert status == 0, err[-5:]
    metrics = metrics_of(out)
    runs = [metrics_of(out / f"seed-{seed}") for seed in (0, 1)]
    assert metrics["seeds"] == {"0": runs[0], "1": runs[1]}
    for stage in ("before", "after"):
        values = [run[stage]["accuracy"] for run in runs]
        assert metrics[stage]["accuracy"] == pytest.approx(sum(values) / 2)
        assert metrics["std"][stage]["accuracy"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert runs[0]["before"] != runs[1]["before"]  # each seed draws its own head
    assert (out / "seed-1" / "final" / "config.json").exists() and (out / "config.yaml").exists()
    status, _, printed = run_cli_main("classify", capsys, *args)
    assert status == 0 and printed.count("finished earlier, kept") == 2
    # resuming the study: the finished seeds are kept, a seed that never started starts
    more = [value if value != "0,1" else "0,1,2" for value in args]
    status, err, printed = run_cli_main("classify", capsys, *more, "--resume-from-checkpoint", "latest")
    assert status == 0 and printed.count("finished earlier, kept") == 2, err[-3:]
    assert set(metrics_of(out)["seeds"]) == {"0", "1", "2"} and (out / "seed-2" / "final").is_dir()


def test_task_defaults_follow_modernbert_glue(pretrained_tiny, tmp_path, capsys):
    base = ["--model", str(pretrained_tiny("encoder")), "--output-dir", str(tmp_path / "dry"), "--dry-run"]
    from ettin_ft.classify import release_defaults

    mnli = release_defaults(["--task", "mnli"])
    assert (mnli["learning_rate"], mnli["per_device_train_batch_size"], mnli["num_train_epochs"]) == (5e-5, 64, 2)
    assert mnli["weight_decay"] == pytest.approx(1e-6 / 5e-5) and mnli["max_seq_length"] == 256
    assert (mnli["adam_beta2"], mnli["adam_epsilon"], mnli["warmup_steps"]) == (0.98, 1e-6, 0.06)
    assert release_defaults(["--task", "rte"])["weight_decay"] == pytest.approx(1e-5 / 1e-5)
    status, err, _ = run_cli_main("classify", capsys, *base, "--task", "mnli")  # the hub is unreachable
    assert status == 2 and len(err) == 1 and "nyu-mll/glue" in err[0], err
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("rows, extra, expected", [
    ([{"review": "good", "label": 1}, {"review": "bad", "label": 0}] * 20, [], "no text column found"),
    ([{"text": "good", "stars": 1}, {"text": "bad", "stars": 0}] * 20, [], "missing column(s) label"),
    ([{"text": "good", "label": 1}] * 40, [], "every training row has the label 1"),
    ([{"text": "good", "label": 1}, {"text": None, "label": 0}] * 20, [], "row 2: column 'text' is null"),
    ([{"text": "good", "label": 1}, {"text": "bad", "label": 0}] * 20, ["--eval-data", "EVAL"], "label(s) 7 do not occur"),
    ([], [], "no rows"),
])
def test_bad_input_is_one_line_without_output(rows, extra, expected, pretrained_tiny, tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"text": "odd", "label": 7}, {"text": "fine", "label": 1}])
    extra = [str(evaluation) if value == "EVAL" else value for value in extra]
    status, err, _ = run_cli_main("classify", capsys, "--model", str(pretrained_tiny("encoder")), "--data", str(data),
                                  "--output-dir", str(tmp_path / "out"), *extra)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_init_from_a_classifier_keeps_its_backbone_and_draws_a_new_head(pretrained_tiny, world100_dir, tmp_path):
    """ModernBERT starts RTE, MRPC and STS-B from an MNLI model: --init-from takes a fine-tuned classifier's
    weights, with a new head when its labels differ (here five topics → two claim labels)."""
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from ettin_ft.runtime import choose_runtime
    from ettin_ft.classify import ClassifyConfig, build_classifier, classification_data, train_classify

    encoder = str(pretrained_tiny("encoder"))
    topics = ClassifyConfig(model=encoder, data=str(world100_dir / "topics_train.jsonl"))
    train_classify(topics, TrainingArguments(output_dir=str(tmp_path / "topics"), max_steps=5, learning_rate=1e-3,
                                             save_strategy="no", report_to="none", use_cpu=True))
    first = AutoModelForSequenceClassification.from_pretrained(tmp_path / "topics" / "final")
    claims = ClassifyConfig(model=encoder, data=str(world100_dir / "claims_train.jsonl"),
                            init_from=str(tmp_path / "topics" / "final"))
    model, _, _ = build_classifier(claims, classification_data(claims), choose_runtime("cpu"))
    weight = "model.layers.1.attn.Wqkv.weight"
    assert model.state_dict()[weight].equal(first.state_dict()[weight])
    assert model.config.num_labels == 2 and model.classifier.weight.shape[0] == 2
    base, _, _ = build_classifier(ClassifyConfig(model=encoder, data=claims.data), classification_data(claims), choose_runtime("cpu"))
    assert not base.state_dict()[weight].equal(first.state_dict()[weight])


def test_head_init_lm_starts_a_decoder_classifier_from_the_lm_head_and_saves_it_as_head(tiny_decoder_dir, world_dir,
                                                                                        tmp_path, capsys):
    """With --head-init lm the prediction head (dense, GELU, LayerNorm) of a decoder classifier is the decoder's LM
    head at the start (by default it is a new random one); the saved classifier keeps it under its own name and
    reloads with the same outputs."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from ettin_ft.classify import ClassifyConfig, build_classifier, classification_data
    from ettin_ft.runtime import choose_runtime

    config = ClassifyConfig(model=str(tiny_decoder_dir), data=str(world_dir / "topics_train.jsonl"), held_out=20)
    default, _, _ = build_classifier(config, classification_data(config), choose_runtime("cpu", "fp32"))
    config.head_init = "lm"
    model, tokenizer, arch = build_classifier(config, classification_data(config), choose_runtime("cpu", "fp32"))
    lm_head = {k.removeprefix("lm_head."): v for k, v in load_file(tiny_decoder_dir / "model.safetensors").items()
               if k.startswith("lm_head.")}
    assert arch == "decoder" and lm_head and lm_head.keys() == model.head.state_dict().keys()
    for name, weight in model.head.state_dict().items():
        torch.testing.assert_close(weight, lm_head[name])
    assert not default.head.dense.weight.equal(lm_head["dense.weight"])
    model.save_pretrained(tmp_path / "saved")
    assert any(k.startswith("head.") for k in load_file(tmp_path / "saved" / "model.safetensors"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    inputs = tokenizer(["Where was Alice born?"], return_tensors="pt")
    torch.testing.assert_close(model.eval()(**inputs).logits, reloaded.eval()(**inputs).logits)


def test_head_init_lm_leaves_an_encoder_on_its_mlm_head(tiny_encoder_dir, world_dir):
    """An encoder's prediction head starts as its MLM head's whether --head-init is auto or lm, so `compare -- --head-init
    lm` starts both architectures from their pretrained heads."""
    from safetensors.torch import load_file

    from ettin_ft.classify import ClassifyConfig, build_classifier, classification_data
    from ettin_ft.runtime import choose_runtime

    mlm_head = {k.removeprefix("head."): v for k, v in load_file(tiny_encoder_dir / "model.safetensors").items()
                if k.startswith("head.")}
    for head_init in ("auto", "lm"):
        config = ClassifyConfig(model=str(tiny_encoder_dir), data=str(world_dir / "topics_train.jsonl"), head_init=head_init)
        model, _, _ = build_classifier(config, classification_data(config), choose_runtime("cpu", "fp32"))
        assert mlm_head and mlm_head.keys() == model.head.state_dict().keys()
        for name, weight in model.head.state_dict().items():
            torch.testing.assert_close(weight, mlm_head[name])


def test_head_init_is_refused_where_it_does_not_apply(tiny_encoder_dir, tiny_decoder_dir, world_dir, tmp_path, capsys):
    data = ["--data", str(world_dir / "topics_train.jsonl"), "--output-dir", str(tmp_path / "out")]
    status, err, _ = run_cli_main("classify", capsys, "--model", str(tiny_encoder_dir), "--head-init", "random", *data)
    assert status == 2 and len(err) == 1 and "--head-init random applies to Ettin decoders" in err[0], err
    status, err, _ = run_cli_main("classify", capsys, "--model", str(tiny_decoder_dir), "--head-init", "zeros", *data)
    assert status == 2 and len(err) == 1 and "--head-init 'zeros': expected auto, lm or random" in err[0], err
    assert not (tmp_path / "out").exists()
