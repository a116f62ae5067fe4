"""Every command, every kind of bad input: exit 2, one ``error:`` line, no traceback, no output left behind."""

import json
import os

import pytest

from .conftest import SHARED_DATA, run_cli_main

RECIPES = ("dense", "sparse", "colbert", "rerank", "sft", "classify")
# Each command's own bad value, beside the bad inputs every command shares.
BAD_VALUES = {
    "dense": ["--learning-rate", "abc"], "sparse": ["--max-steps", "many"], "colbert": ["--query-length", "x"],
    "rerank": ["--num-negatives", "few"], "sft": ["--lora-r", "big"], "classify": ["--per-device-train-batch-size", "b"],
    "pretrain": ["--max-steps", "abc"], "quickstart": ["--people", "abc"], "generate": ["--max-new-tokens", "x"],
    "fill_mask": ["--top-k", "x", "a [MASK]"], "convert": ["--to", "sideways"], "models": ["--json=yes"],
    "data.synthetic": ["--people", "abc"], "zeroshot": ["--extra-masks", "two"],
}
COMMANDS = sorted(BAD_VALUES)
WITH_OUTPUT_DIR = ("dense", "sparse", "colbert", "rerank", "sft", "classify", "pretrain", "quickstart", "convert",
                   "data.synthetic", "zeroshot")


