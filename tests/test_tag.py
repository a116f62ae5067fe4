"""Token classification (ettin_ft.tag) for both architectures: learning the world's entities, predictions that rescore
to the metrics, reloading with the Auto class and the pipeline, the decoder's causality and --bidirectional, the data
forms, LoRA with seeds, and bad inputs."""

import json
import sys
from pathlib import Path

import pytest
import torch

from .conftest import run_cli_main

FAST = ["--per-device-train-batch-size", "16", "--learning-rate", "1e-3", "--warmup-steps", "0", "--logging-steps", "5",
        "--precision", "fp32", "--save-strategy", "no", "--report-to", "none"]
ENTITY_TYPES = {"person", "city", "university", "employer"}


def metrics_of(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def taggers(pretrained_tiny, world100_dir, tmp_path_factory):
    """taggers(arch): (run folder, the trained model) of 120 steps on the 100-person world's entities, built once."""
    from ettin_ft.tag import release, train_tag

    built = {}

    def tagger(arch: str):
        if arch not in built:
            out = tmp_path_factory.mktemp(f"tag-{arch}") / "run"
            config, args = release(str(out), model=str(pretrained_tiny(arch)), data=str(world100_dir / "entities_train.jsonl"),
                                   eval_data=str(world100_dir / "entities_test.jsonl"), max_steps=120,
                                   per_device_train_batch_size=16, learning_rate=1e-3, precision="fp32",
                                   save_strategy="no", logging_steps=10)
            built[arch] = out, train_tag(config, args).eval()
        return built[arch]

    return tagger


@pytest.mark.slow  # 120 training steps per architecture (and the pretrained pair)
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_both_architectures_learn_the_worlds_entities(arch, taggers):
    from seqeval.metrics import f1_score

    from ettin_ft.evaluation import tagging_metrics

    out, _ = taggers(arch)
    metrics = metrics_of(out)
    assert set(metrics["after"]) == {"f1", "precision", "recall", "accuracy"}
    assert metrics["after"]["f1"] > metrics["before"]["f1"] + 0.3, metrics
    assert set(metrics["per_type"]) == ENTITY_TYPES
    assert set(metrics["per_type"]["person"]) == {"precision", "recall", "f1", "support"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and all(len(row["predicted"]) == len(row["tokens"]) == len(row["tags"]) for row in rows)
    gold, predicted = [row["tags"] for row in rows], [row["predicted"] for row in rows]
    assert tagging_metrics(gold, predicted) == (metrics["after"], metrics["per_type"])
    assert f1_score(gold, predicted) == pytest.approx(metrics["after"]["f1"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_the_tagger_reloads_with_the_auto_class_and_the_pipeline_finds_entities(arch, taggers):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    out, model = taggers(arch)
    final = out / "final"
    reloaded = AutoModelForTokenClassification.from_pretrained(final).eval()
    assert type(reloaded).__name__ == ("ModernBertForTokenClassification" if arch == "encoder"
                                       else "ModernBertDecoderForTokenClassification")
    assert {name.split("-", 1)[-1] for name in reloaded.config.id2label.values()} == ENTITY_TYPES | {"O"}
    tokenizer = AutoTokenizer.from_pretrained(final)
    batch = tokenizer(["Milo Ray Hargrove works for Granite Insurance .", "He was born in Tallinn ."], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
    tag = pipeline("token-classification", model=str(final), aggregation_strategy="simple", device="cpu")
    groups = tag("Milo Ray Hargrove works for Granite Insurance. He studied at Northvale University.")
    assert groups and {group["entity_group"] for group in groups} <= ENTITY_TYPES, groups
    assert "employer" in {group["entity_group"] for group in groups}, groups


def decoder_tagger(tiny_decoder_dir, bidirectional: bool):
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(tiny_decoder_dir, num_labels=3)
    config.bidirectional = bidirectional
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_pretrained(tiny_decoder_dir, config=config).eval()


def test_a_decoder_tags_from_its_left_context_and_bidirectional_from_both(tiny_decoder_dir, tmp_path):
    from transformers import AutoModelForTokenClassification

    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    changed = ids.clone()
    changed[0, 5:] = torch.tensor([50, 51, 52])
    for bidirectional in (False, True):
        model = decoder_tagger(tiny_decoder_dir, bidirectional=bidirectional)
        with torch.no_grad():
            logits, after_change = model(ids).logits, model(changed).logits
        # tokens before the change see the same left context; with both directions they see the change
        assert torch.equal(logits[0, :5], after_change[0, :5]) != bidirectional
        model.save_pretrained(tmp_path / str(bidirectional))
        reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / str(bidirectional)).eval()
        assert reloaded.bidirectional == bidirectional
        with torch.no_grad():
            torch.testing.assert_close(reloaded(changed).logits, after_change)


def test_bidirectional_padding_changes_nothing(tiny_decoder_dir):
    model = decoder_tagger(tiny_decoder_dir, bidirectional=True)
    ids = torch.tensor([[1, 40, 41, 42, 3, 3], [1, 43, 44, 45, 46, 47]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        alone = model(ids[:1, :4]).logits
    torch.testing.assert_close(padded[:1, :4], alone)


def test_conll_and_jsonl_give_the_same_training_rows(world_dir, tiny_encoder_dir, tmp_path):
    from transformers import AutoTokenizer

    from ettin_ft.data.tagging import load_tagging_data, tokenize_words
    from ettin_ft.tokenizer import encode_words_as_in_text

    rows = [json.loads(line) for line in (world_dir / "entities_train.jsonl").read_text().splitlines()]
    conll = ["-DOCSTART- -X- O O", ""]
    for number, row in enumerate(rows):  # tabs and spaces, extra columns (the tag is the last), blank lines doubled
        conll += [f"{token}\tNN\t{tag}" if number % 2 else f"{token} {tag}" for token, tag in zip(row["tokens"], row["tags"])]
        conll += ["", ""] if number % 3 == 0 else [""]
    (tmp_path / "train.conll").write_text("\n".join(conll))
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    encode_words_as_in_text(tokenizer)
    loaded = [load_tagging_data(data=str(path), eval_data=str(world_dir / "entities_test.jsonl"))
              for path in (world_dir / "entities_train.jsonl", tmp_path / "train.conll")]
    assert loaded[0].train.to_list() == loaded[1].train.to_list() == [
        {"tokens": row["tokens"], "tags": row["tags"]} for row in rows]
    tags = {tag for row in rows for tag in row["tags"]}
    assert loaded[0].label_names == loaded[1].label_names == ("O", *sorted(tags - {"O"}))  # O first, the rest sorted
    encoded = [tokenize_words(data.train, tokenizer, data.label_names, None) for data in loaded]
    assert encoded[0].to_list() == encoded[1].to_list()
    first = encoded[0][0]
    words = [w for w in first["word_ids"] if w >= 0]
    labelled = [label for label in first["labels"] if label != -100]
    assert len(labelled) == len(rows[0]["tokens"]) == len(set(words))  # the first sub-token of each word
    assert tokenizer.convert_ids_to_tokens(first["input_ids"][1]).startswith("Ġ")  # each word as after a space


def test_label_all_tokens_labels_each_sub_token_with_inside_tags():
    from ettin_ft.data.tagging import align_labels, inside_tags

    names = ("O", "B-person", "I-person")
    word_ids = [None, 0, 0, 1, 1, 1, 2, None]
    assert align_labels(word_ids, [1, 2, 0], False, inside_tags(names)) == [-100, 1, -100, 2, -100, -100, 0, -100]
    assert align_labels(word_ids, [1, 2, 0], True, inside_tags(names)) == [-100, 1, 2, 2, 2, 2, 0, -100]


@pytest.mark.slow
def test_lora_with_seeds_from_the_command_line(tiny_decoder_dir, world_dir, tmp_path, capsys):
    from transformers import AutoModelForTokenClassification

    out = tmp_path / "lora"
    status, err, _ = run_cli_main("tag", capsys, "--model", str(tiny_decoder_dir), "--data", str(world_dir / "entities_train.jsonl"),
                                  "--held-out", "9", "--lora", "--lora-r", "4", "--seeds", "0,1", "--max-steps", "3",
                                  "--output-dir", str(out), *FAST)
    assert status == 0, err[-5:]
    metrics = metrics_of(out)
    assert set(metrics["seeds"]) == {"0", "1"} and set(metrics["std"]["after"]) == {"f1", "precision", "recall", "accuracy"}
    for seed in ("0", "1"):
        assert (out / f"seed-{seed}" / "adapter" / "adapter_config.json").is_file()
        merged = AutoModelForTokenClassification.from_pretrained(out / f"seed-{seed}" / "final")
        assert type(merged).__name__ == "ModernBertDecoderForTokenClassification"
        assert len((out / f"seed-{seed}" / "predictions.jsonl").read_text().splitlines()) == 9


def test_an_encoder_is_refused_bidirectional(tiny_encoder_dir, world_dir, tmp_path, capsys):
    status, err, _ = run_cli_main("tag", capsys, "--model", str(tiny_encoder_dir), "--data", str(world_dir / "entities_train.jsonl"),
                                  "--bidirectional", "--output-dir", str(tmp_path / "out"))
    assert status == 2 and len(err) == 1 and "--bidirectional applies to Ettin decoders" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, name, expected", [
    ('{"tokens": ["a", "b"], "tags": ["O"]}\n', "x.jsonl", "line 1: 2 tokens but 1 tags; expected one tag per token"),
    ('{"tokens": [], "tags": []}\n', "x.jsonl", "line 1: no tokens"),
    ('{"tokens": ["a", " "], "tags": ["O", "O"]}\n', "x.jsonl", "line 1: token 2 is empty"),
    ('{"tokens": ["a"]}\n', "x.jsonl", 'line 1: no "tags" field'),
    ('{"tokens": ["a"], "tags": ["O"]}\nb\tO\n', "x.jsonl", "line 2: malformed JSON (Expecting value) in 'b\\tO'; expected one {\"tokens\""),
    ('a\tO\n{"tokens": ["a"], "tags": ["O"]}\n', "x.conll", "line 2: a JSON row in CoNLL text"),
    ("a\tO\nb\n", "x.conll", "line 2: 'b' has no tag"),
    ('{"tokens": ["a", "b"], "tags": ["O", "B-thing"]}\n', "labels", "tag 'B-thing' is not among the labels"),
    (b"a\tO\n\xff\xfe\tO\n", "x.conll", "not UTF-8 text (byte offset 4"),
])
def test_bad_data_is_one_line_exit_2_and_no_folder(content, name, expected, tiny_encoder_dir, tmp_path, capsys):
    labels = []
    if name == "labels":
        name = "x.jsonl"
        (tmp_path / "labels.json").write_text('["O", "B-person", "I-person"]')
        labels = ["--labels", str(tmp_path / "labels.json")]
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    status, err, _ = run_cli_main("tag", capsys, "--model", str(tiny_encoder_dir), "--data", str(path), "--eval-data", str(path),
                                  *labels, "--output-dir", str(tmp_path / "out"))
    assert status == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_failed_registration_warns_instead_of_breaking_the_import(monkeypatch):
    """The registration runs inside the import that first loads transformers' Auto classes: a transformers without
    the tagger's APIs gets one warning, and that import goes on."""
    import builtins

    from ettin_ft import auto_classes

    real_import = builtins.__import__

    def without_the_tagger(name, *args, **kwargs):
        if name.endswith("decoder_tagger"):
            raise ImportError("cannot import name 'create_bidirectional_sliding_window_mask'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "ettin_ft.decoder_tagger", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_the_tagger)
    with pytest.warns(UserWarning, match="token classifier is unavailable with this transformers"):
        auto_classes.register_model_classes()