@pytest.fixture
def inputs(tmp_path, tiny_encoder_dir, tiny_decoder_dir, world_dir):
    nulls = tmp_path / "nulls.jsonl"
    nulls.write_text(json.dumps({"query": "q", "positive": "p", "passage": "p", "label": 1, "text": "t",
                                 "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                     + "\n" + json.dumps({"query": None, "positive": "p", "passage": None, "label": 0, "text": None,
                                          "messages": None}) + "\n")
    missing = tmp_path / "missing.csv"
    missing.write_text("query,positive,passage,label,text\nq,p,p,1,t\nq\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    # A first line that parses, then a Latin-1 byte: found only by reading past the start of the file.
    latin = tmp_path / "latin" / "facts.jsonl"
    latin.parent.mkdir()
    latin.write_bytes(b'{"query": "q", "positive": "p", "text": "t", "context": "a", "continuation": "b"}\n'
                      b'{"query": "caf\xe9", "positive": "p"}\n')
    for name in ("all_sentences.tsv", "occupations-stats.tsv"):  # WinoGender's files, the same way
        (latin.parent / name).write_bytes(b"occupation\tbls_pct_female\nnurse\t90\ncaf\xe9\t1\n")
    return {"encoder": str(tiny_encoder_dir), "decoder": str(tiny_decoder_dir), "nulls": str(nulls),
            "missing": str(missing), "file": str(a_file), "out": str(tmp_path / "out"), "world": world_dir,
            "latin": str(latin)}


def base_args(command: str, inputs) -> list[str]:
    """A valid command line for ``command`` (the bad input is added to it)."""
    model = inputs["decoder"] if command in ("sft", "generate") else inputs["encoder"]
    if command in RECIPES:
        data = {"rerank": "retrieval_train.jsonl", "sft": "sft_train.jsonl", "classify": "topics_train.jsonl"}
        args = ["--model", model, "--data", str(inputs["world"] / data.get(command, "retrieval_train.jsonl")),
                "--output-dir", inputs["out"]]
        return args + (["--mining-model", "bm25"] if command == "rerank" else [])
    return {
        "pretrain": ["--data", str(inputs["world"] / "pretrain.txt"), "--output-dir", inputs["out"]],
        "quickstart": ["--output-dir", inputs["out"]],
        "generate": ["--model", model],
        "fill_mask": ["--model", model],
        "convert": ["--model", model, "--to", "decoder", "--output-dir", inputs["out"]],
        "models": [],
        "data.synthetic": ["--output-dir", inputs["out"]],
        "zeroshot": ["--model", model, "--data", str(inputs["world"] / "zeroshot"), "--output-dir", inputs["out"]],
        "bias": ["--model", model, "--data", str(SHARED_DATA / "bias" / "winogender"), "--output-dir", inputs["out"]],
    }[command]


def bad_inputs() -> list[tuple[str, str]]:
    cases = [(command, kind) for command in COMMANDS for kind in ("unknown flag", "bad value")]
    cases += [(command, "output dir is a file") for command in WITH_OUTPUT_DIR]
    cases += [(command, data) for command in RECIPES + ("pretrain",) for data in ("null text", "missing csv field")]
    cases += [(command, "not utf-8") for command in RECIPES + ("pretrain", "zeroshot", "bias")]
    return cases


def with_bad_input(command: str, kind: str, inputs) -> list[str]:
    args = base_args(command, inputs)
    if kind == "unknown flag":
        return args + ["--no-such-flag", "3"]
    if kind == "bad value":
        return args + BAD_VALUES[command]
    if kind == "output dir is a file":
        return [inputs["file"] if value == inputs["out"] else value for value in args]
    if kind == "not utf-8":
        latin = os.path.dirname(inputs["latin"]) if command in ("zeroshot", "bias") else inputs["latin"]
        return [latin if previous == "--data" else value for previous, value in zip([""] + args, args)] + (
            ["--label-column", "query"] if command == "classify" else [])
    data = inputs["nulls"] if kind == "null text" else inputs["missing"]
    args = [data if previous == "--data" else value for previous, value in zip([""] + args, args)]
    if command == "classify":
        args += ["--label-column", "label"]
    return args


@pytest.mark.parametrize("command, kind", bad_inputs(), ids=lambda value: value.replace(" ", "-"))
def test_one_error_line_exit_2_and_no_output(command, kind, inputs, capsys):
    status, err, _ = run_cli_main(command, capsys, *with_bad_input(command, kind, inputs))
    lines = [line for line in err if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), (status, err)
    assert "Traceback" not in "\n".join(err)
    if kind == "unknown flag":
        assert "'--no-such-flag'" in lines[0] and "--help" in lines[0]
    if kind in ("null text", "missing csv field"):
        assert "row " in lines[0] and any(word in lines[0] for word in ("null", "empty", "no rows", "messages")), lines
    if kind == "output dir is a file":
        assert open(inputs["file"]).read() == "not a folder"
    if kind == "not utf-8":
        assert "not UTF-8 text (byte offset " in lines[0] and (
            lines[0].startswith("error: " + os.path.dirname(inputs["latin"]))), lines
    assert not os.path.exists(inputs["out"])


def test_the_closest_flag_is_named(inputs, capsys):
    status, err, _ = run_cli_main("dense", capsys, *base_args("dense", inputs), "--dataset", "x")
    assert status == 2 and err == ["error: unknown flag '--dataset'; did you mean --data? "
                                   "(see python -m ettin_ft.dense --help)"]


def test_fine_tuning_refuses_sharded_weights(inputs, capsys, monkeypatch):
    from types import SimpleNamespace

    from ettin_ft.errors import EttinError
    from ettin_ft.runtime import refuse_sharded_fine_tuning

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch sets from fsdp2.yaml
    status, err, _ = run_cli_main("dense", capsys, *base_args("dense", inputs))
    assert status == 2 and len(err) == 1 and err[0].startswith("error: fine-tuning under FSDP is not supported")
    assert not os.path.exists(inputs["out"])
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    # the trainer's own settings (building them under accelerate's DeepSpeed variables needs deepspeed installed)
    for stage, refused in ((3, True), ("3", True), (2, False)):
        args = SimpleNamespace(fsdp=None, deepspeed={"zero_optimization": {"stage": stage}})
        if refused:
            with pytest.raises(EttinError, match="under DeepSpeed ZeRO-3 is not supported"):
                refuse_sharded_fine_tuning(args)
        else:
            refuse_sharded_fine_tuning(args)
    with pytest.raises(EttinError, match="under FSDP"):
        refuse_sharded_fine_tuning(SimpleNamespace(fsdp="full_shard", deepspeed=None))
